//! Records that wait for a lookup, and the answers the drain keeps so that most new
//! connections need none.
//!
//! A new socket's peer (which server it talks to, or whether it was accepted) and a new
//! process's identity come from the lookup thread ([`crate::lookups`]). Until the answer
//! arrives, the record that needs it, and every record after it, wait here in the order
//! the ring delivered them: what the stitcher learns from one process's records (which
//! server reads a pipe) names the exchanges of another, so the order across streams is
//! kept. They are handled when the answer is in, and the exchanges they carry are counted
//! exactly as if it had been there at once (latency comes from the kernel's timestamps).
//! Lookups are rare (answers are kept per process and address), so records seldom wait,
//! and not for long. What waits is bounded in bytes and in time: past either, the record
//! at the head goes on without its answers (named by its address, its process by its comm)
//! and the lookups are counted as shed.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    time::{Duration, Instant},
};

use mcp_probe_common::{EventKind, StreamKind};

use crate::{
    decode::{decode, Record},
    identity::Identity,
    lookups::{Found, Lookup},
    metrics::ReasonLabels,
    model::{ServerRef, StreamControl, StreamKey, Transport},
    sockets::{Peer, PeerEnd, SocketInfo},
    HashMap, HashSet,
};

use super::{connection::Link, stream_of, Pipeline};

/// Bytes of records held for lookups at most.
pub const MAX_WAITING_BYTES: usize = 16 << 20;
/// The longest the head record waits for a lookup.
pub const WAIT_AT_MOST: Duration = Duration::from_secs(2);
/// How long an answer about a (process, address) pair is reused.
const ANSWER_KEPT_FOR: Duration = Duration::from_secs(30);
/// Answers kept per table before it is emptied (bounded memory).
const MAX_ANSWERS: usize = 4096;

/// The records held for lookups, in ring order, and the lookups not answered yet.
#[derive(Default)]
pub struct Waiting {
    /// Each with when it started waiting.
    queue: VecDeque<(Instant, Box<[u8]>)>,
    /// Processes whose identity was asked for and not answered yet.
    identifying: HashSet<u32>,
    /// Sockets whose peer was asked for and not answered yet.
    peers: HashSet<StreamKey>,
    bytes: usize,
}

impl Waiting {
    /// No record waits and no lookup is outstanding.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty() && self.identifying.is_empty() && self.peers.is_empty()
    }

    /// Records are waiting: any new one goes behind them.
    pub fn holds_records(&self) -> bool {
        !self.queue.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Records waiting.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_identifying(&self, tgid: u32) -> bool {
        self.identifying.contains(&tgid)
    }

    pub fn identifying(&mut self, tgid: u32) {
        self.identifying.insert(tgid);
    }

    /// The identity of `tgid` is in (or given up on).
    pub fn identified(&mut self, tgid: u32) {
        self.identifying.remove(&tgid);
    }

    pub fn is_peer_pending(&self, stream: &StreamKey) -> bool {
        self.peers.contains(stream)
    }

    pub fn await_peer(&mut self, stream: StreamKey) {
        self.peers.insert(stream);
    }

    /// The peer of `stream` is in; false if it was not awaited.
    pub fn peer_answered(&mut self, stream: &StreamKey) -> bool {
        self.peers.remove(stream)
    }

    /// Holds a record behind those already waiting.
    pub fn push(&mut self, record: &[u8]) {
        self.bytes += record.len();
        self.queue.push_back((Instant::now(), record.into()));
    }

    /// Takes the record at the head, with when it started waiting.
    pub fn pop(&mut self) -> Option<(Instant, Box<[u8]>)> {
        let (since, record) = self.queue.pop_front()?;
        self.bytes -= record.len();
        Some((since, record))
    }

    /// Puts back at the head a record taken by [`Waiting::pop`] that must wait more.
    pub fn unpop(&mut self, since: Instant, record: Box<[u8]>) {
        self.bytes += record.len();
        self.queue.push_front((since, record));
    }

    /// The head has waited too long at `now`, or too much waits: it must go on without
    /// its answers.
    pub fn head_is_overdue(&self, now: Instant) -> Option<&'static str> {
        if self.bytes > MAX_WAITING_BYTES {
            Some("waiting_full")
        } else if self
            .queue
            .front()
            .is_some_and(|(since, _)| now.duration_since(*since) > WAIT_AT_MOST)
        {
            Some("timed_out")
        } else {
            None
        }
    }
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
        peer: socket.and_then(|s| s.peer.as_ref()).map(Peer::endpoint),
    }
}

