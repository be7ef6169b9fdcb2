//! Which server an exchange belongs to, and what it is called.
//!
//! A server is named by the `serverInfo.name` it announces in its handshake's response,
//! else after its process (command line) or its address. Exchanges of a server whose name
//! is not settled yet (the handshake is still going on, e.g. `server/discover` refused,
//! then `initialize` announces `serverInfo`) are held, so that every series of one
//! exchange carries the same name; they are released when the name settles: announced,
//! used past the handshake, [`SETTLE_AFTER_NS`] later, or when the process is gone.

use crate::{
    identity::Processes,
    labels::LabelCap,
    model::{ServerRef, StreamKey},
    HashMap, HashSet,
};

/// An unsettled server gets its derived name after this long (ns).
pub const SETTLE_AFTER_NS: u64 = 5_000_000_000;
/// Most items held per unsettled server.
const MAX_UNSETTLED: usize = 256;

/// Items of a server whose name is not settled yet.
struct Unsettled<T> {
    since_ns: u64,
    held: Vec<T>,
}

/// The servers known from traffic: by stream, their announced names, and what waits for
/// a name (`T`: whatever the caller counts under it).
pub struct ServerNames<T> {
    /// Stream -> the MCP server on that stream, learned from traffic.
    of_stream: HashMap<StreamKey, ServerRef>,
    /// `serverInfo.name` announced by each server.
    announced: HashMap<ServerRef, String>,
    /// Servers whose name will not change any more.
    settled: HashSet<ServerRef>,
    unsettled: HashMap<ServerRef, Unsettled<T>>,
    cap: LabelCap,
}

impl<T> ServerNames<T> {
    pub fn new(max_servers: usize) -> Self {
        Self {
            of_stream: HashMap::default(),
            announced: HashMap::default(),
            settled: HashSet::default(),
            unsettled: HashMap::default(),
            cap: LabelCap::new("mcp_server_name", max_servers),
        }
    }

    /// The MCP server of an exchange, if known: the observer itself, the server learned
    /// for the stream, or the address the observer's socket is connected to (`peer`,
    /// then remembered for the stream).
    pub fn server_of(
        &mut self,
        observer: u32,
        server_is_observer: bool,
        stream: StreamKey,
        peer: Option<&ServerRef>,
    ) -> Option<ServerRef> {
        if server_is_observer {
            return Some(ServerRef::Process(observer));
        }
        if let Some(s) = self.of_stream.get(&stream) {
            return Some(s.clone());
        }
        let peer = peer?.clone();
        self.of_stream.insert(stream, peer.clone());
        Some(peer)
    }

    /// The server learned for `stream`, if any.
    pub fn of_stream(&self, stream: &StreamKey) -> Option<&ServerRef> {
        self.of_stream.get(stream)
    }

    /// `server` serves `stream`.
    pub fn learn(&mut self, stream: StreamKey, server: ServerRef) {
        self.of_stream.insert(stream, server);
    }

    /// `server` serves `stream`, unless another was learned for it already.
    pub fn learn_if_unknown(&mut self, stream: StreamKey, server: ServerRef) {
        self.of_stream.entry(stream).or_insert(server);
    }

    /// `server` announced `name`: its name is settled. Returns what was held for it.
    pub fn announce(&mut self, server: ServerRef, name: &str) -> Vec<T> {
        self.announced.insert(server.clone(), name.to_owned());
        self.settle(&server)
    }

    /// The server's name is final. Returns what was held for it, to count now.
    pub fn settle(&mut self, server: &ServerRef) -> Vec<T> {
        self.settled.insert(server.clone());
        self.unsettled
            .remove(server)
            .map(|u| u.held)
            .unwrap_or_default()
    }

    /// Offers `item` of `server` at `now_ns`. Returns what to count now, in order: nothing
    /// while the name is unsettled (it is held), the item itself once settled, or, when
    /// too much is held, everything held then the item (the name settles as it is).
    pub fn hold(&mut self, server: Option<&ServerRef>, now_ns: u64, item: T) -> Vec<T> {
        let Some(server) = server else {
            return vec![item];
        };
        if self.settled.contains(server) {
            return vec![item];
        }
        let entry = self
            .unsettled
            .entry(server.clone())
            .or_insert_with(|| Unsettled {
                since_ns: now_ns,
                held: Vec::new(),
            });
        if entry.held.len() < MAX_UNSETTLED {
            entry.held.push(item);
            return Vec::new();
        }
        let mut now = self.settle(server);
        now.push(item);
        now
    }

    /// The current name of a server, as a capped label value (an overflow pushes the
    /// label's name onto `overflowed`).
    pub fn name(
        &mut self,
        server: Option<&ServerRef>,
        processes: &mut Processes,
        overflowed: &mut Vec<&'static str>,
    ) -> String {
        let name = match server {
            Some(s) => match self.announced.get(s) {
                Some(n) => n.clone(),
                None => match s {
                    ServerRef::Process(tgid) => processes.server_name(*tgid),
                    ServerRef::Endpoint(e) => e.to_string(),
                },
            },
            None => "unknown".to_owned(),
        };
        self.cap.value(&name, overflowed)
    }

    /// `tgid` has served MCP: announced a name, or had items counted or held under it.
    pub fn is_server(&self, tgid: u32) -> bool {
        let server = ServerRef::Process(tgid);
        self.settled.contains(&server)
            || self.unsettled.contains_key(&server)
            || self.announced.contains_key(&server)
    }

    /// Every server process known from traffic.
    pub fn server_processes(&self) -> Vec<u32> {
        let mut tgids: Vec<u32> = self
            .of_stream
            .values()
            .chain(self.settled.iter())
            .filter_map(|s| match s {
                ServerRef::Process(tgid) => Some(*tgid),
                ServerRef::Endpoint(_) => None,
            })
            .collect();
        tgids.sort_unstable();
        tgids.dedup();
        tgids
    }

