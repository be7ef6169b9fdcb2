//! What a socket is, from the /proc socket tables of the process's network namespace
//! (`/proc/PID/net/{tcp,tcp6,unix}`, read with `procfs`): its transport, its addresses,
//! and whether this end accepted the connection (server) or made it (client).

use std::{net::SocketAddr, sync::Arc};

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

/// Looks up socket inode `ino` as seen by process `tgid`.
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

fn endpoint(addr: SocketAddr) -> ServerRef {
    ServerRef::Endpoint(Arc::from(addr.to_string()))
}
