/* File changes: rename, unlink, chmod, chown, truncate, link, symlink. Traced at entry, like
 * opens. A change to a secret (or a rename onto one) is enforced here with the secrets trie;
 * the write allow-list and links pointing at secrets are judged in user space, which resolves
 * relative names and symlink targets. */

static __always_inline long read_name(char *dst, const char *src)
{
	long n = src ? bpf_probe_read_user_str(dst, SENSOR_PATH_MAX, src) : 0;
	if (n <= 0) {
		dst[0] = 0;
		return 0;
	}
	return n;
}

static __always_inline int is_secret_name(struct tracked_proc *t, const char *name, long n)
{
	struct path_lpm_key *key = path_key(t, name, n);
	return key && secret_paths.lookup(key);
}

static __always_inline int trace_change(u32 op, int dirfd, const char *path, int dirfd2,
					const char *path2, int fd, u32 mode, u32 uid, u32 gid)
{
	struct tracked_proc *t = current_tracked();
	if (!t)
		return 0;
	u32 zero = 0;
	struct file_change_event *e = change_scratch.lookup(&zero);
	if (!e)
		return 0;
	/* Opens judged before this change are judged again (events.h, struct repeat_key). */
	u32 *gen = names_changed.lookup(&zero);
	if (gen)
		__sync_fetch_and_add(gen, 1);
	fill_header(&e->hdr, EVENT_FILE_CHANGE, t->slot);
	e->op = op;
	e->dirfd = dirfd;
	e->dirfd2 = dirfd2;
	e->fd = fd;
	e->mode = mode;
	e->uid = uid;
	e->gid = gid;
	long n = read_name(e->path, path);
	long n2 = read_name(e->path2, path2);
	e->path_len = n;
	e->path2_len = n2;

	struct slot_policy *policy = policy_of(t);
	if ((op != FILE_OP_SYMLINK && is_sensor_file(e->path, n)) || is_sensor_file(e->path2, n2)) {
		/* Any change to the sensor's files (a symlink's first name is only its target's text),
		 * or a name renamed or linked into their place. */
		if (sensor_enforces())
			e->hdr.kernel_action = act(t, KERNEL_ACTION_KILL);
	} else if (policy && (policy->flags & ENFORCE_SECRETS) && op != FILE_OP_SYMLINK &&
	    (is_secret_name(t, e->path, n) || (op == FILE_OP_RENAME && is_secret_name(t, e->path2, n2))))
		e->hdr.kernel_action = act(t, policy->secret_action);
	emit(e, sizeof(*e), EVENT_FILE_CHANGE);
	return 0;
}

