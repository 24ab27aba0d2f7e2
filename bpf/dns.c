/* DNS as the agent sees it: messages sent and received on sockets the agent pointed at port 53
 * (connect, or sendto/sendmsg to that port), copied raw and parsed in user space
 * (sensor/dns_names.py), which learns the addresses each name resolved to. That lets a profile allow
 * destinations by name. Only tracked processes pay: for anyone else send, receive, read, write
 * and close cost the one tracked lookup. */

#define DNS_PORT 53

/* A socket pointed at a resolver, by (tgid << 32 | fd). LRU: a socket whose close was missed
 * (the process died) cannot fill the map. */
struct dns_socket {
	u8 peer[16]; /* IPv4 as ::ffff:a.b.c.d */
	u16 port;
	u16 reserved[3];
};
BPF_TABLE("lru_hash", u64, struct dns_socket, dns_sockets, 4096);

/* A receive in progress on a resolver socket, by thread id: the buffer is read at syscall exit. */
struct dns_receive {
	u64 buf;  /* user pointer to the data */
	u64 cap;  /* its size */
	u64 from; /* user pointer to the sender's address (recvfrom/recvmsg), 0 if none */
	s32 fd;
	u32 reserved;
};
BPF_TABLE("lru_hash", u32, struct dns_receive, dns_receives, 1024);

/* Addresses answers for allowed names gave each agent run, until user space has judged the
 * answer (struct dns_pending_key). A connect to one of them is left to user space, which judges it
 * by name; a connect to any other address outside the allow-list is refused at once, even while
 * an answer is being learned. */
BPF_TABLE("lru_hash", struct dns_pending_key, u32, dns_pending, 8192);
BPF_HASH(allowed_names, struct dns_name_key, u32, 4096);
BPF_PROG_ARRAY(dns_tail, 1); /* user space puts dns_answer_to_policy here */
#define DNS_TAIL_ANSWER_TO_POLICY 0 /* value: enum dns_name_match bits */
BPF_PERCPU_ARRAY(dns_scratch, struct dns_event, 1);
/* The question name's label starts, and the hash of the suffix beginning at each byte: filled
 * without branches so the verifier need not walk every path of a 255-byte loop. */
struct name_scan {
	u64 hash_at[256];
	u8 starts[64];
	u32 end;
	u32 labels;
	struct dns_pending_key pending;
	u32 noted; /* counted in memory: a register that differs between paths would stop the
		    * verifier from merging them, and the paths would double at every offset */
};
BPF_PERCPU_ARRAY(name_scan_scratch, struct name_scan, 1);

#define DNS_HEADER_LEN 12
#define DNS_NAME_MAX 255
#define DNS_LABELS_MAX 64
#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL
/* Answer records are looked for in the message's first bytes: an address further on stays
 * unknown to the kernel, which then refuses a connect to it until user space has learned it. */
#define DNS_SCAN_MAX 512
#define DNS_TYPE_A 1
#define DNS_TYPE_AAAA 28

/* The part of struct user_msghdr / struct iovec read here (64-bit layout). */
struct dns_msghdr {
	u64 name;
	u32 namelen;
	u32 pad;
	u64 iov;
	u64 iovlen;
};
struct dns_iovec {
	u64 base;
	u64 len;
};
#define DNS_MMSGHDR_SIZE 64 /* struct mmsghdr: msghdr (56) + msg_len, padded */

static __always_inline u64 dns_socket_key(int fd)
{
	return (bpf_get_current_pid_tgid() & 0xffffffff00000000ULL) | (u32)fd;
}

/* A sockaddr (kernel copy, len bytes) as a resolver address: 1 if it is inet port 53. */
static __always_inline int resolver_of(const u8 *raw, u32 len, struct dns_socket *s)
{
	if (((raw[2] << 8) | raw[3]) != DNS_PORT)
		return 0;
	__builtin_memset(s, 0, sizeof(*s));
	s->port = DNS_PORT;
	return sockaddr_ip(raw, len, s->peer);
}

/* The same for a sockaddr in the caller's memory. */
static __always_inline int resolver_at(u64 uaddr, u32 len, struct dns_socket *s)
{
	u8 raw[28] = {};
	if (!uaddr || len < 8 || bpf_probe_read_user(raw, 16, (void *)uaddr))
		return 0;
	if (*(u16 *)raw == AF_INET6 && (len < 28 || bpf_probe_read_user(raw, 28, (void *)uaddr)))
		return 0;
	return resolver_of(raw, len, s);
}

/* connect(): a socket pointed at port 53 is a resolver socket from now on; pointed elsewhere,
 * it no longer is. Called by the connect tracepoint (network.c) with its copy of the address. */
