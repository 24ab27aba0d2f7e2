/* Maps shared by every program, joined into bcc's main text by sensor/bpf_loader.py (bcc rewrites
 * map method calls only there). User space fills tracked and exec_match;
 * the kernel keeps tracked current across fork and exit. */
#ifndef AGENT_SENSOR_MAPS_H
#define AGENT_SENSOR_MAPS_H

#include "events.h"

#define SENSOR_MAX_TRACKED 65536
#define SENSOR_RINGBUF_PAGES 2048 /* 8 MiB with 4 KiB pages */

BPF_HASH(tracked, u32, struct tracked_proc, SENSOR_MAX_TRACKED);

/* One byte per pid, set for a process that is or may be tracked: every traced syscall of every
 * process asks whether its process is tracked, and an array lookup (inlined by the verifier)
 * answers "no" before the hash is searched. The kernel and user space (through mmap) store
 * single bytes, so neither rewrites a byte the other set. A byte is set before its tracked entry
 * is added and cleared by the kernel when the process exits; user space never clears one (it
 * could race an exec matched in the kernel): a byte left set costs only the hash lookup. */
struct pid_page {
	u8 maybe[SENSOR_PID_PAGE];
};
BPF_F_TABLE("array", u32, struct pid_page, maybe_tracked, SENSOR_PID_PAGES, BPF_F_MMAPABLE);

static __always_inline u8 *maybe_tracked_byte(u32 tgid)
{
	u32 page = tgid / SENSOR_PID_PAGE;
	struct pid_page *p = maybe_tracked.lookup(&page);
	return p ? &p->maybe[tgid % SENSOR_PID_PAGE] : NULL; /* NULL: a pid past the pages */
}

static __always_inline struct tracked_proc *lookup_tracked(u32 tgid)
{
	u8 *maybe = maybe_tracked_byte(tgid);
	if (maybe && !*maybe)
		return NULL;
	return tracked.lookup(&tgid);
}

static __always_inline void add_tracked(u32 tgid, struct tracked_proc *entry)
{
	u8 *maybe = maybe_tracked_byte(tgid);
	if (maybe)
		*maybe = 1;
	tracked.update(&tgid, entry);
}

static __always_inline void remove_tracked(u32 tgid)
{
	tracked.delete(&tgid);
	u8 *maybe = maybe_tracked_byte(tgid);
	if (maybe)
		*maybe = 0;
}
BPF_HASH(exec_match, struct exec_key, u32, 1024);
/* 1 while some profile has a `match` (user space sets it with the profiles): every process's
 * exec is sent, for selectors and exec_match. At 0 (exec_match is empty then too) only agents'
 * own are: another process's exec costs a lookup and nothing is read or sent. */
BPF_ARRAY(all_execs, u32, 1);

static __always_inline int execs_of_everyone(void)
{
	u32 zero = 0;
	u32 *on = all_execs.lookup(&zero);
	return on && *on;
}

/* In-kernel enforcement, filled by user space per slot; doomed: agent runs (by root pid) the
 * kernel has acted on, so every member is stopped at its next traced syscall too. */
BPF_ARRAY(slot_policy, struct slot_policy, SENSOR_MAX_SLOTS);
BPF_LPM_TRIE(secret_paths, struct path_lpm_key, u32, 4096); /* value: the brokers that may read it */
BPF_LPM_TRIE(broker_execs, struct path_lpm_key, u32, 1024);  /* value: the broker's bit */
BPF_LPM_TRIE(denied_execs, struct path_lpm_key, u32, 1024);
BPF_LPM_TRIE(allowed_dests, struct addr_lpm_key, struct port_ranges, 4096);
BPF_LPM_TRIE(allowed_binds, struct addr_lpm_key, struct port_ranges, 1024);
BPF_HASH(doomed, u32, u32, 1024);

/* Half-finished syscalls, keyed by thread id. LRU so an entry whose second half never comes
 * (a thread killed mid-exec) cannot fill the map. */
BPF_TABLE("lru_hash", u32, struct exec_event, exec_stash, 1024);
BPF_TABLE("lru_hash", u32, u64, clone_flags, 16384);

/* An open whose file name could not be read at syscall entry (the page holding it was not
 * faulted in yet, typical of string literals in a library's read-only data): read it again at
 * syscall exit, when the kernel has copied the name and the page is present. Kernel-internal. */
struct open_retry {
	u64 filename; /* user pointer */
	u64 ktime_ns; /* when the syscall was entered */
	s32 dirfd;
	u32 flags;
	u32 mode;
	u16 syscall;
	u32 names_gen;
};
BPF_TABLE("lru_hash", u32, struct open_retry, open_retries, 1024);

/* Repeated opens counted instead of sent (events.h, struct repeat_key). A plain hash: user
 * space inserts and deletes every entry, and reads each count before deleting it, so no count
 * is lost to an eviction; a full map only means an open is sent, not counted. */
