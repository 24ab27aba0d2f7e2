/* The open family: built at syscall entry, where the name is read and the kernel acts, and sent
 * at exit with the result, so an attempt is seen even when it fails, as one event. */

/* The first len bytes of the little-endian word w are s (len <= 8, s a literal: folded). */
static __always_inline int word_is(u64 w, const char *s, int len)
{
	u64 want = 0;
#pragma unroll
	for (int k = 0; k < 8; k++)
		if (k < len)
			want |= (u64)(u8)s[k] << (8 * k);
	u64 mask = len == 8 ? ~0ULL : (1ULL << (8 * len)) - 1;
	return (w & mask) == want;
}

/* Index just past a run of up to 10 digits at path[i], and their value in *value; i if none. */
static __always_inline u32 skip_number(const char *path, u32 i, u32 *value)
{
	u32 v = 0, end = i;
#pragma unroll
	for (int k = 0; k < 10; k++) {
		char c = path[(i + k) & (SENSOR_PATH_MAX - 1)];
		if (c < '0' || c > '9')
			break;
		v = v * 10 + (c - '0');
		end = i + k + 1;
	}
	*value = v;
	return end;
}

/* /proc/PID[/task/TID]/{environ,mem,maps,smaps,pagemap,auxv,stack,cmdline} of another process:
 * tokens live there, so it is secret access whatever the profile lists (correlate.PROCESS_MEMORY
 * judges every other spelling in user space). */
static __always_inline int names_other_process_memory(const char *path, long n)
{
	u64 head = 0;
	if (n < 10)
		return 0;
	__builtin_memcpy(&head, path, 8);
	if (!word_is(head, "/proc/", 6))
		return 0;
	u32 pid = 0, tid = 0;
	u32 i = skip_number(path, 6, &pid);
	if (i == 6 || pid == bpf_get_current_pid_tgid() >> 32)
		return 0;
	u64 w = 0;
	__builtin_memcpy(&w, &path[i & 63], 8);
	if (word_is(w, "/task/", 6)) {
		u32 j = skip_number(path, i + 6, &tid);
		if (j == i + 6)
			return 0;
		i = j;
	}
	__builtin_memcpy(&w, &path[(i + 1) & 63], 8);
	if (path[i & 63] != '/')
		return 0;
	return word_is(w, "environ", 8) || word_is(w, "mem", 4) || word_is(w, "maps", 5) ||
	       word_is(w, "smaps", 6) || word_is(w, "pagemap", 8) || word_is(w, "auxv", 5) ||
	       word_is(w, "stack", 6) || word_is(w, "cmdline", 8);
}

/* A write to the sensor's own files, whatever the profile; an absolute path that is a secret of
 * the agent's profile (unless the process runs one of the secret's brokers), or another
 * process's memory: the kernel acts before the open returns.
 * Relative paths and symlinks are not resolved here: user space judges every spelling. */
static __always_inline void enforce_secrets(struct tracked_proc *t, struct open_event *e, long n)
{
	if ((e->flags & (O_WRONLY | O_RDWR | O_CREAT | O_TRUNC)) && is_sensor_file(e->path, n)) {
		if (sensor_enforces())
			e->hdr.kernel_action = act(t, KERNEL_ACTION_KILL);
		return;
	}
	struct slot_policy *policy = policy_of(t);
	if (!policy || !(policy->flags & ENFORCE_SECRETS))
		return;
	struct path_lpm_key *key = path_key(t, e->path, n);
	u32 *brokers = key ? secret_paths.lookup(key) : NULL;
	if ((brokers && !(*brokers & t->brokers)) || names_other_process_memory(e->path, n))
		e->hdr.kernel_action = act(t, policy->secret_action);
}

/* What the event says before the open goes on: the name's length, whether it was cut, and the
 * kernel's verdict (acted on at once). */
static __always_inline void judge_open(struct tracked_proc *t, struct open_event *e, const char *filename,
				       long n)
{
	e->path_len = n > 0 ? n : 0;
	if (string_was_cut(filename, n, SENSOR_PATH_MAX))
		e->info |= OPEN_PATH_TRUNCATED;
	enforce_secrets(t, e, n);
}

/* Send only the bytes the path uses: most paths are far shorter than PATH_MAX. */
static __always_inline void send_open(struct open_event *e)
{
	emit(e, bounded(offsetof(struct open_event, path) + e->path_len, sizeof(*e)), EVENT_OPEN);
}

/* The thread's own entry in open_stash, made at its first open; NULL if the map is full. */
static __always_inline struct open_event *stashed_open(u32 tid)
{
	struct open_event *e = open_stash.lookup(&tid);
	if (e)
		return e;
	u32 zero = 0;
	struct open_event *blank = open_scratch.lookup(&zero);
	if (!blank || open_stash.update(&tid, blank) != 0)
		return NULL;
	return open_stash.lookup(&tid);
}

