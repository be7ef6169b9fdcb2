//! Hooks on read, write, readv and writev.
//!
//! Entry: one `FDS` lookup; an ignored descriptor returns at once. Otherwise the arguments
//! are kept in `INFLIGHT` for the exit hook.
//! Exit: resolve the descriptor to its stream, decide from the first bytes whether the
//! stream carries JSON-RPC (once per stream), and copy the bytes of followed streams.

use aya_ebpf::{
    bindings::pt_regs,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, generated::bpf_task_pt_regs,
    },
    macros::tracepoint,
    programs::TracePointContext,
};
use aya_log_ebpf::debug;
use mcp_probe_common::{
    errno, inflight, verdict, EventKind, FdState, Stat, StreamKind, StreamState, Syscall,
    MAX_PROBES,
};

use crate::{
    capture, classify,
    fdtable::{current_file, file_info, file_inode},
    maps::{Inflight, FDS, INFLIGHT, STREAMS},
    stats,
};

/// Offsets of the syscall tracepoint fields (stable ABI: `__syscall_nr` then 8-byte args).
const ARG0: usize = 16;
const ARG1: usize = 24;
const ARG2: usize = 32;
const RET: usize = 16;

#[tracepoint]
pub fn sys_enter_read(ctx: TracePointContext) -> u32 {
    on_enter(&ctx, Syscall::Read)
}

#[tracepoint]
pub fn sys_enter_write(ctx: TracePointContext) -> u32 {
    on_enter(&ctx, Syscall::Write)
}

#[tracepoint]
pub fn sys_enter_readv(ctx: TracePointContext) -> u32 {
    on_enter(&ctx, Syscall::Readv)
}

#[tracepoint]
pub fn sys_enter_writev(ctx: TracePointContext) -> u32 {
    on_enter(&ctx, Syscall::Writev)
}

#[tracepoint]
pub fn sys_enter_sendto(ctx: TracePointContext) -> u32 {
    on_enter(&ctx, Syscall::Sendto)
}

#[tracepoint]
pub fn sys_enter_recvfrom(ctx: TracePointContext) -> u32 {
    if peeking(&ctx, RECVFROM_FLAGS) {
        return 0;
    }
    on_enter(&ctx, Syscall::Recvfrom)
}

#[tracepoint]
pub fn sys_enter_sendmsg(ctx: TracePointContext) -> u32 {
    on_enter(&ctx, Syscall::Sendmsg)
}

#[tracepoint]
pub fn sys_enter_recvmsg(ctx: TracePointContext) -> u32 {
    if peeking(&ctx, RECVMSG_FLAGS) {
        return 0;
    }
    on_enter(&ctx, Syscall::Recvmsg)
}

/// Offsets of `flags` in the recvfrom and recvmsg tracepoint records.
const RECVFROM_FLAGS: usize = 40;
const RECVMSG_FLAGS: usize = 32;
const MSG_PEEK: u64 = 2;

/// MSG_PEEK reads leave the bytes in the socket: the next read returns them again.
#[inline(always)]
fn peeking(ctx: &TracePointContext, offset: usize) -> bool {
    // SAFETY: offset from the tracepoint format.
    unsafe { ctx.read_at::<u64>(offset) }.is_ok_and(|flags| flags & MSG_PEEK != 0)
}

/// One program serves the exits of all four syscalls: the syscall is in `INFLIGHT`.
#[tracepoint]
pub fn sys_exit_rw(ctx: TracePointContext) -> u32 {
    on_exit(&ctx)
}

/// Sends a header-only record (close, connection error) if `fd` is a followed socket.
#[inline(always)]
pub fn report_on_followed_socket(
    pid_tgid: u64,
    fd: u32,
    syscall: Syscall,
    kind: EventKind,
    detail: u32,
) {
    // SAFETY: copied out at once.
    let Some(state) = (unsafe { FDS.get(fd_key(pid_tgid >> 32, fd)) }).copied() else {
        return;
    };
    if state.verdict == verdict::IGNORED || state.kind != StreamKind::Socket as u32 {
        return;
    }
    // SAFETY: as above.
    let followed = unsafe { STREAMS.get(state.stream_id) }
        .is_some_and(|s| s.verdict == verdict::FOLLOWED && s.ino == state.ino);
    if followed {
        capture::emit_notice(pid_tgid, fd, syscall, &state, kind, detail);
    }
}

