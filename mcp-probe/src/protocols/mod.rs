//! Protocol parsers. Each lives in its own module behind a small contract: a framing step
//! that turns stream bytes into messages (or says it needs more data / the input is
//! invalid), and a message parser.

pub mod http;
pub mod jsonl;
pub mod jsonrpc;
pub mod sse;
