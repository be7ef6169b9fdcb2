//! Entry points shared by the fuzz targets (`mcp-probe/fuzz/fuzz_targets/`, one line each)
//! and the regression tests below, which replay the seed corpus and every input the fuzzer
//! ever broke a property with, on stable `cargo test`.
//!
//! Each function takes the raw fuzz input and panics when a property does not hold. The
//! properties go beyond "does not panic":
//!
//! - framers (`jsonl`, `http`, `sse`): the same bytes fed whole, cut at fuzz-chosen points,
//!   and one byte at a time give exactly the same frames or events (a differential oracle);
//!   the bytes a framer buffers stay within its cap (see [`SLACK_BYTES`]);
//! - `jsonl`: the lengths of frames, blank lines, terminators and resynchronisation
//!   discards add up to the input, and frames match an independent model of the stream;
//! - `http`: events follow the message grammar (a head, its body's messages, its end);
//! - `jsonrpc`: what `jsonrpc::parse` reports agrees with a plain `serde_json::Value` parse;
//! - `decode`: a decoded record re-encodes to the bytes it came from;
//! - `pipeline`: records built from fuzz bytes leave a scrape that parses, memory within
//!   bounds, and no state once everything has idled out.
//!
//! Framer inputs are laid out as: byte 0, a configuration byte (cap, and for `jsonl` a
//! mid-stream start); byte 1, the number `n` of cut points (mod 17); then `n` cut points of
//! 3 bytes each: an offset into the stream (u16 LE, modulo its length + 1) and an op byte;
//! then the stream itself. An op byte that is 0 mod 4 only cuts (the reference run ignores
//! it); other values are events at that offset that every run applies: a loss, a kernel
//! hole (`jsonl`), a close (`http`). A seed is therefore two bytes, `\x05\x00` say,
//! followed by real traffic.
//!
//! The harnesses are split by what they exercise: `framers` (`jsonl`, `sse`, `http`),
//! `messages` (`jsonrpc`, `decode`) and `pipeline` (records through the whole stream
//! stage, built with the shared `testing::generator` and `testing::fake`).

mod framers;
mod messages;
mod pipeline;

pub use framers::{http, jsonl, sse};
pub use messages::{decode, jsonrpc};
pub use pipeline::pipeline;

/// Allocation slack allowed over a framer's documented bound: the smallest allocation a
/// `Vec<u8>` makes is 8 bytes, so a cap of 1 still holds 8.
pub const SLACK_BYTES: usize = 64;

/// A harness: the raw fuzz input in, a panic when a property fails.
pub type Harness = fn(&[u8]);

/// Every target by name, for the regression replay.
pub const TARGETS: &[(&str, Harness)] = &[
    ("jsonl", jsonl),
    ("jsonrpc", jsonrpc),
    ("http", http),
    ("sse", sse),
    ("decode", decode),
    ("pipeline", pipeline),
];

/// Reads fuzz bytes front to back; past the end it reads zeros.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Caps the framer targets pick from: tiny ones reach the oversized paths with small
/// inputs, the last one is the agent's default.
const CAPS: [usize; 8] = [1, 2, 7, 16, 64, 256, 4096, 16 << 20];

/// A framer input: the stream, and where it is cut or interrupted.
struct Plan<'a> {
    config: u8,
    stream: &'a [u8],
    /// (offset, op), sorted by offset; ops keep their input order at one offset.
    cuts: Vec<(usize, u8)>,
}

impl<'a> Plan<'a> {
    fn parse(data: &'a [u8]) -> Self {
        let mut c = Cursor(data);
        let config = c.byte();
        let n = c.byte() % 17;
        let raw: Vec<(u16, u8)> = (0..n).map(|_| (c.u16(), c.byte())).collect();
        let stream = c.0;
        let mut cuts: Vec<(usize, u8)> = raw
            .into_iter()
            .map(|(at, op)| (usize::from(at) % (stream.len() + 1), op))
            .collect();
        cuts.sort_by_key(|&(at, _)| at);
        Self {
            config,
            stream,
            cuts,
        }
    }

