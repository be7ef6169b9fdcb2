//! The ABI between `mcp-probe-ebpf` (kernel) and `mcp-probe` (agent).
//!
//! Everything crossing the boundary is `#[repr(C)]` with integer fields and explicit
//! padding, and has its size asserted, so both sides agree on every byte. Kinds and flags
//! are plain integers that the agent decodes with `TryFrom`.
#![no_std]

/// Name of the ring buffer carrying [`EventHeader`] records followed by payload bytes.
pub const EVENTS_MAP: &str = "EVENTS";
/// Default ring buffer size in bytes (power of two). See docs/platform.md, design rule 7: 8 MiB
/// holds 20 ms of a 400 MB/s capture, and the agent is woken at --wakeup-bytes (1 MiB).
/// The agent maps the ring twice (for wrap-around), so it shows as twice its size in the
/// agent's resident memory.
pub const DEFAULT_RING_BYTES: u32 = 8 << 20;
/// Name of the per-CPU statistics array, indexed by [`Stat`].
pub const STATS_MAP: &str = "STATS";
/// Name of the per-file-descriptor verdict cache.
pub const FDS_MAP: &str = "FDS";
/// Name of the per-stream state map.
pub const STREAMS_MAP: &str = "STREAMS";
/// Name of the global holding [`KernelOffsets`].
pub const OFFSETS_GLOBAL: &str = "OFFSETS";
/// Name of the map of MCP processes (clients and servers) whose exit the kernel reports.
pub const WATCHED_MAP: &str = "WATCHED";
pub const WATCHED_ENTRIES: u32 = 16_384;
/// Name of the per-thread map of read/write-family syscalls between entry and exit.
pub const INFLIGHT_MAP: &str = "INFLIGHT";
/// Name of the global holding the wake-up threshold in bytes (u64).
pub const WAKEUP_BYTES_GLOBAL: &str = "WAKEUP_BYTES";

/// Entries of the per-(tgid, fd) verdict cache (LRU).
pub const FDS_ENTRIES: u32 = 65_536;
/// Entries of the per-stream state map (LRU).
pub const STREAMS_ENTRIES: u32 = 16_384;
/// Entries of the per-thread in-flight syscall map (LRU).
pub const INFLIGHT_ENTRIES: u32 = 16_384;

/// Largest payload carried by one record. Bigger syscalls are split into several records.
pub const MAX_CHUNK: usize = 256 * 1024;
/// Most records one syscall may produce; the rest is counted as truncated.
pub const MAX_RECORDS_PER_SYSCALL: usize = 64;
/// Most iovec entries of one readv/writev that are captured; the rest is counted as truncated.
pub const MAX_IOV: usize = 16;
/// Bytes of the end of a truncated syscall that are still captured, so the agent still
/// sees the newline that ends an oversized message and can size it exactly.
pub const TAIL_BYTES: usize = 4096;
/// A stream whose first this-many chunks do not look like JSON-RPC is ignored for good.
pub const MAX_PROBES: u32 = 64;

/// Record kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum EventKind {
    /// Bytes read from or written to a followed stream.
    Data = 1,
    /// Bytes of a followed stream that were not captured (truncation); header only.
    Gap = 2,
    /// A process closed its descriptor of a followed socket; header only.
    Close = 3,
    /// A syscall on a followed socket failed with a connection error; `detail` is errno.
    Error = 4,
    /// Sent once when a socket starts being followed: a [`SocketInfo`] follows the header.
    SocketInfo = 5,
    /// A watched MCP server process exited; `detail` is its exit status as wait(2) encodes
    /// it (exit code << 8, or the terminating signal).
    ProcessExit = 6,
    /// A stream starts being followed; header-only, and it wakes the agent at once, so
    /// the process behind it is identified (from /proc) while it surely runs.
    Followed = 7,
}

impl TryFrom<u32> for EventKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            1 => Ok(Self::Data),
            2 => Ok(Self::Gap),
            3 => Ok(Self::Close),
            4 => Ok(Self::Error),
            5 => Ok(Self::SocketInfo),
            6 => Ok(Self::ProcessExit),
            7 => Ok(Self::Followed),
            other => Err(other),
        }
    }
}

