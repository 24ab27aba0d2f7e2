/* The one definition of every struct and enum shared by the BPF programs and user space.
 *
 * Included by bpf/sensor.c (compiled by bcc) and by tests/kernel/abi_layout.c (compiled by gcc),
 * mirrored once in sensor/abi.py; tests/unit/test_abi.py checks that sizes and offsets agree.
 * Only fixed-width types, so both compilers lay the structs out the same way.
 */
#ifndef AGENT_SENSOR_EVENTS_H
#define AGENT_SENSOR_EVENTS_H

#include <linux/types.h>

#define SENSOR_COMM_LEN 16
#define SENSOR_PATH_MAX 4096     /* PATH_MAX: longer paths arrive truncated, path_len == SENSOR_PATH_MAX */
#define SENSOR_ARGV_MAX 1024     /* first argv entries, NUL separated */
#define SENSOR_ARG_CHUNK 128     /* each argv entry is cut at this many bytes */
#define SENSOR_MAX_ARGS 14
#define SENSOR_SOCKADDR_MAX 128  /* sizeof(struct sockaddr_storage) */
#define SENSOR_EXEC_KEY_LEN 256  /* exec paths matched in the kernel are shorter than this */
#define SENSOR_NO_SLOT 0xffffffffu
#define SENSOR_MAX_SLOTS 256       /* profiles the kernel can enforce */
#define SENSOR_LPM_PATH_MAX 248    /* path bytes in a secret-path key (LPM keys are <= 256 bytes) */
#define SENSOR_PORT_RANGES 8       /* port ranges per destination prefix */
#define SENSOR_REPEAT_PATH_MAX 128 /* opens of longer names are always sent, never counted as repeats */
#define SENSOR_DNS_MAX 1232        /* DNS message bytes captured (the EDNS payload size DNS flag day 2020 settled on) */
#define SENSOR_PID_PAGE 4096       /* pids per value of the maybe_tracked map (one byte each) */
#define SENSOR_PID_PAGES 1024      /* values: every pid up to 2^22, Linux's PID_MAX_LIMIT */

enum event_type {
	EVENT_EXEC = 1,    /* every successful exec on the host (rare; lets user space match agents) */
	EVENT_FORK = 2,    /* a tracked process created a process (not a thread) */
	EVENT_EXIT = 3,    /* the last thread of a tracked process exited */
	EVENT_OPEN = 4,    /* a tracked process entered open/openat/openat2/creat */
	EVENT_CONNECT = 5, /* a tracked process entered connect */
	EVENT_FILE_CHANGE = 6, /* a tracked process entered rename/unlink/chmod/chown/truncate/link/symlink */
	EVENT_INTERFACE = 7,   /* a tracked process used an interface that bypasses the traced syscalls */
	EVENT_DNS = 8,         /* a tracked process sent or received a message on a socket it pointed at port 53 */
	EVENT_CWD = 9,         /* a tracked process changed its working directory (chdir/fchdir succeeded) */
	EVENT_OPENED = 10,     /* the fd of an open that was sent at entry (OPEN_SENT_AT_ENTRY) */
	EVENT_TYPE_MAX = 16,
};

enum open_syscall {
	OPEN_SYSCALL_OPENAT = 1,
	OPEN_SYSCALL_OPENAT2 = 2,
	OPEN_SYSCALL_OPEN = 3,
	OPEN_SYSCALL_CREAT = 4,
};

enum file_op {
	FILE_OP_RENAME = 1,   /* path -> path2 */
	FILE_OP_UNLINK = 2,   /* path (unlinkat with AT_REMOVEDIR too) */
	FILE_OP_CHMOD = 3,    /* path, or fd for fchmod; mode */
	FILE_OP_CHOWN = 4,    /* path, or fd for fchown; uid, gid */
	FILE_OP_TRUNCATE = 5, /* path, or fd for ftruncate */
	FILE_OP_LINK = 6,     /* hard link: existing path, new name path2 */
	FILE_OP_SYMLINK = 7,  /* symlink: target path (as written), link name path2 */
};

/* Kernel interfaces that do file or network work without the syscalls the sensor traces, or
 * reach into other processes: denied to agents unless their profile lists them (`interfaces`).
 * Bits, so a slot's allowed set is one word. */
