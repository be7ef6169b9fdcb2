//! Records that wait for a lookup, and the answers the drain keeps so that most new
//! connections need none.
//!
//! A new socket's peer (which server it talks to, or whether it was accepted) and a new
//! process's identity come from the lookup thread ([`crate::lookups`]). Until the answer
//! arrives, the records that need it (every record of that stream, or of that process)
//! wait here as the ring delivered them, and are handled in order when it does; the
//! exchanges they carry are counted exactly as if the answer had been there at once.
//! What waits is bounded in bytes and in time: past either, the stream goes on without
//! the answer (named by its address) and the lookup is counted as shed.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::{
    model::{ServerRef, StreamKey, Transport},
    sockets::{Peer, PeerEnd, SocketInfo},
    HashMap, HashSet,
};

use super::connection::Link;

/// Bytes of records held for lookups at most.
pub const MAX_WAITING_BYTES: usize = 16 << 20;
/// The longest a record waits for a lookup.
pub const WAIT_AT_MOST: Duration = Duration::from_secs(2);
/// How long an answer about a (process, address) pair is reused.
const ANSWER_KEPT_FOR: Duration = Duration::from_secs(30);
/// Answers kept per table before it is emptied (bounded memory).
const MAX_ANSWERS: usize = 4096;

/// One stream's records, held until its lookups are answered.
struct WaitingStream {
    records: Vec<Box<[u8]>>,
    /// The processes that wrote or read them.
    tgids: Vec<u32>,
    /// Its peer lookup is not answered yet.
    peer_pending: bool,
    /// A socket (a pipe has no peer to look up).
    socket: bool,
    since: Instant,
}

#[derive(Default)]
pub struct Waiting {
    streams: HashMap<StreamKey, WaitingStream>,
    /// Exit records of processes that have records waiting, or are being identified.
    exits: Vec<(u32, Box<[u8]>)>,
    /// Processes whose identity was asked for and not answered yet.
    identifying: HashSet<u32>,
    bytes: usize,
}

impl Waiting {
    /// Nothing waits and nothing is being looked up for a record.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty() && self.identifying.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn holds(&self, stream: &StreamKey) -> bool {
        self.streams.contains_key(stream)
    }

    pub fn is_identifying(&self, tgid: u32) -> bool {
        self.identifying.contains(&tgid)
    }

    /// An exit record of `tgid` must wait: it would end what is still waiting.
    pub fn holds_process(&self, tgid: u32) -> bool {
        self.identifying.contains(&tgid) || self.streams.values().any(|s| s.tgids.contains(&tgid))
    }

    pub fn identifying(&mut self, tgid: u32) {
        self.identifying.insert(tgid);
    }

    pub fn identified(&mut self, tgid: u32) {
        self.identifying.remove(&tgid);
    }

    /// Stream `stream`'s records wait for its peer lookup.
    pub fn await_peer(&mut self, stream: StreamKey) {
        self.entry(stream).peer_pending = true;
    }

    /// The peer lookup of `stream` was answered; false if nothing waited for it.
    pub fn peer_answered(&mut self, stream: &StreamKey) -> bool {
        match self.streams.get_mut(stream) {
            Some(s) if s.peer_pending => {
                s.peer_pending = false;
                true
            }
            _ => false,
        }
    }

    /// Holds a record of `stream` (moved by `tgid`).
    pub fn hold(&mut self, stream: StreamKey, socket: bool, tgid: u32, record: &[u8]) {
        self.bytes += record.len();
        let s = self.entry(stream);
        s.socket |= socket;
        if !s.tgids.contains(&tgid) {
            s.tgids.push(tgid);
        }
        s.records.push(record.into());
    }

    pub fn hold_exit(&mut self, tgid: u32, record: &[u8]) {
        self.bytes += record.len();
        self.exits.push((tgid, record.into()));
    }

    fn entry(&mut self, stream: StreamKey) -> &mut WaitingStream {
        self.streams.entry(stream).or_insert_with(|| WaitingStream {
            records: Vec::new(),
            tgids: Vec::new(),
            peer_pending: false,
            socket: false,
            since: Instant::now(),
        })
    }

    /// The records that need nothing any more, stream by stream (oldest first), then the
    /// exits they no longer hold back; they are forgotten here.
    pub fn ready(&mut self) -> Vec<Box<[u8]>> {
        let identifying = &self.identifying;
        let mut ready: Vec<(Instant, StreamKey)> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.peer_pending && !s.tgids.iter().any(|t| identifying.contains(t)))
            .map(|(k, s)| (s.since, *k))
            .collect();
        ready.sort_unstable_by_key(|(since, _)| *since);
        let mut records = Vec::new();
        for (_, stream) in ready {
            if let Some(s) = self.streams.remove(&stream) {
                records.extend(s.records);
            }
        }
        let exits = std::mem::take(&mut self.exits);
        for (tgid, record) in exits {
            if self.holds_process(tgid) {
                self.exits.push((tgid, record));
            } else {
                records.push(record);
            }
        }
        self.bytes -= records.iter().map(|r| r.len()).sum::<usize>();
        records
    }

    /// Streams that waited longer than [`WAIT_AT_MOST`] at `now`.
    pub fn overdue(&self, now: Instant) -> Vec<StreamKey> {
        self.streams
            .iter()
            .filter(|(_, s)| now.duration_since(s.since) > WAIT_AT_MOST)
            .map(|(k, _)| *k)
            .collect()
    }

    /// `stream` stops waiting for its lookups (shed), and must not wait again: the
    /// processes it waited on stop being waited for by anyone. What it gave up on.
    pub fn give_up(&mut self, stream: &StreamKey) -> GaveUp {
        let Some(s) = self.streams.get_mut(stream) else {
            return GaveUp::default();
        };
        let processes = s
            .tgids
            .iter()
            .filter(|tgid| self.identifying.remove(tgid))
            .count();
        GaveUp {
            peer_pending: std::mem::replace(&mut s.peer_pending, false),
            socket: s.socket,
            processes,
        }
    }
}

