//! Synthetic ring buffer records, numbered and timed the way the kernel programs do it.
//!
//! The stream stage checks that each record starts where the previous one of its stream
//! and direction ended (a jump is a loss), so a test cannot just encode headers: it needs
//! a clock and per-stream offsets that advance like the kernel's. [`Generator`] keeps
//! both; [`Generator::lose`] skips bytes as a full ring buffer would.

use std::collections::HashMap;

use mcp_probe_common::{
    Direction, EventHeader, EventKind, StreamKind, Syscall, AF_INET, AF_INET6, AF_UNIX,
    SOCKET_INFO_LEN,
};

use crate::decode::{encode, Record};

/// Where the generator starts its clock (CLOCK_MONOTONIC ns): far enough from zero that
/// timeouts subtracted from it do not wrap.
pub const START_NS: u64 = 1_000_000_000;

/// A stream as the kernel identifies it: the address of its kernel object (`stream_id`),
/// its inode, its kind, and the descriptor the process uses for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stream {
    pub id: u64,
    pub ino: u64,
    pub kind: StreamKind,
    pub fd: u32,
}

impl Stream {
    pub const fn pipe(id: u64, ino: u64) -> Self {
        Self {
            id,
            ino,
            kind: StreamKind::Pipe,
            fd: 0,
        }
    }

    pub const fn socket(id: u64, ino: u64) -> Self {
        Self {
            id,
            ino,
            kind: StreamKind::Socket,
            fd: 0,
        }
    }

    /// The same stream, used through descriptor `fd`.
    pub const fn on_fd(self, fd: u32) -> Self {
        Self { fd, ..self }
    }
}

/// `(stream_id, ino)`: a pipe, the shorthand the pipeline tests use.
impl From<(u64, u64)> for Stream {
    fn from((id, ino): (u64, u64)) -> Self {
        Self::pipe(id, ino)
    }
}

/// The thread making a syscall: its process, its id, its name (`comm`, NUL-padded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Task {
    pub tgid: u32,
    pub tid: u32,
    pub comm: [u8; 16],
}

impl Task {
    /// A process's main thread, named `comm` (cut to 16 bytes as the kernel does).
    pub fn new(tgid: u32, comm: &str) -> Self {
        let mut c = [0u8; 16];
        let n = comm.len().min(16);
        c[..n].copy_from_slice(&comm.as_bytes()[..n]);
        Self::with_comm(tgid, c)
    }

    pub const fn with_comm(tgid: u32, comm: [u8; 16]) -> Self {
        Self {
            tgid,
            tid: tgid,
            comm,
        }
    }
}

/// What one record reports, besides who and on which stream.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// Bytes a read or write moved, all captured.
    Data(&'a [u8]),
    /// A syscall whose bytes were not captured: this many of them.
    Gap(u32),
    /// The descriptor was closed.
    Close,
    /// The syscall failed with this errno.
    Error(u32),
    /// The socket's addresses: a `SOCKET_INFO_LEN` payload (see [`socket_info`]).
    SocketInfo(&'a [u8]),
    /// A watched process exited; `detail` is its exit status as the kernel reports it.
    Exit(u32),
}

impl Event<'_> {
    fn kind(&self) -> EventKind {
        match self {
            Event::Data(_) => EventKind::Data,
            Event::Gap(_) => EventKind::Gap,
            Event::Close => EventKind::Close,
            Event::Error(_) => EventKind::Error,
            Event::SocketInfo(_) => EventKind::SocketInfo,
            Event::Exit(_) => EventKind::ProcessExit,
        }
    }

    fn detail(&self) -> u32 {
        match *self {
            Event::Gap(n) | Event::Error(n) | Event::Exit(n) => n,
            _ => 0,
        }
    }

    fn payload(&self) -> &[u8] {
        match *self {
            Event::Data(b) | Event::SocketInfo(b) => b,
            _ => &[],
        }
    }
}

