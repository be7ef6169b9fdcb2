//! The requests that wait for their responses, bounded.
//!
//! Pairing is per observing process and direction, never a global id table: a request a
//! process *wrote* is answered by a response the same process *reads*, and vice versa.
//! When one process talks to several peers with the same ids (a client with several
//! servers), the candidate on the same stream, or in the same session, or on a stream of
//! the same server, wins.

use std::collections::VecDeque;

use mcp_probe_common::Direction;

use crate::{events::Request, model::StreamKey, protocols::jsonrpc::Id, HashMap};

/// One pairing domain: the requests one process sent (or received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PendingKey {
    pub tgid: u32,
    /// Direction of the *request* for the observing process.
    pub direction: Direction,
}

#[derive(Debug)]
struct Entry {
    /// Arrival order within the table (for evicting the oldest).
    seq: u64,
    request: Request,
}

/// The requests of one [`PendingKey`], bounded by `max_per_process`.
#[derive(Debug, Default)]
struct Channel {
    by_id: HashMap<Id, Vec<Entry>>,
    /// `(seq, id)` in arrival order. Entries of requests already answered are skipped when
    /// met, and the queue is rebuilt when they outnumber the live ones.
    order: VecDeque<(u64, Id)>,
    len: usize,
}

impl Channel {
    fn compact(&mut self) {
        let mut live: Vec<(u64, Id)> = self
            .by_id
            .iter()
            .flat_map(|(id, list)| list.iter().map(move |e| (e.seq, id.clone())))
            .collect();
        live.sort_unstable_by_key(|(seq, _)| *seq);
        self.order = live.into();
    }
}

/// A request taken out of the table without an answer.
pub type Dropped = (PendingKey, Id, Request);

/// Every pending request, with a global bound and one per process and direction.
#[derive(Debug)]
pub struct PendingTable {
    channels: HashMap<PendingKey, Channel>,
    len: usize,
    next_seq: u64,
    max: usize,
    max_per_process: usize,
}

impl PendingTable {
    pub fn new(max: usize, max_per_process: usize) -> Self {
        Self {
            channels: HashMap::default(),
            len: 0,
            next_seq: 0,
            max,
            max_per_process,
        }
    }

