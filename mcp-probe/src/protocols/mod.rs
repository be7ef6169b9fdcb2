//! Protocol parsers. Each lives in its own module behind a small contract: a framing step
//! that turns stream bytes into messages (or says it needs more data / the input is
//! invalid), and a message parser.

pub mod http;
pub mod jsonl;
pub mod jsonrpc;
pub mod sse;

/// Appends `bytes` to a buffer that a parser keeps within `cap` bytes (callers check that
/// `buf.len() + bytes.len() <= cap`). The allocation grows geometrically like a `Vec`'s but
/// never past `cap`, so a parser's memory stays within its limit, not within twice it.
pub(crate) fn extend_capped(buf: &mut Vec<u8>, bytes: &[u8], cap: usize) {
    let needed = buf.len() + bytes.len();
    if needed > buf.capacity() {
        let target = buf.capacity().saturating_mul(2).min(cap).max(needed);
        buf.reserve_exact(target - buf.len());
    }
    buf.extend_from_slice(bytes);
}
