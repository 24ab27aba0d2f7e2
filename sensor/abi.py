"""Python mirror of bpf/events.h, written once; tests/unit/test_abi.py compiles the header with
gcc and checks that every size, offset and constant here agrees with it."""

import ctypes
import enum

COMM_LEN = 16
PATH_MAX = 4096
ARGV_MAX = 1024
ARG_CHUNK = 128
MAX_ARGS = 14
SOCKADDR_MAX = 128
EXEC_KEY_LEN = 256
NO_SLOT = 0xFFFFFFFF
MAX_SLOTS = 256
LPM_PATH_MAX = 248
PORT_RANGES = 8
REPEAT_PATH_MAX = 128
DNS_MAX = 1232
PID_PAGE = 4096
PID_PAGES = 1024
EVENT_TYPE_MAX = 16
COUNTER_DROP_BASE = EVENT_TYPE_MAX
COUNTER_SLOTS = 2 * EVENT_TYPE_MAX


class EventType(enum.IntEnum):
    EXEC = 1
    FORK = 2
    EXIT = 3
    OPEN = 4
    CONNECT = 5
    FILE_CHANGE = 6
    INTERFACE = 7
    DNS = 8
    CWD = 9
    OPENED = 10


class OpenSyscall(enum.IntEnum):
    OPENAT = 1
    OPENAT2 = 2
    OPEN = 3
    CREAT = 4


class Interface(enum.IntFlag):
    IO_URING = 1
    FILE_HANDLES = 2
    PROCESS_VM = 4
    PTRACE = 8
    PIDFD_GETFD = 16
    BPF = 32
    SENSOR = 64


class FileOp(enum.IntEnum):
    RENAME = 1
    UNLINK = 2
    CHMOD = 3
    CHOWN = 4
    TRUNCATE = 5
    LINK = 6
    SYMLINK = 7


class OpenInfo(enum.IntFlag):
    PATH_TRUNCATED = 1
    READ_AT_EXIT = 2
    SENT_AT_ENTRY = 4


class ExecFlags(enum.IntFlag):
    AGENT_START = 1
    KERNEL_MATCHED = 2
    ARGV_TRUNCATED = 4
    NO_ARGS = 8
    EXECVEAT = 16
    DENIED = 32


class KernelAction(enum.IntEnum):
    NONE = 0
    KILL = 1
    STOP = 2


class EnforceFlags(enum.IntFlag):
    SECRETS = 1
    CONNECT = 2
    EXEC = 4
    INTERFACES = 8
    LISTEN = 16
    DNS_NAMES = 32


class TrackedFlags(enum.IntFlag):
    PENDING_EXEC = 1


class EventHeader(ctypes.Structure):
    _fields_ = [
        ("ktime_ns", ctypes.c_uint64),
        ("cgroup_id", ctypes.c_uint64),
        ("type", ctypes.c_uint32),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("slot", ctypes.c_uint32),
        ("kernel_action", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("comm", ctypes.c_char * COMM_LEN),
    ]


class ExecEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("old_tid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("dirfd", ctypes.c_int32),
        ("argc", ctypes.c_uint32),
        ("matched_slot", ctypes.c_uint32),
        ("filename_len", ctypes.c_uint16),
        ("argv_len", ctypes.c_uint16),
        ("filename", ctypes.c_char * PATH_MAX),
        ("argv", ctypes.c_char * ARGV_MAX),
    ]


class ForkEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("child_pid", ctypes.c_uint32),
        ("parent_pid", ctypes.c_uint32),
    ]


class ExitEvent(ctypes.Structure):
    _fields_ = [("hdr", EventHeader)]


class OpenedEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("fd", ctypes.c_int32),
        ("reserved", ctypes.c_uint32),
    ]