enum interface {
	INTERFACE_IO_URING = 1,     /* io_uring_setup/enter/register: I/O submitted through a ring */
	INTERFACE_FILE_HANDLES = 2, /* name_to_handle_at/open_by_handle_at: files opened without a path */
	INTERFACE_PROCESS_VM = 4,   /* process_vm_readv/writev: another process's memory */
	INTERFACE_PTRACE = 8,       /* ptrace: another process's memory, registers, syscalls */
	INTERFACE_PIDFD_GETFD = 16, /* pidfd_getfd: another process's open files and sockets */
	INTERFACE_BPF = 32,         /* bpf(): loading, attaching, detaching BPF programs, reading maps */
	/* Not an interface a profile can allow: the sensor defending itself. */
	INTERFACE_SENSOR = 64,      /* kill/tkill/tgkill/pidfd_open aimed at the sensor, or a write to its files */
};

enum open_info {
	OPEN_PATH_TRUNCATED = 1, /* the name was longer than SENSOR_PATH_MAX - 1 bytes */
	OPEN_READ_AT_EXIT = 2,   /* the name was unreadable at entry and read at syscall exit */
	OPEN_SENT_AT_ENTRY = 4,  /* sent before the open returned (the kernel acted, or no room to keep
				  * it until exit): result is not set, an EVENT_OPENED follows if it succeeded */
};

enum exec_flags {
	EXEC_AGENT_START = 1,         /* first exec of a process launched or matched as an agent */
	EXEC_KERNEL_MATCHED = 2,      /* the kernel started tracking at this exec (exec_match map) */
	EXEC_ARGV_TRUNCATED = 4,
	EXEC_NO_ARGS = 8,             /* the syscall-entry half was missed: filename/argv are empty */
	EXEC_EXECVEAT = 16,
	EXEC_DENIED = 32,             /* exec_deny matched at syscall entry: sent at once, the exec never completes */
};

/* What the kernel itself did about an event, at the syscall, before user space saw it. */
enum kernel_action {
	KERNEL_ACTION_NONE = 0,
	KERNEL_ACTION_KILL = 1, /* bpf_send_signal(SIGKILL): the process dies before the syscall returns */
	KERNEL_ACTION_STOP = 2, /* bpf_send_signal(SIGSTOP): held for quarantine */
};

/* Which rule kinds the kernel enforces for a slot (slot_policy.flags). */
enum enforce_flags {
	ENFORCE_SECRETS = 1, /* absolute paths matched against secret_paths, and /proc/PID/environ etc. */
	ENFORCE_CONNECT = 2, /* inet connects matched against allowed_dests */
	ENFORCE_EXEC = 4,    /* absolute exec names matched against denied_execs */
	ENFORCE_INTERFACES = 8, /* interfaces not in slot_policy.interfaces_allowed */
	ENFORCE_LISTEN = 16,    /* inet binds matched against allowed_binds */
	ENFORCE_DNS_NAMES = 32, /* network.connect names hosts: user space adds the addresses DNS answers
				 * give them to allowed_dests; until it has, a connect to an address an
				 * answer for an allowed name just gave (dns_pending) is left to it */
};

enum tracked_flags {
	TRACKED_PENDING_EXEC = 1, /* launched by `agent-sensor exec`: ignore it until its next exec */
};

/* Per-CPU counters: index = event type for emitted events, COUNTER_DROP_BASE + type for failed
 * ring-buffer reservations. */
#define COUNTER_DROP_BASE EVENT_TYPE_MAX
#define COUNTER_SLOTS (2 * EVENT_TYPE_MAX)

struct event_header {
	__u64 ktime_ns;  /* bpf_ktime_get_ns(): CLOCK_MONOTONIC */
	__u64 cgroup_id; /* cgroup v2 id of the task */
	__u32 type;      /* enum event_type */
	__u32 pid;       /* tgid */
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u32 slot;      /* agent slot from the tracked map, SENSOR_NO_SLOT if untracked */
	__u32 kernel_action; /* enum kernel_action */
	__u32 reserved;
	char comm[SENSOR_COMM_LEN];
};

struct exec_event {
	struct event_header hdr;
	__u32 old_tid;      /* the thread that called exec (differs from pid in threaded programs) */
	__u32 flags;        /* enum exec_flags */
	__s32 dirfd;        /* execveat dirfd, AT_FDCWD for execve */
	__u32 argc;         /* argv entries captured in argv */
	__u32 matched_slot; /* slot from the exec_match map, SENSOR_NO_SLOT if none */
	__u16 filename_len; /* bytes read including the NUL */
	__u16 argv_len;     /* bytes used in argv */
	char filename[SENSOR_PATH_MAX];
	char argv[SENSOR_ARGV_MAX];
};

struct fork_event {
	struct event_header hdr; /* the parent */
	__u32 child_pid;
	__u32 parent_pid;
};

struct exit_event {
	struct event_header hdr;
};

