/* Process lifecycle: exec (every process, so user space can recognise new agents), fork
 * (tracking is inherited in the kernel before the child runs) and exit (entries leave the map). */

/* A tracked process asking to run a program its profile denies (exec_deny): the kernel acts at
 * execve entry, so the program never runs an instruction, and the event is sent now because the
 * exec may never complete. */
static __always_inline int exec_denied(struct exec_event *e, long n)
{
	struct tracked_proc *t = current_tracked();
	if (!t)
		return 0;
	struct slot_policy *policy = policy_of(t);
	if (!policy || !(policy->flags & ENFORCE_EXEC))
		return 0;
	struct path_lpm_key *key = path_key(t, e->filename, n);
	if (!key || !denied_execs.lookup(key))
		return 0;
	fill_header(&e->hdr, EVENT_EXEC, t->slot);
	e->hdr.kernel_action = act(t, policy->exec_action);
	e->flags |= EXEC_DENIED;
	emit(e, sizeof(*e), EVENT_EXEC);
	return 1;
}

/* First half of exec: the filename and argv are user memory that is gone after the exec, so copy
 * them now and emit at sched_process_exec, which only fires for an exec that succeeded. */
static __always_inline int exec_enter(int dirfd, const char *filename,
				      const char *const *argv, u32 flags)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!execs_of_everyone() && !lookup_tracked(pid_tgid >> 32))
		return 0;
	u32 zero = 0;
	struct exec_event *e = exec_scratch.lookup(&zero);
	if (!e)
		return 0;

	u32 tid = (u32)pid_tgid;
	e->old_tid = tid;
	e->flags = flags;
	e->dirfd = dirfd;
	e->argc = 0;
	e->matched_slot = SENSOR_NO_SLOT;

	int n = bpf_probe_read_user_str(e->filename, sizeof(e->filename), filename);
	e->filename_len = n > 0 ? n : 0;

	/* Exact executable paths that start an agent are matched here, so such an agent is tracked
	 * from its first instruction. The key is zeroed first: read_user_str does not pad. */
	struct exec_key key = {};
	long key_len = bpf_probe_read_user_str(key.path, sizeof(key.path), filename);
	/* A name that fills the key may have been cut: it must not match a shorter registered path
	 * (user space registers only paths shorter than the key). */
	if (key_len > 0 && key_len < sizeof(key.path)) {
		u32 *slot = exec_match.lookup(&key);
		if (slot)
			e->matched_slot = *slot;
	}

	u32 off = 0;
#pragma unroll
	for (int i = 0; i < SENSOR_MAX_ARGS; i++) {
		const char *arg = NULL;
		if (bpf_probe_read_user(&arg, sizeof(arg), &argv[i]) || !arg)
			goto done;
		if (off > SENSOR_ARGV_MAX - SENSOR_ARG_CHUNK) {
			e->flags |= EXEC_ARGV_TRUNCATED;
			goto done;
		}
		int len = bpf_probe_read_user_str(&e->argv[off], SENSOR_ARG_CHUNK, arg);
		if (len <= 0)
			goto done;
		if (string_was_cut(arg, len, SENSOR_ARG_CHUNK))
			e->flags |= EXEC_ARGV_TRUNCATED;
		off += len;
		e->argc++;
	}
	{
		const char *more = NULL;
		if (!bpf_probe_read_user(&more, sizeof(more), &argv[SENSOR_MAX_ARGS]) && more)
			e->flags |= EXEC_ARGV_TRUNCATED;
	}
done:
	e->argv_len = off;
	if (exec_denied(e, n))
		return 0;
	exec_stash.update(&tid, e);
	return 0;
}

int on_sys_enter_execve(struct tracepoint__syscalls__sys_enter_execve *args)
{
	return exec_enter(AT_FDCWD, args->filename, args->argv, 0);
}

static __always_inline int exec_failed(long ret)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	if (ret < 0)
		exec_stash.delete(&tid);
	return 0;
}

int on_sys_exit_execve(struct tracepoint__syscalls__sys_exit_execve *args)
{
	return exec_failed(args->ret);
}

#ifdef HAVE_sys_enter_execveat
int on_sys_enter_execveat(struct tracepoint__syscalls__sys_enter_execveat *args)
{
	return exec_enter(args->fd, args->filename, args->argv, EXEC_EXECVEAT);
}

int on_sys_exit_execveat(struct tracepoint__syscalls__sys_exit_execveat *args)
{
	return exec_failed(args->ret);
}
#endif

