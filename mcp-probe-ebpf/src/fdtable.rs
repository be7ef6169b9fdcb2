//! Resolving a file descriptor of the current task to its `struct file` and inode, by
//! walking task->files->fdt->fd[fd] with offsets the agent read from BTF.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use mcp_probe_common::{SocketInfo, StreamKind, AF_INET, AF_INET6};

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

/// The identity of the socket behind `file` (family, addresses, ports).
#[inline(always)]
pub fn socket_info(file: u64) -> Result<SocketInfo, i64> {
    let off = offsets();
    let socket = read_u64(file + off.file_private_data)?;
    let sk = read_u64(socket + off.socket_sk)?;
    let read_u16 = |addr: u64| -> Result<u16, i64> {
        // SAFETY: as read_u64.
        unsafe { bpf_probe_read_kernel(addr as *const u16) }.map_err(|e| e as i64)
    };
    let read_16 = |addr: u64| -> Result<[u8; 16], i64> {
        // SAFETY: as read_u64.
        unsafe { bpf_probe_read_kernel(addr as *const [u8; 16]) }.map_err(|e| e as i64)
    };
    let family = read_u16(sk + off.sock_common_skc_family)?;
    let mut info = SocketInfo {
        family,
        ..SocketInfo::default()
    };
    if family == AF_INET || family == AF_INET6 {
        info.local_port = read_u16(sk + off.sock_common_skc_num)?;
        info.remote_port = u16::from_be(read_u16(sk + off.sock_common_skc_dport)?);
    }
    if family == AF_INET {
        // SAFETY: as read_u64.
        let local: [u8; 4] = unsafe {
            bpf_probe_read_kernel((sk + off.sock_common_skc_rcv_saddr) as *const [u8; 4])
        }
        .map_err(|e| e as i64)?;
        // SAFETY: as read_u64.
        let remote: [u8; 4] =
            unsafe { bpf_probe_read_kernel((sk + off.sock_common_skc_daddr) as *const [u8; 4]) }
                .map_err(|e| e as i64)?;
        info.local_addr[..4].copy_from_slice(&local);
        info.remote_addr[..4].copy_from_slice(&remote);
    } else if family == AF_INET6 {
        info.local_addr = read_16(sk + off.sock_common_skc_v6_rcv_saddr)?;
        info.remote_addr = read_16(sk + off.sock_common_skc_v6_daddr)?;
    }
    Ok(info)
}
