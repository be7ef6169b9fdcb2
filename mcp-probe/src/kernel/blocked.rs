//! Syscalls already in progress when the agent starts.
//!
//! The entry hook never ran for a read that was already blocked when the programs
//! attached (an MCP server waiting for its next request, say), so its exit would find no
//! arguments and the message it returns would be lost. At start-up the agent reads
//! `/proc/PID/task/TID/syscall` of every thread, and for each one blocked in a
//! read/write-family syscall builds what the entry hook would have written into `INFLIGHT`,
//! flagged as coming from the agent; the loader writes those entries into the map. The
//! exit hook trusts such an entry only if the thread's saved registers still hold the same
//! descriptor and buffer, so an entry for a syscall that returned in between is dropped,
//! never applied to the next one.

use std::path::Path;

use mcp_probe_common::{inflight, InflightSyscall, Syscall};

const MSG_PEEK: u64 = 2;

/// A blocked syscall as `/proc/PID/task/TID/syscall` shows it: the number, then six
/// arguments in hex. Returns the entry the entry hook would have made, or `None` for a
/// thread that is running, blocked elsewhere, or peeking.
pub fn parse_syscall_line(line: &str) -> Option<InflightSyscall> {
    let mut fields = line.split_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    let mut args = [0u64; 6];
    for arg in &mut args {
        *arg = u64::from_str_radix(fields.next()?.strip_prefix("0x")?, 16).ok()?;
    }
    // x86_64 syscall numbers.
    let syscall = match nr {
        0 => Syscall::Read,
        1 => Syscall::Write,
        19 => Syscall::Readv,
        20 => Syscall::Writev,
        44 => Syscall::Sendto,
        45 => Syscall::Recvfrom,
        46 => Syscall::Sendmsg,
        47 => Syscall::Recvmsg,
        _ => return None,
    };
    // MSG_PEEK leaves the bytes to be read again; the entry hook skips it too.
    let peeking = match syscall {
        Syscall::Recvfrom => args[3] & MSG_PEEK != 0,
        Syscall::Recvmsg => args[2] & MSG_PEEK != 0,
        _ => false,
    };
    if peeking || args[0] > i32::MAX as u64 {
        return None;
    }
    Some(InflightSyscall {
        syscall: syscall as u32,
        fd: args[0] as u32,
        buf: args[1],
        count: args[2],
        flags: inflight::FROM_AGENT,
        _pad: 0,
        entry_ns: 0,
    })
}

/// What the start-up scan of `/proc` found. The scan only reads: writing the entries into
/// `INFLIGHT` is the loader's job, so this module needs no map and is testable on any host.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Threads blocked in a read/write-family syscall: their `INFLIGHT` key
    /// (`tgid << 32 | tid`, as the entry hook computes it) and the entry to write.
    pub blocked: Vec<(u64, InflightSyscall)>,
    /// Threads whose syscall file could not be read (gone meanwhile, or not permitted).
    pub unreadable: usize,
    /// Threads running, or blocked in a syscall the agent does not follow, or peeking.
    pub not_blocked: usize,
}

/// Scans every thread of every process but this one.
pub fn scan() -> Scan {
    scan_in(Path::new("/proc"), std::process::id())
}

/// Scans the process tree under `proc_root` (`/proc`, or a copy in tests), skipping the
/// process `me`: the agent's own threads are not blocked in anything it follows.
pub fn scan_in(proc_root: &Path, me: u32) -> Scan {
    let mut found = Scan::default();
    let Ok(procs) = std::fs::read_dir(proc_root) else {
        return found;
    };
    for tgid in procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&tgid| tgid != me)
    {
        let task_dir = proc_root.join(tgid.to_string()).join("task");
        let Ok(tasks) = std::fs::read_dir(&task_dir) else {
            continue;
        };
        for tid in tasks
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        {
            let Ok(line) = std::fs::read_to_string(task_dir.join(tid.to_string()).join("syscall"))
            else {
                found.unreadable += 1;
                continue;
            };
            let Some(entry) = parse_syscall_line(&line) else {
                found.not_blocked += 1;
                continue;
            };
            found
                .blocked
                .push(((u64::from(tgid) << 32) | u64::from(tid), entry));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_read_becomes_an_agent_entry() {
        let e = parse_syscall_line(
            "0 0x3 0x7ffe2e8c0e40 0x10000 0x0 0x0 0x0 0x7ffe2e8c0d88 0x7f1c2b3e4a61\n",
        )
        .expect("blocked read");
        assert_eq!(
            e,
            InflightSyscall {
                syscall: Syscall::Read as u32,
                fd: 3,
                buf: 0x7ffe2e8c0e40,
                count: 0x10000,
                flags: inflight::FROM_AGENT,
                _pad: 0,
                entry_ns: 0,
            }
        );
    }

    #[test]
    fn running_threads_other_syscalls_and_peeks_are_skipped() {
        assert_eq!(parse_syscall_line("running\n"), None);
        assert_eq!(
            parse_syscall_line("-1 0x7ffe2e8c0d88 0x7f1c2b3e4a61\n"),
            None
        );
        // poll(2), then a truncated line.
        assert_eq!(
            parse_syscall_line("7 0x5 0x1 0xffffffff 0x0 0x0 0x0 0x1 0x2"),
            None
        );
        assert_eq!(parse_syscall_line("0 0x3 0x7ffe"), None);
        // recvfrom(fd, buf, len, MSG_PEEK, ...)
        assert_eq!(
            parse_syscall_line("45 0x4 0x1000 0x40 0x2 0x0 0x0 0x1 0x2"),
            None
        );
        assert!(parse_syscall_line("45 0x4 0x1000 0x40 0x0 0x0 0x0 0x1 0x2").is_some());
    }

    #[test]
    fn the_scan_reads_every_thread_but_its_own_process() {
        let root = std::env::temp_dir().join(format!("mcp-probe-scan-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let thread = |tgid: u32, tid: u32, line: Option<&str>| {
            let dir = root.join(format!("{tgid}/task/{tid}"));
            std::fs::create_dir_all(&dir).expect("fake /proc");
            if let Some(line) = line {
                std::fs::write(dir.join("syscall"), line).expect("fake syscall file");
            }
        };
        let read = "0 0x3 0x7ffe2e8c0e40 0x10000 0x0 0x0 0x0 0x1 0x2\n";
        thread(10, 10, Some(read));
        thread(10, 11, Some("running\n"));
        thread(20, 21, None); // exited between listing and reading
        thread(30, 30, Some(read)); // the agent itself
        std::fs::create_dir_all(root.join("self")).expect("fake /proc");

        let scan = scan_in(&root, 30);
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(scan.blocked.len(), 1);
        assert_eq!(scan.blocked[0].0, (10 << 32) | 10);
        assert_eq!(scan.blocked[0].1.fd, 3);
        assert_eq!((scan.unreadable, scan.not_blocked), (1, 1));
    }
}
