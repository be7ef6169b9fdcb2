//! What a socket is, from the /proc socket tables of the process's network namespace
//! (`/proc/PID/net/{tcp,tcp6,unix}`, read with `procfs`): its transport, its addresses,
//! and whether this end accepted the connection (server) or made it (client).

use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use mcp_probe_common::{
    SocketInfo as KernelSocketInfo, AF_INET, AF_INET6, AF_UNIX, SOCKET_INFO_LEN,
};

use procfs::net::TcpState;

use crate::correlate::ServerRef;

#[derive(Debug, Clone)]
pub struct SocketInfo {
    /// `tcp`, `unix`, or `unix` when the socket is not found (closed already).
    pub transport: &'static str,
    /// Set for a socket this process connected: the server it talks to.
    pub peer: Option<ServerRef>,
}

impl SocketInfo {
    fn unknown() -> Self {
        Self {
            transport: "unix",
            peer: None,
        }
    }
}

/// Looks up socket inode `ino` as seen by process `tgid` (when the kernel's record of the
/// socket was lost, or the stream was followed before this agent started).
pub fn lookup(tgid: u32, ino: u64) -> SocketInfo {
    let Ok(process) = procfs::process::Process::new(tgid as i32) else {
        return SocketInfo::unknown();
    };
    let mut tcp = process.tcp().unwrap_or_default();
    tcp.extend(process.tcp6().unwrap_or_default());
    if let Some(entry) = tcp.iter().find(|e| e.inode == ino) {
        let local = entry.local_address;
        // Accepted connections share their local port with a listening socket.
        let accepted = tcp
            .iter()
            .any(|e| e.state == TcpState::Listen && e.local_address.port() == local.port());
        let peer = (!accepted).then(|| endpoint(entry.remote_address));
        return SocketInfo {
            transport: "tcp",
            peer,
        };
    }
    if let Some(entry) = process
        .unix()
        .unwrap_or_default()
        .into_iter()
        .find(|e| e.inode == ino)
    {
        let _ = entry;
        return SocketInfo {
            transport: "unix",
            peer: None,
        };
    }
    SocketInfo::unknown()
}

/// From the identity the kernel read out of the socket when following started.
pub fn from_kernel(info: &KernelSocketInfo) -> SocketInfo {
    let addr = |bytes: &[u8; 16], port: u16| -> Option<SocketAddr> {
        match info.family {
            AF_INET => Some(SocketAddr::from((
                Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]),
                port,
            ))),
            AF_INET6 => Some(SocketAddr::from((Ipv6Addr::from(*bytes), port))),
            _ => None,
        }
    };
    match info.family {
        AF_INET | AF_INET6 => SocketInfo {
            transport: "tcp",
            // The remote end; only used to name the server when this end is the client.
            peer: (info.remote_port != 0)
                .then(|| addr(&info.remote_addr, info.remote_port))
                .flatten()
                .map(endpoint),
        },
        AF_UNIX => SocketInfo {
            transport: "unix",
            peer: None,
        },
        _ => SocketInfo::unknown(),
    }
}

/// Decodes the payload of a `SocketInfo` record.
pub fn decode_kernel(payload: &[u8]) -> Option<KernelSocketInfo> {
    (payload.len() >= SOCKET_INFO_LEN)
        // SAFETY: repr(C) integers and byte arrays only; length checked; unaligned read.
        .then(|| unsafe { std::ptr::read_unaligned(payload.as_ptr().cast::<KernelSocketInfo>()) })
}

fn endpoint(addr: SocketAddr) -> ServerRef {
    ServerRef::Endpoint(Arc::from(addr.to_string()))
}