    pub fn forget_stream(&mut self, stream: StreamKey) {
        self.of_stream.remove(&stream);
    }

    /// Process `tgid` is gone for good (its pid may be reused). If it was a server, what
    /// waited for its name is returned, to count under the name it had, and the rest is
    /// forgotten, except the streams in `waiting` (requests still expecting its answer).
    pub fn forget_process(&mut self, tgid: u32, waiting: &HashSet<StreamKey>) -> Vec<T> {
        if !self.is_server(tgid) {
            return Vec::new();
        }
        let server = ServerRef::Process(tgid);
        let held = self.settle(&server);
        self.settled.remove(&server);
        self.announced.remove(&server);
        self.of_stream
            .retain(|stream, s| *s != server || waiting.contains(stream));
        held
    }

    /// Unsettled servers due to settle: waiting longer than [`SETTLE_AFTER_NS`], or whose
    /// process is gone.
    pub fn overdue(&self, now_ns: u64, alive: impl Fn(u32) -> bool) -> Vec<ServerRef> {
        self.unsettled
            .iter()
            .filter(|(server, u)| {
                now_ns.saturating_sub(u.since_ns) > SETTLE_AFTER_NS
                    || matches!(server, ServerRef::Process(tgid) if !alive(*tgid))
            })
            .map(|(server, _)| server.clone())
            .collect()
    }

    /// The processes named anywhere in these tables.
    pub fn processes(&self) -> impl Iterator<Item = u32> + '_ {
        self.settled
            .iter()
            .chain(self.announced.keys())
            .chain(self.of_stream.values())
            .filter_map(|s| match s {
                ServerRef::Process(tgid) => Some(*tgid),
                ServerRef::Endpoint(_) => None,
            })
    }

    /// Forgets the servers whose process is in `dead` (bounded memory; a reused pid starts
    /// fresh).
    pub fn forget_dead(&mut self, dead: &HashSet<u32>) {
        let alive = |s: &ServerRef| !matches!(s, ServerRef::Process(tgid) if dead.contains(tgid));
        self.settled.retain(alive);
        self.announced.retain(|s, _| alive(s));
        self.of_stream.retain(|_, s| alive(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: StreamKey = StreamKey { addr: 1, ino: 1 };

    #[test]
    fn exchanges_wait_for_the_announced_name() {
        let mut names = ServerNames::<&str>::new(10);
        let server = ServerRef::Process(42);
        assert!(names.hold(Some(&server), 0, "discover").is_empty());
        assert!(names.hold(Some(&server), 1, "initialize").is_empty());
        assert!(names.is_server(42));
        assert_eq!(
            names.announce(server.clone(), "weather"),
            ["discover", "initialize"]
        );
        assert_eq!(names.hold(Some(&server), 2, "tools/call"), ["tools/call"]);
        assert_eq!(names.hold(None, 2, "no server"), ["no server"]);
        let mut processes = Processes::new(std::sync::Arc::new(crate::host::FakeHost::new()));
        let mut overflowed = Vec::new();
        assert_eq!(
            names.name(Some(&server), &mut processes, &mut overflowed),
            "weather"
        );
        assert_eq!(names.name(None, &mut processes, &mut overflowed), "unknown");
        let remote = ServerRef::Endpoint("10.0.0.1:443".into());
        assert_eq!(
            names.name(Some(&remote), &mut processes, &mut overflowed),
            "10.0.0.1:443"
        );
        assert!(overflowed.is_empty());
    }

    #[test]
    fn unsettled_servers_settle_when_overdue_or_gone() {
        let mut names = ServerNames::<u32>::new(10);
        let a = ServerRef::Process(1);
        let b = ServerRef::Process(2);
        names.hold(Some(&a), 0, 1);
        names.hold(Some(&b), SETTLE_AFTER_NS, 2);
        let overdue = names.overdue(SETTLE_AFTER_NS + 1, |_| true);
        assert_eq!(overdue, std::slice::from_ref(&a));
        let overdue = names.overdue(SETTLE_AFTER_NS + 1, |tgid| tgid != 2);
        assert_eq!(overdue.len(), 2);
        assert_eq!(names.settle(&b), [2]);
    }

    #[test]
    fn a_full_hold_settles_the_name_as_it_is() {
        let mut names = ServerNames::<usize>::new(10);
        let s = ServerRef::Process(5);
        for i in 0..MAX_UNSETTLED {
            assert!(names.hold(Some(&s), 0, i).is_empty());
        }
        let now = names.hold(Some(&s), 0, MAX_UNSETTLED);
        assert_eq!(now.len(), MAX_UNSETTLED + 1);
        assert_eq!(names.hold(Some(&s), 0, 0), [0]);
    }

    #[test]
    fn streams_learn_their_server_and_forget_it_with_the_process() {
        let mut names = ServerNames::<()>::new(10);
        let remote = ServerRef::Endpoint("example:80".into());
        assert_eq!(
            names.server_of(7, false, STREAM, Some(&remote)),
            Some(remote.clone())
        );
        assert_eq!(names.of_stream(&STREAM), Some(&remote));
        assert_eq!(
            names.server_of(7, true, STREAM, None),
            Some(ServerRef::Process(7))
        );
        names.learn(STREAM, ServerRef::Process(9));
        names.learn_if_unknown(STREAM, ServerRef::Process(10));
        assert_eq!(names.server_processes(), [9]);
        names.settle(&ServerRef::Process(9));
        assert!(names.forget_process(9, &HashSet::default()).is_empty());
        assert!(!names.is_server(9));
        assert_eq!(names.of_stream(&STREAM), None);
    }
}
