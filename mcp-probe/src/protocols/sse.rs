//! Server-sent events (the `text/event-stream` body of MCP's HTTP transports).
//!
//! Incremental: body bytes arrive in any split; each complete event is handed out with its
//! `event` type and joined `data`. Handles CRLF, LF and CR line ends, comments (`:`
//! keep-alives), `id:` and `retry:` fields, and empty priming events (no data: not
//! emitted).

/// An event that outgrew the cap: dropped (and counted in `oversized_events`), reported in
/// its place among the events.
#[derive(Debug, PartialEq, Eq)]
pub struct Oversized;

/// One complete event.
#[derive(Debug, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event:` field, `message` when absent.
    pub event: &'a str,
    pub data: &'a [u8],
}

#[derive(Debug, Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: String,
    data: Vec<u8>,
    has_data: bool,
    /// A CR ended the last line: a following LF belongs to it.
    after_cr: bool,
    max_event_bytes: usize,
    /// The current event outgrew `max_event_bytes`; it is dropped and counted.
    oversized: bool,
    pub oversized_events: u64,
}

impl SseParser {
    pub fn new(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            ..Self::default()
        }
    }

    pub fn buffered_bytes(&self) -> usize {
        self.line.capacity() + self.data.capacity()
    }

    /// Bytes of the event in progress.
    pub fn pending_bytes(&self) -> u64 {
        (self.line.len() + self.data.len()) as u64
    }

    /// Drops the data of the event in progress (memory budget spent): it is counted as
    /// oversized when it ends.
    pub fn shed(&mut self) {
        if self.has_data || !self.line.is_empty() {
            self.oversized = true;
            self.data = Vec::new();
        }
    }

    pub fn push(&mut self, data: &[u8], emit: &mut impl FnMut(Result<Event<'_>, Oversized>)) {
        for &b in data {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    self.end_line(emit);
                }
                _ => {
                    if self.line.len() < self.max_event_bytes {
                        super::extend_capped(&mut self.line, &[b], self.max_event_bytes);
                    } else {
                        self.oversized = true;
                    }
                }
            }
        }
    }

    fn end_line(&mut self, emit: &mut impl FnMut(Result<Event<'_>, Oversized>)) {
        if self.line.is_empty() {
            // Blank line: dispatch.
            if self.has_data && !self.oversized {
                let event = if self.event.is_empty() {
                    "message"
                } else {
                    self.event.as_str()
                };
                emit(Ok(Event {
                    event,
                    data: &self.data,
                }));
            } else if self.oversized {
                self.oversized_events += 1;
                emit(Err(Oversized));
            }
            self.event.clear();
            self.data.clear();
            self.has_data = false;
            self.oversized = false;
            return;
        }
        let line = std::mem::take(&mut self.line);
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(0) => {
                self.line = line;
                self.line.clear();
                return; // comment / keep-alive
            }
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (&line[..], &[][..]),
        };
        match field {
            b"data" => {
                // Lines are joined with `\n`, which counts against the cap too. Once over
                // it, nothing more of the event is kept.
                let sep: &[u8] = if self.has_data { b"\n" } else { b"" };
                if self.oversized
                    || self.data.len() + sep.len() + value.len() > self.max_event_bytes
                {
                    self.oversized = true;
                } else {
                    super::extend_capped(&mut self.data, sep, self.max_event_bytes);
                    super::extend_capped(&mut self.data, value, self.max_event_bytes);
                }
                self.has_data = true;
            }
            b"event" => self.event = String::from_utf8_lossy(value).into_owned(),
            _ => {} // id, retry and unknown fields carry nothing the agent needs
        }
        self.line = line;
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(p: &mut SseParser, chunks: &[&[u8]]) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for c in chunks {
            p.push(c, &mut |e| {
                if let Ok(e) = e {
                    out.push((e.event.to_owned(), e.data.to_vec()))
                }
            });
        }
        out
    }

    const PYTHON: &[u8] = b"event: message\r\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\r\n\r\n: ping - 2026-11-24\r\n\r\n";
    const TYPESCRIPT: &[u8] = b"id: 0\nretry: 1000\ndata: \n\nevent: message\nid: 1\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\nevent: message\nid: 2\ndata: {\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{}}\n\n";

    #[test]
    fn python_crlf_with_keepalive_comment() {
        let out = events(&mut SseParser::new(1024), &[PYTHON]);
        assert_eq!(
            out,
            vec![(
                "message".into(),
                b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}".to_vec()
            )]
        );
    }

    #[test]
    fn typescript_lf_with_priming_event_ids_and_retry() {
        let out = events(&mut SseParser::new(1024), &[TYPESCRIPT]);
        assert_eq!(out.len(), 3, "{out:?}");
        assert_eq!(out[0].1, b"", "priming event has empty data");
        assert_eq!(out[2].1, b"{\"jsonrpc\":\"2.0\",\"id\":0,\"result\":{}}");
    }

    #[test]
    fn every_split_offset() {
        for stream in [PYTHON, TYPESCRIPT] {
            let whole = events(&mut SseParser::new(1024), &[stream]);
            for split in 0..=stream.len() {
                let parts = events(
                    &mut SseParser::new(1024),
                    &[&stream[..split], &stream[split..]],
                );
                assert_eq!(parts, whole, "split at {split}");
            }
        }
    }

    #[test]
    fn multi_line_data_and_cr_only_line_ends() {
        let out = events(
            &mut SseParser::new(1024),
            &[
                b"event: endpoint\rdata: /messages/?session_id=ab\r\r",
                b"data: a\ndata: b\n\n",
            ],
        );
        assert_eq!(
            out,
            vec![
                ("endpoint".into(), b"/messages/?session_id=ab".to_vec()),
                ("message".into(), b"a\nb".to_vec())
            ]
        );
    }

    #[test]
    fn data_lines_of_an_oversized_event_are_not_kept() {
        let mut p = SseParser::new(16);
        let mut stream = b"data: 0123456789abcdefghij\n".to_vec();
        stream.extend_from_slice(&b"data:\n".repeat(1000));
        assert_eq!(events(&mut p, &[&stream]), vec![]);
        assert!(p.buffered_bytes() <= 2 * 16, "{}", p.buffered_bytes());
        // Joining newlines count: two 8-byte lines make 17 bytes, over a cap of 16.
        let out = events(
            &mut p,
            &[b"\ndata: 01234567\ndata: 01234567\n\ndata: ok\n\n"],
        );
        assert_eq!(out, vec![("message".into(), b"ok".to_vec())]);
        assert_eq!(p.oversized_events, 2);
    }

    #[test]
    fn oversized_event_is_dropped_and_counted() {
        let mut p = SseParser::new(16);
        let out = events(&mut p, &[b"data: 0123456789abcdefghij\n\ndata: ok\n\n"]);
        assert_eq!(out, vec![("message".into(), b"ok".to_vec())]);
        assert_eq!(p.oversized_events, 1);
    }
}