    /// Requests pending across all processes.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a request. Returns the requests evicted to make room: past the global bound
    /// the oldest request of the busiest channel, past the per-process bound the oldest of
    /// this one.
    pub fn insert(&mut self, key: PendingKey, id: Id, request: Request) -> Vec<Dropped> {
        let mut evicted = Vec::new();
        if self.len >= self.max {
            let busiest = self
                .channels
                .iter()
                .max_by_key(|(_, c)| c.len)
                .map(|(k, _)| *k);
            if let Some(busiest) = busiest {
                evicted.extend(self.evict_oldest(busiest));
            }
        }
        if self
            .channels
            .get(&key)
            .is_some_and(|c| c.len >= self.max_per_process)
        {
            evicted.extend(self.evict_oldest(key));
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let channel = self.channels.entry(key).or_default();
        channel.order.push_back((seq, id.clone()));
        channel
            .by_id
            .entry(id)
            .or_default()
            .push(Entry { seq, request });
        channel.len += 1;
        if channel.order.len() > 2 * channel.len + 64 {
            channel.compact();
        }
        self.len += 1;
        evicted
    }

    fn evict_oldest(&mut self, key: PendingKey) -> Option<Dropped> {
        loop {
            let (seq, id) = self.channels.get_mut(&key)?.order.pop_front()?;
            let index = self
                .channels
                .get(&key)
                .and_then(|c| c.by_id.get(&id))
                .and_then(|list| list.iter().position(|e| e.seq == seq));
            if let Some(request) = index.and_then(|i| self.take_at(key, &id, i)) {
                return Some((key, id, request));
            }
        }
    }

    /// Index of the best candidate for `id`: same stream (sockets), else the same session,
    /// else a stream of the same server (`same_server`), else the oldest.
    pub fn candidate(
        &self,
        key: PendingKey,
        id: &Id,
        stream: StreamKey,
        session: Option<&str>,
        same_server: impl Fn(StreamKey) -> bool,
    ) -> Option<usize> {
        let list = self.channels.get(&key)?.by_id.get(id)?;
        let same_session = |e: &Entry| session.is_some() && e.request.session.as_deref() == session;
        Some(
            list.iter()
                .position(|e| e.request.stream == stream)
                .or_else(|| list.iter().position(same_session))
                .or_else(|| list.iter().position(|e| same_server(e.request.stream)))
                .unwrap_or(0),
        )
    }

    /// The candidate on exactly `stream`, if any.
    pub fn on_stream(&self, key: PendingKey, id: &Id, stream: StreamKey) -> Option<usize> {
        self.channels
            .get(&key)?
            .by_id
            .get(id)?
            .iter()
            .position(|e| e.request.stream == stream)
    }

    pub fn take_at(&mut self, key: PendingKey, id: &Id, index: usize) -> Option<Request> {
        let channel = self.channels.get_mut(&key)?;
        let list = channel.by_id.get_mut(id)?;
        if index >= list.len() {
            return None;
        }
        let entry = list.remove(index);
        if list.is_empty() {
            channel.by_id.remove(id);
        }
        channel.len -= 1;
        if channel.len == 0 {
            self.channels.remove(&key);
        }
        self.len -= 1;
        Some(entry.request)
    }

    /// Every request of process `tgid`, both directions, taken out.
    pub fn drain_process(&mut self, tgid: u32) -> Vec<Dropped> {
        let mut drained = Vec::new();
        for direction in [Direction::Write, Direction::Read] {
            let key = PendingKey { tgid, direction };
            let Some(channel) = self.channels.remove(&key) else {
                continue;
            };
            self.len -= channel.len;
            for (id, list) in channel.by_id {
                for entry in list {
                    drained.push((key, id.clone(), entry.request));
                }
            }
        }
        drained
    }

    /// The requests older than `deadline_ns`, taken out.
    pub fn expire(&mut self, deadline_ns: u64) -> Vec<Dropped> {
        let mut expired = Vec::new();
        for (key, channel) in &self.channels {
            for (id, list) in &channel.by_id {
                for (index, e) in list.iter().enumerate().rev() {
                    if e.request.ts_ns < deadline_ns {
                        expired.push((*key, id.clone(), index));
                    }
                }
            }
        }
        expired
            .into_iter()
            .filter_map(|(key, id, index)| {
                let request = self.take_at(key, &id, index)?;
                Some((key, id, request))
            })
            .collect()
    }

    /// The streams of every pending request.
    pub fn streams(&self) -> impl Iterator<Item = StreamKey> + '_ {
        self.channels
            .values()
            .flat_map(|c| c.by_id.values().flatten().map(|e| e.request.stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Transport;

    fn request(stream: u64, ts_ns: u64, session: Option<&str>) -> Request {
        Request {
            stream: StreamKey {
                addr: stream,
                ino: stream,
            },
            method: "tools/call".into(),
            tool: None,
            prompt: None,
            ts_ns,
            size: 10,
            transport: Transport::Tcp,
            server_is_observer: false,
            session: session.map(Box::from),
            user: None,
            context: None,
        }
    }

    const KEY: PendingKey = PendingKey {
        tgid: 7,
        direction: Direction::Write,
    };

    #[test]
    fn the_same_stream_then_session_then_server_then_the_oldest_wins() {
        let mut t = PendingTable::new(100, 100);
        for (stream, session) in [(1, None), (2, Some("s")), (3, None), (4, None)] {
            assert!(t
                .insert(KEY, Id::Num(1), request(stream, 0, session))
                .is_empty());
        }
        let stream = |n| StreamKey { addr: n, ino: n };
        let never = |_| false;
        assert_eq!(
            t.candidate(KEY, &Id::Num(1), stream(3), None, never),
            Some(2)
        );
        assert_eq!(
            t.candidate(KEY, &Id::Num(1), stream(9), Some("s"), never),
            Some(1)
        );
        let server_of_4 = |s: StreamKey| s.addr == 4;
        assert_eq!(
            t.candidate(KEY, &Id::Num(1), stream(9), None, server_of_4),
            Some(3)
        );
        assert_eq!(
            t.candidate(KEY, &Id::Num(1), stream(9), None, never),
            Some(0)
        );
        assert_eq!(t.candidate(KEY, &Id::Num(2), stream(1), None, never), None);
        assert_eq!(t.on_stream(KEY, &Id::Num(1), stream(9)), None);
        let taken = t.take_at(KEY, &Id::Num(1), 2).expect("taken");
        assert_eq!(taken.stream, stream(3));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn bounds_evict_the_oldest_of_the_process_then_of_the_busiest() {
        let mut t = PendingTable::new(3, 2);
        assert!(t.insert(KEY, Id::Num(1), request(1, 1, None)).is_empty());
        assert!(t.insert(KEY, Id::Num(2), request(1, 2, None)).is_empty());
        let evicted = t.insert(KEY, Id::Num(3), request(1, 3, None));
        assert_eq!(evicted.len(), 1);
        assert_eq!((evicted[0].1.clone(), evicted[0].2.ts_ns), (Id::Num(1), 1));
        let other = PendingKey {
            tgid: 8,
            direction: Direction::Read,
        };
        assert!(t.insert(other, Id::Num(1), request(2, 4, None)).is_empty());
        // Full (3): the busiest channel (KEY, 2 entries) gives its oldest (id 2).
        let evicted = t.insert(other, Id::Num(5), request(2, 5, None));
        assert_eq!(evicted.len(), 1);
        assert_eq!(evicted[0].0, KEY);
        assert_eq!(evicted[0].1, Id::Num(2));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn expiry_and_process_drain_take_requests_out() {
        let mut t = PendingTable::new(100, 100);
        t.insert(KEY, Id::Num(1), request(1, 100, None));
        t.insert(KEY, Id::Num(2), request(1, 300, None));
        let reader = PendingKey {
            tgid: 7,
            direction: Direction::Read,
        };
        t.insert(reader, Id::Num(3), request(2, 100, None));
        let expired = t.expire(200);
        let mut ids: Vec<Id> = expired.into_iter().map(|(_, id, _)| id).collect();
        ids.sort_by_key(|id| format!("{id:?}"));
        assert_eq!(ids, [Id::Num(1), Id::Num(3)]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.streams().count(), 1);
        let drained = t.drain_process(7);
        assert_eq!(drained.len(), 1);
        assert!(t.is_empty());
    }
}
