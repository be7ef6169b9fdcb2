//! What a socket is, from the /proc socket tables of the process's network namespace
//! (`/proc/PID/net/{tcp,tcp6,unix}`, read with `procfs`): its transport, its addresses,
//! and whether this end accepted the connection (server) or made it (client).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use mcp_probe_common::{
    SocketInfo as KernelSocketInfo, AF_INET, AF_INET6, AF_UNIX, SOCKET_INFO_LEN, UNIX_PATH_LEN,
};

use procfs::net::TcpState;

use crate::model::{ServerRef, Transport};

/// The other end of a socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    Tcp(SocketAddr),
    /// The path of a listening unix socket.
    Unix(String),
}

#[derive(Debug, Clone)]
pub struct SocketInfo {
    /// `tcp`, `unix`, or `unix` when the socket is not found (closed already).
    pub transport: Transport,
    /// The remote end (for a client: the server it talks to).
    pub peer: Option<Peer>,
}

impl SocketInfo {
    fn unknown() -> Self {
        Self {
            transport: Transport::Unix,
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
        let peer = (!accepted).then_some(Peer::Tcp(entry.remote_address));
        return SocketInfo {
            transport: Transport::Tcp,
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
            transport: Transport::Unix,
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
            transport: Transport::Tcp,
            // The remote end; only used to name the server when this end is the client.
            peer: (info.remote_port != 0)
                .then(|| addr(&info.remote_addr, info.remote_port))
                .flatten()
                .map(Peer::Tcp),
        },
        AF_UNIX => {
            let path = &info.unix_peer_path;
            let end = path.iter().position(|&b| b == 0).unwrap_or(UNIX_PATH_LEN);
            let path = String::from_utf8_lossy(&path[..end]).into_owned();
            SocketInfo {
                transport: Transport::Unix,
                peer: (!path.is_empty()).then_some(Peer::Unix(path)),
            }
        }
        _ => SocketInfo::unknown(),
    }
}

/// Decodes the payload of a `SocketInfo` record.
pub fn decode_kernel(payload: &[u8]) -> Option<KernelSocketInfo> {
    (payload.len() >= SOCKET_INFO_LEN)
        // SAFETY: repr(C) integers and byte arrays only; length checked; unaligned read.
        .then(|| unsafe { std::ptr::read_unaligned(payload.as_ptr().cast::<KernelSocketInfo>()) })
}

/// Names a server by address: the process listening on it when it is on this host (seen
/// from `tgid`'s network namespace), else `host:port`. Cached for a while per address.
#[derive(Default)]
pub struct Servers {
    cache: HashMap<Peer, (Instant, ServerRef)>,
}

const CACHE_FOR: Duration = Duration::from_secs(30);

impl Servers {
    pub fn resolve(&mut self, tgid: u32, peer: Peer) -> ServerRef {
        if let Some((at, server)) = self.cache.get(&peer) {
            if at.elapsed() < CACHE_FOR {
                return server.clone();
            }
        }
        let listener = match &peer {
            Peer::Tcp(addr) => tcp_listener(tgid, *addr),
            Peer::Unix(path) => unix_listener(tgid, path),
        };
        let server = listener
            .and_then(socket_owner)
            .map(ServerRef::Process)
            .unwrap_or_else(|| match &peer {
                Peer::Tcp(addr) => ServerRef::Endpoint(Arc::from(addr.to_string())),
                Peer::Unix(path) => ServerRef::Endpoint(Arc::from(format!("unix:{path}"))),
            });
        if self.cache.len() > 4096 {
            self.cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
        }
        self.cache.insert(peer, (Instant::now(), server.clone()));
        server
    }
}

/// Inode of the TCP socket listening on `addr`, in `tgid`'s network namespace.
fn tcp_listener(tgid: u32, addr: SocketAddr) -> Option<u64> {
    let process = procfs::process::Process::new(tgid as i32).ok()?;
    let mut tcp = process.tcp().unwrap_or_default();
    tcp.extend(process.tcp6().unwrap_or_default());
    tcp.iter()
        .find(|e| {
            e.state == TcpState::Listen
                && e.local_address.port() == addr.port()
                && (e.local_address.ip().is_unspecified() || e.local_address.ip() == addr.ip())
        })
        .map(|e| e.inode)
}

/// Inode of the unix socket listening on `path`, in `tgid`'s network namespace.
fn unix_listener(tgid: u32, path: &str) -> Option<u64> {
    let process = procfs::process::Process::new(tgid as i32).ok()?;
    process
        .unix()
        .ok()?
        .into_iter()
        .find(|e| {
            e.state == procfs::net::UnixState::UNCONNECTED
                && e.path.as_deref().is_some_and(|p| p.as_os_str() == path)
        })
        .map(|e| e.inode)
}

/// The process holding socket `inode` (a scan of /proc/*/fd).
fn socket_owner(inode: u64) -> Option<u32> {
    procfs::process::all_processes()
        .ok()?
        .flatten()
        .find_map(|p| {
            let owns =
                p.fd().ok()?.flatten().any(
                    |fd| matches!(fd.target, procfs::process::FDTarget::Socket(i) if i == inode),
                );
            owns.then_some(p.pid as u32)
        })
}
