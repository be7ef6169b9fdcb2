//! Responses and the other ways a request ends: pairing (with responses that overtook
//! their requests), HTTP statuses and errors, aborted connections, cancellations.

use mcp_probe_common::Direction;

use super::{early::EarlyResponse, pending::PendingKey, Finished, Stitcher, HANDSHAKE_METHODS};
use crate::{
    events::{Ending, Event, Outcome, Request},
    model::{opposite, Observation, ServerRef, Side},
    protocols::jsonrpc::Id,
};

impl Stitcher {
    pub(super) fn on_response(
        &mut self,
        obs: &Observation<'_>,
        id: Option<Id>,
        outcome: Outcome,
        payload: Option<Box<str>>,
    ) {
        // The request went the other way for this process.
        let key = PendingKey {
            tgid: obs.tgid,
            direction: opposite(obs.direction),
        };
        let Some(id) = id else {
            self.emit(Event::Unpaired {
                transport: obs.transport,
            });
            return;
        };
        let Some(request) = self.take(key, &id, obs) else {
            if self.unanswered.take(key, id.clone()) {
                self.emit(Event::LateResponse);
            } else {
                self.hold_early(obs, key, id, outcome, payload);
            }
            return;
        };
        if obs.ts_ns.saturating_sub(request.ts_ns) > self.config.request_timeout_ns {
            // Past the deadline whether or not the sweep has run yet: a timeout, answered late.
            let at_ns = request.ts_ns.saturating_add(self.config.request_timeout_ns);
            self.finish_unanswered(key, id.clone(), request, Ending::Timeout { at_ns });
            self.unanswered.take(key, id);
            self.emit(Event::LateResponse);
            return;
        }
        if request.server_is_observer {
            // The process that received the request answers it on this stream.
            self.names.learn(obs.stream, ServerRef::Process(obs.tgid));
        } else if let Some(server) = self.names.of_stream(&request.stream).cloned() {
            self.names.learn_if_unknown(obs.stream, server);
        }
        let server = self.names.server_of(
            obs.tgid,
            request.server_is_observer,
            request.stream,
            obs.peer,
        );
        let _ = self.touch_session(obs, request.server_is_observer);
        let handshake = HANDSHAKE_METHODS.contains(&request.method.as_str());
        // A JSON-RPC error carries no `serverInfo` (a 2026-07-28 result does, in `_meta`):
        // it does not settle the name, so that an exchange that fails first is counted
        // under the name the server's next result announces, like the rest of its session.
        let settles = !handshake && !matches!(outcome, Outcome::Error(_));
        let ending = Ending::Response {
            outcome,
            size: obs.size,
            duration_s: obs.ts_ns.saturating_sub(request.ts_ns) as f64 / 1e9,
            payload,
        };
        let finished = Finished::Exchange {
            side: Side::of(key.direction),
            request,
            ending,
        };
        if settles {
            // Past the handshake: whatever name the server has now is its name.
            if let Some(server) = &server {
                let held = self.names.settle(server);
                self.count_held(server, held);
            }
        }
        self.finish(server, obs.ts_ns, finished);
    }

    /// Takes the best pending candidate for a response to `id` seen in `obs`.
    pub(super) fn take(
        &mut self,
        key: PendingKey,
        id: &Id,
        obs: &Observation<'_>,
    ) -> Option<Request> {
        let index = self.candidate(key, id, obs)?;
        let request = self.pending.take_at(key, id, index);
        self.report_pending();
        request
    }

    /// The pending request a response to `id` seen in `obs` would answer, if any.
    fn candidate(&self, key: PendingKey, id: &Id, obs: &Observation<'_>) -> Option<usize> {
        let names = &self.names;
        let server = names.of_stream(&obs.stream);
        let same_server = |s| server.is_some() && names.of_stream(&s) == server;
        self.pending
            .candidate(key, id, obs.stream, obs.session, same_server)
    }

    /// Holds a response whose request has not been seen (yet).
    fn hold_early(
        &mut self,
        obs: &Observation<'_>,
        key: PendingKey,
        id: Id,
        outcome: Outcome,
        payload: Option<Box<str>>,
    ) {
        let response = EarlyResponse {
            tgid: obs.tgid,
            comm: obs.comm.to_owned(),
            direction: obs.direction,
            stream: obs.stream,
            transport: obs.transport,
            peer: obs.peer.cloned(),
            session: obs.session.map(str::to_owned),
            user: obs.user.map(str::to_owned),
            ts_ns: obs.ts_ns,
            size: obs.size,
            outcome,
            payload,
        };
        for gone in self.early.hold(key, id, response) {
            self.emit(Event::Unpaired {
                transport: gone.transport,
            });
        }
    }

