//! Resolving a file descriptor of the current task to its `struct file` and inode, by
//! walking task->files->fdt->fd[fd] with offsets the agent read from BTF.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use mcp_probe_common::StreamKind;

use crate::maps::offsets;

const S_IFMT: u16 = 0o170000;
const S_IFIFO: u16 = 0o010000;
const S_IFSOCK: u16 = 0o140000;

/// What an fd points to.
pub struct FileInfo {
    pub inode: u64,
    pub ino: u64,
    /// `StreamKind` as u32, or 0 for anything that is not a pipe/FIFO or socket.
    pub kind: u32,
}

#[inline(always)]
fn read_u64(addr: u64) -> Result<u64, i64> {
    // SAFETY: bpf_probe_read_kernel tolerates any address and reports failure.
    unsafe { bpf_probe_read_kernel(addr as *const u64) }.map_err(|e| e as i64)
}

/// The `struct file *` behind `fd` in the current task, 0 if the slot is empty.
#[inline(always)]
pub fn current_file(fd: u32) -> Result<u64, i64> {
    let off = offsets();
    // SAFETY: helper without preconditions.
    let task = unsafe { bpf_get_current_task() };
    let files = read_u64(task + off.task_struct_files)?;
    if files == 0 {
        return Ok(0);
    }
    let fdt = read_u64(files + off.files_struct_fdt)?;
    // SAFETY: as read_u64.
    let max_fds: u32 = unsafe { bpf_probe_read_kernel((fdt + off.fdtable_max_fds) as *const u32) }
        .map_err(|e| e as i64)?;
    if fd >= max_fds {
        return Ok(0);
    }
    let fd_array = read_u64(fdt + off.fdtable_fd)?;
    read_u64(fd_array + (fd as u64) * 8)
}

/// The inode behind a `struct file *` and whether it is a stream we may follow.
#[inline(always)]
pub fn file_info(file: u64) -> Result<FileInfo, i64> {
    let off = offsets();
    let inode = read_u64(file + off.file_f_inode)?;
    // SAFETY: as read_u64.
    let mode: u16 = unsafe { bpf_probe_read_kernel((inode + off.inode_i_mode) as *const u16) }
        .map_err(|e| e as i64)?;
    let kind = match mode & S_IFMT {
        S_IFIFO => StreamKind::Pipe as u32,
        S_IFSOCK => StreamKind::Socket as u32,
        _ => 0,
    };
    let ino = if kind != 0 {
        read_u64(inode + off.inode_i_ino)?
    } else {
        0
    };
    Ok(FileInfo { inode, ino, kind })
}