/* Variable length: only offsetof(path) + path_len bytes are sent. Built at syscall entry (the
 * name as the kernel is about to read it, the kernel's verdict) and sent at exit with the result,
 * one event per open; OPEN_SENT_AT_ENTRY for the few sent before. */
struct open_event {
	struct event_header hdr;
	__s32 dirfd;
	__u32 flags;    /* open(2) flags (openat2: how.flags, low 32 bits) */
	__u32 mode;
	__u16 syscall;  /* enum open_syscall */
	__u16 path_len; /* bytes read including the NUL */
	__u32 info;     /* enum open_info */
	__u32 names_gen; /* names_changed when the open was entered: a repeat_key judged from this
			  * event is stale, and never matches, once a tracked process changed a name */
	__s32 result;    /* the syscall's return: the new fd, or -errno (not with OPEN_SENT_AT_ENTRY) */
	__u32 reserved;
	char path[SENSOR_PATH_MAX];
};

/* Sent at the exit of an open that succeeded and whose EVENT_OPEN was sent at entry (same
 * thread): user space learns which file each fd is, as from an open's result, so a name relative
 * to a directory fd (unlinkat(fd, ...), shutil.rmtree) still resolves after the process is gone. */
struct opened_event {
	struct event_header hdr;
	__s32 fd;
	__u32 reserved;
};

/* Variable length: only offsetof(path) + path_len bytes are sent. User space follows each
 * process's cwd through these, in event order: a relative name is resolved against the cwd the
 * process had when it used the name, not the one /proc shows later (or not at all, once it is gone). */
struct cwd_event {
	struct event_header hdr;
	__s32 fd;       /* fchdir: the directory fd; chdir: AT_FDCWD (path relative to the old cwd) */
	__u16 path_len; /* bytes read including the NUL; 0 for fchdir */
	__u16 reserved;
	char path[SENSOR_PATH_MAX];
};

enum net_call {
	NET_CALL_CONNECT = 1, /* connect(2), seen at syscall entry */
	NET_CALL_SENDMSG = 2, /* a datagram sent to an address (sendto/sendmsg), seen by the cgroup hook */
	NET_CALL_BIND = 3,    /* bind(2): the local address; refused by the cgroup hook if not allowed */
	NET_CALL_LISTEN = 4,  /* listen(2): no address, the fd */
};

struct connect_event {
	struct event_header hdr;
	__s32 fd;      /* -1 when the cgroup hook saw it (no fd there) */
	__u32 addrlen; /* as passed by the caller */
	__u32 call;    /* enum net_call */
	__u32 refused; /* 1: the kernel refused the call (EPERM): nothing was sent */
	__u8 addr[SENSOR_SOCKADDR_MAX]; /* the caller's sockaddr, min(addrlen, SENSOR_SOCKADDR_MAX) bytes */
};

enum dns_direction {
	DNS_QUERY = 1,  /* sent: send/sendto/sendmsg/sendmmsg/write */
	DNS_ANSWER = 2, /* received: recv/recvfrom/recvmsg/read, seen at syscall exit */
};

/* How a host name in network.connect matches (value of the allowed_names map). */
enum dns_name_match {
	DNS_NAME_EXACT = 1,      /* api.example.com */
	DNS_NAME_SUBDOMAINS = 2, /* *.corp.example: every name under it */
};

/* Key of allowed_names: a name as the FNV-1a 64 hash of its wire form (length-prefixed labels,
 * no root label, every byte | 0x20 so letters are lower case) taken from its last byte to its
 * first, so the kernel hashes every suffix of a question in one pass. A collision only defers a connect to user
 * space, which judges the real name. */
struct dns_name_key {
	__u32 slot;
	__u32 reserved;
	__u64 hash;
};

/* An address an answer for an allowed name gave an agent run (root pid), which user space has not
 * learned yet: a connect to it is left to user space instead of refused. User space deletes the key
 * once it has judged the answer. */
struct dns_pending_key {
	__u32 root_pid;
	__u8 addr[16]; /* IPv4 as ::ffff:a.b.c.d */
};

/* Variable length: only offsetof(data) + len bytes are sent. */
struct dns_event {
	struct event_header hdr;
	__s32 fd;
	__u32 direction;   /* enum dns_direction */
	__u32 pending;     /* an answer for a name network.connect allows: how many addresses the kernel
			    * put in dns_pending for user space to judge; 0 for anything else */
	__u32 reserved;
	__u8 peer[16];     /* the resolver's address (IPv4 as ::ffff:a.b.c.d) */
	__u16 peer_port;
	__u16 len;         /* bytes captured in data */
	__u32 total;       /* bytes the syscall sent or received (more than len: cut) */
	__u8 data[SENSOR_DNS_MAX];
};

