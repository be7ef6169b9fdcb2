//! The live host, read from /proc with `procfs`: `/proc/PID/{stat,cmdline,status,fd}`,
//! `/proc/uptime`, the socket tables of a process's network namespace
//! (`/proc/PID/net/{tcp,tcp6,unix}`) where a socket's own record was lost, and the
//! listening TCP sockets from sock_diag (`/proc` only when sock_diag is refused).

use std::net::SocketAddr;

use procfs::net::{TcpNetEntry, TcpState};

use super::{sockdiag::SockDiag, Host, HostSocket, ProcessSample};

/// Reads the host the agent runs on. Every call reads afresh (callers cache what they
/// need to); it keeps only one sock_diag socket per network namespace.
#[derive(Debug, Default)]
pub struct ProcHost {
    sockdiag: SockDiag,
}

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

    fn netns(&self, tgid: u32) -> Option<u64> {
        let meta = std::fs::metadata(format!("/proc/{tgid}/ns/net")).ok()?;
        Some(std::os::unix::fs::MetadataExt::ino(&meta))
    }

    fn tcp_listeners(&self, tgid: u32) -> Option<Vec<(SocketAddr, u64)>> {
        let netns = self.netns(tgid)?;
        match self.sockdiag.tcp_listeners(tgid, netns) {
            Ok(listeners) => Some(listeners),
            Err(e) => {
                // Without CAP_SYS_ADMIN another namespace cannot be joined: read its table.
                tracing::debug!(tgid, error = %e, "sock_diag refused; reading /proc/PID/net/tcp");
                let listeners = tcp_table(&process(tgid)?)
                    .into_iter()
                    .filter(|e| e.state == TcpState::Listen)
                    .map(|e| (e.local_address, e.inode))
                    .collect();
                Some(listeners)
            }
        }
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

    /// A scan of /proc/*/fd (no table maps an inode to its holder), processes with the
    /// fewest descriptors first: `/proc/PID/fd`'s size is its descriptor count (Linux 6.2
    /// and later; 0 before, which keeps pid order), so an MCP server with a handful of
    /// descriptors is reached before a process holding tens of thousands of connections,
    /// whose links would otherwise be read one by one.
    fn socket_owner(&self, inode: u64) -> Option<u32> {
        let mut by_fds: Vec<(u64, procfs::process::Process)> = procfs::process::all_processes()
            .ok()?
            .flatten()
            .map(|p| {
                let fds = std::fs::metadata(format!("/proc/{}/fd", p.pid))
                    .map(|m| m.len())
                    .unwrap_or(u64::MAX);
                (fds, p)
            })
            .collect();
        by_fds.sort_by_key(|(fds, _)| *fds);
        by_fds.into_iter().find_map(|(_, p)| {
            let owns =
                p.fd().ok()?.flatten().any(
                    |fd| matches!(fd.target, procfs::process::FDTarget::Socket(i) if i == inode),
                );
            owns.then_some(p.pid as u32)
        })
    }
}