    fn cap(&self) -> usize {
        CAPS[usize::from(self.config & 7)]
    }

    /// The steps of one run. `Whole` feeds each segment (the bytes between two events) in
    /// one push, `Cuts` also cuts at the fuzz-chosen points, `Bytes` feeds one byte at a time.
    fn steps(&self, mode: Mode) -> Vec<Step<'a>> {
        let mut steps = Vec::new();
        let mut segment = 0;
        let mut start = 0;
        let mut piece_start = 0;
        let push = |steps: &mut Vec<Step<'a>>, from: usize, to: usize, seg: usize, first| {
            if mode == Mode::Bytes {
                for i in from..to {
                    steps.push(Step::Bytes {
                        data: &self.stream[i..i + 1],
                        segment: seg,
                        first: first && i == from,
                    });
                }
            } else if from < to {
                steps.push(Step::Bytes {
                    data: &self.stream[from..to],
                    segment: seg,
                    first,
                });
            }
        };
        for &(at, op) in &self.cuts {
            if op % 4 == 0 {
                if mode == Mode::Cuts {
                    push(&mut steps, piece_start, at, segment, piece_start == start);
                    piece_start = at;
                }
                continue;
            }
            push(&mut steps, piece_start, at, segment, piece_start == start);
            steps.push(Step::Op(op));
            segment += 1;
            start = at;
            piece_start = at;
        }
        push(
            &mut steps,
            piece_start,
            self.stream.len(),
            segment,
            piece_start == start,
        );
        steps
    }

    /// The bytes up to the first event: what the kernel's first record would carry.
    fn first_segment(&self) -> &'a [u8] {
        let end = self
            .cuts
            .iter()
            .find(|&&(_, op)| op % 4 != 0)
            .map_or(self.stream.len(), |&(at, _)| at);
        &self.stream[..end]
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Whole,
    Cuts,
    Bytes,
}

#[derive(Debug)]
enum Step<'a> {
    Bytes {
        data: &'a [u8],
        segment: usize,
        /// The first piece of its segment (a syscall boundary).
        first: bool,
    },
    Op(u8),
}

#[cfg(test)]
mod tests {
    //! Replays the seed corpus and the regressions on stable: every input the fuzzer ever
    //! broke a property with stays fixed.

    use std::path::Path;

    use super::*;

    fn replay(dir: &str) -> usize {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(dir);
        let mut failures = Vec::new();
        let mut count = 0;
        for &(name, target) in TARGETS {
            let Ok(entries) = std::fs::read_dir(root.join(name)) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path
                    .file_name()
                    .is_some_and(|n| n.as_encoded_bytes()[0] == b'.')
                {
                    continue;
                }
                let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
                count += 1;
                if std::panic::catch_unwind(|| target(&data)).is_err() {
                    failures.push(path);
                }
            }
        }
        assert!(failures.is_empty(), "failing inputs: {failures:#?}");
        count
    }

    #[test]
    fn seed_corpus_holds_every_property() {
        assert!(replay("corpus") > 0, "no seed corpus found");
    }

    #[test]
    fn fuzzer_findings_stay_fixed() {
        replay("regressions");
    }

    #[test]
    fn plans_cut_where_asked() {
        // cfg, 2 cuts: a plain cut at 2 and a loss at 4, then "abcdef".
        let plan = Plan::parse(b"\x00\x02\x02\x00\x00\x04\x00\x01abcdef");
        let pieces = |mode| {
            plan.steps(mode)
                .iter()
                .map(|s| match s {
                    Step::Bytes { data, .. } => String::from_utf8_lossy(data).into_owned(),
                    Step::Op(_) => "|".into(),
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(pieces(Mode::Whole), ["abcd", "|", "ef"]);
        assert_eq!(pieces(Mode::Cuts), ["ab", "cd", "|", "ef"]);
        assert_eq!(pieces(Mode::Bytes).len(), 7);
    }
}