/// A fake kernel's record source: a clock and the offset of every stream and direction.
#[derive(Debug, Clone)]
pub struct Generator {
    /// The timestamp of the last record (CLOCK_MONOTONIC ns).
    pub now_ns: u64,
    /// How far the clock moves before each record (1 ms by default; 0 for callers that
    /// move it themselves with [`Generator::advance`]).
    pub tick_ns: u64,
    offsets: HashMap<(u64, u64, Direction), u64>,
}

impl Default for Generator {
    fn default() -> Self {
        Self::new()
    }
}

impl Generator {
    /// Clock at [`START_NS`], 1 ms per record.
    pub fn new() -> Self {
        Self {
            now_ns: START_NS,
            tick_ns: 1_000_000,
            offsets: HashMap::new(),
        }
    }

    /// A generator whose clock only moves with [`Generator::advance`].
    pub fn manual_clock() -> Self {
        Self {
            tick_ns: 0,
            ..Self::new()
        }
    }

    pub fn advance(&mut self, ns: u64) {
        self.now_ns += ns;
    }

    /// A data record of a pipe or socket: `bytes` written or read by `tgid` (named
    /// `comm`) on `stream`, all captured.
    pub fn record(
        &mut self,
        tgid: u32,
        comm: &str,
        stream: impl Into<Stream>,
        syscall: Syscall,
        bytes: &[u8],
    ) -> Vec<u8> {
        self.emit(
            Task::new(tgid, comm),
            stream.into(),
            syscall,
            Event::Data(bytes),
        )
    }

    /// A syscall of `n` bytes the kernel could not capture.
    pub fn gap(&mut self, task: Task, stream: Stream, syscall: Syscall, n: u32) -> Vec<u8> {
        self.emit(task, stream, syscall, Event::Gap(n))
    }

    /// The close of `stream` by `task`.
    pub fn close(&mut self, task: Task, stream: Stream) -> Vec<u8> {
        self.emit(task, stream, Syscall::Write, Event::Close)
    }

    /// The addresses of a socket (`info` as built by [`socket_info`]).
    pub fn socket_info(&mut self, task: Task, stream: Stream, info: &[u8]) -> Vec<u8> {
        self.emit(task, stream, Syscall::Write, Event::SocketInfo(info))
    }

    /// The kernel's report that a watched process exited: no stream, no name.
    pub fn exit(&mut self, tgid: u32) -> Vec<u8> {
        let header = EventHeader {
            stream_kind: 0,
            ..self.header(
                Task::with_comm(tgid, [0; 16]),
                Stream::pipe(0, 0),
                Syscall::Write,
                &Event::Exit(0),
            )
        };
        encode(&header, b"")
    }

    /// Skips `n` bytes of a stream, as when the ring buffer had no room for a record.
    pub fn lose(&mut self, stream: impl Into<Stream>, direction: Direction, n: u64) {
        let stream = stream.into();
        *self
            .offsets
            .entry((stream.id, stream.ino, direction))
            .or_insert(0) += n;
    }

    /// One record, encoded as the ring buffer holds it. Data and gaps move the offset of
    /// their stream and direction past their bytes.
    pub fn emit(&mut self, task: Task, stream: Stream, syscall: Syscall, event: Event) -> Vec<u8> {
        let header = self.header(task, stream, syscall, &event);
        encode(&header, event.payload())
    }

