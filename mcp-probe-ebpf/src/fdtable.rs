//! Resolving a file descriptor of the current task to its `struct file` and inode, by
//! walking task->files->fdt->fd[fd] with offsets the agent read from BTF.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel, generated};
use mcp_probe_common::{SocketInfo, StreamKind, AF_INET, AF_INET6, AF_UNIX, UNIX_PATH_LEN};

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

/// The address of the inode behind a `struct file *`.
#[inline(always)]
pub fn file_inode(file: u64) -> Result<u64, i64> {
    read_u64(file + offsets().file_f_inode)
}

/// The inode behind a `struct file *` and whether it is a stream we may follow.
#[inline(always)]
pub fn file_info(file: u64) -> Result<FileInfo, i64> {
    let off = offsets();
    let inode = file_inode(file)?;
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

/// Writes the identity of the socket behind `file` (family, addresses, ports, unix peer
/// path) into `out`, which points into a ring buffer reservation: the 148 bytes do not fit
/// on the BPF stack next to the rest of the exit hook.
///
/// # Safety
/// `out` must be valid for writes of a whole `SocketInfo`.
#[inline(always)]
pub unsafe fn write_socket_info(file: u64, out: *mut SocketInfo) -> Result<(), i64> {
    let off = offsets();
    let socket = read_u64(file + off.file_private_data)?;
    let sk = read_u64(socket + off.socket_sk)?;
    let read_into = |dst: *mut u8, len: u32, src: u64| -> Result<(), i64> {
        // SAFETY: the helper checks `src`; `dst` is inside `out` by the caller's contract.
        let rc = unsafe { generated::bpf_probe_read_kernel(dst.cast(), len, src as *const _) };
        if rc == 0 {
            Ok(())
        } else {
            Err(rc)
        }
    };
    // SAFETY (all writes below): fields of `*out`, valid by the caller's contract.
    unsafe {
        core::ptr::addr_of_mut!((*out).family).write(0);
        core::ptr::addr_of_mut!((*out).local_port).write(0);
        core::ptr::addr_of_mut!((*out).remote_port).write(0);
        core::ptr::addr_of_mut!((*out)._pad).write(0);
        core::ptr::addr_of_mut!((*out).local_addr).write([0; 16]);
        core::ptr::addr_of_mut!((*out).remote_addr).write([0; 16]);
        core::ptr::addr_of_mut!((*out).unix_peer_path)
            .cast::<u8>()
            .write(0);
    }
    // SAFETY: as read_u64.
    let family: u16 =
        unsafe { bpf_probe_read_kernel((sk + off.sock_common_skc_family) as *const u16) }
            .map_err(|e| e as i64)?;
    // SAFETY: as above.
    unsafe { core::ptr::addr_of_mut!((*out).family).write(family) };
    if family == AF_INET || family == AF_INET6 {
        // SAFETY: as read_u64.
        let local: u16 =
            unsafe { bpf_probe_read_kernel((sk + off.sock_common_skc_num) as *const u16) }
                .map_err(|e| e as i64)?;
        // SAFETY: as read_u64.
        let remote: u16 =
            unsafe { bpf_probe_read_kernel((sk + off.sock_common_skc_dport) as *const u16) }
                .map_err(|e| e as i64)?;
        // SAFETY: as above.
        unsafe {
            core::ptr::addr_of_mut!((*out).local_port).write(local);
            core::ptr::addr_of_mut!((*out).remote_port).write(u16::from_be(remote));
        }
    }
    // SAFETY: as above (pointers to fields of `*out`).
    let (local_addr, remote_addr, path) = unsafe {
        (
            core::ptr::addr_of_mut!((*out).local_addr).cast::<u8>(),
            core::ptr::addr_of_mut!((*out).remote_addr).cast::<u8>(),
            core::ptr::addr_of_mut!((*out).unix_peer_path).cast::<u8>(),
        )
    };
    if family == AF_INET {
        read_into(local_addr, 4, sk + off.sock_common_skc_rcv_saddr)?;
        read_into(remote_addr, 4, sk + off.sock_common_skc_daddr)?;
    } else if family == AF_INET6 {
        read_into(local_addr, 16, sk + off.sock_common_skc_v6_rcv_saddr)?;
        read_into(remote_addr, 16, sk + off.sock_common_skc_v6_daddr)?;
    } else if family == AF_UNIX {
        // The peer's address: for a client, the path of the server's listening socket
        // (an accepted socket shares its listener's address).
        let peer = read_u64(sk + off.unix_sock_peer)?;
        let addr = if peer != 0 {
            read_u64(peer + off.unix_sock_addr)?
        } else {
            0
        };
        if addr != 0 {
            // struct sockaddr_un { sa_family_t sun_family; char sun_path[108]; }
            let _ = read_into(path, UNIX_PATH_LEN as u32, addr + off.unix_address_name + 2);
        }
    }
    Ok(())
}