static __always_inline void note_connect_for_dns(int fd, const u8 *raw, u32 len)
{
	u64 key = dns_socket_key(fd);
	struct dns_socket s;
	if (resolver_of(raw, len, &s))
		dns_sockets.update(&key, &s);
	else
		dns_sockets.delete(&key);
}

/* The resolver socket a send goes to: the destination given with it, else the connected one. */
static __always_inline struct dns_socket *resolver_for_send(int fd, u64 uaddr, u32 len, struct dns_socket *given)
{
	u64 key = dns_socket_key(fd);
	if (uaddr) {
		if (!resolver_at(uaddr, len, given))
			return NULL;
		dns_sockets.update(&key, given); /* its answers come back on this socket */
		return given;
	}
	return dns_sockets.lookup(&key);
}

/* Byte k of the question name (which starts right after the header). */
static __always_inline u8 name_byte(struct dns_event *e, u32 k)
{
	asm volatile("" : "+r"(k));
	return e->data[DNS_HEADER_LEN + (k & 0xff)];
}

/* Does the message's question name a host network.connect allows? The name's labels are
 * found, every suffix is hashed in one backward pass, then each suffix that starts at a label is
 * looked up: the whole name must be an exact entry, a shorter suffix a wildcard one. */
static __always_inline int asks_allowed_name(struct tracked_proc *t, struct dns_event *e)
{
	u32 n = bounded(e->len, SENSOR_DNS_MAX);
	if (n <= DNS_HEADER_LEN + 1)
		return 0;
	n -= DNS_HEADER_LEN;
	u32 zero = 0;
	struct name_scan *scan = name_scan_scratch.lookup(&zero);
	if (!scan)
		return 0;
	u32 end = 0, labels = 0;
	for (labels = 0; labels < DNS_LABELS_MAX; labels++) {
		if (end >= n || end >= DNS_NAME_MAX)
			return 0;
		u8 label = name_byte(e, end);
		if (label == 0)
			break;
		if (label > 63) /* a compression pointer has no place in a question */
			return 0;
		scan->starts[labels & (DNS_LABELS_MAX - 1)] = end;
		end += label + 1;
	}
	/* Through memory (volatile, so the compiler cannot forward the values): the verifier then
	 * forgets which iteration the walk ended in, instead of checking the rest once per ending. */
	scan->end = end;
	scan->labels = labels;
	end = *(volatile u32 *)&scan->end;
	labels = *(volatile u32 *)&scan->labels;
	if (labels == 0 || labels >= DNS_LABELS_MAX || end > DNS_NAME_MAX)
		return 0;
	u64 hash = FNV_OFFSET;
	/* No early exit, so one path through: past the first byte k wraps to bytes after the
	 * name, whose hashes are never looked up. */
	for (int i = 0; i < DNS_NAME_MAX; i++) {
		u32 k = (end - 1 - i) & 0xff;
		/* | 0x20 lower-cases letters and leaves digits, '-' and '.' alone, without a branch;
		 * user space hashes the same way (kernel_rules.name_hash). */
		hash = (hash ^ (name_byte(e, k) | 0x20)) * FNV_PRIME;
		scan->hash_at[k] = hash;
	}
	for (int j = 0; j < DNS_LABELS_MAX; j++) {
		if (j >= labels)
			break;
		u32 k = scan->starts[j];
		struct dns_name_key key = {.slot = t->slot, .hash = scan->hash_at[k & 0xff]};
		u32 *match = allowed_names.lookup(&key);
		if (match && (*match & (k == 0 ? DNS_NAME_EXACT : DNS_NAME_SUBDOMAINS)))
			return 1;
	}
	return 0;
}

/* 1 if end > len, without a branch: a branch on len at every offset would split the verifier's
 * paths by len's range (the barrier keeps the compiler from making one). */
static __always_inline u64 past_end(u64 len, u64 end)
{
	u64 d = len - end;
	asm volatile("" : "+r"(d));
	return d >> 63;
}

/* Notes in dns_pending the address of every A and AAAA record in an answer's first DNS_SCAN_MAX
 * bytes; returns how many. A record is recognised by its fixed fields wherever it starts (type,
 * class IN, a TTL, then rdlength 4 or 16), not by walking the records: the walk's branches per
 * record are more than the verifier accepts. A match inside other data only adds an address for
 * user space to judge; a record is never missed. Out-of-range and mismatching bytes are OR-ed
 * into one value, so each offset costs one branch per record type, and the paths meet again. */
