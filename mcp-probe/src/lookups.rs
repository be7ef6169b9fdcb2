//! Lookups that read `/proc` or ask the kernel over netlink, run on their own thread so
//! that the thread draining the ring buffer never waits on them.
//!
//! The drain asks ([`Lookups::ask`]) and goes on; the records that need the answer wait
//! for it (see `stream::waiting`), as exchanges already wait for a handshake, and are
//! handled when it arrives. The queue is bounded: a lookup it has no room for is shed and
//! counted (`mcp_probe_lookups_shed_total`), and what needed it is handled without it (a
//! server named by its address, a process by its `comm`).

use std::{
    collections::VecDeque,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        mpsc::{self, Receiver, SyncSender, TrySendError},
        Arc,
    },
};

use crate::{
    host::Host,
    identity::Identity,
    metrics::{AgentMetrics, LookupLabels},
    model::{ServerRef, StreamKey},
    sockets::{self, PeerEnd, Servers, SocketInfo},
};

/// Lookups queued for the worker at most; more are shed.
pub const QUEUE: usize = 4096;

/// Something only the host can tell.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// What is at the other end of socket `stream` of process `tgid`; `socket` is what the
    /// kernel reported of it (`None`: its record was lost, read the host's tables).
    Peer {
        stream: StreamKey,
        tgid: u32,
        socket: Option<SocketInfo>,
    },
    /// Who process `tgid` is (start time, command-line name, uid), read while it runs.
    Process { tgid: u32 },
}

impl Lookup {
    /// The `lookup` label value.
    pub fn label(&self) -> &'static str {
        match self {
            Lookup::Peer { .. } => "peer",
            Lookup::Process { .. } => "process",
        }
    }
}

/// The answer to a [`Lookup`].
#[derive(Debug, Clone)]
pub enum Found {
    Peer {
        stream: StreamKey,
        tgid: u32,
        socket: SocketInfo,
        end: PeerEnd,
        /// The local process serving the peer's address, identified now: it may never
        /// show up in traffic itself.
        server: Option<(u32, Identity)>,
    },
    Process {
        tgid: u32,
        identity: Identity,
    },
}

/// Does the lookups. Owns the caches that make them cheap (listener tables, owners).
struct Work {
    host: Arc<dyn Host>,
    servers: Servers,
}

impl Work {
    fn new(host: Arc<dyn Host>) -> Self {
        Self {
            servers: Servers::new(host.clone()),
            host,
        }
    }

    fn run(&mut self, lookup: Lookup) -> Found {
        match lookup {
            Lookup::Peer {
                stream,
                tgid,
                socket,
            } => {
                let socket = socket.unwrap_or_else(|| {
                    tracing::debug!(
                        tgid,
                        ino = stream.ino,
                        "no socket record: reading the host's tables"
                    );
                    sockets::lookup(&*self.host, tgid, stream.ino)
                });
                let end = self.servers.peer_end(tgid, &socket);
                let server = match &end {
                    PeerEnd::Server(ServerRef::Process(pid)) => {
                        Some((*pid, Identity::read(&*self.host, *pid)))
                    }
                    _ => None,
                };
                Found::Peer {
                    stream,
                    tgid,
                    socket,
                    end,
                    server,
                }
            }
            Lookup::Process { tgid } => Found::Process {
                tgid,
                identity: Identity::read(&*self.host, tgid),
            },
        }
    }
}

/// The drain's side of the lookups.
pub struct Lookups {
    mode: Mode,
    metrics: AgentMetrics,
}

enum Mode {
    /// A worker thread, a bounded queue to it, and an eventfd it signals with each answer.
    Thread {
        ask: SyncSender<Lookup>,
        answers: Receiver<Found>,
        wake: Arc<OwnedFd>,
    },
    /// Each lookup runs when asked (tests and fuzzing: deterministic). With `hold`, the
    /// answers wait until [`Lookups::release`], as a slow worker's would.
    Inline {
        work: Box<Work>,
        answers: VecDeque<Found>,
        held: Option<Vec<Lookup>>,
    },
}