class SensorSelf(ctypes.Structure):
    _fields_ = [
        ("tgid", ctypes.c_uint32),
        ("pgid", ctypes.c_uint32),
        ("enforce", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class CwdEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("fd", ctypes.c_int32),
        ("path_len", ctypes.c_uint16),
        ("reserved", ctypes.c_uint16),
        ("path", ctypes.c_char * PATH_MAX),
    ]


class OpenEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("dirfd", ctypes.c_int32),
        ("flags", ctypes.c_uint32),
        ("mode", ctypes.c_uint32),
        ("syscall", ctypes.c_uint16),
        ("path_len", ctypes.c_uint16),
        ("info", ctypes.c_uint32),
        ("names_gen", ctypes.c_uint32),
        ("result", ctypes.c_int32),
        ("reserved", ctypes.c_uint32),
        ("path", ctypes.c_char * PATH_MAX),
    ]


class NetCall(enum.IntEnum):
    CONNECT = 1
    SENDMSG = 2
    BIND = 3
    LISTEN = 4


class ConnectEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("fd", ctypes.c_int32),
        ("addrlen", ctypes.c_uint32),
        ("call", ctypes.c_uint32),
        ("refused", ctypes.c_uint32),
        ("addr", ctypes.c_uint8 * SOCKADDR_MAX),
    ]


class DnsDirection(enum.IntEnum):
    QUERY = 1
    ANSWER = 2


class DnsNameMatch(enum.IntFlag):
    EXACT = 1
    SUBDOMAINS = 2


class DnsNameKey(ctypes.Structure):
    _fields_ = [
        ("slot", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("hash", ctypes.c_uint64),
    ]


class DnsPendingKey(ctypes.Structure):
    _fields_ = [
        ("root_pid", ctypes.c_uint32),
        ("addr", ctypes.c_uint8 * 16),
    ]


class DnsEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("fd", ctypes.c_int32),
        ("direction", ctypes.c_uint32),
        ("pending", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
        ("peer", ctypes.c_uint8 * 16),
        ("peer_port", ctypes.c_uint16),
        ("len", ctypes.c_uint16),
        ("total", ctypes.c_uint32),
        ("data", ctypes.c_uint8 * DNS_MAX),
    ]


class FileChangeEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("op", ctypes.c_uint32),
        ("dirfd", ctypes.c_int32),
        ("dirfd2", ctypes.c_int32),
        ("fd", ctypes.c_int32),
        ("mode", ctypes.c_uint32),
        ("uid", ctypes.c_uint32),
        ("gid", ctypes.c_uint32),
        ("path_len", ctypes.c_uint16),
        ("path2_len", ctypes.c_uint16),
        ("path", ctypes.c_char * PATH_MAX),
        ("path2", ctypes.c_char * PATH_MAX),
    ]


class InterfaceEvent(ctypes.Structure):
    _fields_ = [
        ("hdr", EventHeader),
        ("interface", ctypes.c_uint32),
        ("allowed", ctypes.c_uint32),
        ("target_pid", ctypes.c_int32),
        ("signal", ctypes.c_uint32),
    ]


class TrackedProc(ctypes.Structure):
    _fields_ = [
        ("slot", ctypes.c_uint32),
        ("root_pid", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("brokers", ctypes.c_uint32),
    ]


class SlotPolicy(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint32),
        ("secret_action", ctypes.c_uint32),
        ("connect_action", ctypes.c_uint32),
        ("exec_action", ctypes.c_uint32),
        ("interface_action", ctypes.c_uint32),
        ("interfaces_allowed", ctypes.c_uint32),
        ("listen_action", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32),
    ]


class RepeatKey(ctypes.Structure):
    _fields_ = [
        ("tgid", ctypes.c_uint32),
        ("slot", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("names_gen", ctypes.c_uint32),
        ("path", ctypes.c_char * REPEAT_PATH_MAX),
    ]


class RepeatCount(ctypes.Structure):
    _fields_ = [
        ("expires_ns", ctypes.c_uint64),
        ("count", ctypes.c_uint64),
        ("last_ns", ctypes.c_uint64),
    ]


class PathLpmKey(ctypes.Structure):
    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("slot", ctypes.c_uint32),
        ("path", ctypes.c_char * LPM_PATH_MAX),
    ]