static __always_inline u32 note_answer_addresses(u32 root_pid, struct dns_event *e)
{
	u32 zero = 0, one = 1;
	struct name_scan *scan = name_scan_scratch.lookup(&zero);
	if (!scan)
		return 0;
	scan->noted = 0;
	u64 len = e->len;
	for (u32 i = DNS_HEADER_LEN; i < DNS_SCAN_MAX; i++) {
		const u8 *r = &e->data[i];
		u64 fixed = r[0] | r[2] | (r[3] ^ 1) | r[8]; /* type < 256, class IN, rdlength < 256 */
		u64 v4 = fixed | (r[1] ^ DNS_TYPE_A) | (r[9] ^ 4) | past_end(len, i + 14);
		u64 v6 = fixed | (r[1] ^ DNS_TYPE_AAAA) | (r[9] ^ 16) | past_end(len, i + 26);
		if (v4 == 0) {
			__builtin_memset(&scan->pending, 0, sizeof(scan->pending));
			scan->pending.root_pid = root_pid;
			scan->pending.addr[10] = 0xff;
			scan->pending.addr[11] = 0xff;
			__builtin_memcpy(&scan->pending.addr[12], &r[10], 4);
			dns_pending.update(&scan->pending, &one);
			scan->noted++;
		}
		if (v6 == 0) {
			scan->pending.root_pid = root_pid;
			__builtin_memcpy(scan->pending.addr, &r[10], 16);
			dns_pending.update(&scan->pending, &one);
			scan->noted++;
		}
	}
	return scan->noted;
}

static __always_inline void send_dns(struct dns_event *e)
{
	emit(e, offsetof(struct dns_event, data) + bounded(e->len, SENSOR_DNS_MAX), EVENT_DNS);
}

/* An answer on a tracked resolver socket whose profile allows names (entered by tail call, the
 * message in dns_scratch): for an allowed name, its addresses are noted before the syscall
 * returns, so before the agent can connect to them. A program of its own, because the verifier
 * checks the name scan and the address scan apart only then (together they multiply). */
int dns_answer_to_policy(void *ctx)
{
	u32 zero = 0;
	struct dns_event *e = dns_scratch.lookup(&zero);
	struct tracked_proc *t = current_tracked();
	if (!e || !t)
		return 0;
	if (asks_allowed_name(t, e))
		e->pending = note_answer_addresses(t->root_pid, e);
	send_dns(e);
	return 0;
}

static __always_inline void emit_dns(void *ctx, struct tracked_proc *t, u32 direction, int fd,
				     const struct dns_socket *s, u64 buf, u64 total)
{
	u32 zero = 0;
	struct dns_event *e = dns_scratch.lookup(&zero);
	if (!e)
		return;
	fill_header(&e->hdr, EVENT_DNS, t->slot);
	e->fd = fd;
	e->direction = direction;
	__builtin_memcpy(e->peer, s->peer, 16);
	e->peer_port = s->port;
	e->total = total;
	u32 n = bounded(total, SENSOR_DNS_MAX);
	e->len = n;
	if (bpf_probe_read_user(e->data, n, (void *)buf))
		e->len = 0;
	e->pending = 0;
	e->reserved = 0;
	struct slot_policy *policy = policy_of(t);
	if (direction == DNS_ANSWER && policy && (policy->flags & ENFORCE_DNS_NAMES))
		dns_tail.call(ctx, DNS_TAIL_ANSWER_TO_POLICY);
	/* Not an answer to judge, or the tail call failed: no address is noted, so a connect to
	 * one is refused until user space has learned it. */
	send_dns(e);
}

/* Did an answer for an allowed name give this agent run this address, and user space has not
 * judged that answer yet? */
static __always_inline int resolved_pending(struct tracked_proc *t, struct slot_policy *policy, const u8 *addr)
{
	if (!(policy->flags & ENFORCE_DNS_NAMES))
		return 0;
	struct dns_pending_key key = {.root_pid = t->root_pid};
	__builtin_memcpy(key.addr, addr, 16);
	return dns_pending.lookup(&key) != NULL;
}

/* -- queries ---------------------------------------------------------------------------- */

static __always_inline void trace_send(struct tracked_proc *t, int fd, u64 buf, u64 len, u64 uaddr, u32 addrlen)
{
	struct dns_socket given;
	struct dns_socket *s = resolver_for_send(fd, uaddr, addrlen, &given);
	if (s)
		emit_dns(NULL, t, DNS_QUERY, fd, s, buf, len);
}

int on_sys_enter_sendto(struct tracepoint__syscalls__sys_enter_sendto *args)
{
	struct tracked_proc *t = current_tracked();
	if (t)
		trace_send(t, args->fd, (u64)args->buff, args->len, (u64)args->addr, args->addr_len);
	return 0;
}

int on_sys_enter_write(struct tracepoint__syscalls__sys_enter_write *args)
{
	struct tracked_proc *t = current_tracked();
	if (t)
		trace_send(t, args->fd, (u64)args->buf, args->count, 0, 0);
	return 0;
}

