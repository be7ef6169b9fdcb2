//! Every map and global the programs use. Names and sizes come from `mcp_probe_common`.

use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use mcp_probe_common::{
    FdState, InflightSyscall, KernelOffsets, StreamState, DEFAULT_RING_BYTES, FDS_ENTRIES,
    INFLIGHT_ENTRIES, STAT_COUNT, STREAMS_ENTRIES, WATCHED_ENTRIES,
};

/// Records for the agent: an `EventHeader` then the captured bytes. The agent resizes it
/// at load time (`--ring-bytes`).
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(DEFAULT_RING_BYTES, 0);

/// Per-CPU counters indexed by `mcp_probe_common::Stat`; the agent sums and exports them.
#[map]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

/// Key `(tgid << 32) | fd` -> what that descriptor is. The syscall-entry hooks look only at
/// this map, so an ignored descriptor costs one lookup. Entries are dropped at close/dup2/dup3
/// and at fork/exec for the low descriptors; LRU eviction bounds the rest.
#[map]
pub static FDS: LruHashMap<u64, FdState> = LruHashMap::with_max_entries(FDS_ENTRIES, 0);

/// Key stream id (inode address) -> verdict and per-direction byte offsets. Shared by both
/// ends of a pipe, so the writer's verdict also applies to the reader.
#[map]
pub static STREAMS: LruHashMap<u64, StreamState> = LruHashMap::with_max_entries(STREAMS_ENTRIES, 0);

/// Key tgid -> 1: MCP processes (set by the agent when it first sees their traffic) whose
/// exit is reported, so the agent forgets them before their pid can be reused.
#[map]
pub static WATCHED: HashMap<u32, u32> = HashMap::with_max_entries(WATCHED_ENTRIES, 0);

/// Key pid_tgid -> the arguments of a read/write-family syscall between entry and exit.
/// The agent also writes entries at start-up for threads already blocked in such a syscall.
#[map]
pub static INFLIGHT: LruHashMap<u64, Inflight> = LruHashMap::with_max_entries(INFLIGHT_ENTRIES, 0);

/// Syscall arguments kept from entry to exit.
pub type Inflight = InflightSyscall;

/// Kernel struct offsets from BTF, set by the agent at load time.
#[unsafe(no_mangle)]
pub static OFFSETS: KernelOffsets = KernelOffsets {
    task_struct_files: 0,
    files_struct_fdt: 0,
    fdtable_max_fds: 0,
    fdtable_fd: 0,
    file_f_inode: 0,
    inode_i_mode: 0,
    inode_i_ino: 0,
    file_private_data: 0,
    socket_sk: 0,
    sock_common_skc_family: 0,
    sock_common_skc_num: 0,
    sock_common_skc_dport: 0,
    sock_common_skc_rcv_saddr: 0,
    sock_common_skc_daddr: 0,
    sock_common_skc_v6_rcv_saddr: 0,
    sock_common_skc_v6_daddr: 0,
    unix_sock_peer: 0,
    unix_sock_addr: 0,
    unix_address_name: 0,
    task_struct_exit_code: 0,
    exit_group_dead: 0,
    fork_child_pid: 0,
};

/// Unconsumed bytes in `EVENTS` at which the record that crosses it wakes the agent.
#[unsafe(no_mangle)]
pub static WAKEUP_BYTES: u64 = 1 << 20;

/// Reads a global set by the loader (volatile so the compiler does not fold the default).
#[inline(always)]
pub fn offsets() -> KernelOffsets {
    // SAFETY: reading a plain static; volatile only stops constant folding.
    unsafe { core::ptr::read_volatile(&OFFSETS) }
}

#[inline(always)]
pub fn wakeup_bytes() -> u64 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&WAKEUP_BYTES) }
}
