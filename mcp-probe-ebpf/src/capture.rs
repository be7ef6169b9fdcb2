//! Copying the bytes of a followed syscall into `EVENTS`.
//!
//! A syscall becomes one record per chunk of at most `MAX_CHUNK` bytes (per iovec for
//! readv/writev). Each record reserves the smallest power-of-two payload bucket that fits,
//! so records are sized to their payload, and the bytes are read from user memory straight
//! into the reservation. Past `MAX_RECORDS_PER_SYSCALL` records, the rest is a `Gap`
//! record plus the last `TAIL_BYTES` bytes (for plain read/write), so the agent still sees
//! where an oversized message ends.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_comm, bpf_ktime_get_ns, bpf_probe_read_user, generated},
};
use mcp_probe_common::{
    Direction, EventHeader, EventKind, FdState, SocketInfo, Stat, Syscall, EVENT_HEADER_LEN,
    MAX_CHUNK, MAX_IOV, MAX_RECORDS_PER_SYSCALL, SOCKET_INFO_LEN, TAIL_BYTES,
};

use aya_ebpf::{macros::map, maps::PerCpuArray};

use crate::{
    fdtable::write_socket_info,
    maps::{wakeup_bytes, Inflight, EVENTS},
    stats,
};

#[repr(C)]
struct Record<const N: usize> {
    header: EventHeader,
    data: [u8; N],
}

/// Loop state of one capture, kept in a per-CPU map value rather than in registers: the
/// verifier treats map contents as unknown, so every loop iteration reaches the same
/// verifier state and is pruned. Kept in registers, the bucket branches multiplied the
/// states per iteration ("BPF program is too large. Processed 1000001 insn").
#[repr(C)]
pub struct CaptureState {
    header: EventHeader,
    buf: u64,
    iov_count: u64,
    vectored: u64,
    left: u64,
    done: u64,
    cur_ptr: u64,
    cur_left: u64,
    iov_index: u64,
    records: u64,
    base_offset: u64,
}

#[map]
static CAPTURE: PerCpuArray<CaptureState> = PerCpuArray::with_max_entries(1, 0);

macro_rules! get {
    ($s:expr, $f:ident) => {{
        // SAFETY: `$s` is a valid per-CPU map value pointer.
        #[allow(unused_unsafe)]
        let value = unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*$s).$f)) };
        value
    }};
}
macro_rules! set {
    ($s:expr, $f:ident, $v:expr) => {
        let value = $v;
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*$s).$f), value) }
    };
}

/// Emits all records of one syscall that returned `len` bytes.
#[inline(always)]
pub fn emit_syscall(
    pid_tgid: u64,
    inflight: &Inflight,
    syscall: Syscall,
    fd: &FdState,
    stream_offset: u64,
    len: u64,
) {
    let Some(s) = CAPTURE.get_ptr_mut(0) else {
        return;
    };
    let vectored = syscall.is_vectored();
    let mut header = record_header(pid_tgid, inflight.fd, syscall, fd, EventKind::Data, 0, 0);
    if syscall.direction() == Direction::Write && inflight.entry_ns != 0 {
        // A write is timed from its start: one that blocked on a full pipe returns after
        // its reader may already have answered it.
        header.ts_ns = inflight.entry_ns;
    }
    header.stream_offset = stream_offset;
    header.syscall_len = len;
    // SAFETY: valid per-CPU map value; nothing else runs on this CPU meanwhile.
    unsafe {
        core::ptr::addr_of_mut!((*s).header).write(header);
    }
    set!(s, buf, inflight.buf);
    set!(
        s,
        iov_count,
        if inflight.count < MAX_IOV as u64 {
            inflight.count
        } else {
            MAX_IOV as u64
        }
    );
    set!(s, vectored, vectored as u64);
    set!(s, left, len);
    set!(s, done, 0);
    set!(s, cur_ptr, if vectored { 0 } else { inflight.buf });
    set!(s, cur_left, if vectored { 0 } else { len });
    set!(s, iov_index, 0);
    set!(s, records, 0);
    set!(s, base_offset, stream_offset);

    for _ in 0..(MAX_RECORDS_PER_SYSCALL + MAX_IOV) {
        if get!(s, left) == 0 {
            break;
        }
        if get!(s, cur_left) == 0 {
            let index = get!(s, iov_index);
            if get!(s, vectored) == 0 || index >= get!(s, iov_count) {
                break;
            }
            // SAFETY: user memory read through the helper; failure ends the capture and
            // the rest is counted below.
            let Ok(iov) =
                (unsafe { bpf_probe_read_user((get!(s, buf) + index * 16) as *const [u64; 2]) })
            else {
                break;
            };
            set!(s, iov_index, index + 1);
            set!(s, cur_ptr, iov[0]);
            let left = get!(s, left);
            set!(s, cur_left, if iov[1] < left { iov[1] } else { left });
            continue;
        }
        let records = get!(s, records);
        if records >= MAX_RECORDS_PER_SYSCALL as u64 {
            break;
        }
        let cur_left = get!(s, cur_left);
        let n = if cur_left < MAX_CHUNK as u64 {
            cur_left
        } else {
            MAX_CHUNK as u64
        };
        let done = get!(s, done);
        let ptr = get!(s, cur_ptr);
        set!(s, cur_ptr, ptr + n);
        set!(s, cur_left, cur_left - n);
        set!(s, left, get!(s, left) - n);
        set!(s, done, done + n);
        set!(s, records, records + 1);
        emit_chunk(s, get!(s, base_offset) + done, done, ptr, n);
    }

    let left = get!(s, left);
    if left == 0 {
        return;
    }
    // Oversized (or unreadable iovec): report the hole, then the tail if we can find it.
    let done = get!(s, done);
    let tail = if !vectored && left > TAIL_BYTES as u64 {
        TAIL_BYTES as u64
    } else {
        0
    };
    let gap = left - tail;
    stats::add(Stat::TruncatedBytes, gap);
    stats::add(Stat::TruncatedSyscalls, 1);
    emit_gap(s, stream_offset + done, done, gap);
    if tail > 0 {
        emit_chunk(
            s,
            stream_offset + len - tail,
            len - tail,
            inflight.buf + len - tail,
            tail,
        );
    }
}