/* A msghdr in the caller's memory and its first buffer: 0 if both were read. */
static __always_inline int read_msghdr(u64 uhdr, struct dns_msghdr *hdr, struct dns_iovec *iov)
{
	if (bpf_probe_read_user(hdr, sizeof(*hdr), (void *)uhdr) || !hdr->iovlen)
		return -1;
	return bpf_probe_read_user(iov, sizeof(*iov), (void *)hdr->iov) ? -1 : 0;
}

/* The first buffer of a msghdr, with its destination. */
static __always_inline void trace_send_msghdr(struct tracked_proc *t, int fd, u64 uhdr)
{
	struct dns_msghdr hdr = {};
	struct dns_iovec iov = {};
	if (read_msghdr(uhdr, &hdr, &iov) == 0)
		trace_send(t, fd, iov.base, iov.len, hdr.name, hdr.namelen);
}

int on_sys_enter_sendmsg(struct tracepoint__syscalls__sys_enter_sendmsg *args)
{
	struct tracked_proc *t = current_tracked();
	if (t)
		trace_send_msghdr(t, args->fd, (u64)args->msg);
	return 0;
}

/* glibc sends the A and AAAA questions together with sendmmsg. */
int on_sys_enter_sendmmsg(struct tracepoint__syscalls__sys_enter_sendmmsg *args)
{
	struct tracked_proc *t = current_tracked();
	if (!t)
		return 0;
	trace_send_msghdr(t, args->fd, (u64)args->mmsg);
	if (args->vlen > 1)
		trace_send_msghdr(t, args->fd, (u64)args->mmsg + DNS_MMSGHDR_SIZE);
	return 0;
}

/* -- answers ---------------------------------------------------------------------------- */

/* Is fd a resolver socket of a tracked process? */
static __always_inline int tracked_resolver_socket(int fd)
{
	if (!current_tracked())
		return 0;
	u64 key = dns_socket_key(fd);
	return dns_sockets.lookup(&key) != NULL;
}

static __always_inline void start_receive(int fd, u64 buf, u64 cap, u64 from)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct dns_receive r = {.buf = buf, .cap = cap, .from = from, .fd = fd};
	dns_receives.update(&tid, &r);
}

static __always_inline void finish_receive(void *ctx, long ret)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct dns_receive *r = dns_receives.lookup(&tid);
	if (!r)
		return;
	struct dns_receive copy = *r;
	dns_receives.delete(&tid);
	struct tracked_proc *t = current_tracked();
	if (!t || ret <= 0)
		return;
	u64 key = dns_socket_key(copy.fd);
	struct dns_socket *s = dns_sockets.lookup(&key);
	if (!s)
		return;
	/* An unconnected socket says who sent the datagram: only a port-53 sender is an answer. */
	struct dns_socket sender;
	if (copy.from) {
		if (!resolver_at(copy.from, 28, &sender))
			return;
		s = &sender;
	}
	emit_dns(ctx, t, DNS_ANSWER, copy.fd, s, copy.buf, (u64)ret < copy.cap ? (u64)ret : copy.cap);
}

int on_sys_enter_recvfrom(struct tracepoint__syscalls__sys_enter_recvfrom *args)
{
	if (tracked_resolver_socket(args->fd))
		start_receive(args->fd, (u64)args->ubuf, args->size, (u64)args->addr);
	return 0;
}

int on_sys_exit_recvfrom(struct tracepoint__syscalls__sys_exit_recvfrom *args)
{
	finish_receive(args, args->ret);
	return 0;
}

int on_sys_enter_read(struct tracepoint__syscalls__sys_enter_read *args)
{
	if (tracked_resolver_socket(args->fd))
		start_receive(args->fd, (u64)args->buf, args->count, 0);
	return 0;
}

int on_sys_exit_read(struct tracepoint__syscalls__sys_exit_read *args)
{
	finish_receive(args, args->ret);
	return 0;
}

int on_sys_enter_recvmsg(struct tracepoint__syscalls__sys_enter_recvmsg *args)
{
	struct dns_msghdr hdr = {};
	struct dns_iovec iov = {};
	if (!tracked_resolver_socket(args->fd) || read_msghdr((u64)args->msg, &hdr, &iov))
		return 0;
	start_receive(args->fd, iov.base, iov.len, hdr.name);
	return 0;
}

int on_sys_exit_recvmsg(struct tracepoint__syscalls__sys_exit_recvmsg *args)
{
	finish_receive(args, args->ret);
	return 0;
}

int on_sys_enter_close(struct tracepoint__syscalls__sys_enter_close *args)
{
	if (!current_tracked())
		return 0;
	u64 key = dns_socket_key(args->fd);
	dns_sockets.delete(&key);
	return 0;
}