/// Direction of a record, from the point of view of the process making the syscall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum Direction {
    /// The process read these bytes (it received them).
    Read = 0,
    /// The process wrote these bytes (it sent them).
    Write = 1,
}

impl TryFrom<u32> for Direction {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            0 => Ok(Self::Read),
            1 => Ok(Self::Write),
            other => Err(other),
        }
    }
}

/// What kind of file a stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum StreamKind {
    /// An anonymous pipe or a named FIFO.
    Pipe = 1,
    /// A socket (unix or inet).
    Socket = 2,
}

impl TryFrom<u32> for StreamKind {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            1 => Ok(Self::Pipe),
            2 => Ok(Self::Socket),
            other => Err(other),
        }
    }
}

/// Syscall that produced a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Syscall {
    Read = 0,
    Write = 1,
    Readv = 2,
    Writev = 3,
    /// sendto(2), which is also send(2).
    Sendto = 4,
    /// recvfrom(2), which is also recv(2).
    Recvfrom = 5,
    Sendmsg = 6,
    Recvmsg = 7,
}

impl Syscall {
    pub const fn direction(self) -> Direction {
        match self {
            Self::Read | Self::Readv | Self::Recvfrom | Self::Recvmsg => Direction::Read,
            Self::Write | Self::Writev | Self::Sendto | Self::Sendmsg => Direction::Write,
        }
    }
    /// The bytes are described by an iovec array (for *msg, the one in the msghdr).
    pub const fn is_vectored(self) -> bool {
        matches!(
            self,
            Self::Readv | Self::Writev | Self::Sendmsg | Self::Recvmsg
        )
    }
    /// The second argument is a `struct user_msghdr *`.
    pub const fn has_msghdr(self) -> bool {
        matches!(self, Self::Sendmsg | Self::Recvmsg)
    }
}

impl TryFrom<u32> for Syscall {
    type Error = u32;
    fn try_from(v: u32) -> Result<Self, u32> {
        match v {
            0 => Ok(Self::Read),
            1 => Ok(Self::Write),
            2 => Ok(Self::Readv),
            3 => Ok(Self::Writev),
            4 => Ok(Self::Sendto),
            5 => Ok(Self::Recvfrom),
            6 => Ok(Self::Sendmsg),
            7 => Ok(Self::Recvmsg),
            other => Err(other),
        }
    }
}

/// Header of every ring buffer record; `captured_len` payload bytes follow it.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub struct EventHeader {
    /// [`EventKind`].
    pub kind: u32,
    /// [`Syscall`].
    pub syscall: u32,
    /// CLOCK_MONOTONIC (`bpf_ktime_get_ns()`): when a read returned, or when a write began
    /// (a write that blocks on a full pipe returns after its reader may have answered it).
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
    /// Stream identity: the kernel address of the file's inode. Both ends of a pipe share it.
    pub stream_id: u64,
    /// The inode number (pipe:[N] / socket:[N] in /proc/PID/fd).
    pub ino: u64,
    /// [`StreamKind`].
    pub stream_kind: u32,
    /// The file descriptor used by the syscall.
    pub fd: u32,
    /// Offset of the first byte of this record in the stream (per direction), counted from
    /// when the stream started being followed.
    pub stream_offset: u64,
    /// The syscall's return value: the real byte count of the whole syscall.
    pub syscall_len: u64,
    /// Offset of this record's bytes within the syscall's bytes.
    pub syscall_offset: u64,
    /// Payload bytes following the header (for `Gap`: 0).
    pub captured_len: u32,
    /// `Gap`: bytes missing starting at `stream_offset`; `Error`: the errno. Otherwise 0.
    pub detail: u32,
}

pub const EVENT_HEADER_LEN: usize = core::mem::size_of::<EventHeader>();
const _: () = assert!(EVENT_HEADER_LEN == 96);

