//! A host made of tables a test fills, so the stages that read the host can be tested
//! with literal inputs, and a test can change the host between two calls (a process
//! exits, its pid is reused).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Mutex, MutexGuard},
};

use super::{Host, HostSocket, ProcessSample};

/// An in-memory [`Host`]. Setters take `&self` (the tables sit behind a mutex), so a test
/// keeps an `Arc<FakeHost>` and hands a clone to the stage as an `Arc<dyn Host>`.
///
/// A tgid exists once any of its facts is set (or [`FakeHost::spawn`] named it), until
/// [`FakeHost::exit`]. Unset facts read as `None`, as an unreadable /proc file would.
#[derive(Debug, Default)]
pub struct FakeHost {
    tables: Mutex<Tables>,
}

#[derive(Debug)]
struct Tables {
    processes: HashMap<u32, FakeProcess>,
    agent: Option<ProcessSample>,
    uptime: Option<f64>,
    ticks_per_second: u64,
    /// Socket owner by inode.
    owners: HashMap<u64, u32>,
    /// Calls of `tcp_listeners`.
    listener_dumps: u64,
}

impl Default for Tables {
    fn default() -> Self {
        Self {
            processes: HashMap::new(),
            agent: None,
            uptime: None,
            // Linux's USER_HZ on every architecture the agent runs on.
            ticks_per_second: 100,
            owners: HashMap::new(),
            listener_dumps: 0,
        }
    }
}

#[derive(Debug, Default)]
struct FakeProcess {
    start_time: Option<u64>,
    cmdline: Option<Vec<String>>,
    uid: Option<u32>,
    sample: Option<ProcessSample>,
    /// Sockets by inode, as seen from this process's network namespace.
    sockets: HashMap<u64, HostSocket>,
    /// Listening TCP sockets in its namespace: (local address, inode).
    tcp_listeners: Vec<(SocketAddr, u64)>,
    /// Listening unix sockets in its namespace: path -> inode.
    unix_listeners: HashMap<String, u64>,
    /// Its network namespace (by default one of its own, numbered after it).
    netns: Option<u64>,
}

impl FakeHost {
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // A test that panicked while holding the lock has failed already; its tables are
        // still consistent (every setter is one insert).
        self.tables
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs `f` on the entry of `tgid`, creating it (the process then exists).
    fn with_process(&self, tgid: u32, f: impl FnOnce(&mut FakeProcess)) {
        f(self.tables().processes.entry(tgid).or_default());
    }

    /// Reads a fact of `tgid`, if it exists.
    fn read<T>(&self, tgid: u32, f: impl FnOnce(&FakeProcess) -> Option<T>) -> Option<T> {
        self.tables().processes.get(&tgid).and_then(f)
    }

    /// A process starts: `tgid` exists with this start time and command line (replacing
    /// whatever was known of an earlier process with the same pid).
    pub fn spawn(&self, tgid: u32, start_time: u64, cmdline: &[&str]) {
        self.tables().processes.insert(
            tgid,
            FakeProcess {
                start_time: Some(start_time),
                cmdline: Some(cmdline.iter().map(|a| (*a).to_owned()).collect()),
                ..FakeProcess::default()
            },
        );
    }

    /// The process exits: `tgid` no longer exists and none of its facts can be read.
    pub fn exit(&self, tgid: u32) {
        self.tables().processes.remove(&tgid);
    }

    /// `tgid` exists, with no readable facts unless set.
    pub fn set_exists(&self, tgid: u32) {
        self.with_process(tgid, |_| {});
    }

    pub fn set_start_time(&self, tgid: u32, start_time: u64) {
        self.with_process(tgid, |p| p.start_time = Some(start_time));
    }

    pub fn set_cmdline(&self, tgid: u32, cmdline: &[&str]) {
        let cmdline = cmdline.iter().map(|a| (*a).to_owned()).collect();
        self.with_process(tgid, |p| p.cmdline = Some(cmdline));
    }

    pub fn set_uid(&self, tgid: u32, uid: u32) {
        self.with_process(tgid, |p| p.uid = Some(uid));
    }

