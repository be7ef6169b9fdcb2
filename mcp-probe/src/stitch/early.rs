//! Responses that overtook their requests, and requests that ended without one.
//!
//! A write is reported when the syscall returns, and a write that blocked on a full pipe
//! returns after the peer has already read the first requests and answered them, so their
//! responses come first. Such a response is held for [`EARLY_HOLD_NS`], then counted as
//! unpaired. A response to a request already counted as cancelled or timed out is late,
//! not unpaired: [`Unanswered`] remembers those requests.

use std::collections::VecDeque;

use super::pending::PendingKey;
use crate::{
    events::Outcome,
    model::{ServerRef, StreamKey, Transport},
    protocols::jsonrpc::Id,
    HashMap,
};

/// How long (kernel time) a response may wait for its request's record.
pub const EARLY_HOLD_NS: u64 = 1_000_000_000;
/// Responses held at once waiting for their requests.
const MAX_EARLY: usize = 4096;
/// Requests remembered as ended without a response.
const UNANSWERED_CAP: usize = 10_000;

/// A response read before the record of its request arrived: the observation it came
/// with, owned.
#[derive(Debug)]
pub struct EarlyResponse {
    pub tgid: u32,
    pub comm: String,
    pub direction: mcp_probe_common::Direction,
    pub stream: StreamKey,
    pub transport: Transport,
    pub peer: Option<ServerRef>,
    pub session: Option<String>,
    pub user: Option<String>,
    pub ts_ns: u64,
    pub size: u64,
    pub outcome: Outcome,
    pub payload: Option<Box<str>>,
}

/// The responses held, by the request they wait for.
#[derive(Debug, Default)]
pub struct EarlyResponses {
    held: HashMap<(PendingKey, Id), Vec<EarlyResponse>>,
    /// `(ts, key, id)` of the held responses, oldest first (entries of responses paired
    /// meanwhile are skipped when met).
    order: VecDeque<(u64, PendingKey, Id)>,
    len: usize,
}

impl EarlyResponses {
    /// Holds `response` for request `key`/`id`. Returns the responses that had to go
    /// (expired at the response's time, or the oldest when full): unpaired after all.
    pub fn hold(&mut self, key: PendingKey, id: Id, response: EarlyResponse) -> Vec<EarlyResponse> {
        let mut gone = self.expire(response.ts_ns);
        if self.len >= MAX_EARLY {
            gone.extend(self.expire(u64::MAX));
        }
        self.order.push_back((response.ts_ns, key, id.clone()));
        self.held.entry((key, id)).or_default().push(response);
        self.len += 1;
        if self.order.len() > 2 * self.len + 64 {
            let held = &self.held;
            self.order.retain(|(ts, k, id)| {
                held.get(&(*k, id.clone()))
                    .is_some_and(|l| l.iter().any(|e| e.ts_ns == *ts))
            });
        }
        gone
    }

    /// The first response held for request `key`/`id`, taken out.
    pub fn take(&mut self, key: PendingKey, id: &Id) -> Option<EarlyResponse> {
        let k = (key, id.clone());
        let list = self.held.get_mut(&k)?;
        let e = list.remove(0);
        if list.is_empty() {
            self.held.remove(&k);
        }
        self.len -= 1;
        Some(e)
    }

    /// Held responses older than [`EARLY_HOLD_NS`] at `now_ns` (when `now_ns` is
    /// `u64::MAX`: the oldest one, to make room), taken out.
    pub fn expire(&mut self, now_ns: u64) -> Vec<EarlyResponse> {
        let make_room = now_ns == u64::MAX;
        let mut gone = Vec::new();
        while let Some((ts, key, id)) = self.order.front().cloned() {
            if !make_room && ts.saturating_add(EARLY_HOLD_NS) >= now_ns {
                break;
            }
            self.order.pop_front();
            let Some(list) = self.held.get_mut(&(key, id.clone())) else {
                continue;
            };
            let Some(index) = list.iter().position(|e| e.ts_ns == ts) else {
                continue;
            };
            gone.push(list.remove(index));
            if list.is_empty() {
                self.held.remove(&(key, id));
            }
            self.len -= 1;
            if make_room {
                break;
            }
        }
        gone
    }