/// What a stream that stopped waiting gave up on.
#[derive(Debug, Default)]
pub struct GaveUp {
    /// Its peer lookup was not answered.
    pub peer_pending: bool,
    /// It is a socket: its peer must not be looked up again.
    pub socket: bool,
    /// Identity lookups of its processes not answered.
    pub processes: usize,
}

/// What the drain keeps from peer lookups: which local addresses accept connections, and
/// which server each (process, address) reaches, so that further connections need no
/// lookup; and the answers for streams that waited, until their first record uses them.
#[derive(Default)]
pub struct PeerAnswers {
    /// (process, local address) of sockets accepted from a listener.
    accepted: HashMap<(u32, SocketAddr), Instant>,
    servers: HashMap<(u32, Peer), (Instant, ServerRef)>,
    answered: HashMap<StreamKey, Link>,
}

impl PeerAnswers {
    /// The link of a socket of `tgid` from what is kept, if that is enough.
    pub fn known(&self, tgid: u32, socket: &SocketInfo) -> Option<Link> {
        let fresh = |at: &Instant| at.elapsed() < ANSWER_KEPT_FOR;
        let link = |peer| {
            Some(Link {
                transport: socket.transport,
                peer,
            })
        };
        if let Some(local) = socket.local {
            if self.accepted.get(&(tgid, local)).is_some_and(fresh) {
                return link(None);
            }
        }
        match &socket.peer {
            Some(peer) => match self.servers.get(&(tgid, peer.clone())) {
                Some((at, server)) if fresh(at) => link(Some(server.clone())),
                _ => None,
            },
            // Nothing to name and nothing to check.
            None if socket.local.is_none() => link(None),
            None => None,
        }
    }

    /// Keeps what a lookup said about a socket of `tgid`.
    pub fn learn(&mut self, tgid: u32, socket: &SocketInfo, end: &PeerEnd) {
        let now = Instant::now();
        match (end, socket.local, &socket.peer) {
            (PeerEnd::Client, Some(local), _) => {
                bounded(&mut self.accepted);
                self.accepted.insert((tgid, local), now);
            }
            (PeerEnd::Server(server), _, Some(peer)) => {
                bounded(&mut self.servers);
                self.servers
                    .insert((tgid, peer.clone()), (now, server.clone()));
            }
            _ => {}
        }
    }

    /// The answer for `stream`, for its first record to use.
    pub fn answer(&mut self, stream: StreamKey, link: Link) {
        bounded(&mut self.answered);
        self.answered.insert(stream, link);
    }

    /// Takes the answer kept for `stream`.
    pub fn take(&mut self, stream: &StreamKey) -> Option<Link> {
        self.answered.remove(stream)
    }

