//! Every fact the agent reads about the host (processes, their sockets, their resource
//! use), behind one interface.
//!
//! Why an interface: the stages that need these facts (process naming, socket
//! identification, health) can then be tested with literal inputs instead of whatever
//! happens to run on the test machine, and where a fact comes from can change without
//! touching them (today everything is read from /proc with `procfs`; socket facts are
//! meant to come from netlink sock_diag later).
//!
//! Every method is a look-up by key (a tgid, a socket inode, an address), or hands out a
//! small table (a namespace's listening sockets): none hands out a host-wide table of
//! connections, whose size grows with the host's traffic.
//!
//! [`ProcHost`] reads the live host; [`FakeHost`] (tests, and the `testing` feature)
//! answers from tables the test fills.

use std::net::SocketAddr;

#[cfg(any(test, feature = "testing"))]
mod fake;
mod proc;
mod sockdiag;

#[cfg(any(test, feature = "testing"))]
pub use fake::FakeHost;
pub use proc::ProcHost;

/// A socket as the host's socket tables show it, seen from one process's network
/// namespace. Only what the agent uses to tell client from server and to name the peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostSocket {
    Tcp {
        /// The remote end of the connection.
        remote: SocketAddr,
        /// A listening socket in the same namespace has this socket's local port: the
        /// connection was accepted (this end serves), not made.
        accepted: bool,
    },
    /// A unix socket (its tables say nothing the agent uses about the other end).
    Unix,
}

/// What one sweep learns about a process's resource use, in the kernel's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProcessSample {
    /// Start time, in clock ticks after boot (with the tgid, it tells a reused pid).
    pub start_ticks: u64,
    /// User plus system CPU time, in clock ticks.
    pub cpu_ticks: u64,
    pub rss_bytes: u64,
    pub fds: u64,
    pub threads: u64,
}

/// The facts the agent reads about the host. Object safe and shared between threads, so
/// stages hold an `Arc<dyn Host>` given at construction.
///
/// A process or socket that is gone, or that the agent may not read, is `None` (or
/// `false`): callers treat "cannot know" as "not there", as they did with /proc.
pub trait Host: Send + Sync {
    /// The pid is in use (by the process the caller knows or, after reuse, another one).
    fn process_exists(&self, tgid: u32) -> bool;
    /// When the process started (clock ticks after boot): a different value for a known
    /// tgid means the pid now belongs to another process.
    fn process_start_time(&self, tgid: u32) -> Option<u64>;
    /// The process's arguments (`argv`), to name a server that never announced a name.
    fn process_cmdline(&self, tgid: u32) -> Option<Vec<String>>;
    /// The user owning the process (the owner of `/proc/PID`: its effective uid), for the
    /// per-user label.
    fn process_uid(&self, tgid: u32) -> Option<u32>;
    /// Resource use of a process, for the health series.
    fn process_sample(&self, tgid: u32) -> Option<ProcessSample>;
    /// Resource use of the agent itself.
    fn agent_sample(&self) -> Option<ProcessSample>;
    /// Seconds since boot (the clock [`ProcessSample::start_ticks`] counts from).
    fn uptime_since_boot(&self) -> Option<f64>;
    /// Clock ticks per second (`USER_HZ`), the unit of start and CPU times.
    fn clock_ticks_per_second(&self) -> u64;
    /// Socket inode `ino` as seen from process `tgid`'s network namespace.
    fn socket(&self, tgid: u32, ino: u64) -> Option<HostSocket>;
    /// The network namespace process `tgid` is in (the inode of `/proc/PID/ns/net`).
    fn netns(&self, tgid: u32) -> Option<u64>;
    /// The listening TCP sockets (address, inode) of `tgid`'s network namespace. Costs
    /// time in proportion to the listeners, not to the namespace's connections.
    fn tcp_listeners(&self, tgid: u32) -> Option<Vec<(SocketAddr, u64)>>;
    /// Inode of the unix socket listening on `path`, in `tgid`'s network namespace.
    fn unix_listener(&self, tgid: u32, path: &str) -> Option<u64>;
    /// The process holding socket `inode` open.
    fn socket_owner(&self, inode: u64) -> Option<u32>;
}
