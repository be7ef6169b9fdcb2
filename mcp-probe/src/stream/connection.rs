//! Per-stream state as one explicit structure: a [`Connection`] per [`StreamKey`] holds
//! both directions (each with its framer, expected offset and counters), the connection's
//! HTTP exchange, and its socket facts. Forgetting a stream is one removal.
//!
//! The [`Connections`] table also keeps the totals the agent's limits need: directions
//! followed (`--max-streams`) and bytes buffered for partial messages (the memory budget).

use mcp_probe_common::Direction;

use crate::{
    metrics::AgentMetrics,
    model::{ServerRef, StreamKey, Transport},
    protocols::{http::exchange::HttpExchange, Framer},
    sockets::SocketInfo,
    HashMap,
};

/// Sockets whose identity is remembered (beyond this, /proc is asked instead).
const MAX_SOCKETS: usize = 65_536;

/// Outcomes of the texts one direction carried: JSON-RPC, or (before any was) not.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TextCounts {
    /// Texts that held JSON-RPC (only whether it is 0 matters).
    pub jsonrpc: u64,
    /// Texts that were not JSON-RPC before the stream carried any.
    pub other: u64,
}

/// One direction of a stream: the bytes one side wrote, or the bytes the other side read.
pub(crate) struct Half {
    pub framer: Box<dyn Framer>,
    /// `framer.buffered_bytes()` as last added to the table's total.
    pub buffered: usize,
    /// The kernel's stream offset the next record should start at; another one means
    /// bytes in between were lost.
    pub next_offset: u64,
    pub last_ts_ns: u64,
    /// The process of the last record, and its descriptor.
    pub last_tgid: u32,
    pub last_fd: u32,
    pub texts: TextCounts,
    /// `framer.resync_discarded_bytes()` as last counted in the metrics.
    pub counted_resync: u64,
}

/// What carries a stream, resolved when its first direction is followed.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub transport: Transport,
    /// For a socket connected to a server (not accepted): that server.
    pub peer: Option<ServerRef>,
}

/// Everything the agent keeps about one stream.
#[derive(Default)]
pub(crate) struct Connection {
    /// By direction: `[read, write]`.
    halves: [Option<Half>; 2],
    /// Resolved while a direction is followed.
    pub link: Option<Link>,
    pub exchange: HttpExchange,
    /// The socket's identity as the kernel reported it when following started.
    pub socket: Option<SocketInfo>,
    /// The socket's identity came in since the last sweep: its first data record may
    /// still be on its way (the kernel writes the two back to back, but a drain can fall
    /// between them), so the sweep keeps it once.
    socket_is_new: bool,
}

pub(crate) fn index(d: Direction) -> usize {
    match d {
        Direction::Read => 0,
        Direction::Write => 1,
    }
}

impl Connection {
    pub fn half(&self, d: Direction) -> Option<&Half> {
        self.halves[index(d)].as_ref()
    }

    /// The followed directions, read first.
    pub fn halves(&self) -> impl Iterator<Item = (Direction, &Half)> {
        [Direction::Read, Direction::Write]
            .into_iter()
            .filter_map(|d| Some((d, self.half(d)?)))
    }

    pub fn is_followed(&self) -> bool {
        self.halves.iter().any(Option::is_some)
    }

    /// Its directions (`[read, write]`), link and exchange, once it is removed.
    pub fn into_parts(self) -> ([Option<Half>; 2], Option<Link>, HttpExchange) {
        (self.halves, self.link, self.exchange)
    }

    /// The framer of direction `d`, its counters and the exchange, borrowed apart so that
    /// frames go to the exchange while the framer emits them.
    pub fn parts(&mut self, d: Direction) -> Option<(&mut Half, &mut HttpExchange, &Link)> {
        let half = self.halves[index(d)].as_mut()?;
        Some((half, &mut self.exchange, self.link.as_ref()?))
    }
}

