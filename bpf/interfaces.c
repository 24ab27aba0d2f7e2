/* Interfaces that bypass the traced syscalls (events.h, enum interface). Seen at syscall entry;
 * for a profile that does not list the interface the kernel acts there, before anything
 * submitted through it can be used. */

static __always_inline int trace_interface(u32 interface, s32 target_pid)
{
	struct tracked_proc *t = current_tracked();
	if (!t)
		return 0;
	struct slot_policy *policy = policy_of(t);
	struct interface_event e = {};
	fill_header(&e.hdr, EVENT_INTERFACE, t->slot);
	e.interface = interface;
	e.allowed = policy && (policy->interfaces_allowed & interface);
	e.target_pid = target_pid;
	if (policy && !e.allowed && (policy->flags & ENFORCE_INTERFACES))
		e.hdr.kernel_action = act(t, policy->interface_action);
	emit(&e, sizeof(e), EVENT_INTERFACE);
	return 0;
}

#ifdef HAVE_sys_enter_bpf
int on_sys_enter_bpf(struct tracepoint__syscalls__sys_enter_bpf *args)
{
	return trace_interface(INTERFACE_BPF, -1);
}
#endif

/* -- the sensor defends itself ------------------------------------------------------------ */

BPF_HASH(sensor_tasks, u32, u32, 4096); /* the sensor's thread ids (a signal to any of them counts) */
/* Agents that aimed at the sensor (tgid -> signal), noted before their signal is sent: the
 * daemon ignores a stop signal from them even when they are dead and untracked by then. */
BPF_TABLE("lru_hash", u32, u32, sensor_attackers, 1024);

/* A tracked agent aiming at the sensor: killed at the syscall whatever its profile says (unless
 * the daemon runs --audit-only). The syscall itself still runs (no LSM hook here): SIGKILL still
 * reaches the sensor, which systemd restarts; the agent dies with it. */
static __always_inline int defend(s32 target, u32 sig)
{
	struct tracked_proc *t = current_tracked();
	if (!t)
		return 0;
	u32 zero = 0;
	struct sensor_self *self = sensor_self_map.lookup(&zero);
	if (!self || !self->tgid)
		return 0;
	u32 tid = target;
	int hit = target == -1 || (target < -1 && (u32)(-target) == self->pgid) || sensor_tasks.lookup(&tid);
	if (!hit)
		return 0;
	u32 attacker = bpf_get_current_pid_tgid() >> 32;
	sensor_attackers.update(&attacker, &sig);
	struct interface_event e = {};
	fill_header(&e.hdr, EVENT_INTERFACE, t->slot);
	e.interface = INTERFACE_SENSOR;
	e.target_pid = target;
	e.signal = sig;
	if (sensor_enforces())
		e.hdr.kernel_action = act(t, KERNEL_ACTION_KILL);
	emit(&e, sizeof(e), EVENT_INTERFACE);
	return 0;
}

int on_sys_enter_kill(struct tracepoint__syscalls__sys_enter_kill *args)
{
	return args->sig ? defend(args->pid, args->sig) : 0; /* signal 0 only asks whether it exists */
}

int on_sys_enter_tkill(struct tracepoint__syscalls__sys_enter_tkill *args)
{
	return args->sig ? defend(args->pid, args->sig) : 0;
}

int on_sys_enter_tgkill(struct tracepoint__syscalls__sys_enter_tgkill *args)
{
	return args->sig ? defend(args->tgid, args->sig) : 0;
}

#ifdef HAVE_sys_enter_pidfd_open
int on_sys_enter_pidfd_open(struct tracepoint__syscalls__sys_enter_pidfd_open *args)
{
	return defend(args->pid, 0); /* a pidfd is how pidfd_send_signal reaches a process */
}
#endif

#ifdef HAVE_sys_enter_io_uring_setup
int on_sys_enter_io_uring_setup(struct tracepoint__syscalls__sys_enter_io_uring_setup *args)
{
	return trace_interface(INTERFACE_IO_URING, -1);
}
#endif

#ifdef HAVE_sys_enter_io_uring_enter
int on_sys_enter_io_uring_enter(struct tracepoint__syscalls__sys_enter_io_uring_enter *args)
{
	return trace_interface(INTERFACE_IO_URING, -1);
}
#endif

#ifdef HAVE_sys_enter_io_uring_register
int on_sys_enter_io_uring_register(struct tracepoint__syscalls__sys_enter_io_uring_register *args)
{
	return trace_interface(INTERFACE_IO_URING, -1);
}
#endif

#ifdef HAVE_sys_enter_name_to_handle_at
int on_sys_enter_name_to_handle_at(struct tracepoint__syscalls__sys_enter_name_to_handle_at *args)
{
	return trace_interface(INTERFACE_FILE_HANDLES, -1);
}
#endif

#ifdef HAVE_sys_enter_open_by_handle_at
int on_sys_enter_open_by_handle_at(struct tracepoint__syscalls__sys_enter_open_by_handle_at *args)
{
	return trace_interface(INTERFACE_FILE_HANDLES, -1);
}
#endif

#ifdef HAVE_sys_enter_process_vm_readv
int on_sys_enter_process_vm_readv(struct tracepoint__syscalls__sys_enter_process_vm_readv *args)
{
	return trace_interface(INTERFACE_PROCESS_VM, args->pid);
}
#endif

#ifdef HAVE_sys_enter_process_vm_writev
int on_sys_enter_process_vm_writev(struct tracepoint__syscalls__sys_enter_process_vm_writev *args)
{
	return trace_interface(INTERFACE_PROCESS_VM, args->pid);
}
#endif

#ifdef HAVE_sys_enter_ptrace
int on_sys_enter_ptrace(struct tracepoint__syscalls__sys_enter_ptrace *args)
{
	return trace_interface(INTERFACE_PTRACE, args->pid);
}
#endif

#ifdef HAVE_sys_enter_pidfd_getfd
int on_sys_enter_pidfd_getfd(struct tracepoint__syscalls__sys_enter_pidfd_getfd *args)
{
	return trace_interface(INTERFACE_PIDFD_GETFD, -1);
}
#endif