    /// The header of the next record, for tests that change a field before encoding it
    /// with [`crate::decode::encode`]. Moves the clock and the stream's offset like
    /// [`Generator::emit`].
    pub fn header(
        &mut self,
        task: Task,
        stream: Stream,
        syscall: Syscall,
        event: &Event,
    ) -> EventHeader {
        self.now_ns += self.tick_ns;
        let payload = event.payload();
        let detail = event.detail();
        let offset = self
            .offsets
            .entry((stream.id, stream.ino, syscall.direction()))
            .or_insert(0);
        let header = EventHeader {
            kind: event.kind() as u32,
            syscall: syscall as u32,
            ts_ns: self.now_ns,
            tgid: task.tgid,
            tid: task.tid,
            comm: task.comm,
            stream_id: stream.id,
            ino: stream.ino,
            stream_kind: stream.kind as u32,
            fd: stream.fd,
            stream_offset: *offset,
            syscall_len: payload.len() as u64 + u64::from(detail),
            syscall_offset: 0,
            captured_len: payload.len() as u32,
            detail,
        };
        *offset += match event {
            Event::Data(bytes) => bytes.len() as u64,
            Event::Gap(n) => u64::from(*n),
            _ => 0,
        };
        header
    }
}

/// The header a decoded record was encoded from, to build another one from it.
pub fn header_of(r: &Record<'_>) -> EventHeader {
    EventHeader {
        kind: r.kind as u32,
        syscall: r.syscall as u32,
        ts_ns: r.ts_ns,
        tgid: r.tgid,
        tid: r.tid,
        comm: r.comm,
        stream_id: r.stream_id,
        ino: r.ino,
        stream_kind: r.stream_kind as u32,
        fd: r.fd,
        stream_offset: r.stream_offset,
        syscall_len: r.syscall_len,
        syscall_offset: r.syscall_offset,
        captured_len: r.payload.len() as u32,
        detail: r.detail,
    }
}

/// A socket-info payload from arbitrary bytes: zero-padded (or cut) to `SOCKET_INFO_LEN`,
/// with the address family chosen by the first byte among IPv4, IPv6 and unix, so that
/// any input is an address the agent parses.
pub fn socket_info(bytes: &[u8]) -> Vec<u8> {
    let mut info = vec![0u8; SOCKET_INFO_LEN];
    let n = bytes.len().min(SOCKET_INFO_LEN);
    info[..n].copy_from_slice(&bytes[..n]);
    let family = [AF_INET, AF_INET6, AF_UNIX][usize::from(info[0] % 3)];
    info[..2].copy_from_slice(&family.to_ne_bytes());
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode;

    #[test]
    fn offsets_advance_per_stream_and_direction() {
        let mut g = Generator::new();
        let pipe = (0xffff_0000_0000_1000, 11);
        let a = g.record(1, "client", pipe, Syscall::Write, b"abc");
        g.lose(pipe, Direction::Write, 10);
        let b = g.record(1, "client", pipe, Syscall::Write, b"de");
        let c = g.record(2, "server", pipe, Syscall::Read, b"abc");
        let (a, b, c) = (
            decode(&a).unwrap(),
            decode(&b).unwrap(),
            decode(&c).unwrap(),
        );
        assert_eq!(
            (a.stream_offset, b.stream_offset, c.stream_offset),
            (0, 13, 0)
        );
        assert_eq!(
            (a.ts_ns, b.ts_ns),
            (START_NS + 1_000_000, START_NS + 2_000_000)
        );
        assert_eq!(c.comm(), "server");
        assert_eq!(b.payload, b"de");
    }

    #[test]
    fn a_record_re_encodes_from_its_header() {
        let mut g = Generator::manual_clock();
        let sock = Stream::socket(0xffff_0000_0000_3000, 13).on_fd(4);
        let task = Task::new(7, "node");
        let bytes = g.gap(task, sock, Syscall::Sendto, 40);
        let r = decode(&bytes).unwrap();
        assert_eq!((r.ts_ns, r.syscall_len, r.fd), (START_NS, 40, 4));
        assert_eq!(encode(&header_of(&r), r.payload), bytes);
        let exit = g.exit(7);
        let exit = decode(&exit).unwrap();
        assert_eq!((exit.kind, exit.stream_id), (EventKind::ProcessExit, 0));
        let info = socket_info(&[1]);
        assert_eq!(info.len(), SOCKET_INFO_LEN);
        assert_eq!(u16::from_ne_bytes([info[0], info[1]]), AF_INET6);
    }
}
