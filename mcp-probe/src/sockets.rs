//! What a socket is: its transport, its peer, and whether this end accepted the
//! connection (server) or made it (client). From the record the kernel wrote when
//! following started ([`from_kernel`]) or, failing that, from the host's socket tables as
//! seen from the process's network namespace ([`lookup`], through [`Host`]).

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use mcp_probe_common::{
    SocketInfo as KernelSocketInfo, AF_INET, AF_INET6, AF_UNIX, SOCKET_INFO_LEN, UNIX_PATH_LEN,
};

use crate::{
    host::{Host, HostSocket},
    model::{ServerRef, Transport},
};

/// The other end of a socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Peer {
    Tcp(SocketAddr),
    /// The path of a listening unix socket.
    Unix(String),
}

impl Peer {
    /// The server at this address when no local process is known to serve it:
    /// `host:port` or `unix:PATH`.
    pub fn endpoint(&self) -> ServerRef {
        ServerRef::Endpoint(match self {
            Peer::Tcp(addr) => Arc::from(addr.to_string()),
            Peer::Unix(path) => Arc::from(format!("unix:{path}")),
        })
    }
}

#[derive(Debug, Clone)]
pub struct SocketInfo {
    /// `tcp`, `unix`, or `unix` when the socket is not found (closed already).
    pub transport: Transport,
    /// The remote end (for a client: the server it talks to).
    pub peer: Option<Peer>,
    /// The local end of a TCP socket, when the kernel reported it: a local port that is a
    /// listening one means the connection was accepted and its peer is a client.
    pub local: Option<SocketAddr>,
}

impl SocketInfo {
    fn unknown() -> Self {
        Self {
            transport: Transport::Unix,
            peer: None,
            local: None,
        }
    }
}

