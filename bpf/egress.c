/* cgroup sock_addr hooks, attached at the cgroup v2 root: they run inside connect() and
 * sendto()/sendmsg() in the caller's context and can refuse the call (EPERM), which a
 * tracepoint cannot: a kill at syscall entry still lets a UDP datagram out. For tracked agents
 * whose profile enforces network.connect, a destination outside the allow-list is refused;
 * every other process passes after one map lookup. */

static __always_inline int refuse_unless_allowed(struct bpf_sock_addr *ctx, u32 call, int v6)
{
	struct tracked_proc *t = current_tracked();
	if (!t)
		return 1;
	struct slot_policy *policy = policy_of(t);
	if (!policy || !(policy->flags & ENFORCE_CONNECT))
		return 1;
	u8 addr[16] = {};
	sock_addr_ip(ctx, v6, addr);
	u16 port = bpf_ntohs(ctx->user_port);
	if (destination_allowed(t->slot, addr, port))
		return 1;
	/* An address a DNS answer may just have given: user space judges it by name. */
	int deferred = resolved_pending(t, policy, addr);
	/* Connects were reported by the tracepoint already; a datagram is reported here. */
	if (call == NET_CALL_SENDMSG) {
		struct connect_event *e = events.ringbuf_reserve(sizeof(struct connect_event));
		if (!e) {
			lost(EVENT_CONNECT);
		} else {
			fill_header(&e->hdr, EVENT_CONNECT, t->slot);
			e->fd = -1;
			e->call = call;
			e->refused = !deferred;
			__builtin_memset(e->addr, 0, sizeof(e->addr));
			u16 *family = (u16 *)e->addr;
			u16 nport = ctx->user_port;
			if (v6) {
				*family = AF_INET6;
				__builtin_memcpy(&e->addr[2], &nport, 2);
				__builtin_memcpy(&e->addr[8], addr, 16);
				e->addrlen = 28;
			} else {
				*family = AF_INET;
				__builtin_memcpy(&e->addr[2], &nport, 2);
				__builtin_memcpy(&e->addr[4], &addr[12], 4);
				e->addrlen = 16;
			}
			e->hdr.kernel_action = deferred ? KERNEL_ACTION_NONE : act(t, policy->connect_action);
			events.ringbuf_submit(e, 0);
			count(EVENT_CONNECT);
		}
	}
	return deferred;
}

int egress_connect4(struct bpf_sock_addr *ctx)
{
	return refuse_unless_allowed(ctx, NET_CALL_CONNECT, 0);
}

int egress_connect6(struct bpf_sock_addr *ctx)
{
	return refuse_unless_allowed(ctx, NET_CALL_CONNECT, 1);
}

int egress_sendmsg4(struct bpf_sock_addr *ctx)
{
	return refuse_unless_allowed(ctx, NET_CALL_SENDMSG, 0);
}

int egress_sendmsg6(struct bpf_sock_addr *ctx)
{
	return refuse_unless_allowed(ctx, NET_CALL_SENDMSG, 1);
}