/// Value of the `INFLIGHT` map, keyed by `pid_tgid`: a read/write-family syscall's
/// arguments, kept from its entry to its exit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct InflightSyscall {
    /// [`Syscall`].
    pub syscall: u32,
    pub fd: u32,
    /// The user buffer, the iovec array (readv/writev) or the `msghdr` (sendmsg/recvmsg).
    pub buf: u64,
    /// The byte count, or the iovec count for readv/writev.
    pub count: u64,
    /// [`inflight::FROM_AGENT`] when the agent wrote the entry at start-up for a thread that
    /// was already blocked in the syscall; the exit hook checks it against the thread's
    /// registers before trusting it.
    pub flags: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` at the syscall's entry (0 for entries the agent wrote).
    pub entry_ns: u64,
}
const _: () = assert!(core::mem::size_of::<InflightSyscall>() == 40);

/// Flags of [`InflightSyscall::flags`].
pub mod inflight {
    /// Written by the agent from `/proc/PID/task/TID/syscall`, not by the entry hook.
    pub const FROM_AGENT: u32 = 1;
}

/// Per-CPU statistics kept by the kernel programs (index into the `STATS` array).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Stat {
    /// Records submitted to the ring buffer.
    RecordsSubmitted = 0,
    /// Records that did not fit in the ring buffer.
    RingbufFullRecords = 1,
    /// Payload bytes lost because the ring buffer was full.
    RingbufFullBytes = 2,
    /// Records lost because reading user memory failed.
    ReadFailedRecords = 3,
    /// Payload bytes lost because reading user memory failed.
    ReadFailedBytes = 4,
    /// Bytes of followed streams beyond the per-syscall capture limit.
    TruncatedBytes = 5,
    /// Syscalls on followed streams.
    FollowedSyscalls = 6,
    /// Failures to resolve an fd to its file (kernel read failed).
    FdLookupFailed = 7,
    /// Streams that started being followed.
    StreamsFollowed = 8,
    /// Streams ignored after their first bytes did not look like JSON-RPC.
    StreamsIgnored = 9,
    /// Syscall entries that could not be remembered for their exit (in-flight map full).
    InflightInsertFailed = 10,
    /// Records whose payload was cut short of the syscall's bytes (tail capture of an
    /// oversized syscall): the gap bytes are in `TruncatedBytes`.
    TruncatedSyscalls = 11,
    /// Highest number of unconsumed ring buffer bytes seen by a producer since the agent
    /// last read (and reset) it. A maximum, not a sum.
    RingHighWater = 12,
    /// Blocked syscalls found by the agent at start-up whose exit the hook captured.
    PrefillUsed = 13,
    /// Entries the agent wrote at start-up that no longer matched the thread's syscall
    /// (it had returned meanwhile): dropped unused.
    PrefillStale = 14,
    /// Cached descriptor verdicts found pointing at another inode than when cached (the
    /// descriptor number, or its `struct file`, was reused): classified again.
    FdStale = 15,
}

pub const STAT_COUNT: u32 = 16;

impl Stat {
    pub const ALL: [Stat; STAT_COUNT as usize] = [
        Stat::RecordsSubmitted,
        Stat::RingbufFullRecords,
        Stat::RingbufFullBytes,
        Stat::ReadFailedRecords,
        Stat::ReadFailedBytes,
        Stat::TruncatedBytes,
        Stat::FollowedSyscalls,
        Stat::FdLookupFailed,
        Stat::StreamsFollowed,
        Stat::StreamsIgnored,
        Stat::InflightInsertFailed,
        Stat::TruncatedSyscalls,
        Stat::RingHighWater,
        Stat::PrefillUsed,
        Stat::PrefillStale,
        Stat::FdStale,
    ];
}

/// Errno values of failed socket syscalls that are reported as connection errors (others,
/// such as EAGAIN on non-blocking sockets, are normal operation).
pub mod errno {
    pub const EPIPE: u32 = 32;
    pub const ENETUNREACH: u32 = 101;
    pub const ECONNABORTED: u32 = 103;
    pub const ECONNRESET: u32 = 104;
    pub const ETIMEDOUT: u32 = 110;
    pub const EHOSTUNREACH: u32 = 113;
    pub const CONNECTION_ERRORS: [u32; 6] = [
        EPIPE,
        ENETUNREACH,
        ECONNABORTED,
        ECONNRESET,
        ETIMEDOUT,
        EHOSTUNREACH,
    ];
}

/// Verdict on a stream or on a (tgid, fd) pair.
pub mod verdict {
    /// Not decided yet: first bytes are still being checked.
    pub const PROBING: u32 = 1;
    /// Carries JSON-RPC (or HTTP later): every byte is captured.
    pub const FOLLOWED: u32 = 2;
    /// Not MCP traffic: skipped with one map lookup.
    pub const IGNORED: u32 = 3;
}

/// Value of the `FDS` map, keyed by `(tgid << 32) | fd`.
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct FdState {
    pub verdict: u32,
    /// [`StreamKind`], 0 when the fd is not a pipe or socket.
    pub kind: u32,
    /// Kernel address of the `struct file` the fd pointed to when this entry was made.
    pub file: u64,
    /// Stream id (inode address), 0 when the fd is ignored.
    pub stream_id: u64,
    /// Inode number of the stream.
    pub ino: u64,
}
const _: () = assert!(core::mem::size_of::<FdState>() == 32);

/// Value of the `STREAMS` map, keyed by stream id (inode address).
#[derive(Clone, Copy, Debug, Default)]
#[repr(C)]
pub struct StreamState {
    pub verdict: u32,
    /// [`StreamKind`].
    pub kind: u32,
    pub ino: u64,
    /// First bytes that did not look like JSON-RPC so far.
    pub probes_failed: u32,
    pub _pad: u32,
    /// Next stream offset per [`Direction`] (read, write).
    pub offsets: [u64; 2],
}
const _: () = assert!(core::mem::size_of::<StreamState>() == 40);

/// Address family values of [`SocketInfo::family`].
pub const AF_UNIX: u16 = 1;
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// A followed socket's identity, read from its `struct sock` when following starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct SocketInfo {
    /// `AF_UNIX`, `AF_INET`, `AF_INET6`.
    pub family: u16,
    /// Local port, host byte order.
    pub local_port: u16,
    /// Remote port, host byte order (0 when not connected).
    pub remote_port: u16,
    pub _pad: u16,
    /// IPv4 addresses use the first 4 bytes. Network byte order.
    pub local_addr: [u8; 16],
    pub remote_addr: [u8; 16],
    /// `AF_UNIX`: the path the peer is bound to (for a client: the server's listening
    /// path), NUL-padded; empty for socketpairs and abstract sockets are `\0name`.
    pub unix_peer_path: [u8; UNIX_PATH_LEN],
}
pub const UNIX_PATH_LEN: usize = 108;
pub const SOCKET_INFO_LEN: usize = core::mem::size_of::<SocketInfo>();
const _: () = assert!(SOCKET_INFO_LEN == 148);

/// Kernel struct member offsets, read from BTF by the agent at start-up and handed to the
/// programs as a global. All in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct KernelOffsets {
    pub task_struct_files: u64,
    pub files_struct_fdt: u64,
    pub fdtable_max_fds: u64,
    pub fdtable_fd: u64,
    pub file_f_inode: u64,
    pub inode_i_mode: u64,
    pub inode_i_ino: u64,
    pub file_private_data: u64,
    pub socket_sk: u64,
    pub sock_common_skc_family: u64,
    pub sock_common_skc_num: u64,
    pub sock_common_skc_dport: u64,
    pub sock_common_skc_rcv_saddr: u64,
    pub sock_common_skc_daddr: u64,
    pub sock_common_skc_v6_rcv_saddr: u64,
    pub sock_common_skc_v6_daddr: u64,
    pub unix_sock_peer: u64,
    pub unix_sock_addr: u64,
    pub unix_address_name: u64,
    pub task_struct_exit_code: u64,
    /// Offset of `group_dead` in the `sched:sched_process_exit` record, 0 when absent.
    pub exit_group_dead: u64,
    /// Offset of `child_pid` in the `sched:sched_process_fork` tracepoint record.
    pub fork_child_pid: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are repr(C), integer-only, with explicit padding.
    unsafe impl aya::Pod for super::KernelOffsets {}
    unsafe impl aya::Pod for super::FdState {}
    unsafe impl aya::Pod for super::StreamState {}
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::SocketInfo {}
    unsafe impl aya::Pod for super::InflightSyscall {}
}
