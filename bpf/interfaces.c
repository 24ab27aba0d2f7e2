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
