//! The stitcher over time: processes that start and exit, connections and sessions that
//! end, requests that time out, and the periodic sweep that keeps every table bounded.

use super::{Finished, Stitcher};
use crate::{
    events::{ActiveSession, Ending, Event},
    identity::Identity,
    model::{Observation, ServerRef, Side, StreamKey},
    stitch::sessions::{Session, SessionId, SessionKey, IDLE_NS},
    HashMap, HashSet,
};

/// How long (kernel time) what was learned about an exited process is kept for its peers.
pub(super) const PURGE_AFTER_NS: u64 = 2_000_000_000;

impl Stitcher {
    /// A record of `tgid` (named `comm` by the kernel) arrived. If a process with that pid
    /// exited before, this is a new process that reuses the pid: the old one is forgotten
    /// first.
    pub fn on_process_seen(&mut self, tgid: u32, comm: &str) {
        if self.exited.remove(&tgid).is_some() {
            self.forget_process(tgid);
        }
        self.processes.observe(tgid, comm);
        self.flush();
    }

    /// What the host said about process `tgid` (its name, uid and start time).
    pub fn on_identified(&mut self, tgid: u32, identity: Identity) {
        self.processes.identified(tgid, identity);
    }

    /// Whether process `tgid` is identified already.
    pub fn is_identified(&self, tgid: u32) -> bool {
        self.processes.is_identified(tgid)
    }

    /// A process exited. The requests it was waiting on will never be answered for it
    /// (counted as cancelled, as when a connection closes), the responses it read before
    /// their requests were reported never will be paired, and its sessions end now. What
    /// was learned about it (its name, its streams) is kept for its peers, which may still
    /// be reading what it wrote, until [`PURGE_AFTER_NS`] has passed or a new process
    /// with its pid shows up ([`Stitcher::on_process_seen`]), whichever comes first.
    pub fn on_process_exit(&mut self, tgid: u32, ts_ns: u64) {
        let drained = self.pending.drain_process(tgid);
        for (key, id, request) in drained {
            self.finish_unanswered(key, id, request, Ending::Cancelled { at_ns: ts_ns });
        }
        self.report_pending();
        self.unanswered.forget_process(tgid);
        for e in self.early.drain_process(tgid) {
            self.emit(Event::Unpaired {
                transport: e.transport,
            });
        }
        let server = ServerRef::Process(tgid);
        // Its sessions end, under the name it had.
        let ended = self
            .sessions
            .end(|k| k.observer == tgid || k.server == server);
        if !ended.is_empty() {
            self.end_sessions_at(ended, ts_ns);
            self.refresh_sessions();
        }
        self.exited.insert(tgid, ts_ns);
        self.flush();
    }

    fn forget_process(&mut self, tgid: u32) {
        let waiting: HashSet<StreamKey> = self.pending.streams().collect();
        // What waited for its name is counted under the name it had, then it is forgotten;
        // the streams of requests still waiting for an answer from it are kept.
        let held: Vec<Finished> = self.names.forget_process(tgid, &waiting);
        let server = ServerRef::Process(tgid);
        self.count_held(&server, held);
        self.clients.forget_process(tgid);
        self.processes.forget(tgid);
    }

    /// An HTTP DELETE for `session` (the client ends it; both sides see the request).
    pub fn on_session_delete(&mut self, obs: &Observation<'_>, session: &str) {
        let ended = self.sessions.end(|k| {
            k.observer == obs.tgid && matches!(&k.id, SessionId::Http(id) if &**id == session)
        });
        self.end_sessions_at(ended, obs.ts_ns);
        self.flush();
    }

    /// A process closed a connection: its session-less sessions on it are over.
    pub fn on_connection_closed(&mut self, tgid: u32, stream: StreamKey, ts_ns: u64) {
        let ended = self
            .sessions
            .end(|k| k.observer == tgid && k.id == SessionId::Connection(stream));
        self.end_sessions_at(ended, ts_ns);
        self.flush();
    }

    /// Forgets what was learned about a stream that is no longer followed.
    pub fn forget_stream(&mut self, stream: StreamKey) {
        self.names.forget_stream(stream);
        self.clients.forget_stream(stream);
    }

    /// The current name of `tgid` if it has served MCP (announced a name, or had its
    /// exchanges counted or held under it).
    pub fn name_if_server(&mut self, tgid: u32) -> Option<String> {
        let name = self
            .names
            .is_server(tgid)
            .then(|| self.server_name(Some(&ServerRef::Process(tgid))));
        self.flush();
        name
    }