#[inline(always)]
pub fn fd_key(tgid: u64, fd: u32) -> u64 {
    (tgid << 32) | fd as u64
}

#[inline(always)]
fn on_enter(ctx: &TracePointContext, syscall: Syscall) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: offsets from the syscall tracepoint format (see module consts).
    let Ok(fd) = (unsafe { ctx.read_at::<u64>(ARG0) }) else {
        return 0;
    };
    if fd > i32::MAX as u64 {
        return 0;
    }
    let fd = fd as u32;
    // The only work an ignored descriptor costs.
    // SAFETY: the value is copied out before any other map operation.
    if let Some(state) = unsafe { FDS.get(fd_key(pid_tgid >> 32, fd)) } {
        if state.verdict == verdict::IGNORED {
            return 0;
        }
    }
    // SAFETY: as above.
    let (Ok(buf), Ok(count)) = (unsafe { ctx.read_at::<u64>(ARG1) }, unsafe {
        ctx.read_at::<u64>(ARG2)
    }) else {
        return 0;
    };
    let inflight = Inflight {
        syscall: syscall as u32,
        fd,
        buf,
        count,
        flags: 0,
        _pad: 0,
        // SAFETY: helper without preconditions.
        entry_ns: unsafe { bpf_ktime_get_ns() },
    };
    if INFLIGHT.insert(pid_tgid, inflight, 0).is_err() {
        stats::add(Stat::InflightInsertFailed, 1);
    }
    0
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: copied out before the entry is removed.
    let Some(inflight) = (unsafe { INFLIGHT.get(pid_tgid) }).copied() else {
        return 0;
    };
    let _ = INFLIGHT.remove(pid_tgid);
    if inflight.flags & inflight::FROM_AGENT != 0 {
        // Written by the agent for a syscall that was already blocked when it started: trust
        // it only if this exit is that syscall's (it may have returned in between).
        if !registers_match(&inflight) {
            stats::add(Stat::PrefillStale, 1);
            return 0;
        }
        stats::add(Stat::PrefillUsed, 1);
    }
    // SAFETY: `ret` of the sys_exit format.
    let Ok(ret) = (unsafe { ctx.read_at::<i64>(RET) }) else {
        return 0;
    };
    let Ok(syscall) = Syscall::try_from(inflight.syscall) else {
        return 0;
    };
    if ret < 0 {
        let errno = (-ret) as u32;
        if errno::CONNECTION_ERRORS.contains(&errno) {
            report_on_followed_socket(pid_tgid, inflight.fd, syscall, EventKind::Error, errno);
        }
        return 0;
    }
    if ret == 0 {
        return 0;
    }
    let mut inflight = inflight;
    if syscall.has_msghdr() {
        // struct user_msghdr { msg_name, msg_namelen, msg_iov @16, msg_iovlen @24, ... }
        // SAFETY: user memory read through the helper, failure handled.
        let Ok(iov) = (unsafe { bpf_probe_read_user((inflight.buf + 16) as *const [u64; 2]) })
        else {
            stats::add(Stat::FdLookupFailed, 1);
            return 0;
        };
        inflight.buf = iov[0];
        inflight.count = iov[1];
    }
    match try_exit(ctx, pid_tgid, &inflight, syscall, ret as u64) {
        Ok(()) => 0,
        Err(_) => {
            stats::add(Stat::FdLookupFailed, 1);
            0
        }
    }
}

/// The current thread's saved syscall arguments are those of `inflight` (x86_64: the first
/// two arguments are in rdi and rsi, which the kernel does not change during the syscall).
#[inline(always)]
fn registers_match(inflight: &Inflight) -> bool {
    // SAFETY: helpers without preconditions; the registers are read through the checked
    // kernel-read helper.
    unsafe {
        let regs = bpf_task_pt_regs(bpf_get_current_task_btf()) as *const pt_regs;
        let (Ok(fd), Ok(buf)) = (
            bpf_probe_read_kernel(core::ptr::addr_of!((*regs).rdi)),
            bpf_probe_read_kernel(core::ptr::addr_of!((*regs).rsi)),
        ) else {
            return false;
        };
        fd == u64::from(inflight.fd) && buf == inflight.buf
    }
}

