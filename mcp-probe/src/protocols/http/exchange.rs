//! The HTTP exchange of one connection (both directions): which request a response
//! answers, the MCP session and user of each message, and what an error status or a close
//! leaves unanswered. It turns the framers' frames into [`Step`]s for the stream stage.
//!
//! A connection without HTTP (JSON lines) goes through it too: its messages come out as
//! [`Step::Text`] with no session or user, and nothing else is kept.

use std::collections::VecDeque;

use mcp_probe_common::Direction;

use super::Head;
use crate::protocols::{jsonrpc::Id, Frame};

/// HTTP requests remembered per connection while their responses are awaited.
pub const MAX_HTTP_IN_FLIGHT: usize = 64;

/// What the stream stage does with a frame, once the exchange has seen it.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Nothing to report (a request head, an empty priming event, a legacy `endpoint`).
    Nothing,
    /// A JSON-RPC text to parse, with the MCP session and user it belongs to. Hand the
    /// ids of the requests it carried back with [`HttpExchange::requests_carried`].
    Text {
        bytes: &'a [u8],
        ts_ns: u64,
        session: Option<&'a str>,
        user: Option<&'a str>,
    },
    /// A message not kept whole; `len` is exact.
    Oversized(u64),
    /// The client ends its HTTP session (a DELETE request); both sides see it.
    SessionDelete(&'a str),
    /// A response head with this status.
    Response(u16),
    /// A response ended with an error status: it answered these JSON-RPC requests without
    /// a JSON-RPC response.
    ErrorAnswered { status: u16, ids: Vec<Id> },
    /// A body or event that could not be parsed.
    Unparsable(&'static str),
    /// Bytes that were not HTTP where a head was expected.
    Invalid,
}

/// JSON-RPC requests carried by one HTTP request, waiting for its HTTP response.
#[derive(Debug, Default)]
struct HttpTxn {
    request_ids: Vec<Id>,
}

/// One direction's part of the exchange: the HTTP message being handled in it.
#[derive(Debug, Default)]
struct Half {
    /// The head being handled is a request (else a response).
    in_request: bool,
    /// Status and JSON-RPC request ids of the response being handled.
    response: Option<(u16, Vec<Id>)>,
    /// The process of this direction is the client of the connection (sends requests).
    client: Option<bool>,
    /// The MCP session of the message being handled (`mcp-session-id`, the `session_id`
    /// of a legacy POST URL, or the legacy `endpoint` event of a GET stream).
    session: Option<String>,
    /// Who sent the request being handled (keyed hash of its credential).
    user: Option<String>,
}

/// The HTTP state of one connection.
#[derive(Debug, Default)]
pub struct HttpExchange {
    /// By [`index`] of the direction.
    halves: [Half; 2],
    /// HTTP requests whose responses have not started yet (FIFO: pipelining).
    in_flight: VecDeque<HttpTxn>,
}

fn index(d: Direction) -> usize {
    match d {
        Direction::Read => 0,
        Direction::Write => 1,
    }
}

impl HttpExchange {
    /// Takes one frame of direction `d`.
    pub fn on_frame<'a>(&'a mut self, d: Direction, frame: Frame<'a>) -> Step<'a> {
        let half = &mut self.halves[index(d)];
        match frame {
            Frame::Head(head) => {
                let head = HeadFacts::from(head);
                if head.is_request {
                    half.in_request = true;
                    half.session = head.session;
                    half.user = head.user;
                    half.client = Some(d == Direction::Write);
                    if self.in_flight.len() >= MAX_HTTP_IN_FLIGHT {
                        self.in_flight.pop_front();
                    }
                    self.in_flight.push_back(HttpTxn::default());
                    match (head.delete, half.session.as_deref()) {
                        (true, Some(id)) => Step::SessionDelete(id),
                        _ => Step::Nothing,
                    }
                } else {
                    half.in_request = false;
                    if head.session.is_some() {
                        half.session = head.session;
                    }
                    half.client = Some(d == Direction::Read);
                    let txn = self.in_flight.pop_front().unwrap_or_default();
                    half.response = Some((head.status, txn.request_ids));
                    Step::Response(head.status)
                }
            }
            Frame::Message {
                bytes,
                ts_ns,
                sse_event,
            } => {
                if sse_event == Some("endpoint") {
                    // Legacy HTTP+SSE: the POST URL names the session of this GET stream.
                    half.session = session_in_url(&String::from_utf8_lossy(bytes));
                    return Step::Nothing;
                }
                if bytes.iter().all(u8::is_ascii_whitespace) {
                    return Step::Nothing; // an empty priming event
                }
                let user = if half.in_request {
                    half.user.as_deref()
                } else {
                    None
                };
                Step::Text {
                    bytes,
                    ts_ns,
                    session: half.session.as_deref(),
                    user,
                }
            }
            Frame::Oversized { len } => Step::Oversized(len),
            Frame::Unparsable(reason) => Step::Unparsable(reason),
            Frame::End => match half.response.take() {
                // Requests this HTTP error answered without a JSON-RPC response.
                Some((status, ids)) if status >= 400 => Step::ErrorAnswered { status, ids },
                _ => Step::Nothing,
            },
            Frame::Invalid => Step::Invalid,
        }
    }

    /// The ids of the JSON-RPC requests in the last [`Step::Text`] of direction `d`: a
    /// request's are remembered until its response comes.
    pub fn requests_carried(&mut self, d: Direction, ids: &[Id]) {
        if self.halves[index(d)].in_request {
            if let Some(txn) = self.in_flight.back_mut() {
                txn.request_ids.extend(ids.iter().cloned());
            }
        }
    }

    /// Whether the process of the connection is its HTTP client, when its traffic said
    /// (the write direction first).
    pub fn client(&self) -> Option<bool> {
        [Direction::Write, Direction::Read]
            .iter()
            .find_map(|&d| self.halves[index(d)].client)
    }

    /// Direction `d` is no longer followed: the message it was handling is forgotten.
    pub fn forget(&mut self, d: Direction) {
        self.halves[index(d)] = Half::default();
    }

    /// Direction `d` ends with its connection (after its framer's last frames). Returns
    /// the error status and requests of the response it was handling, if it had one: an
    /// error answered them even if the body never ended (a client that gives up on a 401
    /// closes without reading it). The requests of another response were aborted and are
    /// added to `aborted`.
    pub fn close_direction(
        &mut self,
        d: Direction,
        aborted: &mut Vec<Id>,
    ) -> Option<(u16, Vec<Id>)> {
        match std::mem::take(&mut self.halves[index(d)]).response {
            Some((status, ids)) if status >= 400 => Some((status, ids)),
            Some((_, ids)) => {
                aborted.extend(ids);
                None
            }
            None => None,
        }
    }

    /// The connection closed: requests whose responses had not started were aborted.
    pub fn close(&mut self, aborted: &mut Vec<Id>) {
        aborted.extend(
            std::mem::take(&mut self.in_flight)
                .into_iter()
                .flat_map(|t| t.request_ids),
        );
    }
}

/// What the exchange keeps of a head.
struct HeadFacts {
    is_request: bool,
    status: u16,
    session: Option<String>,
    /// A DELETE request (a client ending its HTTP session).
    delete: bool,
    /// The keyed hash of the request's credential.
    user: Option<String>,
}

impl From<Head> for HeadFacts {
    fn from(h: Head) -> Self {
        let from_url = h
            .request
            .as_ref()
            .and_then(|(_, path)| session_in_url(path));
        let delete = h
            .request
            .as_ref()
            .is_some_and(|(method, _)| method == "DELETE");
        HeadFacts {
            is_request: h.request.is_some(),
            status: h.status,
            session: h.session_id.or(from_url),
            delete,
            user: h.user,
        }
    }
}

/// The session id in a legacy HTTP+SSE POST URL (`?session_id=` in Python, `?sessionId=`
/// in TypeScript).
fn session_in_url(url: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "session_id" || key == "sessionId").then(|| value.chars().take(128).collect())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::http::Media;

    fn head(request: Option<(&str, &str)>, status: u16, session: Option<&str>) -> Frame<'static> {
        Frame::Head(Head {
            request: request.map(|(m, p)| (m.to_string(), p.to_string())),
            status,
            content_type: Media::Json,
            session_id: session.map(str::to_string),
            has_authorization: false,
            user: None,
        })
    }

    fn text(bytes: &[u8]) -> Frame<'_> {
        Frame::Message {
            bytes,
            ts_ns: 7,
            sse_event: None,
        }
    }

    #[test]
    fn pipelined_responses_answer_requests_in_order_and_errors_end_them() {
        let mut x = HttpExchange::default();
        let (w, r) = (Direction::Write, Direction::Read);
        for id in [1, 2] {
            assert_eq!(
                x.on_frame(w, head(Some(("POST", "/mcp")), 0, Some("s"))),
                Step::Nothing
            );
            let step = x.on_frame(w, text(b"{}"));
            assert!(matches!(
                step,
                Step::Text {
                    session: Some("s"),
                    ..
                }
            ));
            x.requests_carried(w, &[Id::Num(id)]);
        }
        assert_eq!(x.client(), Some(true));
        assert_eq!(x.on_frame(r, head(None, 200, None)), Step::Response(200));
        assert_eq!(x.on_frame(r, Frame::End), Step::Nothing);
        assert_eq!(x.on_frame(r, head(None, 500, None)), Step::Response(500));
        assert_eq!(
            x.on_frame(r, Frame::End),
            Step::ErrorAnswered {
                status: 500,
                ids: vec![Id::Num(2)]
            }
        );
    }

    #[test]
    fn a_close_aborts_what_was_unanswered() {
        let mut x = HttpExchange::default();
        let (w, r) = (Direction::Write, Direction::Read);
        for id in [1, 2] {
            x.on_frame(w, head(Some(("POST", "/mcp")), 0, None));
            x.on_frame(w, text(b"{}"));
            x.requests_carried(w, &[Id::Num(id)]);
        }
        x.on_frame(r, head(None, 200, None));
        let mut aborted = Vec::new();
        assert_eq!(x.close_direction(r, &mut aborted), None);
        x.close(&mut aborted);
        assert_eq!(aborted, vec![Id::Num(1), Id::Num(2)]);
    }

    #[test]
    fn sessions_from_urls_endpoint_events_and_deletes() {
        let mut x = HttpExchange::default();
        let r = Direction::Read;
        let endpoint = Frame::Message {
            bytes: b"/messages/?session_id=abc",
            ts_ns: 1,
            sse_event: Some("endpoint"),
        };
        assert_eq!(x.on_frame(r, endpoint), Step::Nothing);
        assert!(matches!(
            x.on_frame(r, text(b"{}")),
            Step::Text {
                session: Some("abc"),
                ..
            }
        ));
        assert_eq!(x.on_frame(r, text(b" \n")), Step::Nothing);
        let delete = head(Some(("DELETE", "/mcp?sessionId=xyz")), 0, None);
        assert_eq!(
            x.on_frame(Direction::Write, delete),
            Step::SessionDelete("xyz")
        );
    }
}