int on_sched_process_exec(struct tracepoint__sched__sched_process_exec *args)
{
	u32 old_tid = args->old_pid;
	u32 pid = args->pid;
	struct exec_event *e = exec_stash.lookup(&old_tid);
	if (old_tid != pid)
		open_stash.delete(&old_tid); /* the thread took its leader's id: its own is gone */

	if (!e) {
		u32 zero = 0;
		e = exec_scratch.lookup(&zero);
		if (!e)
			return 0;
		e->old_tid = old_tid;
		e->flags = EXEC_NO_ARGS;
		e->dirfd = AT_FDCWD;
		e->argc = 0;
		e->matched_slot = SENSOR_NO_SLOT;
		e->filename_len = 0;
		e->argv_len = 0;
		e->filename[0] = 0;
	}

	u32 slot = SENSOR_NO_SLOT;
	struct tracked_proc *t = lookup_tracked(pid);
	if (t) {
		/* Broker rights come with the program and go with the next exec. */
		long n = e->filename_len;
		struct path_lpm_key *key = path_key(t, e->filename, n);
		u32 *bit = key ? broker_execs.lookup(key) : NULL;
		t->brokers = bit ? *bit : 0;
		if (t->flags & TRACKED_PENDING_EXEC) {
			t->flags &= ~TRACKED_PENDING_EXEC;
			e->flags |= EXEC_AGENT_START;
		}
		slot = t->slot;
	} else if (e->matched_slot != SENSOR_NO_SLOT) {
		struct tracked_proc fresh = {.slot = e->matched_slot, .root_pid = pid};
		add_tracked(pid, &fresh);
		slot = fresh.slot;
		e->flags |= EXEC_AGENT_START | EXEC_KERNEL_MATCHED;
	} else if (!execs_of_everyone()) {
		exec_stash.delete(&old_tid);
		return 0;
	}

	fill_header(&e->hdr, EVENT_EXEC, slot);
	/* Another process's exec, sent only so user space can match agents by selectors: no wakeup
	 * for each (a host runs many); an agent's own exec wakes user space at once. */
	if (slot == SENSOR_NO_SLOT)
		emit_quiet(e, sizeof(*e), EVENT_EXEC);
	else
		emit(e, sizeof(*e), EVENT_EXEC);
	exec_stash.delete(&old_tid);
	return 0;
}

/* fork and thread creation both fire sched_process_fork; only the clone flags tell them apart,
 * and the tracepoint does not carry them, so remember them at syscall entry. Every
 * process-creating syscall rewrites the entry (fork and vfork clear it), so the flags of a clone
 * that failed can never make a later fork look like a thread and escape tracking. */
static __always_inline int forget_clone_flags(void)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	clone_flags.delete(&tid);
	return 0;
}

#ifdef HAVE_sys_enter_fork
int on_sys_enter_fork(struct tracepoint__syscalls__sys_enter_fork *args)
{
	return forget_clone_flags();
}
#endif

#ifdef HAVE_sys_enter_vfork
int on_sys_enter_vfork(struct tracepoint__syscalls__sys_enter_vfork *args)
{
	return forget_clone_flags();
}
#endif

int on_sys_enter_clone(struct tracepoint__syscalls__sys_enter_clone *args)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!lookup_tracked(tgid))
		return 0;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 flags = args->clone_flags;
	clone_flags.update(&tid, &flags);
	return 0;
}

#ifdef HAVE_sys_enter_clone3
int on_sys_enter_clone3(struct tracepoint__syscalls__sys_enter_clone3 *args)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!lookup_tracked(tgid))
		return 0;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	u64 flags = 0; /* struct clone_args starts with the u64 flags */
	bpf_probe_read_user(&flags, sizeof(flags), (void *)args->uargs);
	clone_flags.update(&tid, &flags);
	return 0;
}
#endif

int on_sched_process_fork(struct tracepoint__sched__sched_process_fork *args)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tgid = pid_tgid >> 32;
	u32 tid = (u32)pid_tgid;
	struct tracked_proc *t = lookup_tracked(tgid);
	if (!t)
		return 0;

	u64 *flags = clone_flags.lookup(&tid);
	int is_thread = flags && (*flags & CLONE_THREAD);
	clone_flags.delete(&tid);
	if (is_thread)
		return 0;

	u32 child = args->child_pid;
	struct tracked_proc inherited = *t;
	add_tracked(child, &inherited);
	if (t->flags & TRACKED_PENDING_EXEC)
		return 0;

	struct fork_event e = {};
	fill_header(&e.hdr, EVENT_FORK, t->slot);
	e.child_pid = child;
	e.parent_pid = tgid;
	emit(&e, sizeof(e), EVENT_FORK);
	return 0;
}

int on_sched_process_exit(struct tracepoint__sched__sched_process_exit *args)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tgid = pid_tgid >> 32;
	u32 tid = (u32)pid_tgid;
	open_stash.delete(&tid); /* every thread's: one untracked since its first open has one too */
#ifdef HAVE_FIELD_sched_process_exit_group_dead
	if (!args->group_dead)
		return 0;
#else
	if ((u32)pid_tgid != tgid)
		return 0;
#endif
	struct tracked_proc *t = lookup_tracked(tgid);
	if (!t)
		return 0;
	if (!(t->flags & TRACKED_PENDING_EXEC)) {
		struct exit_event e = {};
		fill_header(&e.hdr, EVENT_EXIT, t->slot);
		emit(&e, sizeof(e), EVENT_EXIT);
	}
	remove_tracked(tgid);
	return 0;
}
