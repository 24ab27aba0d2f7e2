/* Outbound connections: the caller's sockaddr is copied raw and decoded in user space, so every
 * address family (IPv4, IPv6, unix paths and abstract names) takes the same path. */

int on_sys_enter_connect(struct tracepoint__syscalls__sys_enter_connect *args)
{
	struct tracked_proc *t = current_tracked();
	if (!t)
		return 0;

	struct connect_event *e = events.ringbuf_reserve(sizeof(struct connect_event));
	if (!e) {
		count(COUNTER_DROP_BASE + EVENT_CONNECT);
		return 0;
	}
	fill_header(&e->hdr, EVENT_CONNECT, t->slot);
	e->fd = args->fd;
	e->addrlen = args->addrlen;
	__builtin_memset(e->addr, 0, sizeof(e->addr));
	bpf_probe_read_user(e->addr, bounded((u32)args->addrlen, SENSOR_SOCKADDR_MAX),
			    (void *)args->uservaddr);
	events.ringbuf_submit(e, 0);
	count(EVENT_CONNECT);
	return 0;
}
