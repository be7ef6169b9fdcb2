//! MCP sessions, as each side sees them: an HTTP session (`mcp-session-id`, or the legacy
//! transport's session id), a connection for the session-less 2026-07-28 HTTP protocol, or
//! the stdio channel of a client and its server. A session starts with its first message
//! and ends with an HTTP DELETE, the close of its connection, the exit of either process,
//! or 30 minutes without a message (then it is taken to have ended at its last message).

use crate::{
    model::{ServerRef, Side, StreamKey, Transport},
    HashMap,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SessionId {
    Http(Box<str>),
    Connection(StreamKey),
    /// A stdio channel: one per (observer, server).
    Channel,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionKey {
    /// The MCP client's view or the MCP server's.
    pub role: Side,
    pub observer: u32,
    pub server: ServerRef,
    pub id: SessionId,
}

#[derive(Debug, Clone)]
pub struct Session {
    pub start_ns: u64,
    pub last_ns: u64,
    pub transport: Transport,
    /// `clientInfo.name` of the session's client, once seen (initialize or `_meta`).
    pub client_name: Option<String>,
}

/// Sessions without a message for this long are over.
pub const IDLE_NS: u64 = 30 * 60 * 1_000_000_000;

pub struct Sessions {
    live: HashMap<SessionKey, Session>,
    /// Most sessions tracked; past it the least recently active sixteenth ends.
    max: usize,
}

impl Sessions {
    pub fn new(max: usize) -> Self {
        Self {
            live: HashMap::default(),
            max: max.max(1),
        }
    }

    /// A message of `key` at `ts_ns`. Returns the sessions pushed out by the bound.
    pub fn touch(
        &mut self,
        key: SessionKey,
        transport: Transport,
        ts_ns: u64,
    ) -> Vec<(SessionKey, Session)> {
        if let Some(s) = self.live.get_mut(&key) {
            s.last_ns = s.last_ns.max(ts_ns);
            return Vec::new();
        }
        let evicted = if self.live.len() >= self.max {
            // One pass for many: a flood of new sessions costs O(1) each.
            let n = (self.live.len() / 16).max(1);
            let mut by_age: Vec<(u64, SessionKey)> = self
                .live
                .iter()
                .map(|(k, s)| (s.last_ns, k.clone()))
                .collect();
            by_age.select_nth_unstable_by_key(n - 1, |(ts, _)| *ts);
            by_age
                .into_iter()
                .take(n)
                .filter_map(|(_, k)| self.live.remove_entry(&k))
                .collect()
        } else {
            Vec::new()
        };
        self.live.insert(
            key,
            Session {
                start_ns: ts_ns,
                last_ns: ts_ns,
                transport,
                client_name: None,
            },
        );
        evicted
    }

    /// Ends the sessions `matches` selects; returns them.
    pub fn end(&mut self, matches: impl Fn(&SessionKey) -> bool) -> Vec<(SessionKey, Session)> {
        let keys: Vec<SessionKey> = self.live.keys().filter(|k| matches(k)).cloned().collect();
        keys.into_iter()
            .filter_map(|k| self.live.remove_entry(&k))
            .collect()
    }

    /// Records the client name of a live session.
    pub fn name_client(&mut self, key: &SessionKey, name: String) {
        if let Some(s) = self.live.get_mut(key) {
            s.client_name = Some(name);
        }
    }

    /// The client name of a live session, once seen.
    pub fn client_name(&self, key: &SessionKey) -> Option<&str> {
        self.live.get(key)?.client_name.as_deref()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&SessionKey, &Session)> {
        self.live.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(observer: u32, id: SessionId) -> SessionKey {
        SessionKey {
            role: Side::Server,
            observer,
            server: ServerRef::Process(observer),
            id,
        }
    }

    #[test]
    fn touch_starts_and_extends_end_selects() {
        let mut s = Sessions::new(10);
        let a = key(1, SessionId::Http("abc".into()));
        assert!(s.touch(a.clone(), Transport::Tcp, 100).is_empty());
        assert!(s.touch(a.clone(), Transport::Tcp, 50).is_empty());
        assert!(s.touch(a.clone(), Transport::Tcp, 300).is_empty());
        s.name_client(&a, "inspector".into());
        assert_eq!(s.client_name(&a), Some("inspector"));
        s.touch(key(2, SessionId::Channel), Transport::Pipe, 200);
        let ended = s.end(|k| k.observer == 1);
        assert_eq!(ended.len(), 1);
        let (_, session) = &ended[0];
        assert_eq!((session.start_ns, session.last_ns), (100, 300));
        assert_eq!(s.iter().count(), 1);
    }

    #[test]
    fn the_bound_ends_the_least_recently_active() {
        let mut s = Sessions::new(2);
        s.touch(key(1, SessionId::Channel), Transport::Pipe, 10);
        s.touch(key(2, SessionId::Channel), Transport::Pipe, 5);
        let evicted = s.touch(key(3, SessionId::Channel), Transport::Pipe, 20);
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].0.observer, 2);
        assert_eq!(s.iter().count(), 2);
    }
}