static __always_inline u32 names_generation(void)
{
	u32 zero = 0;
	u32 *gen = names_changed.lookup(&zero);
	return gen ? *gen : 0;
}

/* The same open (process, flags, absolute name) user space judged allowed, still fresh and
 * judged since the last name change: counted, not sent. Nothing the kernel enforces is skipped:
 * user space caches only opens no rule fired on, and forgets them all at a profile reload. */
static __always_inline int counted_as_repeat(struct tracked_proc *t, const char *filename, u32 flags,
					     u32 gen)
{
	u32 zero = 0;
	struct repeat_key *key = repeat_key_scratch.lookup(&zero);
	if (!key)
		return 0;
	__builtin_memset(key, 0, sizeof(*key));
	u64 pid_tgid = bpf_get_current_pid_tgid();
	key->tgid = pid_tgid >> 32;
	key->slot = t->slot;
	key->flags = flags;
	key->names_gen = gen;
	long n = bpf_probe_read_user_str(key->path, sizeof(key->path), filename);
	if (n <= 1 || n >= sizeof(key->path) || key->path[0] != '/')
		return 0;
	struct repeat_count *c = open_repeats.lookup(key);
	u64 now = bpf_ktime_get_ns();
	if (!c || now > c->expires_ns)
		return 0;
	__sync_fetch_and_add(&c->count, 1);
	c->last_ns = now;
	u32 tid = (u32)pid_tgid;
	counted_opens.update(&tid, &zero);
	return 1;
}

/* The event's fixed part, as at syscall entry (a retried name's open is built at exit). */
static __always_inline void start_open(struct open_event *e, struct tracked_proc *t, int dirfd, u32 flags,
				       u32 mode, u16 syscall, u32 gen)
{
	fill_header(&e->hdr, EVENT_OPEN, t->slot);
	e->dirfd = dirfd;
	e->flags = flags;
	e->mode = mode;
	e->syscall = syscall;
	e->info = 0;
	e->names_gen = gen;
	e->result = 0;
	e->reserved = 0;
}

/* Built at entry, where the name is read before the kernel uses it and the kernel's verdict is
 * acted on; sent at exit with the result (finish_open). An entry with hdr.type EVENT_OPEN is an
 * open in flight. */
static __always_inline int trace_open(int dirfd, const char *filename, u32 flags, u32 mode,
				      u16 syscall)
{
	struct tracked_proc *t = current_tracked();
	if (!t)
		return 0;
	u32 gen = names_generation();
	if (counted_as_repeat(t, filename, flags, gen))
		return 0;

	u32 zero = 0;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct open_event *e = stashed_open(tid);
	int kept = e != NULL;
	if (!e)
		e = open_scratch.lookup(&zero);
	if (!e)
		return 0;

	start_open(e, t, dirfd, flags, mode, syscall, gen);
	long n = bpf_probe_read_user_str(e->path, sizeof(e->path), filename);
	if (n <= 0) {
		e->hdr.type = 0; /* not in flight: finish_open reads the name and sends it */
		struct open_retry retry = {.filename = (u64)filename, .ktime_ns = e->hdr.ktime_ns,
					   .dirfd = dirfd, .flags = flags, .mode = mode,
					   .syscall = syscall, .names_gen = gen};
		open_retries.update(&tid, &retry);
		return 0;
	}
	judge_open(t, e, filename, n);
	/* What the kernel acted on is reported now, not when the open returns. */
	if (!kept || e->hdr.kernel_action != KERNEL_ACTION_NONE) {
		e->info |= OPEN_SENT_AT_ENTRY;
		send_open(e);
		e->hdr.type = 0;
	}
	return 0;
}

/* The open in flight, sent with its result; or one whose name was unreadable at entry, read and
 * sent now (a name still unreadable, a bad pointer: the open failed with EFAULT, is sent empty);
 * or the result of an open sent at entry, on its own, for user space's table of each process's
 * open files. An untracked process pays the one tracked lookup. */
static __always_inline int finish_open(long ret)
{
	struct tracked_proc *t = current_tracked();
	if (!t)
		return 0;
	u32 zero = 0;
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u32 tid = (u32)pid_tgid;
	if (counted_opens.lookup(&tid)) {
		counted_opens.delete(&tid);
		return 0;
	}
	struct open_event *e = open_stash.lookup(&tid);
	/* The pid check: an entry left in flight by a thread untracked mid-open is never sent as
	 * another process's. */
	if (e && e->hdr.type == EVENT_OPEN && e->hdr.pid == pid_tgid >> 32) {
		e->result = ret;
		send_open(e);
		e->hdr.type = 0;
		return 0;
	}
	struct open_retry *retry = open_retries.lookup(&tid);
	if (retry) {
		e = open_scratch.lookup(&zero);
		if (e) {
			start_open(e, t, retry->dirfd, retry->flags, retry->mode, retry->syscall, retry->names_gen);
			e->hdr.ktime_ns = retry->ktime_ns;
			e->info = OPEN_READ_AT_EXIT;
			e->result = ret;
			const char *filename = (const char *)retry->filename;
			judge_open(t, e, filename, bpf_probe_read_user_str(e->path, sizeof(e->path), filename));
			send_open(e);
		}
		open_retries.delete(&tid);
		return 0;
	}
	if (ret < 0)
		return 0;
	struct opened_event o = {.fd = ret};
	fill_header(&o.hdr, EVENT_OPENED, t->slot);
	/* Needed only to resolve later names, never to act at once; adaptive like the rest (see
	 * wakeup_flags): sent without a wakeup it would force one for the agent's next open. */
	emit(&o, sizeof(o), EVENT_OPENED);
	return 0;
}

