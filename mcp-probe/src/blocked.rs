//! Syscalls already in progress when the agent starts.
//!
//! The entry hook never ran for a read that was already blocked when the programs
//! attached (an MCP server waiting for its next request, say), so its exit would find no
//! arguments and the message it returns would be lost. At start-up the agent reads
//! `/proc/PID/task/TID/syscall` of every thread, and for each one blocked in a
//! read/write-family syscall writes what the entry hook would have written into `INFLIGHT`,
//! flagged as coming from the agent. The exit hook trusts such an entry only if the
//! thread's saved registers still hold the same descriptor and buffer, so an entry for a
//! syscall that returned in between is dropped, never applied to the next one.

use mcp_probe_common::{inflight, InflightSyscall, Syscall};

use crate::loader::InflightMap;

/// What the start-up scan found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Prefilled {
    /// Threads blocked in a read/write-family syscall, written into `INFLIGHT`.
    pub written: usize,
    /// Of those, entries not written: the map was full, or the entry hook had made one.
    pub failed: usize,
}

const MSG_PEEK: u64 = 2;
const BPF_NOEXIST: u64 = 1;

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

/// Scans every thread of every process and writes the blocked ones into `map`.
pub fn prefill(map: &mut InflightMap) -> Prefilled {
    let mut found = Prefilled::default();
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for tgid in procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&tgid| tgid != me)
    {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{tgid}/task")) else {
            continue;
        };
        for tid in tasks
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        {
            let Ok(line) = std::fs::read_to_string(format!("/proc/{tgid}/task/{tid}/syscall"))
            else {
                continue;
            };
            let Some(entry) = parse_syscall_line(&line) else {
                continue;
            };
            let key = (u64::from(tgid) << 32) | u64::from(tid);
            // BPF_NOEXIST: never overwrite an entry the entry hook made meanwhile.
            match map.insert(key, entry, BPF_NOEXIST) {
                Ok(()) => found.written += 1,
                Err(_) => found.failed += 1,
            }
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
}