class AddrLpmKey(ctypes.Structure):
    _fields_ = [
        ("prefixlen", ctypes.c_uint32),
        ("slot", ctypes.c_uint32),
        ("addr", ctypes.c_uint8 * 16),
    ]


class PortRanges(ctypes.Structure):
    _fields_ = [
        ("count", ctypes.c_uint32),
        ("lo", ctypes.c_uint16 * PORT_RANGES),
        ("hi", ctypes.c_uint16 * PORT_RANGES),
    ]


class ExecKey(ctypes.Structure):
    _fields_ = [("path", ctypes.c_char * EXEC_KEY_LEN)]


# Every struct the header defines, by its C name: what the layout test walks.
STRUCTS = {
    "event_header": EventHeader,
    "exec_event": ExecEvent,
    "fork_event": ForkEvent,
    "exit_event": ExitEvent,
    "open_event": OpenEvent,
    "cwd_event": CwdEvent,
    "opened_event": OpenedEvent,
    "sensor_self": SensorSelf,
    "connect_event": ConnectEvent,
    "dns_event": DnsEvent,
    "dns_name_key": DnsNameKey,
    "dns_pending_key": DnsPendingKey,
    "file_change_event": FileChangeEvent,
    "interface_event": InterfaceEvent,
    "tracked_proc": TrackedProc,
    "slot_policy": SlotPolicy,
    "path_lpm_key": PathLpmKey,
    "repeat_key": RepeatKey,
    "repeat_count": RepeatCount,
    "addr_lpm_key": AddrLpmKey,
    "port_ranges": PortRanges,
    "exec_key": ExecKey,
}

# Every integer constant and enum member the header defines, by its C name.
CONSTANTS = {
    "SENSOR_COMM_LEN": COMM_LEN,
    "SENSOR_PATH_MAX": PATH_MAX,
    "SENSOR_ARGV_MAX": ARGV_MAX,
    "SENSOR_ARG_CHUNK": ARG_CHUNK,
    "SENSOR_MAX_ARGS": MAX_ARGS,
    "SENSOR_SOCKADDR_MAX": SOCKADDR_MAX,
    "SENSOR_EXEC_KEY_LEN": EXEC_KEY_LEN,
    "SENSOR_NO_SLOT": NO_SLOT,
    "SENSOR_MAX_SLOTS": MAX_SLOTS,
    "SENSOR_LPM_PATH_MAX": LPM_PATH_MAX,
    "SENSOR_PORT_RANGES": PORT_RANGES,
    "SENSOR_REPEAT_PATH_MAX": REPEAT_PATH_MAX,
    "SENSOR_DNS_MAX": DNS_MAX,
    "SENSOR_PID_PAGE": PID_PAGE,
    "SENSOR_PID_PAGES": PID_PAGES,
    "EVENT_TYPE_MAX": EVENT_TYPE_MAX,
    "COUNTER_DROP_BASE": COUNTER_DROP_BASE,
    "COUNTER_SLOTS": COUNTER_SLOTS,
    **{f"EVENT_{m.name}": m.value for m in EventType},
    **{f"OPEN_SYSCALL_{m.name}": m.value for m in OpenSyscall},
    **{f"OPEN_{m.name}": m.value for m in OpenInfo},
    **{f"FILE_OP_{m.name}": m.value for m in FileOp},
    **{f"NET_CALL_{m.name}": m.value for m in NetCall},
    **{f"DNS_{m.name}": m.value for m in DnsDirection},
    **{f"DNS_NAME_{m.name}": m.value for m in DnsNameMatch},
    **{f"INTERFACE_{m.name}": m.value for m in Interface},
    **{f"EXEC_{m.name}": m.value for m in ExecFlags},
    **{f"KERNEL_ACTION_{m.name}": m.value for m in KernelAction},
    **{f"ENFORCE_{m.name}": m.value for m in EnforceFlags},
    **{f"TRACKED_{m.name}": m.value for m in TrackedFlags},
}