/// The pipeline's side: what waits, the lookups it asks, the answers it applies.
impl<C: StreamControl> Pipeline<C> {
    /// A record, now or, when it needs a lookup's answer or records wait before it, once
    /// the answer is in.
    pub(super) fn handle(&mut self, bytes: &[u8]) {
        let Ok(record) = decode(bytes) else {
            self.metrics
                .parse_errors
                .get_or_create(&ReasonLabels { reason: "decode" })
                .inc();
            return;
        };
        if self.waiting.holds_records() || self.needs_lookup(&record) {
            self.waiting.push(bytes);
            self.metrics
                .lookup_waiting_bytes
                .set(self.waiting.bytes() as i64);
        } else {
            self.on_record(&record);
        }
    }

    /// Whether `r` needs a lookup's answer first: its process is being identified, or it
    /// is the first record of a socket whose peer is not known (the lookups are asked
    /// here, once).
    pub(super) fn needs_lookup(&mut self, r: &Record<'_>) -> bool {
        match r.kind {
            EventKind::ProcessExit | EventKind::Followed | EventKind::SocketInfo => return false,
            EventKind::Data | EventKind::Gap | EventKind::Close | EventKind::Error => {}
        }
        self.first_sight(r.tgid, r.comm());
        if self.waiting.is_identifying(r.tgid) {
            return true;
        }
        let stream = stream_of(r);
        let linked = self
            .connections
            .get(&stream)
            .is_some_and(|c| c.link.is_some());
        if r.kind == EventKind::Close || linked {
            return false;
        }
        if self.waiting.is_peer_pending(&stream) {
            return true;
        }
        match self.link_now(r) {
            Some(link) => {
                self.peers.answer(stream, link);
                false
            }
            None => true,
        }
    }

    /// What carries a new stream, from what is known now; else its peer is asked for
    /// (None: the stream waits for the answer).
    pub(super) fn link_now(&mut self, r: &Record<'_>) -> Option<Link> {
        let stream = stream_of(r);
        if r.stream_kind == StreamKind::Pipe {
            return Some(Link {
                transport: Transport::Pipe,
                peer: None,
            });
        }
        if let Some(link) = self.peers.take(&stream) {
            return Some(link);
        }
        let socket = self.connections.get(&stream).and_then(|c| c.socket.clone());
        if let Some(link) = socket.as_ref().and_then(|s| self.peers.known(r.tgid, s)) {
            return Some(link);
        }
        let asked = self.lookups.ask(Lookup::Peer {
            stream,
            tgid: r.tgid,
            socket: socket.clone(),
        });
        if asked {
            self.waiting.await_peer(stream);
            None
        } else {
            Some(without_lookup(socket.as_ref()))
        }
    }

    /// Applies the lookups' answers that arrived, and handles the records that waited for
    /// them. Called after each record while something waits, and when the lookup thread
    /// signals.
    pub fn on_lookups(&mut self) {
        loop {
            let answers = self.lookups.answers();
            if answers.is_empty() {
                break;
            }
            for found in answers {
                self.apply(found);
            }
            self.release_ready();
        }
        self.metrics
            .lookup_waiting_bytes
            .set(self.waiting.bytes() as i64);
    }

    /// Answers the lookups held (with [`Lookups::held`]) until none is asked any more.
    #[cfg(any(test, feature = "testing"))]
    pub fn release_lookups(&mut self) {
        while self.lookups.release() {
            self.on_lookups();
        }
    }

    /// The lookup thread's wake-up descriptor (readable when answers are in).
    pub fn lookups_fd(&self) -> Option<std::os::fd::RawFd> {
        self.lookups.wake_fd()
    }

    /// The lookup thread signalled: reset its signal, apply what it answered.
    pub fn on_lookups_signal(&mut self) {
        self.lookups.acknowledge_wake();
        self.on_lookups();
    }

