//! The vocabulary every stage shares: which stream, which transport, who the server is,
//! which side of an exchange, and one message as one process observed it.
//!
//! Nothing here depends on another module of the agent, so any stage can use it without
//! pointing back up the data flow.

use std::sync::Arc;

use mcp_probe_common::Direction;

/// A stream: the kernel address of its inode plus the inode number, so a freed inode whose
/// memory is reused for a new pipe is a new stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey {
    pub addr: u64,
    pub ino: u64,
}

/// What carries a stream's bytes. Its label is the `network_transport` of every series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// Pipes and FIFOs (stdio).
    Pipe,
    /// TCP, IPv4 or IPv6.
    Tcp,
    /// Unix sockets (also the fallback for a socket that was gone before it was looked up).
    Unix,
}

impl Transport {
    /// The `network_transport` label value.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Pipe => "pipe",
            Transport::Tcp => "tcp",
            Transport::Unix => "unix",
        }
    }

    /// A socket (as opposed to a pipe): connections that open, close and can be reset.
    pub fn is_socket(self) -> bool {
        self != Transport::Pipe
    }
}

/// Who an MCP server is: a process on this host, or a remote address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerRef {
    Process(u32),
    /// `host:port` or `unix:path`.
    Endpoint(Arc<str>),
}

/// The two sides of an exchange, each counted in its own metric families
/// (`mcp_client_*`, `mcp_server_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Sender of the request.
    Client,
    /// Receiver of the request.
    Server,
}

impl Side {
    /// The side of a process by its MCP role (HTTP statuses, connection errors).
    pub fn of_observer(observer_is_server: bool) -> Self {
        if observer_is_server {
            Side::Server
        } else {
            Side::Client
        }
    }

    /// The side of the process that moved a request in `direction`: the writer sent it.
    pub fn of(direction: Direction) -> Self {
        match direction {
            Direction::Write => Side::Client,
            Direction::Read => Side::Server,
        }
    }

    /// The `side` label value.
    pub fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    /// 0 for the client, 1 for the server: an index into per-side arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The other direction.
pub fn opposite(d: Direction) -> Direction {
    match d {
        Direction::Read => Direction::Write,
        Direction::Write => Direction::Read,
    }
}

/// One message as observed by one process.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'c> {
    pub tgid: u32,
    pub comm: &'c str,
    /// `Write`: the process sent it; `Read`: the process received it.
    pub direction: Direction,
    pub stream: StreamKey,
    pub transport: Transport,
    /// For a socket connected to a server (not accepted): the server's address, used to
    /// name the server when its process is not on this host or not known.
    pub peer: Option<&'c ServerRef>,
    /// The MCP session the message belongs to (HTTP transports), when known.
    pub session: Option<&'c str>,
    /// Who sent it (HTTP: keyed hash of the request's credential), when known.
    pub user: Option<&'c str>,
    /// Kernel time (CLOCK_MONOTONIC ns) at which the message was complete.
    pub ts_ns: u64,
    /// JSON bytes of the message (its share of a batch for batch elements).
    pub size: u64,
}

/// What the stream stage asks of the kernel side (implemented by the loaded programs'
/// maps, and by a fake in tests).
pub trait StreamControl {
    /// Stop following a stream (it carries JSON but not JSON-RPC).
    fn ignore_stream(&mut self, stream_id: u64);
    /// Report when this process exits (so its pid is forgotten before it can be reused).
    /// False when the kernel cannot take it (its map is full).
    fn watch_process(&mut self, tgid: u32) -> bool;
    /// Drops the kernel's descriptor verdicts of processes that `gone` says have exited,
    /// and returns (map, entries, capacity) of the kernel's bookkeeping maps.
    fn sweep_maps(
        &mut self,
        gone: &mut dyn FnMut(u32) -> bool,
    ) -> Vec<(&'static str, usize, usize)>;
    /// The pid is in use (by this process or, after reuse, another: exit records tell).
    fn process_exists(&self, tgid: u32) -> bool;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_exported_values() {
        assert_eq!(Transport::Pipe.label(), "pipe");
        assert_eq!(Transport::Tcp.label(), "tcp");
        assert_eq!(Transport::Unix.label(), "unix");
        assert!(!Transport::Pipe.is_socket());
        assert!(Transport::Unix.is_socket());
        assert_eq!(Side::of(Direction::Write).label(), "client");
        assert_eq!(Side::of(Direction::Read).label(), "server");
        assert_eq!(Side::of_observer(true), Side::Server);
        assert_eq!(Side::Server.index(), 1);
        assert_eq!(opposite(Direction::Read), Direction::Write);
    }
}