    /// Every response process `tgid` read before its request, taken out.
    pub fn drain_process(&mut self, tgid: u32) -> Vec<EarlyResponse> {
        let keys: Vec<(PendingKey, Id)> = self
            .held
            .keys()
            .filter(|(k, _)| k.tgid == tgid)
            .cloned()
            .collect();
        let mut gone = Vec::new();
        for key in keys {
            let list = self.held.remove(&key).unwrap_or_default();
            self.len -= list.len();
            gone.extend(list);
        }
        gone
    }
}

/// Requests that ended without a response (cancelled, timed out, evicted): a response that
/// still comes is late. Bounded: the oldest are forgotten first.
#[derive(Debug, Default)]
pub struct Unanswered {
    ended: HashMap<(PendingKey, Id), u64>,
    order: VecDeque<(PendingKey, Id)>,
}

impl Unanswered {
    pub fn remember(&mut self, key: PendingKey, id: Id, ts_ns: u64) {
        self.ended.insert((key, id.clone()), ts_ns);
        self.order.push_back((key, id));
        while self.order.len() > UNANSWERED_CAP {
            if let Some(k) = self.order.pop_front() {
                self.ended.remove(&k);
            }
        }
    }

    /// True (once) if request `key`/`id` ended without a response.
    pub fn take(&mut self, key: PendingKey, id: Id) -> bool {
        self.ended.remove(&(key, id)).is_some()
    }

    pub fn forget_process(&mut self, tgid: u32) {
        self.ended.retain(|(k, _), _| k.tgid != tgid);
    }
}

#[cfg(test)]
mod tests {
    use mcp_probe_common::Direction;

    use super::*;

    const KEY: PendingKey = PendingKey {
        tgid: 3,
        direction: Direction::Write,
    };

    fn response(ts_ns: u64) -> EarlyResponse {
        EarlyResponse {
            tgid: 3,
            comm: "client".into(),
            direction: Direction::Read,
            stream: StreamKey { addr: 1, ino: 1 },
            transport: Transport::Pipe,
            peer: None,
            session: None,
            user: None,
            ts_ns,
            size: 40,
            outcome: Outcome::Ok,
            payload: None,
        }
    }

    #[test]
    fn a_held_response_pairs_until_it_expires() {
        let mut early = EarlyResponses::default();
        assert!(early.hold(KEY, Id::Num(1), response(100)).is_empty());
        assert!(early.hold(KEY, Id::Num(2), response(200)).is_empty());
        assert_eq!(early.take(KEY, &Id::Num(1)).map(|e| e.ts_ns), Some(100));
        assert!(early.take(KEY, &Id::Num(1)).is_none());
        assert!(
            early.expire(200 + EARLY_HOLD_NS).is_empty(),
            "not older yet"
        );
        let gone = early.expire(201 + EARLY_HOLD_NS);
        assert_eq!(gone.len(), 1);
        assert!(early.take(KEY, &Id::Num(2)).is_none());
    }

    #[test]
    fn a_process_exit_drains_its_responses() {
        let mut early = EarlyResponses::default();
        early.hold(KEY, Id::Num(1), response(100));
        early.hold(KEY, Id::Num(1), response(110));
        assert_eq!(early.drain_process(4).len(), 0);
        assert_eq!(early.drain_process(3).len(), 2);
        assert!(early.expire(u64::MAX).is_empty());
    }

    #[test]
    fn unanswered_requests_are_late_once() {
        let mut u = Unanswered::default();
        u.remember(KEY, Id::Str("a".into()), 5);
        assert!(u.take(KEY, Id::Str("a".into())));
        assert!(!u.take(KEY, Id::Str("a".into())));
        u.remember(KEY, Id::Num(9), 5);
        u.forget_process(3);
        assert!(!u.take(KEY, Id::Num(9)));
    }
}