    pub(super) fn apply(&mut self, found: Found) {
        match found {
            Found::Peer {
                stream,
                tgid,
                socket,
                end,
                server,
            } => {
                self.peers.learn(tgid, &socket, &end);
                if let Some((pid, identity)) = server {
                    if !self.stitcher.is_identified(pid) {
                        self.stitcher.on_identified(pid, identity);
                    }
                }
                if self.waiting.peer_answered(&stream) {
                    let link = Link {
                        transport: socket.transport,
                        peer: end.server(),
                    };
                    if self
                        .connections
                        .get(&stream)
                        .is_none_or(|c| c.socket.is_none())
                    {
                        self.connections.set_socket(stream, socket);
                    }
                    self.peers.answer(stream, link);
                }
            }
            Found::Process { tgid, identity } => {
                self.waiting.identified(tgid);
                self.stitcher.on_identified(tgid, identity);
            }
        }
    }

    /// Handles, in ring order, the waiting records whose lookups are answered, up to the
    /// first that still needs one.
    pub(super) fn release_ready(&mut self) {
        while let Some((since, bytes)) = self.waiting.pop() {
            // Records are decoded before they wait.
            let Ok(record) = decode(&bytes) else {
                continue;
            };
            if self.needs_lookup(&record) {
                self.waiting.unpop(since, bytes);
                break;
            }
            self.on_record(&record);
        }
        self.metrics
            .lookup_waiting_bytes
            .set(self.waiting.bytes() as i64);
    }

    /// The record at the head has waited too long, or too much waits behind it: it goes
    /// on without the answers it waits for (a socket named by its address, a process by
    /// its comm), counted as shed lookups.
    pub(super) fn give_up_overdue(&mut self) {
        while let Some(reason) = self.waiting.head_is_overdue(Instant::now()) {
            let Some((since, front)) = self.waiting.pop() else {
                break;
            };
            let Ok(r) = decode(&front) else {
                continue;
            };
            let (tgid, stream, kind) = (r.tgid, stream_of(&r), r.stream_kind);
            self.waiting.unpop(since, front);
            let mut gave_up = false;
            if self.waiting.is_identifying(tgid) {
                // Identified with nothing (its comm stays its name), so that it is not
                // asked for again; a late answer still fills it in.
                self.waiting.identified(tgid);
                self.stitcher.on_identified(tgid, Identity::default());
                self.metrics.shed_lookup("process", reason);
                gave_up = true;
            }
            if self.waiting.peer_answered(&stream) {
                let socket = self.connections.get(&stream).and_then(|c| c.socket.clone());
                if kind == StreamKind::Socket {
                    self.peers.answer(stream, without_lookup(socket.as_ref()));
                }
                self.metrics.shed_lookup("peer", reason);
                gave_up = true;
            }
            let before = self.waiting.len();
            self.release_ready();
            if !gave_up && self.waiting.len() >= before {
                break; // nothing left to give up on (cannot happen)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: StreamKey = StreamKey { addr: 1, ino: 1 };

    #[test]
    fn records_wait_in_ring_order_and_are_accounted() {
        let mut w = Waiting::default();
        assert!(w.is_empty());
        w.identifying(10);
        w.await_peer(A);
        w.push(b"a1");
        w.push(b"b1");
        assert_eq!(w.bytes(), 4);
        assert!(w.holds_records() && w.is_identifying(10) && w.is_peer_pending(&A));
        assert_eq!(w.head_is_overdue(Instant::now()), None);
        let later = Instant::now() + WAIT_AT_MOST + Duration::from_millis(1);
        assert_eq!(w.head_is_overdue(later), Some("timed_out"));
        assert!(w.peer_answered(&A));
        assert!(!w.peer_answered(&A), "answered once");
        w.identified(10);
        let (since, a1) = w.pop().expect("a1");
        assert_eq!(&a1[..], b"a1");
        w.unpop(since, a1);
        assert_eq!(w.bytes(), 4);
        assert_eq!(&w.pop().expect("a1").1[..], b"a1");
        assert_eq!(&w.pop().expect("b1").1[..], b"b1");
        assert_eq!(w.bytes(), 0);
        assert!(w.is_empty());
    }

    #[test]
    fn too_much_waiting_makes_the_head_overdue() {
        let mut w = Waiting::default();
        w.push(&vec![0u8; MAX_WAITING_BYTES + 1]);
        assert_eq!(w.head_is_overdue(Instant::now()), Some("waiting_full"));
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
