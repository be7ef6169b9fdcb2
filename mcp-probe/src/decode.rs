//! Decoding ring buffer records into typed values. Every field from the kernel is checked;
//! a malformed record is an error, never a panic.

use mcp_probe_common::{Direction, EventHeader, EventKind, StreamKind, Syscall, EVENT_HEADER_LEN};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the {EVENT_HEADER_LEN}-byte header")]
    Short(usize),
    #[error("unknown record kind {0}")]
    Kind(u32),
    #[error("unknown syscall {0}")]
    Syscall(u32),
    #[error("unknown stream kind {0}")]
    StreamKind(u32),
    #[error("record claims {claimed} payload bytes but carries {available}")]
    Payload { claimed: u32, available: usize },
}

/// One decoded record; `payload` borrows from the ring buffer.
#[derive(Debug)]
pub struct Record<'a> {
    pub kind: EventKind,
    pub syscall: Syscall,
    pub ts_ns: u64,
    pub tgid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
    pub stream_id: u64,
    pub ino: u64,
    pub stream_kind: StreamKind,
    pub fd: u32,
    pub stream_offset: u64,
    pub syscall_len: u64,
    pub syscall_offset: u64,
    pub detail: u32,
    pub payload: &'a [u8],
}

impl Record<'_> {
    pub fn direction(&self) -> Direction {
        self.syscall.direction()
    }

    /// The process name as the kernel reports it (up to 15 bytes), borrowed; a name that
    /// is not UTF-8 (the kernel copies whatever the program set) is `?`.
    pub fn comm(&self) -> &str {
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        std::str::from_utf8(&self.comm[..end]).unwrap_or("?")
    }
}

pub fn decode(bytes: &[u8]) -> Result<Record<'_>, DecodeError> {
    if bytes.len() < EVENT_HEADER_LEN {
        return Err(DecodeError::Short(bytes.len()));
    }
    // SAFETY: EventHeader is repr(C), integers only (every bit pattern is valid), and the
    // slice is at least as long; read_unaligned copes with any alignment.
    let h: EventHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = EventKind::try_from(h.kind).map_err(DecodeError::Kind)?;
    let syscall = Syscall::try_from(h.syscall).map_err(DecodeError::Syscall)?;
    let stream_kind = match kind {
        // Not about a stream: the stream fields are zero and unused.
        EventKind::ProcessExit => StreamKind::Pipe,
        _ => StreamKind::try_from(h.stream_kind).map_err(DecodeError::StreamKind)?,
    };
    let body = &bytes[EVENT_HEADER_LEN..];
    let claimed = h.captured_len as usize;
    if claimed > body.len() {
        return Err(DecodeError::Payload {
            claimed: h.captured_len,
            available: body.len(),
        });
    }
    Ok(Record {
        kind,
        syscall,
        ts_ns: h.ts_ns,
        tgid: h.tgid,
        tid: h.tid,
        comm: h.comm,
        stream_id: h.stream_id,
        ino: h.ino,
        stream_kind,
        fd: h.fd,
        stream_offset: h.stream_offset,
        syscall_len: h.syscall_len,
        syscall_offset: h.syscall_offset,
        detail: h.detail,
        payload: &body[..claimed],
    })
}

/// Encodes a record the way the kernel does; used by tests, fuzz targets and the synthetic
/// generator.
pub fn encode(header: &EventHeader, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(EVENT_HEADER_LEN + payload.len());
    // SAFETY: EventHeader is repr(C) plain data of EVENT_HEADER_LEN bytes.
    let raw = unsafe {
        std::slice::from_raw_parts(
            (header as *const EventHeader).cast::<u8>(),
            EVENT_HEADER_LEN,
        )
    };
    out.extend_from_slice(raw);
    out.extend_from_slice(payload);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(captured: u32) -> EventHeader {
        EventHeader {
            kind: EventKind::Data as u32,
            syscall: Syscall::Write as u32,
            ts_ns: 42,
            tgid: 7,
            tid: 8,
            comm: *b"python3\0\0\0\0\0\0\0\0\0",
            stream_id: 0xffff_8880_0000_1000,
            ino: 1234,
            stream_kind: StreamKind::Pipe as u32,
            fd: 1,
            stream_offset: 100,
            syscall_len: 5,
            syscall_offset: 0,
            captured_len: captured,
            detail: 0,
        }
    }

    #[test]
    fn round_trips_a_record_with_bucket_padding() {
        let mut bytes = encode(&header(5), b"{}\n\n\n");
        bytes.extend_from_slice(&[0xAA; 251]); // bucket slack after the payload
        let r = decode(&bytes).expect("valid record");
        assert_eq!(r.payload, b"{}\n\n\n");
        assert_eq!((r.tgid, r.fd, r.stream_offset, r.ino), (7, 1, 100, 1234));
        assert_eq!(r.comm(), "python3");
        assert_eq!(r.direction(), Direction::Write);
    }

    #[test]
    fn process_exit_records_carry_no_stream() {
        let mut h = header(0);
        h.kind = EventKind::ProcessExit as u32;
        h.stream_kind = 0;
        h.detail = 9;
        let bytes = encode(&h, b"");
        let r = decode(&bytes).expect("an exit record has no stream kind");
        assert_eq!((r.kind, r.detail, r.tgid), (EventKind::ProcessExit, 9, 7));
    }

    #[test]
    fn rejects_malformed_records() {
        assert_eq!(decode(&[0u8; 10]).unwrap_err(), DecodeError::Short(10));
        let bytes = encode(&header(6), b"{}\n");
        assert_eq!(
            decode(&bytes).unwrap_err(),
            DecodeError::Payload {
                claimed: 6,
                available: 3
            }
        );
        let mut h = header(0);
        h.kind = 99;
        assert_eq!(decode(&encode(&h, b"")).unwrap_err(), DecodeError::Kind(99));
        let mut h = header(0);
        h.syscall = 9;
        assert_eq!(
            decode(&encode(&h, b"")).unwrap_err(),
            DecodeError::Syscall(9)
        );
        let mut h = header(0);
        h.stream_kind = 0;
        assert_eq!(
            decode(&encode(&h, b"")).unwrap_err(),
            DecodeError::StreamKind(0)
        );
    }
}
