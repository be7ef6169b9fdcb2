//! Keeping the `FDS` cache true: a descriptor number that is closed, replaced by dup2/dup3,
//! or inherited by a new process or program must be classified again.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};

use mcp_probe_common::{EventKind, Syscall};

use crate::{
    io::{fd_key, report_on_followed_socket},
    maps::{offsets, FDS},
};

/// Descriptors forgotten at fork and exec (stdio and the first few others).
const RESET_FDS: u32 = 16;

#[tracepoint]
pub fn sys_enter_close(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the syscall tracepoint format.
    if let Ok(fd) = unsafe { ctx.read_at::<u64>(16) } {
        if fd <= i32::MAX as u64 {
            // The agent finishes what the connection's end completes (bodies read until
            // close) and forgets the connection.
            let pid_tgid = bpf_get_current_pid_tgid();
            report_on_followed_socket(pid_tgid, fd as u32, Syscall::Read, EventKind::Close, 0);
        }
    }
    forget_arg_fd(&ctx, 16)
}

#[tracepoint]
pub fn sys_enter_dup2(ctx: TracePointContext) -> u32 {
    forget_arg_fd(&ctx, 24)
}

#[tracepoint]
pub fn sys_enter_dup3(ctx: TracePointContext) -> u32 {
    forget_arg_fd(&ctx, 24)
}

#[tracepoint]
pub fn sched_process_fork(ctx: TracePointContext) -> u32 {
    // SAFETY: offset read from the tracepoint's format file by the agent.
    if let Ok(child) = unsafe { ctx.read_at::<i32>(offsets().fork_child_pid as usize) } {
        forget_low_fds(child as u32 as u64);
    }
    0
}

#[tracepoint]
pub fn sched_process_exec(_ctx: TracePointContext) -> u32 {
    forget_low_fds(bpf_get_current_pid_tgid() >> 32);
    0
}

#[inline(always)]
fn forget_arg_fd(ctx: &TracePointContext, offset: usize) -> u32 {
    // SAFETY: offsets from the syscall tracepoint format.
    if let Ok(fd) = unsafe { ctx.read_at::<u64>(offset) } {
        if fd <= i32::MAX as u64 {
            let _ = FDS.remove(fd_key(bpf_get_current_pid_tgid() >> 32, fd as u32));
        }
    }
    0
}

#[inline(always)]
fn forget_low_fds(tgid: u64) {
    for fd in 0..RESET_FDS {
        let _ = FDS.remove(fd_key(tgid, fd));
    }
}