/// Looks up socket inode `ino` as seen by process `tgid` (when the kernel's record of the
/// socket was lost, or the stream was followed before this agent started).
pub fn lookup(host: &dyn Host, tgid: u32, ino: u64) -> SocketInfo {
    match host.socket(tgid, ino) {
        Some(HostSocket::Tcp { remote, accepted }) => SocketInfo {
            transport: Transport::Tcp,
            // This end serves an accepted connection: its peer is a client, not a server
            // to name.
            peer: (!accepted).then_some(Peer::Tcp(remote)),
            local: None,
        },
        Some(HostSocket::Unix) => SocketInfo {
            transport: Transport::Unix,
            peer: None,
            local: None,
        },
        None => SocketInfo::unknown(),
    }
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
            local: (info.local_port != 0)
                .then(|| addr(&info.local_addr, info.local_port))
                .flatten(),
        },
        AF_UNIX => {
            let path = &info.unix_peer_path;
            let end = path.iter().position(|&b| b == 0).unwrap_or(UNIX_PATH_LEN);
            let path = String::from_utf8_lossy(&path[..end]).into_owned();
            SocketInfo {
                transport: Transport::Unix,
                peer: (!path.is_empty()).then_some(Peer::Unix(path)),
                local: None,
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

/// The other end of a socket, as seen from one of its processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEnd {
    /// This end was accepted from a listener: it serves, and its peer is a client.
    Client,
    /// This end connected to a server.
    Server(ServerRef),
    /// No peer address (an unnamed unix socket, or a socket already closed).
    Unknown,
}

impl PeerEnd {
    /// The server to name for exchanges on the socket, if any.
    pub fn server(self) -> Option<ServerRef> {
        match self {
            PeerEnd::Server(s) => Some(s),
            PeerEnd::Client | PeerEnd::Unknown => None,
        }
    }
}

/// Names a server by address: the process listening on it when it is on this host (seen
/// from `tgid`'s network namespace), else `host:port`; and tells which sockets were
/// accepted (their local port is a listening one), whose peer is a client to leave
/// unnamed.
///
/// The cost per new connection does not grow with the host's connections: a namespace's
/// listening sockets are read as one small table (sock_diag, listeners only) and kept,
/// read again only when an address is missing from it, at most every
/// [`LISTENERS_FRESH_FOR`]; a listener's owning process is looked for once per listener;
/// names are kept per (namespace, address) for [`CACHE_FOR`].
pub struct Servers {
    /// Where listeners and their owners are looked up.
    host: Arc<dyn Host>,
    cache: HashMap<(u64, Peer), (Instant, ServerRef)>,
    /// Per network namespace: its listening TCP sockets, and when they were read.
    listeners: HashMap<u64, Listeners>,
    /// Listener inode -> the process holding it (`None`: not found).
    owners: HashMap<u64, Option<u32>>,
}

/// The listening TCP sockets of one namespace, by port.
struct Listeners {
    read_at: Instant,
    by_port: HashMap<u16, Vec<(std::net::IpAddr, u64)>>,
}

impl Listeners {
    /// The listener an address connects to: the same port at the same address, or at a
    /// wildcard one.
    fn find(&self, addr: SocketAddr) -> Option<u64> {
        self.by_port
            .get(&addr.port())?
            .iter()
            .find_map(|(ip, inode)| (ip.is_unspecified() || *ip == addr.ip()).then_some(*inode))
    }
}

const CACHE_FOR: Duration = Duration::from_secs(30);
/// A namespace's listeners are read again on a miss only if older than this: a client's
/// own (ephemeral) port always misses, and must not cost a read per connection.
pub const LISTENERS_FRESH_FOR: Duration = Duration::from_millis(100);
/// Entries kept per table before it is emptied (bounded memory).
const MAX_ENTRIES: usize = 4096;

impl Servers {
    pub fn new(host: Arc<dyn Host>) -> Self {
        Self {
            host,
            cache: HashMap::new(),
            listeners: HashMap::new(),
            owners: HashMap::new(),
        }
    }

    /// What is at the other end of a socket of `tgid`: a client, when this end was
    /// accepted (its local port is a listening one); else the server it connected to,
    /// named by the process listening on the peer's address, or by the address. The
    /// namespace is read once.
    pub fn peer_end(&mut self, tgid: u32, info: &SocketInfo) -> PeerEnd {
        let netns = self.host.netns(tgid);
        if let (Some(netns), Some(local)) = (netns, info.local) {
            if self.tcp_listener(tgid, netns, local).is_some() {
                return PeerEnd::Client;
            }
        }
        match &info.peer {
            Some(peer) => PeerEnd::Server(self.resolve_in(tgid, netns.unwrap_or(0), peer.clone())),
            None => PeerEnd::Unknown,
        }
    }

    /// The socket whose local end is `local`, in `tgid`'s namespace, was accepted from a
    /// listener (this end serves).
    #[cfg(test)]
    pub fn is_accepted(&mut self, tgid: u32, local: SocketAddr) -> bool {
        let Some(netns) = self.host.netns(tgid) else {
            return false;
        };
        self.tcp_listener(tgid, netns, local).is_some()
    }

    #[cfg(test)]
    pub fn resolve(&mut self, tgid: u32, peer: Peer) -> ServerRef {
        let netns = self.host.netns(tgid).unwrap_or(0);
        self.resolve_in(tgid, netns, peer)
    }

    fn resolve_in(&mut self, tgid: u32, netns: u64, peer: Peer) -> ServerRef {
        let key = (netns, peer);
        if let Some((at, server)) = self.cache.get(&key) {
            if at.elapsed() < CACHE_FOR {
                return server.clone();
            }
        }
        let (netns, peer) = key;
        let listener = match &peer {
            Peer::Tcp(addr) => self.tcp_listener(tgid, netns, *addr),
            Peer::Unix(path) => self.host.unix_listener(tgid, path),
        };
        let server = listener
            .and_then(|inode| self.owner(inode))
            .map(ServerRef::Process)
            .unwrap_or_else(|| peer.endpoint());
        if self.cache.len() > MAX_ENTRIES {
            self.cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
        }
        self.cache
            .insert((netns, peer), (Instant::now(), server.clone()));
        server
    }

    /// The listener `addr` connects to in namespace `netns` (of `tgid`), from the kept
    /// table; on a miss, from a fresh read if the table is older than
    /// [`LISTENERS_FRESH_FOR`].
    fn tcp_listener(&mut self, tgid: u32, netns: u64, addr: SocketAddr) -> Option<u64> {
        if let Some(table) = self.listeners.get(&netns) {
            if let Some(inode) = table.find(addr) {
                return Some(inode);
            }
            if table.read_at.elapsed() < LISTENERS_FRESH_FOR {
                return None;
            }
        }
        let read = self.host.tcp_listeners(tgid)?;
        let mut by_port: HashMap<u16, Vec<(std::net::IpAddr, u64)>> = HashMap::new();
        for (local, inode) in read {
            by_port
                .entry(local.port())
                .or_default()
                .push((local.ip(), inode));
        }
        if self.listeners.len() > MAX_ENTRIES {
            self.listeners.clear();
        }
        let table = Listeners {
            read_at: Instant::now(),
            by_port,
        };
        let found = table.find(addr);
        self.listeners.insert(netns, table);
        found
    }

    /// The process holding listener `inode`, looked for once per listener.
    fn owner(&mut self, inode: u64) -> Option<u32> {
        if let Some(owner) = self.owners.get(&inode) {
            return *owner;
        }
        let owner = self.host.socket_owner(inode);
        if self.owners.len() > MAX_ENTRIES {
            self.owners.clear();
        }
        // A listener not found yet may be found later (its process may still be starting
        // up); only found owners are kept.
        if owner.is_some() {
            self.owners.insert(inode, owner);
        }
        owner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    const CLIENT: u32 = 100;

    fn tcp(addr: &str) -> SocketAddr {
        addr.parse().expect("a literal address")
    }

    fn endpoint(name: &str) -> ServerRef {
        ServerRef::Endpoint(Arc::from(name))
    }

    #[test]
    fn lookup_tells_a_connected_socket_from_an_accepted_one() {
        let host = FakeHost::new();
        let remote = tcp("10.0.0.2:8080");
        host.add_socket(
            CLIENT,
            11,
            HostSocket::Tcp {
                remote,
                accepted: false,
            },
        );
        host.add_socket(
            CLIENT,
            12,
            HostSocket::Tcp {
                remote: tcp("10.0.0.3:51000"),
                accepted: true,
            },
        );
        host.add_socket(CLIENT, 13, HostSocket::Unix);

        let connected = lookup(&host, CLIENT, 11);
        assert_eq!(connected.transport, Transport::Tcp);
        assert_eq!(connected.peer, Some(Peer::Tcp(remote)));
        // This end serves: its peer is a client, not a server to name.
        let accepted = lookup(&host, CLIENT, 12);
        assert_eq!(accepted.transport, Transport::Tcp);
        assert_eq!(accepted.peer, None);
        let unix = lookup(&host, CLIENT, 13);
        assert_eq!(unix.transport, Transport::Unix);
        assert_eq!(unix.peer, None);
        // Closed already, or another process's: unix with no peer, as before.
        for (tgid, ino) in [(CLIENT, 14), (CLIENT + 1, 11)] {
            let unknown = lookup(&host, tgid, ino);
            assert_eq!(unknown.transport, Transport::Unix);
            assert_eq!(unknown.peer, None);
        }
    }

    #[test]
    fn resolve_names_a_local_listener_by_its_owner_else_the_address() {
        let host = Arc::new(FakeHost::new());
        // A server on every address of port 8080, one on 127.0.0.1:9000 only.
        host.add_tcp_listener(CLIENT, tcp("0.0.0.0:8080"), 21);
        host.set_socket_owner(21, 200);
        host.add_tcp_listener(CLIENT, tcp("127.0.0.1:9000"), 22);
        host.set_socket_owner(22, 300);
        // A listener whose holder cannot be found (another user's descriptors).
        host.add_tcp_listener(CLIENT, tcp("127.0.0.1:9100"), 23);
        let mut servers = Servers::new(host.clone());

        let resolve = |servers: &mut Servers, addr| servers.resolve(CLIENT, Peer::Tcp(tcp(addr)));
        assert_eq!(
            resolve(&mut servers, "127.0.0.1:8080"),
            ServerRef::Process(200)
        );
        assert_eq!(
            resolve(&mut servers, "127.0.0.1:9000"),
            ServerRef::Process(300)
        );
        // Same port, another address: not that listener.
        assert_eq!(
            resolve(&mut servers, "10.0.0.2:9000"),
            endpoint("10.0.0.2:9000")
        );
        assert_eq!(
            resolve(&mut servers, "127.0.0.1:9100"),
            endpoint("127.0.0.1:9100")
        );
        assert_eq!(
            resolve(&mut servers, "[2001:db8::1]:443"),
            endpoint("[2001:db8::1]:443")
        );
        // Listeners are looked up in the client's namespace, not another process's.
        assert_eq!(
            servers.resolve(CLIENT + 1, Peer::Tcp(tcp("127.0.0.2:8080"))),
            endpoint("127.0.0.2:8080")
        );
    }

    #[test]
    fn resolve_names_a_unix_listener_by_its_owner_else_its_path() {
        let host = Arc::new(FakeHost::new());
        host.add_unix_listener(CLIENT, "/run/mcp/weather.sock", 31);
        host.set_socket_owner(31, 400);
        let mut servers = Servers::new(host);
        assert_eq!(
            servers.resolve(CLIENT, Peer::Unix("/run/mcp/weather.sock".into())),
            ServerRef::Process(400)
        );
        assert_eq!(
            servers.resolve(CLIENT, Peer::Unix("/run/mcp/gone.sock".into())),
            endpoint("unix:/run/mcp/gone.sock")
        );
    }

    #[test]
    fn resolve_keeps_an_answer_for_a_while() {
        let host = Arc::new(FakeHost::new());
        host.add_tcp_listener(CLIENT, tcp("127.0.0.1:8080"), 21);
        host.set_socket_owner(21, 200);
        let mut servers = Servers::new(host.clone());
        let peer = Peer::Tcp(tcp("127.0.0.1:8080"));
        assert_eq!(
            servers.resolve(CLIENT, peer.clone()),
            ServerRef::Process(200)
        );
        // The host is not asked again within the cache's lifetime.
        host.set_socket_owner(21, 201);
        assert_eq!(servers.resolve(CLIENT, peer), ServerRef::Process(200));
    }

    /// Under connection churn: every accepted connection is recognised from the kept
    /// listener table (one read for the namespace, whatever the number of connections),
    /// and the client's own ephemeral ports re-read it at most once per freshness window.
    #[test]
    fn the_cost_per_connection_does_not_grow_with_connections() {
        const SERVER: u32 = 300;
        let host = Arc::new(FakeHost::new());
        host.spawn(SERVER, 1, &["server"]);
        host.spawn(CLIENT, 1, &["client"]);
        host.set_netns(SERVER, 7);
        host.set_netns(CLIENT, 7);
        for tgid in [SERVER, CLIENT] {
            host.add_tcp_listener(tgid, tcp("0.0.0.0:8000"), 21);
        }
        host.set_socket_owner(21, SERVER);
        let mut servers = Servers::new(host.clone());
        for port in 40_000..41_000u16 {
            let local = SocketAddr::from(([127, 0, 0, 1], 8000));
            assert!(servers.is_accepted(SERVER, local));
            let client_end = SocketAddr::from(([127, 0, 0, 1], port));
            // The first miss may read the table again; then it is fresh.
            let _ = servers.is_accepted(CLIENT, client_end);
            assert_eq!(
                servers.resolve(CLIENT, Peer::Tcp(local)),
                ServerRef::Process(SERVER)
            );
        }
        assert!(
            host.listener_dumps() <= 2,
            "{} reads of the listeners for 1,000 connections",
            host.listener_dumps()
        );
    }

    /// A server that starts listening after the table was read is found once the table is
    /// older than the freshness window.
    #[test]
    fn a_new_listener_is_found_after_the_freshness_window() {
        let host = Arc::new(FakeHost::new());
        host.spawn(CLIENT, 1, &["client"]);
        let mut servers = Servers::new(host.clone());
        let addr = tcp("127.0.0.1:9300");
        assert_eq!(
            servers.resolve(CLIENT, Peer::Tcp(tcp("127.0.0.1:9299"))),
            endpoint("127.0.0.1:9299")
        );
        host.add_tcp_listener(CLIENT, addr, 31);
        host.set_socket_owner(31, 400);
        std::thread::sleep(LISTENERS_FRESH_FOR + Duration::from_millis(20));
        assert_eq!(
            servers.resolve(CLIENT, Peer::Tcp(addr)),
            ServerRef::Process(400)
        );
        assert!(servers.is_accepted(CLIENT, addr));
    }
}