    /// The resource use the next health sweep reads for `tgid`.
    pub fn set_sample(&self, tgid: u32, sample: ProcessSample) {
        self.with_process(tgid, |p| p.sample = Some(sample));
    }

    /// The resource use the next health sweep reads for the agent itself.
    pub fn set_agent_sample(&self, sample: ProcessSample) {
        self.tables().agent = Some(sample);
    }

    pub fn set_uptime(&self, seconds: f64) {
        self.tables().uptime = Some(seconds);
    }

    /// Clock ticks per second (100 unless set).
    pub fn set_ticks_per_second(&self, ticks: u64) {
        self.tables().ticks_per_second = ticks;
    }

    /// Socket `ino` as seen from `tgid`.
    pub fn add_socket(&self, tgid: u32, ino: u64, socket: HostSocket) {
        self.with_process(tgid, |p| {
            p.sockets.insert(ino, socket);
        });
    }

    /// A TCP socket `ino` listens on `addr` in `tgid`'s namespace (an unspecified IP
    /// listens on every address, as in the kernel's table).
    pub fn add_tcp_listener(&self, tgid: u32, addr: SocketAddr, ino: u64) {
        self.with_process(tgid, |p| p.tcp_listeners.push((addr, ino)));
    }

    /// `tgid` is in network namespace `netns` (it sees only its own listeners: add them
    /// to each process of the namespace).
    pub fn set_netns(&self, tgid: u32, netns: u64) {
        self.with_process(tgid, |p| p.netns = Some(netns));
    }

    /// How many times the listening sockets of a namespace were asked for.
    pub fn listener_dumps(&self) -> u64 {
        self.tables.lock().map(|t| t.listener_dumps).unwrap_or(0)
    }

    /// A unix socket `ino` listens on `path` in `tgid`'s namespace.
    pub fn add_unix_listener(&self, tgid: u32, path: &str, ino: u64) {
        self.with_process(tgid, |p| {
            p.unix_listeners.insert(path.to_owned(), ino);
        });
    }

    /// Process `owner` holds socket `ino`.
    pub fn set_socket_owner(&self, ino: u64, owner: u32) {
        self.tables().owners.insert(ino, owner);
    }
}

impl Host for FakeHost {
    fn process_exists(&self, tgid: u32) -> bool {
        self.tables().processes.contains_key(&tgid)
    }

    fn process_start_time(&self, tgid: u32) -> Option<u64> {
        self.read(tgid, |p| p.start_time)
    }

    fn process_cmdline(&self, tgid: u32) -> Option<Vec<String>> {
        self.read(tgid, |p| p.cmdline.clone())
    }

    fn process_uid(&self, tgid: u32) -> Option<u32> {
        self.read(tgid, |p| p.uid)
    }

    fn process_sample(&self, tgid: u32) -> Option<ProcessSample> {
        self.read(tgid, |p| p.sample)
    }

    fn agent_sample(&self) -> Option<ProcessSample> {
        self.tables().agent
    }

    fn uptime_since_boot(&self) -> Option<f64> {
        self.tables().uptime
    }

    fn clock_ticks_per_second(&self) -> u64 {
        self.tables().ticks_per_second
    }

    fn socket(&self, tgid: u32, ino: u64) -> Option<HostSocket> {
        self.read(tgid, |p| p.sockets.get(&ino).copied())
    }

    fn netns(&self, tgid: u32) -> Option<u64> {
        self.read(tgid, |p| Some(p.netns.unwrap_or(u64::from(tgid))))
    }

    fn tcp_listeners(&self, tgid: u32) -> Option<Vec<(SocketAddr, u64)>> {
        if let Ok(mut t) = self.tables.lock() {
            t.listener_dumps += 1;
        }
        self.read(tgid, |p| Some(p.tcp_listeners.clone()))
    }

    fn unix_listener(&self, tgid: u32, path: &str) -> Option<u64> {
        self.read(tgid, |p| p.unix_listeners.get(path).copied())
    }

    fn socket_owner(&self, inode: u64) -> Option<u32> {
        self.tables().owners.get(&inode).copied()
    }
}