    /// Every server process known from traffic, with its current (capped) name.
    pub fn server_processes(&mut self) -> Vec<(u32, String)> {
        let servers = self
            .names
            .server_processes()
            .into_iter()
            .map(|t| (t, self.server_name(Some(&ServerRef::Process(t)))))
            .collect();
        self.flush();
        servers
    }

    /// Ends sessions at `ts_ns` (explicit ends) instead of at their last message.
    fn end_sessions_at(&mut self, mut ended: Vec<(SessionKey, Session)>, ts_ns: u64) {
        for (_, s) in &mut ended {
            s.last_ns = s.last_ns.max(ts_ns);
        }
        self.end_sessions(ended);
    }

    pub(super) fn end_sessions(&mut self, ended: Vec<(SessionKey, Session)>) {
        for (key, session) in ended {
            let server = self.server_name(Some(&key.server));
            self.emit(Event::SessionEnded {
                side: key.role,
                server,
                transport: session.transport,
                duration_s: session.last_ns.saturating_sub(session.start_ns) as f64 / 1e9,
            });
        }
    }

    /// Hands on the sessions open now.
    fn refresh_sessions(&mut self) {
        let live: Vec<(SessionKey, Session)> = self
            .sessions
            .iter()
            .map(|(k, s)| (k.clone(), s.clone()))
            .collect();
        let active = live
            .into_iter()
            .map(|(key, session)| ActiveSession {
                side: key.role,
                server: self.server_name(Some(&key.server)),
                transport: session.transport,
                client: session.client_name,
                counts_clients: key.role == Side::Server
                    || matches!(key.server, ServerRef::Endpoint(_)),
            })
            .collect();
        self.emit(Event::ActiveSessions(active));
    }

    /// Ends sessions whose processes are gone or that went idle, and hands on the sessions
    /// still open.
    fn sweep_sessions(&mut self, now_ns: u64) {
        let processes = &self.processes;
        // One look per process, not per session.
        let mut alive: HashMap<u32, bool> = HashMap::default();
        let mut is_alive = |tgid: u32| {
            *alive
                .entry(tgid)
                .or_insert_with(|| processes.is_alive(tgid))
        };
        let idle: HashSet<SessionKey> = self
            .sessions
            .iter()
            .filter(|(k, s)| {
                !is_alive(k.observer)
                    || matches!(k.server, ServerRef::Process(tgid) if !is_alive(tgid))
                    || now_ns.saturating_sub(s.last_ns) > IDLE_NS
            })
            .map(|(k, _)| k.clone())
            .collect();
        let ended = self.sessions.end(|k| idle.contains(k));
        self.end_sessions(ended);
        self.refresh_sessions();
    }

    /// Times out old requests, settles servers that never announced a name, ends idle
    /// sessions and forgets processes that are gone. `now_ns` is CLOCK_MONOTONIC, the
    /// clock of the kernel timestamps.
    pub fn sweep(&mut self, now_ns: u64) {
        for gone in self.early.expire(now_ns) {
            self.emit(Event::Unpaired {
                transport: gone.transport,
            });
        }
        let purged: Vec<u32> = self
            .exited
            .iter()
            .filter(|(_, &at)| now_ns.saturating_sub(at) > PURGE_AFTER_NS)
            .map(|(&tgid, _)| tgid)
            .collect();
        for tgid in purged {
            self.exited.remove(&tgid);
            self.forget_process(tgid);
        }
        let deadline = now_ns.saturating_sub(self.config.request_timeout_ns);
        let timeout_ns = self.config.request_timeout_ns;
        for (key, id, request) in self.pending.expire(deadline) {
            self.report_pending();
            let at_ns = request.ts_ns.saturating_add(timeout_ns);
            self.finish_unanswered(key, id, request, Ending::Timeout { at_ns });
        }
        let processes = &self.processes;
        for server in self.names.overdue(now_ns, |tgid| processes.is_alive(tgid)) {
            let held = self.names.settle(&server);
            self.count_held(&server, held);
        }
        self.sweep_sessions(now_ns);
        // Forget servers and clients whose process is gone (bounded memory; a reused pid
        // starts fresh). One look per process, however many entries name it.
        let mut tgids: Vec<u32> = self
            .names
            .processes()
            .chain(self.clients.processes())
            .collect();
        tgids.sort_unstable();
        tgids.dedup();
        let dead: HashSet<u32> = tgids
            .into_iter()
            .filter(|&t| !self.processes.is_alive(t))
            .collect();
        self.names.forget_dead(&dead);
        self.clients.forget_dead(&dead);
        self.processes.sweep();
        self.flush();
    }
}