/// The identity of a socket that starts being followed, before its first data record.
#[inline(always)]
pub fn emit_socket_info(pid_tgid: u64, fd: u32, syscall: Syscall, state: &FdState, file: u64) {
    let Some(mut entry) = EVENTS.reserve::<Record<SOCKET_INFO_LEN>>(0) else {
        stats::add(Stat::RingbufFullRecords, 1);
        return;
    };
    let record = entry.as_mut_ptr();
    let header = record_header(
        pid_tgid,
        fd,
        syscall,
        state,
        EventKind::SocketInfo,
        0,
        SOCKET_INFO_LEN as u32,
    );
    // SAFETY: the reservation holds a header and SOCKET_INFO_LEN bytes.
    let written = unsafe {
        core::ptr::addr_of_mut!((*record).header).write(header);
        write_socket_info(
            file,
            core::ptr::addr_of_mut!((*record).data).cast::<SocketInfo>(),
        )
    };
    if written.is_err() {
        entry.discard(0);
        stats::add(Stat::FdLookupFailed, 1);
        return;
    }
    entry.submit(wakeup_flags((EVENT_HEADER_LEN + SOCKET_INFO_LEN) as u64));
    stats::add(Stat::RecordsSubmitted, 1);
}

#[inline(always)]
fn record_header(
    pid_tgid: u64,
    fd: u32,
    syscall: Syscall,
    state: &FdState,
    kind: EventKind,
    detail: u32,
    captured_len: u32,
) -> EventHeader {
    EventHeader {
        kind: kind as u32,
        syscall: syscall as u32,
        // SAFETY: helper without preconditions.
        ts_ns: unsafe { bpf_ktime_get_ns() },
        tgid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
        stream_id: state.stream_id,
        ino: state.ino,
        stream_kind: state.kind,
        fd,
        stream_offset: 0,
        syscall_len: 0,
        syscall_offset: 0,
        captured_len,
        detail,
    }
}

/// A watched server process exited with wait(2) status `status`.
#[inline(always)]
pub fn emit_process_exit(pid_tgid: u64, status: u32) {
    // Not about a stream: the stream fields stay zero.
    emit_notice(
        pid_tgid,
        0,
        Syscall::Write,
        &FdState::default(),
        EventKind::ProcessExit,
        status,
    );
}

/// A header-only record: about a followed stream (`Close`, `Error`) or a process exit.
#[inline(always)]
pub fn emit_notice(
    pid_tgid: u64,
    fd: u32,
    syscall: Syscall,
    state: &FdState,
    kind: EventKind,
    detail: u32,
) {
    let Some(mut entry) = EVENTS.reserve::<EventHeader>(0) else {
        stats::add(Stat::RingbufFullRecords, 1);
        return;
    };
    entry.write(record_header(pid_tgid, fd, syscall, state, kind, detail, 0));
    let flags = if kind == EventKind::Followed {
        // Rare (once per stream) and worth waking for: see EventKind::Followed.
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        wakeup_flags(EVENT_HEADER_LEN as u64)
    };
    entry.submit(flags);
    stats::add(Stat::RecordsSubmitted, 1);
}

#[inline(always)]
fn wakeup_flags(record_bytes: u64) -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    stats::max(Stat::RingHighWater, avail);
    let threshold = wakeup_bytes();
    // Only the record that crosses the threshold wakes the agent (docs/platform.md, design rule 5).
    if avail >= threshold && avail.saturating_sub(record_bytes) < threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

