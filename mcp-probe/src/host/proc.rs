//! The live host, read from /proc with `procfs`: the socket tables of a process's network
//! namespace (`/proc/PID/net/{tcp,tcp6,unix}`), `/proc/PID/{stat,cmdline,status,fd}`,
//! and `/proc/uptime`.

use std::net::SocketAddr;

use procfs::net::{TcpNetEntry, TcpState};

use super::{Host, HostSocket, ProcessSample};

/// Reads the host the agent runs on. Stateless: every call reads /proc afresh (callers
/// cache what they need to).
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcHost;

fn process(tgid: u32) -> Option<procfs::process::Process> {
    procfs::process::Process::new(tgid as i32).ok()
}

/// The IPv4 and IPv6 TCP tables of `process`'s network namespace (an unreadable one is
/// empty).
fn tcp_table(process: &procfs::process::Process) -> Vec<TcpNetEntry> {
    let mut tcp = process.tcp().unwrap_or_default();
    tcp.extend(process.tcp6().unwrap_or_default());
    tcp
}

impl Host for ProcHost {
    fn process_exists(&self, tgid: u32) -> bool {
        std::path::Path::new(&format!("/proc/{tgid}")).exists()
    }

    fn process_start_time(&self, tgid: u32) -> Option<u64> {
        process(tgid)?.stat().ok().map(|s| s.starttime)
    }

    fn process_cmdline(&self, tgid: u32) -> Option<Vec<String>> {
        process(tgid)?.cmdline().ok()
    }

    fn process_uid(&self, tgid: u32) -> Option<u32> {
        process(tgid)?.uid().ok()
    }

    fn process_sample(&self, tgid: u32) -> Option<ProcessSample> {
        let p = process(tgid)?;
        let stat = p.stat().ok()?;
        Some(ProcessSample {
            start_ticks: stat.starttime,
            cpu_ticks: stat.utime + stat.stime,
            rss_bytes: stat.rss * procfs::page_size(),
            fds: p.fd_count().map(|n| n as u64).unwrap_or(0),
            threads: stat.num_threads.max(0) as u64,
        })
    }

    fn agent_sample(&self) -> Option<ProcessSample> {
        self.process_sample(std::process::id())
    }

    fn uptime_since_boot(&self) -> Option<f64> {
        let text = std::fs::read_to_string("/proc/uptime").ok()?;
        text.split_whitespace().next()?.parse().ok()
    }

    fn clock_ticks_per_second(&self) -> u64 {
        procfs::ticks_per_second()
    }

    fn socket(&self, tgid: u32, ino: u64) -> Option<HostSocket> {
        let process = process(tgid)?;
        let tcp = tcp_table(&process);
        if let Some(entry) = tcp.iter().find(|e| e.inode == ino) {
            let local = entry.local_address;
            // Accepted connections share their local port with a listening socket.
            let accepted = tcp
                .iter()
                .any(|e| e.state == TcpState::Listen && e.local_address.port() == local.port());
            return Some(HostSocket::Tcp {
                remote: entry.remote_address,
                accepted,
            });
        }
        process
            .unix()
            .unwrap_or_default()
            .iter()
            .any(|e| e.inode == ino)
            .then_some(HostSocket::Unix)
    }

    fn tcp_listener(&self, tgid: u32, addr: SocketAddr) -> Option<u64> {
        tcp_table(&process(tgid)?)
            .iter()
            .find(|e| {
                e.state == TcpState::Listen
                    && e.local_address.port() == addr.port()
                    && (e.local_address.ip().is_unspecified() || e.local_address.ip() == addr.ip())
            })
            .map(|e| e.inode)
    }

    fn unix_listener(&self, tgid: u32, path: &str) -> Option<u64> {
        process(tgid)?
            .unix()
            .ok()?
            .into_iter()
            .find(|e| {
                e.state == procfs::net::UnixState::UNCONNECTED
                    && e.path.as_deref().is_some_and(|p| p.as_os_str() == path)
            })
            .map(|e| e.inode)
    }

    /// A scan of /proc/*/fd (no table maps an inode to its holder).
    fn socket_owner(&self, inode: u64) -> Option<u32> {
        procfs::process::all_processes()
            .ok()?
            .flatten()
            .find_map(|p| {
                let owns = p.fd().ok()?.flatten().any(
                    |fd| matches!(fd.target, procfs::process::FDTarget::Socket(i) if i == inode),
                );
                owns.then_some(p.pid as u32)
            })
    }
}