/* Fixed size: these syscalls are rare next to opens, and two names are needed. */
struct file_change_event {
	struct event_header hdr;
	__u32 op;        /* enum file_op */
	__s32 dirfd;     /* for path: AT_FDCWD or a directory fd */
	__s32 dirfd2;    /* for path2 */
	__s32 fd;        /* fchmod/fchown/ftruncate: the file's fd (path empty); -1 otherwise */
	__u32 mode;
	__u32 uid;
	__u32 gid;
	__u16 path_len;  /* bytes read including the NUL; 0 if none or unreadable */
	__u16 path2_len;
	char path[SENSOR_PATH_MAX];
	char path2[SENSOR_PATH_MAX];
};

struct interface_event {
	struct event_header hdr;
	__u32 interface;  /* enum interface */
	__u32 allowed;    /* the profile lists it */
	__s32 target_pid; /* ptrace, process_vm_*, pidfd_getfd, a signal: the other process; -1 otherwise */
	__u32 signal;     /* INTERFACE_SENSOR by a signal: its number; 0 otherwise */
};

/* The sensor's own process (set by user space at start): what tracked agents must not touch. */
struct sensor_self {
	__u32 tgid;
	__u32 pgid;
	__u32 enforce; /* 0 with --audit-only: report, never act */
	__u32 reserved;
};

/* An open user space judged allowed, on its second sighting (sensor/repeats.py): until
 * expires_ns the kernel counts the same process's same open instead of sending it. Any name
 * change by a tracked process (rename, unlink, link, symlink, ...) moves names_changed on, so
 * every key judged before it misses at once, in the kernel. */
struct repeat_key {
	__u32 tgid;
	__u32 slot;
	__u32 flags;     /* open(2) flags */
	__u32 names_gen; /* names_changed when the open was entered */
	char path[SENSOR_REPEAT_PATH_MAX]; /* absolute, NUL-padded */
};

struct repeat_count {
	__u64 expires_ns; /* bpf_ktime_get_ns() after which the open is sent (and judged) again */
	__u64 count;      /* repeats counted, not sent, since user space set the entry */
	__u64 last_ns;    /* the last of them */
};

/* Value of the tracked map (key: tgid). Children inherit it at fork. */
struct tracked_proc {
	__u32 slot;     /* agent slot: index of the profile in user space's table */
	__u32 root_pid; /* tgid of the agent instance's first process */
	__u32 flags;    /* enum tracked_flags */
	__u32 brokers;  /* bit i: the process runs the profile's broker i (set at exec, kept at fork):
			 * it may read the secrets whose secret_paths value has bit i */
};

/* Per-slot enforcement policy, set by user space from the profile (kernel_rules.py). */
struct slot_policy {
	__u32 flags;          /* enum enforce_flags */
	__u32 secret_action;  /* enum kernel_action */
	__u32 connect_action; /* enum kernel_action */
	__u32 exec_action;    /* enum kernel_action */
	__u32 interface_action;    /* enum kernel_action */
	__u32 interfaces_allowed;  /* enum interface bits */
	__u32 listen_action;       /* enum kernel_action */
	__u32 reserved;
};

/* LPM key of secret_paths, denied_execs and broker_execs: slot, then path bytes. An exact path's prefix includes its NUL; a
 * whole directory's (the glob dir/ followed by **) ends at its trailing slash. */
struct path_lpm_key {
	__u32 prefixlen; /* bits: 32 for the slot + 8 per path byte */
	__u32 slot;
	char path[SENSOR_LPM_PATH_MAX];
};

/* LPM key of allowed_dests and allowed_binds: slot, then the address as IPv6 (IPv4 as ::ffff:a.b.c.d). */
struct addr_lpm_key {
	__u32 prefixlen; /* bits: 32 for the slot + 128-bit address prefix */
	__u32 slot;
	__u8 addr[16];
};

/* Value of allowed_dests: the ports allowed for that prefix, including those of every shorter
 * prefix that contains it (user space pushes them down, so the longest match decides alone). */
struct port_ranges {
	__u32 count;
	__u16 lo[SENSOR_PORT_RANGES];
	__u16 hi[SENSOR_PORT_RANGES];
};

/* Key of the exec_match map: NUL-padded executable path as passed to execve. */
struct exec_key {
	char path[SENSOR_EXEC_KEY_LEN];
};

#endif /* AGENT_SENSOR_EVENTS_H */