    /// A held response whose request just arrived.
    pub(super) fn answer_early(&mut self, id: Id, e: EarlyResponse) {
        let obs = Observation {
            tgid: e.tgid,
            comm: &e.comm,
            direction: e.direction,
            stream: e.stream,
            transport: e.transport,
            peer: e.peer.as_ref(),
            session: e.session.as_deref(),
            user: e.user.as_deref(),
            ts_ns: e.ts_ns,
            size: e.size,
        };
        self.on_response(&obs, Some(id), e.outcome, e.payload);
    }

    /// An HTTP response head: counted per status class, auth failure and rate limiting,
    /// under the server's settled name.
    pub fn on_http_response(&mut self, obs: &Observation<'_>, status: u16) {
        // The process writing the response is the server; the one reading it, the client.
        let observer_is_server = obs.direction == Direction::Write;
        let server = self.server_of(obs, observer_is_server);
        let finished = Finished::HttpStatus {
            side: Side::of_observer(observer_is_server),
            status,
            transport: obs.transport,
        };
        self.finish(server, obs.ts_ns, finished);
        self.flush();
    }

    /// An HTTP error response (4xx/5xx) ended the HTTP request that carried JSON-RPC
    /// request `id`, without a JSON-RPC response for it.
    pub fn on_http_error(&mut self, obs: &Observation<'_>, id: Id, status: u16) {
        let key = PendingKey {
            tgid: obs.tgid,
            direction: opposite(obs.direction),
        };
        if self.candidate(key, &id, obs).is_some() {
            self.on_response(obs, Some(id), Outcome::Http(status), None);
        }
        self.flush();
    }

    /// A connection carrying requests `ids` was closed before they were answered (how the
    /// 2026-07-28 HTTP transport cancels): each still pending is counted as cancelled,
    /// from the point of view of the process that sent or received it on this stream.
    pub fn on_abort(&mut self, obs: &Observation<'_>, ids: Vec<Id>) {
        for id in ids {
            for direction in [Direction::Write, Direction::Read] {
                let key = PendingKey {
                    tgid: obs.tgid,
                    direction,
                };
                let Some(index) = self.pending.on_stream(key, &id, obs.stream) else {
                    continue;
                };
                if let Some(request) = self.pending.take_at(key, &id, index) {
                    self.report_pending();
                    let ending = Ending::Cancelled { at_ns: obs.ts_ns };
                    self.finish_unanswered(key, id.clone(), request, ending);
                }
            }
        }
        self.flush();
    }

    /// A syscall on an MCP connection failed (reset, broken pipe, timeout, ...).
    pub fn on_connection_error(
        &mut self,
        obs: &Observation<'_>,
        observer_is_server: bool,
        reason: &'static str,
    ) {
        let server = self.server_of(obs, observer_is_server);
        let finished = Finished::ConnectionError {
            side: Side::of_observer(observer_is_server),
            reason,
            transport: obs.transport,
        };
        self.finish(server, obs.ts_ns, finished);
        self.flush();
    }

    pub(super) fn on_cancel(&mut self, obs: &Observation<'_>, id: Id) {
        // The cancelled request travelled the same way as the cancellation.
        let key = PendingKey {
            tgid: obs.tgid,
            direction: obs.direction,
        };
        if let Some(request) = self.take(key, &id, obs) {
            let ending = Ending::Cancelled { at_ns: obs.ts_ns };
            self.finish_unanswered(key, id, request, ending);
        }
    }

    /// A request that ends without a response (cancelled, timed out).
    pub(super) fn finish_unanswered(
        &mut self,
        key: PendingKey,
        id: Id,
        request: Request,
        ending: Ending,
    ) {
        self.unanswered.remember(key, id, request.ts_ns);
        let server = if request.server_is_observer {
            Some(ServerRef::Process(key.tgid))
        } else {
            self.names.of_stream(&request.stream).cloned()
        };
        let ts = request.ts_ns;
        let finished = Finished::Exchange {
            side: Side::of(key.direction),
            request,
            ending,
        };
        self.finish(server, ts, finished);
    }
}
