//! Keeping the `FDS` cache true: a descriptor number that is closed, replaced by dup2/dup3,
//! or inherited by a new process or program must be classified again.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel},
    macros::tracepoint,
    programs::TracePointContext,
};

use mcp_probe_common::{EventKind, Syscall};

use crate::{
    capture,
    io::{fd_key, report_on_followed_socket},
    maps::{offsets, FDS, WATCHED},
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

/// A watched MCP process's last thread exits: report its exit status (the agent counts
/// server restarts and crash loops from these, and forgets the process before its pid can
/// be reused). Every other process exit costs one map lookup.
#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // SAFETY: copied out at once.
    if unsafe { WATCHED.get(tgid) }.is_none() {
        return 0;
    }
    let off = offsets();
    let last_thread = if off.exit_group_dead != 0 {
        // SAFETY: offset read from the tracepoint's format file by the agent.
        unsafe { ctx.read_at::<u8>(off.exit_group_dead as usize) }.is_ok_and(|dead| dead != 0)
    } else {
        pid_tgid as u32 == tgid
    };
    if !last_thread {
        return 0;
    }
    let _ = WATCHED.remove(tgid);
    // SAFETY: reading the current task through the helper, failure handled.
    let status = unsafe {
        let task = bpf_get_current_task();
        bpf_probe_read_kernel((task + off.task_struct_exit_code) as *const i32)
    }
    .unwrap_or(-1);
    capture::emit_process_exit(pid_tgid, status as u32);
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