#[inline(always)]
fn emit_gap(s: *mut CaptureState, stream_offset: u64, syscall_offset: u64, gap: u64) {
    match EVENTS.reserve::<EventHeader>(0) {
        Some(mut entry) => {
            // SAFETY: valid per-CPU map value and a reservation of a whole header.
            unsafe {
                let h = core::ptr::addr_of_mut!((*s).header);
                (*h).kind = EventKind::Gap as u32;
                (*h).stream_offset = stream_offset;
                (*h).syscall_offset = syscall_offset;
                (*h).captured_len = 0;
                (*h).detail = if gap > u32::MAX as u64 {
                    u32::MAX
                } else {
                    gap as u32
                };
                copy_header(entry.as_mut_ptr(), h);
            }
            entry.submit(wakeup_flags(EVENT_HEADER_LEN as u64));
            stats::add(Stat::RecordsSubmitted, 1);
        }
        None => stats::add(Stat::RingbufFullRecords, 1),
    }
}

/// Picks the smallest bucket that holds `n` bytes.
#[inline(always)]
fn emit_chunk(s: *mut CaptureState, stream_offset: u64, syscall_offset: u64, ptr: u64, n: u64) {
    // SAFETY: valid per-CPU map value.
    unsafe {
        let h = core::ptr::addr_of_mut!((*s).header);
        (*h).kind = EventKind::Data as u32;
        (*h).stream_offset = stream_offset;
        (*h).syscall_offset = syscall_offset;
        (*h).captured_len = n as u32;
        (*h).detail = 0;
    }
    // SAFETY: valid per-CPU map value.
    let header = unsafe { core::ptr::addr_of!((*s).header) };
    if n <= 256 {
        emit_sized::<256>(header, ptr, n)
    } else if n <= 1024 {
        emit_sized::<1024>(header, ptr, n)
    } else if n <= 2048 {
        emit_sized::<2048>(header, ptr, n)
    } else if n <= 4096 {
        emit_sized::<4096>(header, ptr, n)
    } else if n <= 8192 {
        emit_sized::<8192>(header, ptr, n)
    } else if n <= 16384 {
        emit_sized::<16384>(header, ptr, n)
    } else if n <= 32768 {
        emit_sized::<32768>(header, ptr, n)
    } else if n <= 65536 {
        emit_sized::<65536>(header, ptr, n)
    } else if n <= 131072 {
        emit_sized::<131072>(header, ptr, n)
    } else {
        emit_sized::<MAX_CHUNK>(header, ptr, n)
    }
}

#[inline(never)]
fn emit_sized<const N: usize>(header: *const EventHeader, ptr: u64, n: u64) {
    // Bound the length as a 64-bit value: a 32-bit clamp loses the verifier's bounds
    // ("R2 unbounded memory access" on the probe read below).
    if n > N as u64 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<Record<N>>(0) else {
        stats::add(Stat::RingbufFullRecords, 1);
        stats::add(Stat::RingbufFullBytes, n);
        return;
    };
    let record = entry.as_mut_ptr();
    // SAFETY: `record` points to a reservation of size_of::<Record<N>>() bytes; we write
    // the header and at most N payload bytes into it.
    let read = unsafe {
        copy_header(core::ptr::addr_of_mut!((*record).header), header);
        generated::bpf_probe_read_user(
            core::ptr::addr_of_mut!((*record).data).cast(),
            n as u32,
            ptr as *const _,
        )
    };
    if read != 0 {
        entry.discard(0);
        stats::add(Stat::ReadFailedRecords, 1);
        stats::add(Stat::ReadFailedBytes, n);
        return;
    }
    entry.submit(wakeup_flags((EVENT_HEADER_LEN + N) as u64));
    stats::add(Stat::RecordsSubmitted, 1);
}

/// Copies a header word by word. A plain struct copy becomes a byte-at-a-time memcpy loop
/// that the verifier walks for every bucket (it alone used up the 1M-instruction budget).
///
/// # Safety
/// Both pointers must be valid for a whole `EventHeader`.
#[inline(always)]
unsafe fn copy_header(dst: *mut EventHeader, src: *const EventHeader) {
    const WORDS: usize = EVENT_HEADER_LEN / 8;
    let (dst, src) = (dst.cast::<u64>(), src.cast::<u64>());
    macro_rules! word {
        ($($i:literal)*) => {$(
            // SAFETY: in bounds by the caller's contract; EventHeader is 8-aligned.
            unsafe { dst.add($i).write_volatile(src.add($i).read_volatile()) };
        )*};
    }
    word!(0 1 2 3 4 5 6 7 8 9 10 11);
    const _: () = assert!(WORDS == 12);
}
