/* Listeners: an agent accepting connections is a backdoor. bind() and listen() are reported
 * from their tracepoints; a bind to a local address the profile's network.listen does not allow
 * is refused inside the call by cgroup bind hooks (EPERM), so no listener ever exists on it. */

static __always_inline int trace_socket_call(u32 call, int fd, const void *addr, int addrlen)
{
	struct tracked_proc *t = current_tracked();
	struct connect_event *e = t ? socket_event(t, call, fd, addr, addrlen) : NULL;
	if (e)
		submit_socket_event(e);
	return 0;
}

int on_sys_enter_bind(struct tracepoint__syscalls__sys_enter_bind *args)
{
	return trace_socket_call(NET_CALL_BIND, args->fd, (void *)args->umyaddr, args->addrlen);
}

int on_sys_enter_listen(struct tracepoint__syscalls__sys_enter_listen *args)
{
	return trace_socket_call(NET_CALL_LISTEN, args->fd, NULL, 0);
}

static __always_inline int refuse_bind_unless_allowed(struct bpf_sock_addr *ctx, int v6)
{
	struct tracked_proc *t = current_tracked();
	if (!t)
		return 1;
	struct slot_policy *policy = policy_of(t);
	if (!policy || !(policy->flags & ENFORCE_LISTEN))
		return 1;
	struct addr_lpm_key key = {.prefixlen = 32 + 128, .slot = t->slot};
	sock_addr_ip(ctx, v6, key.addr);
	struct port_ranges *ranges = allowed_binds.lookup(&key);
	if (ranges && port_allowed(ranges, bpf_ntohs(ctx->user_port)))
		return 1;
	act(t, policy->listen_action);
	return 0;
}

int listen_bind4(struct bpf_sock_addr *ctx)
{
	return refuse_bind_unless_allowed(ctx, 0);
}

int listen_bind6(struct bpf_sock_addr *ctx)
{
	return refuse_bind_unless_allowed(ctx, 1);
}
