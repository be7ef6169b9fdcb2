//! Requests: what is kept about each until its outcome is known.

use mcp_probe_common::Direction;

use super::{endpoint_is_local, pending::PendingKey, Stitcher, SERVER_TO_CLIENT_REQUESTS};
use crate::{
    events::{Event, Request, RequestContext, TraceParent},
    model::{Observation, ServerRef},
    protocols::jsonrpc::{Id, RequestInfo},
    sinks,
};

impl Stitcher {
    pub(super) fn on_request(
        &mut self,
        obs: &Observation<'_>,
        id: Id,
        method: &str,
        info: &RequestInfo<'_>,
        payload: Option<Box<str>>,
    ) {
        let server_to_client = SERVER_TO_CLIENT_REQUESTS.contains(&method);
        // The observing process is the MCP server if it receives a client request or
        // sends a server request.
        let server_is_observer = server_to_client == (obs.direction == Direction::Write);
        // An HTTP session starts with the answer to `initialize`, which names it.
        let mut session_client = None;
        if !(method == "initialize" && obs.session.is_none() && obs.transport.is_socket()) {
            let session = self.touch_session(obs, server_is_observer);
            if let (Some(key), Some(client)) = (&session, info.client_name.as_deref()) {
                let client = self.caps.clients.value(client, &mut self.caps.overflowed);
                self.sessions.name_client(key, client);
            }
            if self.needs.context {
                session_client = session
                    .as_ref()
                    .and_then(|k| self.sessions.client_name(k))
                    .map(str::to_owned);
            }
        }
        if server_is_observer {
            self.names.learn(obs.stream, ServerRef::Process(obs.tgid));
        } else {
            // Remember the server this client's socket is connected to, in case the
            // request ends without a response.
            let _ = self.server_of(obs, false);
        }
        let caps = &mut self.caps;
        let method_label = caps.methods.value(method, &mut caps.overflowed);
        let (tool, prompt) = match (method, info.name.as_deref()) {
            ("tools/call", Some(n)) => (Some(caps.tools.value(n, &mut caps.overflowed)), None),
            ("prompts/get", Some(n)) => (None, Some(caps.prompts.value(n, &mut caps.overflowed))),
            _ => (None, None),
        };
        // Once per request: by the server, or by the client when the server is not on this
        // host (a loopback or unix-socket server is, even when its process could not be
        // identified, e.g. without CAP_SYS_PTRACE).
        let counts_users = server_is_observer
            || matches!(
                self.server_of(obs, false),
                Some(ServerRef::Endpoint(e)) if !endpoint_is_local(&e)
            );
        let user = if counts_users {
            self.user_raw(obs, server_is_observer)
                .map(|u| self.caps.users.value(&u, &mut self.caps.overflowed))
        } else {
            None
        };
        let context = self
            .needs
            .context
            .then(|| self.context(obs, &id, info, server_is_observer, session_client, payload));
        let key = PendingKey {
            tgid: obs.tgid,
            direction: obs.direction,
        };
        let request = Request {
            stream: obs.stream,
            method: method_label,
            tool,
            prompt,
            ts_ns: obs.ts_ns,
            size: obs.size,
            transport: obs.transport,
            server_is_observer,
            session: obs.session.map(Box::from),
            user,
            context,
        };
        let evicted = self.pending.insert(key, id.clone(), request);
        for (key, id, request) in evicted {
            // Not an MCP outcome (none is known); a response that still comes is late.
            self.emit(Event::Evicted {
                what: "pending_request",
                n: 1,
            });
            self.unanswered.remember(key, id, request.ts_ns);
        }
        self.report_pending();
        // A response that came before this request pairs now.
        if let Some(e) = self.early.take(key, &id) {
            self.emit(Event::ReorderedResponse);
            self.answer_early(id, e);
        }
    }

    /// What only the sinks need about a request.
    fn context(
        &mut self,
        obs: &Observation<'_>,
        id: &Id,
        info: &RequestInfo<'_>,
        server_is_observer: bool,
        session_client: Option<String>,
        payload: Option<Box<str>>,
    ) -> Box<RequestContext> {
        let client_pid = if server_is_observer {
            self.clients.writer(&obs.stream)
        } else {
            Some(obs.tgid)
        };
        let client_name = info.client_name.as_deref().map(|c| sinks::bounded(c, 128));
        if let (false, Some(name)) = (server_is_observer, &client_name) {
            self.clients.named(obs.tgid, name.clone());
        }
        let own = (!server_is_observer)
            .then(|| self.clients.name(obs.tgid).cloned())
            .flatten();
        Box::new(RequestContext {
            pid: obs.tgid,
            client_pid,
            request_id: sinks::id_text(id),
            client_name: client_name.or(session_client).or(own),
            user: self.user_raw(obs, server_is_observer),
            protocol_version: info
                .protocol_version
                .as_deref()
                .map(|v| sinks::bounded(v, 64)),
            resource: info.uri.as_deref().map(sinks::payload::resource_uri),
            trace: info.traceparent.as_deref().and_then(TraceParent::parse),
            tracestate: info.tracestate.as_deref().map(|t| sinks::bounded(t, 512)),
            payload,
        })
    }
}