impl Lookups {
    /// Starts the worker thread.
    pub fn spawn(host: Arc<dyn Host>, metrics: AgentMetrics) -> std::io::Result<Self> {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a new descriptor that nothing else owns.
        let wake = Arc::new(unsafe { OwnedFd::from_raw_fd(fd) });
        let (ask, queue) = mpsc::sync_channel::<Lookup>(QUEUE);
        let (answer, answers) = mpsc::channel();
        let signal = wake.clone();
        std::thread::Builder::new()
            .name("mcp-probe-lookups".into())
            .spawn(move || {
                let mut work = Work::new(host);
                // Ends when the drain's side is dropped.
                for lookup in queue {
                    if answer.send(work.run(lookup)).is_err() {
                        break;
                    }
                    let one: u64 = 1;
                    // SAFETY: an 8-byte write to our eventfd; a full counter only means
                    // the drain has yet to read it.
                    unsafe { libc::write(signal.as_raw_fd(), (&one as *const u64).cast(), 8) };
                }
            })?;
        Ok(Self {
            mode: Mode::Thread { ask, answers, wake },
            metrics,
        })
    }

    /// Lookups run at once on the caller's thread.
    pub fn inline(host: Arc<dyn Host>, metrics: AgentMetrics) -> Self {
        Self {
            mode: Mode::Inline {
                work: Box::new(Work::new(host)),
                answers: VecDeque::new(),
                held: None,
            },
            metrics,
        }
    }

    /// Lookups run only when [`Lookups::release`] is called (tests of what waits).
    #[cfg(any(test, feature = "testing"))]
    pub fn held(host: Arc<dyn Host>, metrics: AgentMetrics) -> Self {
        let mut lookups = Self::inline(host, metrics);
        if let Mode::Inline { held, .. } = &mut lookups.mode {
            *held = Some(Vec::new());
        }
        lookups
    }

    /// Runs the held lookups; their answers are ready for [`Lookups::answers`]. False
    /// when none was held.
    #[cfg(any(test, feature = "testing"))]
    pub fn release(&mut self) -> bool {
        match &mut self.mode {
            Mode::Inline {
                work,
                answers,
                held: Some(held),
            } if !held.is_empty() => {
                answers.extend(held.drain(..).map(|l| work.run(l)));
                true
            }
            _ => false,
        }
    }

    /// Queues a lookup. False when the queue is full: it was shed (and counted).
    pub fn ask(&mut self, lookup: Lookup) -> bool {
        let labels = LookupLabels {
            lookup: lookup.label(),
        };
        let queued = match &mut self.mode {
            Mode::Thread { ask, .. } => match ask.try_send(lookup) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            },
            Mode::Inline {
                work,
                answers,
                held,
            } => {
                match held {
                    Some(held) => held.push(lookup),
                    None => answers.push_back(work.run(lookup)),
                }
                true
            }
        };
        if queued {
            self.metrics.lookups.get_or_create(&labels).inc();
        } else {
            self.metrics.shed_lookup(labels.lookup, "queue_full");
        }
        queued
    }

    /// The answers that arrived, in the order they were asked.
    pub fn answers(&mut self) -> Vec<Found> {
        match &mut self.mode {
            Mode::Thread { answers, .. } => answers.try_iter().collect(),
            Mode::Inline { answers, .. } => answers.drain(..).collect(),
        }
    }

    /// Resets the wake-up signal (after a poll found [`Lookups::wake_fd`] readable).
    pub fn acknowledge_wake(&self) {
        if let Mode::Thread { wake, .. } = &self.mode {
            let mut count = 0u64;
            // SAFETY: an 8-byte read from our non-blocking eventfd (resets it).
            unsafe { libc::read(wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
        }
    }

    /// Readable when answers are waiting (the worker's eventfd), for the drain's poll.
    pub fn wake_fd(&self) -> Option<RawFd> {
        match &self.mode {
            Mode::Thread { wake, .. } => Some(wake.as_raw_fd()),
            Mode::Inline { .. } => None,
        }
    }
}