#define SENSOR_MAX_REPEATS 8192
BPF_HASH(open_repeats, struct repeat_key, struct repeat_count, SENSOR_MAX_REPEATS);
BPF_ARRAY(names_changed, u32, 1);
/* Threads whose open in progress was counted: it is not sent at exit either. */
BPF_TABLE("lru_hash", u32, u32, counted_opens, 1024);

/* A chdir/fchdir in progress, by thread id: reported at exit, only if it succeeded. */
struct cwd_call {
	u64 filename; /* user pointer; 0 for fchdir */
	s32 fd;
	u32 reserved;
};
BPF_TABLE("lru_hash", u32, struct cwd_call, cwd_calls, 1024);

/* Each agent thread's open, built at syscall entry and sent at exit with its result: one event
 * per open, where the result used to be a second. The entry is the thread's for its life (built
 * in place, no copy per open) and removed when it exits or its id goes (exec by another thread).
 * A plain hash: a full map never evicts an open in flight; a thread with no room has its opens
 * sent at entry and their results on their own (OPEN_SENT_AT_ENTRY, EVENT_OPENED). */
#define SENSOR_OPEN_THREADS 1024
BPF_HASH(open_stash, u32, struct open_event, SENSOR_OPEN_THREADS);

/* Events are built here, not on the 512-byte BPF stack. */
BPF_PERCPU_ARRAY(exec_scratch, struct exec_event, 1);
BPF_PERCPU_ARRAY(open_scratch, struct open_event, 1);
BPF_PERCPU_ARRAY(cwd_scratch, struct cwd_event, 1);
BPF_PERCPU_ARRAY(path_key_scratch, struct path_lpm_key, 1);
BPF_PERCPU_ARRAY(repeat_key_scratch, struct repeat_key, 1);
BPF_PERCPU_ARRAY(change_scratch, struct file_change_event, 1);

BPF_PERCPU_ARRAY(counters, u64, COUNTER_SLOTS);
BPF_RINGBUF_OUTPUT(events, SENSOR_RINGBUF_PAGES);

static __always_inline void count(u32 index)
{
	u64 *value = counters.lookup(&index);
	if (value)
		(*value)++;
}

static __always_inline void fill_header(struct event_header *hdr, u32 type, u32 slot)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	u64 uid_gid = bpf_get_current_uid_gid();

	hdr->ktime_ns = bpf_ktime_get_ns();
	hdr->cgroup_id = bpf_get_current_cgroup_id();
	hdr->type = type;
	hdr->pid = pid_tgid >> 32;
	hdr->tid = (u32)pid_tgid;
	hdr->uid = (u32)uid_gid;
	hdr->gid = uid_gid >> 32;
	hdr->slot = slot;
	hdr->kernel_action = KERNEL_ACTION_NONE;
	hdr->reserved = 0;
	bpf_get_current_comm(hdr->comm, sizeof(hdr->comm));
}

/* v, at most max, in a form the verifier can bound: the barrier stops the compiler from checking
 * a copy of v and passing the unchecked register to the helper. */
static __always_inline u64 bounded(u64 v, u64 max)
{
	asm volatile("" : "+r"(v));
	if (v > max)
		v = max;
	return v;
}

/* bpf_probe_read_user_str returned size (buffer full): the string was cut unless its last byte,
 * the one the read replaced with a NUL, was the string's own terminator. */
static __always_inline int string_was_cut(const char *user, long n, u32 size)
{
	char last = 0;
	if (n < size)
		return 0;
	bpf_probe_read_user(&last, 1, user + size - 1);
	return last != 0;
}

/* Events the ring buffer had no room for, per agent run (key: root pid): user space reports
 * them and applies the profile's on_event_loss (an agent whose events were lost is not fully known). */
BPF_TABLE("lru_hash", u32, u64, lost_by_run, 4096);

/* An event of the current process that could not be sent: counted by type and by agent run. */
static __always_inline void lost(u32 type)
{
	count(COUNTER_DROP_BASE + type);
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct tracked_proc *t = lookup_tracked(tgid);
	if (!t)
		return;
	u32 root = t->root_pid;
	u64 one = 1;
	u64 *n = lost_by_run.lookup(&root);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		lost_by_run.update(&root, &one);
}

/* Waking the reader. A wakeup costs the process sending the event about 7 µs on this VM (an
 * interrupt, then waking the reader's thread on another CPU): more than the open it reports.
 * So records wake adaptively (flags 0): the kernel wakes the reader only for a record it is
 * right behind, i.e. when it has read everything and sleeps; in a burst it is awake and behind,
 * and no record pays. Adaptive fails behind a record sent without a wakeup (another process's
 * exec, below): the reader sleeps with that record unread, is not "right behind" the next, and
 * an urgent event would wait out its poll interval (20 ms). quiet_unread notes such a record;
 * the next event forces the wakeup and clears the note. */
BPF_ARRAY(quiet_unread, u32, 1);

static __always_inline u32 *quiet_note(void)
{
	int zero = 0;
	return quiet_unread.lookup(&zero);
}

static __always_inline u64 wakeup_flags(void)
{
	u32 *quiet = quiet_note();
	if (quiet && *quiet) {
		*quiet = 0;
		return BPF_RB_FORCE_WAKEUP;
	}
	return 0;
}

