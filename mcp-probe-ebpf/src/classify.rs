//! Deciding from a stream's first bytes whether it may carry MCP: JSON-RPC text (`{`, `[`),
//! or an HTTP/1.x message whose head names a JSON or event-stream body (MCP's Streamable
//! HTTP and HTTP+SSE transports). Other HTTP (downloads, web pages, most APIs) and every
//! other protocol are ignored here, so none of their bytes reach the agent.

use aya_ebpf::{helpers::bpf_probe_read_user, macros::map, maps::PerCpuArray};
use mcp_probe_common::Syscall;

use crate::maps::Inflight;

/// How much of an HTTP head is searched for the media types.
const HEAD_SCAN: usize = 1024;

/// Copy of the start of an HTTP head, searched in place (too big for the stack).
#[map]
static HEAD: PerCpuArray<[u8; HEAD_SCAN]> = PerCpuArray::with_max_entries(1, 0);

/// First 4 bytes of an HTTP/1.x request or response, little-endian.
const HTTP_STARTS: [u32; 7] = [
    u32::from_le_bytes(*b"POST"),
    u32::from_le_bytes(*b"GET "),
    u32::from_le_bytes(*b"PUT "),
    u32::from_le_bytes(*b"DELE"),
    u32::from_le_bytes(*b"PATC"),
    u32::from_le_bytes(*b"OPTI"),
    u32::from_le_bytes(*b"HTTP"),
];

/// `text/event-stream` (but not `application/octet-stream`) and `application/json`.
const EVENT_STREAM: u64 = u64::from_le_bytes(*b"ent-stre");
const JSON: u64 = u64::from_le_bytes(*b"ion/json");

#[inline(always)]
pub fn looks_like_mcp(inflight: &Inflight, syscall: Syscall, len: u64) -> bool {
    let (mut ptr, mut avail) = (inflight.buf, len);
    if syscall.is_vectored() {
        if inflight.count == 0 {
            return false;
        }
        // SAFETY: user memory read through the helper, failure handled.
        match unsafe { bpf_probe_read_user(inflight.buf as *const [u64; 2]) } {
            Ok([base, iov_len]) => {
                ptr = base;
                avail = if iov_len < len { iov_len } else { len };
            }
            Err(_) => return false,
        }
    }
    // SAFETY: as above; a chunk shorter than 8 bytes falls back to one byte.
    let head: [u8; 8] = match unsafe { bpf_probe_read_user(ptr as *const [u8; 8]) } {
        Ok(h) => h,
        Err(_) => match unsafe { bpf_probe_read_user(ptr as *const u8) } {
            Ok(b) => [b, 0, 0, 0, 0, 0, 0, 0],
            Err(_) => return false,
        },
    };
    let start = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    if avail >= 16 && HTTP_STARTS.contains(&start) {
        return http_head_names_mcp_media(ptr, avail);
    }
    for (i, b) in head.into_iter().enumerate() {
        if i as u64 >= avail {
            return false;
        }
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            b'{' | b'[' => return true,
            _ => return false,
        }
    }
    false
}

/// Searches the first `HEAD_SCAN` bytes of an HTTP head for `event-stream` or
/// `application/json` (in Accept or Content-Type).
#[inline(always)]
fn http_head_names_mcp_media(ptr: u64, avail: u64) -> bool {
    let Some(buf) = HEAD.get_ptr_mut(0) else {
        return false;
    };
    let n = if avail < HEAD_SCAN as u64 {
        avail
    } else {
        HEAD_SCAN as u64
    };
    // SAFETY: `buf` is a HEAD_SCAN-byte map value and n <= HEAD_SCAN.
    let read = unsafe {
        aya_ebpf::helpers::generated::bpf_probe_read_user(buf.cast(), n as u32, ptr as *const _)
    };
    if read != 0 {
        return false;
    }
    let bytes = buf.cast::<u8>();
    for i in 0..(HEAD_SCAN - 8) {
        if (i + 8) as u64 > n {
            break;
        }
        // SAFETY: i + 8 <= HEAD_SCAN, inside the map value.
        let word = unsafe { bytes.add(i).cast::<u64>().read_unaligned() };
        if word == EVENT_STREAM || word == JSON {
            return true;
        }
    }
    false
}