int on_sys_enter_openat(struct tracepoint__syscalls__sys_enter_openat *args)
{
	return trace_open(args->dfd, args->filename, args->flags, args->mode, OPEN_SYSCALL_OPENAT);
}

#ifdef HAVE_sys_enter_openat2
int on_sys_enter_openat2(struct tracepoint__syscalls__sys_enter_openat2 *args)
{
	u64 how[2] = {}; /* struct open_how starts with u64 flags, u64 mode */
	bpf_probe_read_user(how, sizeof(how), (void *)args->how);
	return trace_open(args->dfd, args->filename, (u32)how[0], (u32)how[1],
			  OPEN_SYSCALL_OPENAT2);
}
#endif

#ifdef HAVE_sys_enter_open
int on_sys_enter_open(struct tracepoint__syscalls__sys_enter_open *args)
{
	return trace_open(AT_FDCWD, args->filename, args->flags, args->mode, OPEN_SYSCALL_OPEN);
}
#endif

#ifdef HAVE_sys_enter_creat
int on_sys_enter_creat(struct tracepoint__syscalls__sys_enter_creat *args)
{
	return trace_open(AT_FDCWD, args->pathname, O_CREAT | O_WRONLY | O_TRUNC, args->mode,
			  OPEN_SYSCALL_CREAT);
}
#endif

int on_sys_exit_openat(struct tracepoint__syscalls__sys_exit_openat *args)
{
	return finish_open(args->ret);
}

#ifdef HAVE_sys_exit_openat2
int on_sys_exit_openat2(struct tracepoint__syscalls__sys_exit_openat2 *args)
{
	return finish_open(args->ret);
}
#endif

#ifdef HAVE_sys_exit_open
int on_sys_exit_open(struct tracepoint__syscalls__sys_exit_open *args)
{
	return finish_open(args->ret);
}
#endif

#ifdef HAVE_sys_exit_creat
int on_sys_exit_creat(struct tracepoint__syscalls__sys_exit_creat *args)
{
	return finish_open(args->ret);
}
#endif

/* -- working directory ------------------------------------------------------------------ */

static __always_inline int start_cwd_change(u64 filename, int fd)
{
	if (!current_tracked())
		return 0;
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct cwd_call call = {.filename = filename, .fd = fd};
	cwd_calls.update(&tid, &call);
	return 0;
}

/* The name is read again at exit (it is still in the caller's memory): a failed change is
 * never reported, so user space's idea of the cwd follows the kernel's. */
static __always_inline int finish_cwd_change(long ret)
{
	u32 tid = (u32)bpf_get_current_pid_tgid();
	struct cwd_call *call = cwd_calls.lookup(&tid);
	if (!call)
		return 0;
	struct cwd_call copy = *call;
	cwd_calls.delete(&tid);
	u32 zero = 0;
	struct tracked_proc *t = current_tracked();
	struct cwd_event *e = cwd_scratch.lookup(&zero);
	if (ret != 0 || !t || !e)
		return 0;
	fill_header(&e->hdr, EVENT_CWD, t->slot);
	e->fd = copy.fd;
	e->reserved = 0;
	long n = copy.filename ? bpf_probe_read_user_str(e->path, sizeof(e->path), (void *)copy.filename) : 0;
	e->path_len = n > 0 ? n : 0;
	emit(e, bounded(offsetof(struct cwd_event, path) + e->path_len, sizeof(*e)), EVENT_CWD);
	return 0;
}

int on_sys_enter_chdir(struct tracepoint__syscalls__sys_enter_chdir *args)
{
	return start_cwd_change((u64)args->filename, AT_FDCWD);
}

int on_sys_exit_chdir(struct tracepoint__syscalls__sys_exit_chdir *args)
{
	return finish_cwd_change(args->ret);
}

int on_sys_enter_fchdir(struct tracepoint__syscalls__sys_enter_fchdir *args)
{
	return start_cwd_change(0, args->fd);
}

int on_sys_exit_fchdir(struct tracepoint__syscalls__sys_exit_fchdir *args)
{
	return finish_cwd_change(args->ret);
}