/* Copy an event built in a scratch buffer into the ring buffer, counting success and loss. */
static __always_inline void emit_flagged(void *event, u64 size, u32 type, u64 flags)
{
	if (events.ringbuf_output(event, size, flags) == 0)
		count(type);
	else
		lost(type);
}

/* An event user space may act on, or needs soon: the reader is awake or woken for it. */
static __always_inline void emit(void *event, u64 size, u32 type)
{
	emit_flagged(event, size, type, wakeup_flags());
}

/* An event user space only collects (within its poll interval), so a busy host's stream of
 * them wakes no one. Noted before it is sent: an event reserved after it sees the note. */
static __always_inline void emit_quiet(void *event, u64 size, u32 type)
{
	u32 *quiet = quiet_note();
	if (quiet)
		*quiet = 1;
	emit_flagged(event, size, type, BPF_RB_NO_WAKEUP);
}

/* Act now, in the calling process's context: the signal is delivered before the syscall
 * returns to user space, so a killed process never sees the result of the syscall. The whole
 * agent run is marked, so its other members are stopped at their next traced syscall. */
static __always_inline u32 act(struct tracked_proc *t, u32 action)
{
#ifdef SENSOR_SEND_SIGNAL
	if (action == KERNEL_ACTION_KILL)
		bpf_send_signal(SIGKILL);
	else if (action == KERNEL_ACTION_STOP)
		bpf_send_signal(SIGSTOP);
	else
		return KERNEL_ACTION_NONE;
#else
	return KERNEL_ACTION_NONE; /* no bpf_send_signal (kernel < 5.3): user space acts */
#endif
	u32 root = t->root_pid;
	doomed.update(&root, &action);
	return action;
}

static __always_inline struct slot_policy *policy_of(struct tracked_proc *t)
{
	u32 slot = t->slot;
	return slot_policy.lookup(&slot);
}

/* The path-trie key for an absolute path (n bytes with its NUL, already read), or NULL if the
 * kernel cannot judge it. The NUL is part of the key, so exact entries match whole paths and
 * `dir/` entries prefixes. */
static __always_inline struct path_lpm_key *path_key_in(u32 slot, const char *path, long n)
{
	if (n <= 1 || n > SENSOR_LPM_PATH_MAX || path[0] != '/')
		return NULL;
	u32 zero = 0;
	struct path_lpm_key *key = path_key_scratch.lookup(&zero);
	if (!key)
		return NULL;
	key->prefixlen = 32 + 8 * n;
	key->slot = slot;
	__builtin_memcpy(key->path, path, SENSOR_LPM_PATH_MAX);
	return key;
}

static __always_inline struct path_lpm_key *path_key(struct tracked_proc *t, const char *path, long n)
{
	return path_key_in(t->slot, path, n);
}

/* The sensor's own process and files (set by user space at start). */
BPF_ARRAY(sensor_self_map, struct sensor_self, 1);
BPF_LPM_TRIE(protected_paths, struct path_lpm_key, u32, 256); /* keyed with slot SENSOR_NO_SLOT */

/* Acting against an agent that aims at the sensor: unless the daemon runs --audit-only. */
static __always_inline int sensor_enforces(void)
{
	u32 zero = 0;
	struct sensor_self *self = sensor_self_map.lookup(&zero);
	return self && self->enforce;
}

/* An absolute name under the sensor's files (its code, profiles, alert spool): an agent may
 * read some of them, never change them. */
static __always_inline int is_sensor_file(const char *path, long n)
{
	struct path_lpm_key *key = path_key_in(SENSOR_NO_SLOT, path, n);
	return key && protected_paths.lookup(key);
}

/* An inet sockaddr (raw bytes, len as passed) as the 16 bytes address tries and maps use (IPv4
 * as ::ffff:a.b.c.d): 1 for AF_INET/AF_INET6 long enough to hold an address, else 0. */
static __always_inline int sockaddr_ip(const u8 *raw, u32 len, u8 *addr)
{
	u16 family = *(u16 *)raw;
	if (family == AF_INET && len >= 8) {
		addr[10] = 0xff;
		addr[11] = 0xff;
		__builtin_memcpy(&addr[12], &raw[4], 4);
		return 1;
	}
	if (family == AF_INET6 && len >= 24) {
		__builtin_memcpy(addr, &raw[8], 16);
		return 1;
	}
	return 0;
}

/* The tracked entry of the calling process if its events are wanted, else NULL: the one map
 * lookup an untracked process pays. A member of a doomed agent run is acted on here. */
static __always_inline struct tracked_proc *current_tracked(void)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct tracked_proc *t = lookup_tracked(tgid);

	if (!t || (t->flags & TRACKED_PENDING_EXEC))
		return NULL;
	u32 root = t->root_pid;
	u32 *verdict = doomed.lookup(&root);
	if (verdict)
		act(t, *verdict);
	return t;
}

#endif /* AGENT_SENSOR_MAPS_H */