#ifdef HAVE_sys_enter_rename
int on_sys_enter_rename(struct tracepoint__syscalls__sys_enter_rename *args)
{
	return trace_change(FILE_OP_RENAME, AT_FDCWD, args->oldname, AT_FDCWD, args->newname, -1, 0, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_renameat
int on_sys_enter_renameat(struct tracepoint__syscalls__sys_enter_renameat *args)
{
	return trace_change(FILE_OP_RENAME, args->olddfd, args->oldname, args->newdfd, args->newname, -1, 0, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_renameat2
int on_sys_enter_renameat2(struct tracepoint__syscalls__sys_enter_renameat2 *args)
{
	return trace_change(FILE_OP_RENAME, args->olddfd, args->oldname, args->newdfd, args->newname, -1, 0, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_unlink
int on_sys_enter_unlink(struct tracepoint__syscalls__sys_enter_unlink *args)
{
	return trace_change(FILE_OP_UNLINK, AT_FDCWD, args->pathname, AT_FDCWD, NULL, -1, 0, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_unlinkat
int on_sys_enter_unlinkat(struct tracepoint__syscalls__sys_enter_unlinkat *args)
{
	return trace_change(FILE_OP_UNLINK, args->dfd, args->pathname, AT_FDCWD, NULL, -1, 0, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_chmod
int on_sys_enter_chmod(struct tracepoint__syscalls__sys_enter_chmod *args)
{
	return trace_change(FILE_OP_CHMOD, AT_FDCWD, args->filename, AT_FDCWD, NULL, -1, args->mode, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_fchmodat
int on_sys_enter_fchmodat(struct tracepoint__syscalls__sys_enter_fchmodat *args)
{
	return trace_change(FILE_OP_CHMOD, args->dfd, args->filename, AT_FDCWD, NULL, -1, args->mode, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_fchmodat2
int on_sys_enter_fchmodat2(struct tracepoint__syscalls__sys_enter_fchmodat2 *args)
{
	return trace_change(FILE_OP_CHMOD, args->dfd, args->filename, AT_FDCWD, NULL, -1, args->mode, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_fchmod
int on_sys_enter_fchmod(struct tracepoint__syscalls__sys_enter_fchmod *args)
{
	return trace_change(FILE_OP_CHMOD, AT_FDCWD, NULL, AT_FDCWD, NULL, args->fd, args->mode, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_chown
int on_sys_enter_chown(struct tracepoint__syscalls__sys_enter_chown *args)
{
	return trace_change(FILE_OP_CHOWN, AT_FDCWD, args->filename, AT_FDCWD, NULL, -1, 0, args->user, args->group);
}
#endif

#ifdef HAVE_sys_enter_lchown
int on_sys_enter_lchown(struct tracepoint__syscalls__sys_enter_lchown *args)
{
	return trace_change(FILE_OP_CHOWN, AT_FDCWD, args->filename, AT_FDCWD, NULL, -1, 0, args->user, args->group);
}
#endif

#ifdef HAVE_sys_enter_fchownat
int on_sys_enter_fchownat(struct tracepoint__syscalls__sys_enter_fchownat *args)
{
	return trace_change(FILE_OP_CHOWN, args->dfd, args->filename, AT_FDCWD, NULL, -1, 0, args->user, args->group);
}
#endif

#ifdef HAVE_sys_enter_fchown
int on_sys_enter_fchown(struct tracepoint__syscalls__sys_enter_fchown *args)
{
	return trace_change(FILE_OP_CHOWN, AT_FDCWD, NULL, AT_FDCWD, NULL, args->fd, 0, args->user, args->group);
}
#endif

#ifdef HAVE_sys_enter_truncate
int on_sys_enter_truncate(struct tracepoint__syscalls__sys_enter_truncate *args)
{
	return trace_change(FILE_OP_TRUNCATE, AT_FDCWD, args->path, AT_FDCWD, NULL, -1, 0, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_ftruncate
int on_sys_enter_ftruncate(struct tracepoint__syscalls__sys_enter_ftruncate *args)
{
	return trace_change(FILE_OP_TRUNCATE, AT_FDCWD, NULL, AT_FDCWD, NULL, args->fd, 0, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_link
int on_sys_enter_link(struct tracepoint__syscalls__sys_enter_link *args)
{
	return trace_change(FILE_OP_LINK, AT_FDCWD, args->oldname, AT_FDCWD, args->newname, -1, 0, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_linkat
int on_sys_enter_linkat(struct tracepoint__syscalls__sys_enter_linkat *args)
{
	return trace_change(FILE_OP_LINK, args->olddfd, args->oldname, args->newdfd, args->newname, -1, 0, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_symlink
int on_sys_enter_symlink(struct tracepoint__syscalls__sys_enter_symlink *args)
{
	return trace_change(FILE_OP_SYMLINK, AT_FDCWD, args->oldname, AT_FDCWD, args->newname, -1, 0, 0, 0);
}
#endif

#ifdef HAVE_sys_enter_symlinkat
int on_sys_enter_symlinkat(struct tracepoint__syscalls__sys_enter_symlinkat *args)
{
	return trace_change(FILE_OP_SYMLINK, AT_FDCWD, args->oldname, args->newdfd, args->newname, -1, 0, 0, 0);
}
#endif