#[inline(always)]
fn try_exit(
    ctx: &TracePointContext,
    pid_tgid: u64,
    inflight: &Inflight,
    syscall: Syscall,
    len: u64,
) -> Result<(), i64> {
    let key = fd_key(pid_tgid >> 32, inflight.fd);
    let file = current_file(inflight.fd)?;
    if file == 0 {
        return Ok(());
    }
    // SAFETY: copied out at once.
    let cached = unsafe { FDS.get(key) }.copied();
    let fd_state = match cached {
        // The same descriptor and file as when cached. A `struct file` freed and reused for
        // another open (after a close the hooks did not see, e.g. close_range) points to
        // another inode: classified again below.
        Some(s) if s.file == file && (s.kind == 0 || file_inode(file)? == s.stream_id) => s,
        _ => {
            if cached.is_some_and(|s| s.file == file) {
                stats::add(Stat::FdStale, 1);
            }
            // New descriptor, or the number now points to another file.
            let info = file_info(file)?;
            let state = FdState {
                verdict: if info.kind == 0 {
                    verdict::IGNORED
                } else {
                    verdict::PROBING
                },
                kind: info.kind,
                file,
                stream_id: info.inode,
                ino: info.ino,
            };
            let _ = FDS.insert(key, state, 0);
            state
        }
    };
    if fd_state.verdict == verdict::IGNORED {
        return Ok(());
    }

    let stream = match STREAMS.get_ptr_mut(fd_state.stream_id) {
        // SAFETY: the map value stays valid for this program run.
        Some(p) if unsafe { (*p).ino } == fd_state.ino => p,
        _ => {
            let fresh = StreamState {
                verdict: verdict::PROBING,
                kind: fd_state.kind,
                ino: fd_state.ino,
                ..StreamState::default()
            };
            let _ = STREAMS.insert(fd_state.stream_id, fresh, 0);
            match STREAMS.get_ptr_mut(fd_state.stream_id) {
                Some(p) => p,
                None => return Ok(()),
            }
        }
    };
    // SAFETY: valid map value pointer (see above); races with other CPUs only affect
    // counters of one stream, documented in the README.
    let stream = unsafe { &mut *stream };

    match stream.verdict {
        verdict::FOLLOWED => {}
        verdict::IGNORED => {
            let _ = FDS.insert(
                key,
                FdState {
                    verdict: verdict::IGNORED,
                    ..fd_state
                },
                0,
            );
            return Ok(());
        }
        _ => {
            if classify::looks_like_mcp(inflight, syscall, len) {
                stream.verdict = verdict::FOLLOWED;
                stats::add(Stat::StreamsFollowed, 1);
                capture::emit_notice(
                    pid_tgid,
                    inflight.fd,
                    syscall,
                    &fd_state,
                    EventKind::Followed,
                    0,
                );
                if fd_state.kind == StreamKind::Socket as u32 {
                    capture::emit_socket_info(pid_tgid, inflight.fd, syscall, &fd_state, file);
                }
                debug!(
                    ctx,
                    "following stream ino={} (tgid {})",
                    fd_state.ino,
                    pid_tgid >> 32
                );
            } else {
                stream.probes_failed += 1;
                if stream.probes_failed >= MAX_PROBES {
                    stream.verdict = verdict::IGNORED;
                    stats::add(Stat::StreamsIgnored, 1);
                    debug!(
                        ctx,
                        "ignoring stream ino={}: its first bytes are not JSON", fd_state.ino
                    );
                }
                return Ok(());
            }
        }
    }

    stats::add(Stat::FollowedSyscalls, 1);
    let dir = syscall.direction() as usize & 1;
    let offset = stream.offsets[dir];
    stream.offsets[dir] = offset + len;
    capture::emit_syscall(pid_tgid, inflight, syscall, &fd_state, offset, len);
    Ok(())
}
