/* Outbound connections: the caller's sockaddr is copied raw and decoded in user space, so every
 * address family (IPv4, IPv6, unix paths and abstract names) takes the same path. */

static __always_inline int port_allowed(struct port_ranges *ranges, u16 port)
{
#pragma unroll
	for (int i = 0; i < SENSOR_PORT_RANGES; i++) {
		if (i < ranges->count && port >= ranges->lo[i] && port <= ranges->hi[i])
			return 1;
	}
	return 0;
}

/* An inet connect to a destination the profile does not allow: the kernel acts before the
 * connect returns, so no byte can be sent on it. Address and port are exactly what the kernel
 * will use, so this decision is conclusive (unlike a path, an address has no other spelling
 * but the v4-mapped one, which is folded here). */
/* Is this destination (addr: 16 bytes, IPv4 as ::ffff:a.b.c.d; port in host order) allowed for
 * the slot? Shared by the connect tracepoint and the cgroup egress hooks (egress.c). */
static __always_inline int destination_allowed(u32 slot, const u8 *addr, u16 port)
{
	struct addr_lpm_key key = {.prefixlen = 32 + 128, .slot = slot};
	__builtin_memcpy(key.addr, addr, 16);
	struct port_ranges *ranges = allowed_dests.lookup(&key);
	return ranges && port_allowed(ranges, port);
}

/* The address a cgroup sock_addr hook sees, as the 16 bytes the destination tries use (IPv4 as
 * ::ffff:a.b.c.d). The ctx fields are read one word at a time, as the verifier requires. */
static __always_inline void sock_addr_ip(struct bpf_sock_addr *ctx, int v6, u8 *addr)
{
	if (v6) {
		u32 ip6[4];
		ip6[0] = ctx->user_ip6[0];
		ip6[1] = ctx->user_ip6[1];
		ip6[2] = ctx->user_ip6[2];
		ip6[3] = ctx->user_ip6[3];
		__builtin_memcpy(addr, ip6, 16);
	} else {
		u32 ip4 = ctx->user_ip4;
		addr[10] = 0xff;
		addr[11] = 0xff;
		__builtin_memcpy(&addr[12], &ip4, 4);
	}
}

static __always_inline u32 enforce_connect(struct tracked_proc *t, struct connect_event *e)
{
	struct slot_policy *policy = policy_of(t);
	if (!policy || !(policy->flags & ENFORCE_CONNECT))
		return KERNEL_ACTION_NONE;
	u8 addr[16] = {};
	if (!sockaddr_ip(e->addr, e->addrlen, addr))
		return KERNEL_ACTION_NONE; /* unix and others: user space */
	if (destination_allowed(t->slot, addr, (e->addr[2] << 8) | e->addr[3]) || resolved_pending(t, policy, addr))
		return KERNEL_ACTION_NONE;
	/* The cgroup connect hook (egress.c) refuses this connect too, when it is attached. */
	return act(t, policy->connect_action);
}

/* A socket call's event, reserved and filled (address copied raw from the caller), or NULL when
 * the ring buffer is full (counted). The caller submits it. */
static __always_inline struct connect_event *socket_event(struct tracked_proc *t, u32 call, int fd,
							   const void *addr, int addrlen)
{
	struct connect_event *e = events.ringbuf_reserve(sizeof(struct connect_event));
	if (!e) {
		lost(EVENT_CONNECT);
		return NULL;
	}
	fill_header(&e->hdr, EVENT_CONNECT, t->slot);
	e->fd = fd;
	e->addrlen = addr ? addrlen : 0;
	e->call = call;
	e->refused = 0;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	if (addr)
		bpf_probe_read_user(e->addr, bounded((u32)addrlen, SENSOR_SOCKADDR_MAX), addr);
	return e;
}

static __always_inline void submit_socket_event(struct connect_event *e)
{
	events.ringbuf_submit(e, wakeup_flags());
	count(EVENT_CONNECT);
}

int on_sys_enter_connect(struct tracepoint__syscalls__sys_enter_connect *args)
{
	struct tracked_proc *t = current_tracked();
	if (!t)
		return 0;
	struct connect_event *e = socket_event(t, NET_CALL_CONNECT, args->fd, (void *)args->uservaddr,
					       args->addrlen);
	if (!e)
		return 0;
	note_connect_for_dns(args->fd, e->addr, e->addrlen);
	e->hdr.kernel_action = enforce_connect(t, e);
	submit_socket_event(e);
	return 0;
}