/// The table of connections.
pub(crate) struct Connections {
    map: HashMap<StreamKey, Connection>,
    /// Directions followed (the `Some` halves).
    directions: usize,
    /// Connections holding a `socket`.
    sockets: usize,
    budget: Budget,
}

/// Bytes held for partial messages across all streams, and the most allowed.
pub(crate) struct Budget {
    /// Sum of the halves' `buffered`.
    total: usize,
    limit: usize,
}

impl Budget {
    /// Brings the total up to date after `half` was fed; past the limit, the message that
    /// outgrew it stops being buffered (it is still sized exactly).
    pub fn account(&mut self, half: &mut Half, metrics: &AgentMetrics) {
        let now = half.framer.buffered_bytes();
        self.total = self.total - half.buffered + now;
        half.buffered = now;
        if self.total > self.limit && now > 0 {
            half.framer.shed();
            metrics.evicted("message_buffer", 1);
            let after = half.framer.buffered_bytes();
            self.total = self.total - half.buffered + after;
            half.buffered = after;
        }
    }
}

impl Connections {
    /// `max_buffered_bytes`: the memory budget of partial messages.
    pub fn new(max_buffered_bytes: usize) -> Self {
        Self {
            map: HashMap::default(),
            directions: 0,
            sockets: 0,
            budget: Budget {
                total: 0,
                limit: max_buffered_bytes,
            },
        }
    }

    /// Directions followed, for `--max-streams` and `mcp_probe_tracked_streams`.
    pub fn directions(&self) -> usize {
        self.directions
    }

    #[cfg(test)]
    pub fn buffered_total(&self) -> usize {
        self.budget.total
    }

    pub fn get(&self, stream: &StreamKey) -> Option<&Connection> {
        self.map.get(stream)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&StreamKey, &Connection)> {
        self.map.iter()
    }

    /// Every followed direction.
    pub fn halves(&self) -> impl Iterator<Item = (StreamKey, Direction, &Half)> {
        self.map
            .iter()
            .flat_map(|(k, c)| c.halves().map(move |(d, h)| (*k, d, h)))
    }

    /// Remembers a socket's identity from the kernel, within `MAX_SOCKETS`.
    pub fn set_socket(&mut self, stream: StreamKey, info: SocketInfo) {
        if self.sockets >= MAX_SOCKETS {
            return;
        }
        let conn = self.map.entry(stream).or_default();
        if conn.socket.is_none() {
            self.sockets += 1;
        }
        conn.socket = Some(info);
        conn.socket_is_new = true;
    }

    /// Direction `d` of the stream is followed.
    pub fn follows(&self, stream: &StreamKey, d: Direction) -> bool {
        self.map.get(stream).is_some_and(|c| c.half(d).is_some())
    }

    /// The connection of a record in direction `d`, with that direction followed (one
    /// lookup): `link` resolves what carries a connection that has no link yet (from its
    /// socket's identity when the kernel reported it), `half` makes the direction's state.
    /// Also returns the buffer budget, to account for what the record left buffered.
    pub fn follow(
        &mut self,
        stream: StreamKey,
        d: Direction,
        link: impl FnOnce(Option<&SocketInfo>) -> Link,
        half: impl FnOnce() -> Half,
    ) -> (&mut Connection, &mut Budget) {
        let conn = self.map.entry(stream).or_default();
        if conn.halves[index(d)].is_none() {
            if conn.link.is_none() {
                conn.link = Some(link(conn.socket.as_ref()));
            }
            conn.halves[index(d)] = Some(half());
            self.directions += 1;
        }
        (conn, &mut self.budget)
    }

    /// Stops following direction `d`; the connection stays (see [`Self::sweep_unfollowed`]).
    pub fn remove_half(&mut self, stream: &StreamKey, d: Direction) -> Option<Half> {
        let conn = self.map.get_mut(stream)?;
        let half = conn.halves[index(d)].take()?;
        conn.exchange.forget(d);
        if !conn.is_followed() {
            conn.link = None;
        }
        self.directions -= 1;
        self.budget.total -= half.buffered;
        Some(half)
    }

