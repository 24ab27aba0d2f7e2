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

/* Answers for allowed names emitted per agent run (key: root pid), and the last one user
 * space has learned from (written by user space). While they differ, a connect to an address
 * outside the allow-list may be to that name: the kernel leaves it to user space. An answer
 * for any other name opens no such window: connects to its addresses are refused at once. */
BPF_TABLE("lru_hash", u32, u64, dns_answers, 16384);
BPF_TABLE("lru_hash", u32, u64, dns_learned, 16384);
BPF_HASH(allowed_names, struct dns_name_key, u32, 4096); /* value: enum dns_name_match bits */
BPF_PERCPU_ARRAY(dns_scratch, struct dns_event, 1);
/* The question name's label starts, and the hash of the suffix beginning at each byte: filled
 * without branches so the verifier need not walk every path of a 255-byte loop. */
struct name_scan {
	u64 hash_at[256];
	u8 starts[64];
	u32 end;
	u32 labels;
};
BPF_PERCPU_ARRAY(name_scan_scratch, struct name_scan, 1);

#define DNS_HEADER_LEN 12
#define DNS_NAME_MAX 255
#define DNS_LABELS_MAX 64
#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

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
	u32 n = e->len;
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
	/* Through memory: the verifier then forgets which iteration the walk ended in, instead of
	 * checking the rest once per possible ending. */
	scan->end = end;
	scan->labels = labels;
	end = scan->end;
	labels = scan->labels;
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

static __always_inline void emit_dns(struct tracked_proc *t, u32 direction, int fd, const struct dns_socket *s,
				     u64 buf, u64 total)
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
	e->seq = 0;
	struct slot_policy *policy = policy_of(t);
	if (direction == DNS_ANSWER && policy && (policy->flags & ENFORCE_DNS_NAMES) && asks_allowed_name(t, e)) {
		/* Numbered before it is sent: if the ring buffer is full the number is skipped, and the
		 * run stays "answer pending" until user space learns from a later one (fails to user
		 * space's judgement, never to an open door). */
		u32 root = t->root_pid;
		u64 none = 0;
		dns_answers.insert(&root, &none);
		u64 *count = dns_answers.lookup(&root);
		if (!count)
			return;
		e->seq = __sync_fetch_and_add(count, 1) + 1;
	}
	emit(e, offsetof(struct dns_event, data) + bounded(e->len, SENSOR_DNS_MAX), EVENT_DNS);
}

/* Has this agent run received an answer user space has not learned from yet? */
static __always_inline int dns_answer_unlearned(struct tracked_proc *t, struct slot_policy *policy)
{
	if (!(policy->flags & ENFORCE_DNS_NAMES))
		return 0;
	u32 root = t->root_pid;
	u64 *answers = dns_answers.lookup(&root);
	if (!answers)
		return 0;
	u64 *learned = dns_learned.lookup(&root);
	return !learned || *learned < *answers;
}

/* -- queries ---------------------------------------------------------------------------- */

static __always_inline void trace_send(struct tracked_proc *t, int fd, u64 buf, u64 len, u64 uaddr, u32 addrlen)
{
	struct dns_socket given;
	struct dns_socket *s = resolver_for_send(fd, uaddr, addrlen, &given);
	if (s)
		emit_dns(t, DNS_QUERY, fd, s, buf, len);
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

static __always_inline void finish_receive(long ret)
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
	emit_dns(t, DNS_ANSWER, copy.fd, s, copy.buf, (u64)ret < copy.cap ? (u64)ret : copy.cap);
}

int on_sys_enter_recvfrom(struct tracepoint__syscalls__sys_enter_recvfrom *args)
{
	if (tracked_resolver_socket(args->fd))
		start_receive(args->fd, (u64)args->ubuf, args->size, (u64)args->addr);
	return 0;
}

int on_sys_exit_recvfrom(struct tracepoint__syscalls__sys_exit_recvfrom *args)
{
	finish_receive(args->ret);
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
	finish_receive(args->ret);
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
	finish_receive(args->ret);
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
