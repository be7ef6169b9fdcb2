//! Listening TCP sockets of a network namespace, from the kernel's sock_diag netlink
//! interface.
//!
//! Why not `/proc/PID/net/tcp`: the kernel generates that file from every socket of the
//! namespace, TIME_WAIT and established ones included, so reading it costs time in
//! proportion to the host's connections (under connection churn, most of the agent's CPU
//! went there). A sock_diag dump asked for the LISTEN state only walks the listening
//! sockets: its cost does not grow with the connections.
//!
//! A netlink socket answers for the namespace it was created in, so one is created per
//! namespace, on a short-lived thread that joins the namespace first (`setns`), and kept.

use std::{io, net::SocketAddr, os::fd::AsRawFd, sync::Mutex};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr as NetlinkAddr};

use crate::HashMap;

/// Namespaces whose netlink socket is kept (past it, all are closed and made again).
const MAX_NAMESPACES: usize = 256;

/// One netlink socket per network namespace, made on first use.
#[derive(Default)]
pub struct SockDiag {
    sockets: Mutex<HashMap<u64, Socket>>,
}

impl std::fmt::Debug for SockDiag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SockDiag")
    }
}

impl SockDiag {
    /// The listening TCP sockets (address, inode) of namespace `netns`, which process
    /// `tgid` is in.
    pub fn tcp_listeners(&self, tgid: u32, netns: u64) -> io::Result<Vec<(SocketAddr, u64)>> {
        let mut sockets = self
            .sockets
            .lock()
            .map_err(|_| io::Error::other("sock_diag lock poisoned"))?;
        if !sockets.contains_key(&netns) {
            if sockets.len() >= MAX_NAMESPACES {
                sockets.clear();
            }
            sockets.insert(netns, socket_in_namespace_of(tgid)?);
        }
        let socket = sockets
            .get(&netns)
            .ok_or_else(|| io::Error::other("no sock_diag socket"))?;
        let mut listeners = Vec::new();
        let dumped = dump_listeners(socket, AF_INET, &mut listeners)
            .and_then(|()| dump_listeners(socket, AF_INET6, &mut listeners));
        if dumped.is_err() {
            // A socket left in a bad state (a dump cut short) is made again next time.
            sockets.remove(&netns);
        }
        dumped.map(|()| listeners)
    }
}

/// A sock_diag socket in process `tgid`'s network namespace: made on a thread that joins
/// the namespace, so the agent's own threads never change namespace.
fn socket_in_namespace_of(tgid: u32) -> io::Result<Socket> {
    let own =
        std::fs::metadata("/proc/self/ns/net").map(|m| std::os::unix::fs::MetadataExt::ino(&m));
    let theirs = std::fs::metadata(format!("/proc/{tgid}/ns/net"))
        .map(|m| std::os::unix::fs::MetadataExt::ino(&m))?;
    if own.is_ok_and(|own| own == theirs) {
        return connected_socket();
    }
    let ns = std::fs::File::open(format!("/proc/{tgid}/ns/net"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: a valid namespace fd; only this thread changes namespace, and it
                // ends right after making the socket.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                connected_socket()
            })
            .join()
            .map_err(|_| io::Error::other("setns thread panicked"))?
    })
}

fn connected_socket() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&NetlinkAddr::new(0, 0))?;
    Ok(socket)
}

/// Appends the listening TCP sockets of one address family.
fn dump_listeners(socket: &Socket, family: u8, out: &mut Vec<(SocketAddr, u64)>) -> io::Result<()> {
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::LISTEN,
            socket_id: if family == AF_INET {
                SocketId::new_v4()
            } else {
                SocketId::new_v6()
            },
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut received = vec![0u8; 64 * 1024];
    loop {
        let n = socket.recv(&mut &mut received[..], 0)?;
        let mut offset = 0;
        while offset < n {
            let message = <NetlinkMessage<SockDiagMessage>>::deserialize(&received[offset..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let len = message.header.length as usize;
            match message.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(response)) => {
                    let id = &response.header.socket_id;
                    out.push((
                        SocketAddr::new(id.source_address, id.source_port),
                        u64::from(response.header.inode),
                    ));
                }
                NetlinkPayload::Done(_) => return Ok(()),
                NetlinkPayload::Error(e) => {
                    return Err(io::Error::other(format!("sock_diag: {e:?}")));
                }
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "sock_diag closed",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener this test opens is in the dump of its own namespace, with its inode.
    #[test]
    fn a_listener_of_this_process_is_dumped() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let netns = std::fs::metadata("/proc/self/ns/net")
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .expect("netns");
        let diag = SockDiag::default();
        let listeners = diag
            .tcp_listeners(std::process::id(), netns)
            .expect("a sock_diag dump of this process's own namespace");
        assert!(
            listeners.iter().any(|(a, inode)| *a == addr && *inode > 0),
            "{addr} in {listeners:?}"
        );
    }
}
