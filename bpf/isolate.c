/* Network cut for quarantined processes (sensor/quarantine.py); built on its own with bcc, not
 * part of the sensor's tracepoint program.
 *
 * A cgroup_skb program sees a packet through the cgroup of its *socket*, and a socket's cgroup is
 * fixed when the socket is created. So two programs are needed:
 *
 * as_isolate_all  - attached (ingress and egress) to an incident cgroup: drops every packet of
 *                   sockets created there, i.e. anything a quarantined process opens afterwards.
 * as_isolate_sock - attached (ingress and egress, multi) to the cgroup v2 root while an isolation
 *                   holds older sockets: drops the packets of sockets whose cookie user space put
 *                   in isolated_sockets (connections and listeners opened before the move, which
 *                   still belong to the process's original cgroup). Everything else passes.
 *
 * Returning 0 from a cgroup_skb program drops the packet, 1 lets it through. */

BPF_HASH(isolated_sockets, u64, u64, 16384); /* socket cookie -> incident tag */

int as_isolate_all(struct __sk_buff *skb)
{
	return 0;
}

int as_isolate_sock(struct __sk_buff *skb)
{
	u64 cookie = bpf_get_socket_cookie(skb);

	return isolated_sockets.lookup(&cookie) ? 0 : 1;
}