    /// Stops following both directions and forgets their HTTP exchange; the socket's
    /// identity stays until the next sweep.
    pub fn unfollow(&mut self, stream: &StreamKey) {
        for d in [Direction::Read, Direction::Write] {
            self.remove_half(stream, d);
        }
        if let Some(conn) = self.map.get_mut(stream) {
            conn.exchange = HttpExchange::default();
        }
    }

    /// Forgets a stream: one removal.
    pub fn remove(&mut self, stream: &StreamKey) -> Option<Connection> {
        let conn = self.map.remove(stream)?;
        for (_, half) in conn.halves() {
            self.directions -= 1;
            self.budget.total -= half.buffered;
        }
        if conn.socket.is_some() {
            self.sockets -= 1;
        }
        Some(conn)
    }

    /// Drops the connections no direction is followed on (their sockets' identities, the
    /// requests their exchanges waited for), but a socket identity that came in since the
    /// last sweep: else a drain that falls between the kernel's socket record and the
    /// stream's first data loses the identity, and the socket must be looked up in the
    /// host's tables (`/proc/PID/net/tcp`, whose cost grows with the host's sockets).
    pub fn sweep_unfollowed(&mut self) {
        let sockets = &mut self.sockets;
        self.map.retain(|_, c| {
            let keep = c.is_followed() || std::mem::take(&mut c.socket_is_new);
            if !keep && c.socket.is_some() {
                *sockets -= 1;
            }
            keep
        });
    }

    /// Memory accounting from scratch (the sweep).
    pub fn recount_buffered(&mut self) -> usize {
        self.budget.total = 0;
        for conn in self.map.values_mut() {
            for half in conn.halves.iter_mut().flatten() {
                half.buffered = half.framer.buffered_bytes();
                self.budget.total += half.buffered;
            }
        }
        self.budget.total
    }

    /// `--max-streams` reached: the least recently active sixteenth of the directions go
    /// (one pass, so a flood of new streams costs O(1) per stream). Their partial messages
    /// are counted as discarded; `forgotten` is told of each stream left with no direction.
    pub fn evict_oldest(&mut self, metrics: &AgentMetrics, forgotten: &mut dyn FnMut(StreamKey)) {
        let n = (self.directions / 16).max(1);
        let mut by_age: Vec<(u64, StreamKey, Direction)> = self
            .halves()
            .map(|(k, d, h)| (h.last_ts_ns, k, d))
            .collect();
        if by_age.is_empty() {
            return;
        }
        let n_sel = n.min(by_age.len());
        by_age.select_nth_unstable_by_key(n_sel - 1, |(ts, _, _)| *ts);
        for (_, stream, d) in by_age.into_iter().take(n) {
            if let Some(half) = self.remove_half(&stream, d) {
                metrics.discarded("evicted", half.framer.pending_bytes());
            }
            if self.map.get(&stream).is_some_and(|c| !c.is_followed()) {
                self.remove(&stream);
                forgotten(stream);
            }
        }
        metrics.evicted("stream", n as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_socket_identity_outlives_one_sweep_without_data() {
        let mut c = Connections::new(1 << 20);
        let stream = StreamKey { addr: 1, ino: 1 };
        let info = SocketInfo {
            transport: Transport::Tcp,
            peer: None,
            local: None,
        };
        c.set_socket(stream, info);
        // A drain ended between the socket record and the first data: the sweep keeps it.
        c.sweep_unfollowed();
        assert!(c.get(&stream).is_some_and(|conn| conn.socket.is_some()));
        // Still no data a sweep later: gone, and counted out of the socket bound.
        c.sweep_unfollowed();
        assert!(c.get(&stream).is_none());
        assert_eq!(c.sockets, 0);
    }
}