    /// Forgets what was kept about process `tgid` (it exited; its pid may be reused).
    pub fn forget_process(&mut self, tgid: u32) {
        self.accepted.retain(|(t, _), _| *t != tgid);
        self.servers.retain(|(t, _), _| *t != tgid);
    }
}

/// Empties a table that reached [`MAX_ANSWERS`].
fn bounded<K, V>(table: &mut HashMap<K, V>) {
    if table.len() >= MAX_ANSWERS {
        table.clear();
    }
}

/// The link of a socket whose lookup was shed: named by its address.
pub fn without_lookup(socket: Option<&SocketInfo>) -> Link {
    Link {
        transport: socket.map_or(Transport::Tcp, |s| s.transport),
        peer: socket.and_then(|s| s.peer.as_ref()).map(|peer| {
            ServerRef::Endpoint(match peer {
                Peer::Tcp(addr) => addr.to_string().into(),
                Peer::Unix(path) => format!("unix:{path}").into(),
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: StreamKey = StreamKey { addr: 1, ino: 1 };
    const B: StreamKey = StreamKey { addr: 2, ino: 2 };

    fn texts(records: Vec<Box<[u8]>>) -> Vec<String> {
        records
            .iter()
            .map(|r| String::from_utf8_lossy(r).into_owned())
            .collect()
    }

    #[test]
    fn records_wait_until_every_lookup_they_need_is_answered() {
        let mut w = Waiting::default();
        w.identifying(10);
        w.hold(A, true, 10, b"a1");
        w.await_peer(A);
        w.hold(A, true, 10, b"a2");
        w.hold(B, false, 20, b"b1");
        w.hold_exit(10, b"exit10");
        assert_eq!(w.bytes(), 12);
        assert!(w.holds_process(10));
        // B needs nothing: it goes first; A still waits for its peer and process 10.
        assert_eq!(texts(w.ready()), ["b1"]);
        assert!(w.peer_answered(&A));
        assert!(!w.peer_answered(&A), "answered once");
        assert!(w.ready().is_empty(), "process 10 is not identified yet");
        w.identified(10);
        // In order, the exit after the records of its process.
        assert_eq!(texts(w.ready()), ["a1", "a2", "exit10"]);
        assert_eq!(w.bytes(), 0);
        assert!(w.is_empty());
    }

    #[test]
    fn a_stream_that_gives_up_waits_for_nothing_any_more() {
        let mut w = Waiting::default();
        w.identifying(10);
        w.hold(A, true, 10, b"a1");
        w.await_peer(A);
        let later = Instant::now() + WAIT_AT_MOST + Duration::from_millis(1);
        assert_eq!(w.overdue(later), [A]);
        let gave_up = w.give_up(&A);
        assert!(gave_up.peer_pending && gave_up.socket);
        assert_eq!(gave_up.processes, 1);
        assert_eq!(w.ready().len(), 1);
        assert!(w.is_empty());
    }

    fn tcp(local: &str, peer: &str) -> SocketInfo {
        SocketInfo {
            transport: Transport::Tcp,
            peer: Some(Peer::Tcp(peer.parse().expect("address"))),
            local: Some(local.parse().expect("address")),
        }
    }

    #[test]
    fn answers_are_kept_per_process_and_address() {
        let mut answers = PeerAnswers::default();
        let to_server = tcp("127.0.0.1:40000", "127.0.0.1:8000");
        assert!(answers.known(1, &to_server).is_none());
        let server = ServerRef::Process(2);
        answers.learn(1, &to_server, &PeerEnd::Server(server.clone()));
        // Any later connection of process 1 to that address: the same server.
        let next = tcp("127.0.0.1:40001", "127.0.0.1:8000");
        assert_eq!(answers.known(1, &next).and_then(|l| l.peer), Some(server));
        assert!(answers.known(3, &next).is_none(), "another process asks");
        // Accepted sockets are known by their local (listening) address.
        let accepted = tcp("127.0.0.1:8000", "127.0.0.1:40000");
        answers.learn(2, &accepted, &PeerEnd::Client);
        let again = tcp("127.0.0.1:8000", "127.0.0.1:40001");
        let link = answers.known(2, &again).expect("known");
        assert!(link.peer.is_none());
        answers.forget_process(2);
        assert!(answers.known(2, &again).is_none());
    }
}
