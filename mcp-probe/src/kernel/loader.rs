//! Loading and attaching the kernel programs, and handing out the maps the agent reads.

use std::{os::fd::AsRawFd, path::Path};

use aya::{
    maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use mcp_probe_common::{
    InflightSyscall, EVENTS_MAP, FDS_MAP, INFLIGHT_MAP, OFFSETS_GLOBAL, STATS_MAP, STREAMS_MAP,
    WAKEUP_BYTES_GLOBAL, WATCHED_MAP,
};

use super::{blocked, offsets, streams::KernelStreams};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("tracefs is not available at {0} and could not be mounted: {1}{hint}", hint = privilege_hint())]
    Tracefs(&'static str, std::io::Error),
    #[error(transparent)]
    Offsets(#[from] offsets::OffsetsError),
    #[error("loading the eBPF object failed: {0}{hint}", hint = privilege_hint())]
    Load(#[source] Box<aya::EbpfError>),
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("program {name} failed to load or attach to {category}:{tracepoint}: {source}{hint}", hint = privilege_hint())]
    Attach {
        name: &'static str,
        category: &'static str,
        tracepoint: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("map {0} is missing or has the wrong type: {1}")]
    Map(&'static str, String),
}

/// Names the required capabilities the agent lacks, if any (see `privileges`).
fn privilege_hint() -> String {
    crate::privileges::hint(Path::new(TRACEFS))
}

pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Hooks: (program, tracepoint category, tracepoint).
const HOOKS: &[(&str, &str, &str)] = &[
    ("sys_enter_read", "syscalls", "sys_enter_read"),
    ("sys_enter_write", "syscalls", "sys_enter_write"),
    ("sys_enter_readv", "syscalls", "sys_enter_readv"),
    ("sys_enter_writev", "syscalls", "sys_enter_writev"),
    ("sys_enter_sendto", "syscalls", "sys_enter_sendto"),
    ("sys_enter_recvfrom", "syscalls", "sys_enter_recvfrom"),
    ("sys_enter_sendmsg", "syscalls", "sys_enter_sendmsg"),
    ("sys_enter_recvmsg", "syscalls", "sys_enter_recvmsg"),
    ("sys_exit_rw", "syscalls", "sys_exit_read"),
    ("sys_exit_rw", "syscalls", "sys_exit_write"),
    ("sys_exit_rw", "syscalls", "sys_exit_readv"),
    ("sys_exit_rw", "syscalls", "sys_exit_writev"),
    ("sys_exit_rw", "syscalls", "sys_exit_sendto"),
    ("sys_exit_rw", "syscalls", "sys_exit_recvfrom"),
    ("sys_exit_rw", "syscalls", "sys_exit_sendmsg"),
    ("sys_exit_rw", "syscalls", "sys_exit_recvmsg"),
    ("sys_enter_close", "syscalls", "sys_enter_close"),
    ("sys_enter_dup2", "syscalls", "sys_enter_dup2"),
    ("sys_enter_dup3", "syscalls", "sys_enter_dup3"),
    ("sched_process_fork", "sched", "sched_process_fork"),
    ("sched_process_exec", "sched", "sched_process_exec"),
    ("sched_process_exit", "sched", "sched_process_exit"),
];

pub struct Loaded {
    /// Owns the programs and their links: dropping it detaches everything.
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub stats: PerCpuArray<MapData, u64>,
    pub streams: KernelStreams,
    pub kernel_log: Option<KernelLog>,
    pub attached: Vec<String>,
    /// Optional hooks that could not be attached.
    pub failed: Vec<String>,
    /// Threads found blocked in a read/write-family syscall when the programs attached.
    pub blocked: Prefilled,
}

/// aya-log's reader of the kernel programs' log messages.
pub type KernelLog = aya_log::EbpfLogger<&'static dyn log::Log>;

/// Hooks the agent can run without (with less exact fd and process bookkeeping).
const LIFECYCLE: &[&str] = &[
    "sys_enter_close",
    "sys_enter_dup2",
    "sys_enter_dup3",
    "sched_process_fork",
    "sched_process_exec",
    "sched_process_exit",
];

fn attach(
    ebpf: &mut Ebpf,
    name: &'static str,
    category: &'static str,
    tracepoint: &'static str,
) -> Result<(), LoadError> {
    let attach_err = |source: aya::programs::ProgramError| LoadError::Attach {
        name,
        category,
        tracepoint,
        source: Box::new(source),
    };
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or(LoadError::MissingProgram(name))?
        .try_into()
        .map_err(attach_err)?;
    if program.fd().is_err() {
        program.load().map_err(attach_err)?;
    }
    program.attach(category, tracepoint).map_err(attach_err)?;
    Ok(())
}

pub struct LoadOptions {
    pub ring_bytes: u32,
    pub wakeup_bytes: u64,
    /// What the kernel side asks about processes.
    pub host: std::sync::Arc<dyn crate::host::Host>,
}

/// Makes sure tracefs is mounted (aya finds tracepoint ids there).
fn ensure_tracefs() -> Result<(), LoadError> {
    if Path::new(TRACEFS).join("events").exists() {
        return Ok(());
    }
    let src = c"nodev";
    let target = c"/sys/kernel/tracing";
    let fstype = c"tracefs";
    // SAFETY: valid NUL-terminated strings, no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(LoadError::Tracefs(TRACEFS, std::io::Error::last_os_error()));
    }
    Ok(())
}

/// An eBPF object, 8-byte aligned as the ELF parser needs.
struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and the borrow is unique.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// The eBPF object with its `.BTF` and `.BTF.ext` sections renamed (`.BTX`, `.BTX.ext`) so
/// that aya does not offer them to the kernel. The kernel rejects the BTF rustc emits
/// (docs/platform.md); aya then loads the programs without it anyway, but first logs the
/// kernel's whole BTF report, some 200 lines, as a warning on every start. No program
/// here needs BTF: the offsets come from the kernel's own BTF (`offsets.rs`), the maps are
/// legacy ones.
fn without_btf(object: &[u8]) -> AlignedObject {
    let mut aligned = AlignedObject {
        words: vec![0u64; object.len().div_ceil(8)],
        len: object.len(),
    };
    aligned.bytes_mut().copy_from_slice(object);
    let elf = aligned.bytes_mut();
    let u16_at = |elf: &[u8], o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u32_at = |elf: &[u8], o: usize| {
        elf.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |elf: &[u8], o: usize| {
        elf.get(o..o + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    // ELF64, little endian (bpfel): section headers, and the section holding their names.
    let (Some(shoff), Some(shentsize), Some(shnum), Some(shstrndx)) = (
        u64_at(elf, 0x28),
        u16_at(elf, 0x3a),
        u16_at(elf, 0x3c),
        u16_at(elf, 0x3e),
    ) else {
        return aligned;
    };
    let header = |i: u16| shoff as usize + usize::from(i) * usize::from(shentsize);
    let Some(names) = u64_at(elf, header(shstrndx) + 0x18) else {
        return aligned;
    };
    let mut renames = Vec::new();
    for i in 0..shnum {
        let Some(name) = u32_at(elf, header(i)) else {
            continue;
        };
        let at = names as usize + name as usize;
        let Some(tail) = elf.get(at..) else {
            continue;
        };
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        if matches!(&tail[..end], b".BTF" | b".BTF.ext") {
            renames.push(at + 3); // the F
        }
    }
    for at in renames {
        elf[at] = b'X';
    }
    aligned
}

pub fn load(opts: &LoadOptions) -> Result<Loaded, LoadError> {
    ensure_tracefs()?;
    let offsets = offsets::load(TRACEFS)?;
    tracing::debug!(?offsets, "kernel struct offsets from BTF");
    let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcp-probe"));
    // Kernel-side log lines (aya-log) are rare (a stream followed or ignored); they are only
    // produced when the agent logs at debug level.
    let log_level = if tracing::enabled!(target: "mcp_probe::io", tracing::Level::DEBUG) {
        aya_log::Level::Debug
    } else {
        aya_log::Level::Info
    } as u8;
    let object = without_btf(object);
    let mut ebpf = EbpfLoader::new()
        .override_global(aya_log::LEVEL, &log_level, false)
        .override_global(OFFSETS_GLOBAL, &offsets, true)
        .override_global(WAKEUP_BYTES_GLOBAL, &opts.wakeup_bytes, true)
        .map_max_entries(EVENTS_MAP, opts.ring_bytes)
        .load(object.bytes())
        .map_err(|e| LoadError::Load(Box::new(e)))?;

    // Must stay alive while the programs run: dropping it closes the log map.
    let kernel_log = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(logger) => Some(logger),
        Err(e) => {
            tracing::warn!(error = %e, "kernel-side log messages unavailable");
            None
        }
    };
    let mut attached = Vec::new();
    let mut failed = Vec::new();
    for &(name, category, tracepoint) in HOOKS {
        match attach(&mut ebpf, name, category, tracepoint) {
            Ok(()) => attached.push(format!("{category}:{tracepoint}")),
            // Capture itself needs every read/write-family hook.
            Err(e) if category == "syscalls" && !LIFECYCLE.contains(&name) => return Err(e),
            // Lifecycle hooks only sharpen the bookkeeping: run without, and say so.
            Err(e) => {
                tracing::warn!(error = %e, "running without {category}:{tracepoint}");
                failed.push(format!("{category}:{tracepoint}"));
            }
        }
    }

    let events = RingBuf::try_from(take(&mut ebpf, EVENTS_MAP)?)
        .map_err(|e| LoadError::Map(EVENTS_MAP, e.to_string()))?;
    let stats = PerCpuArray::try_from(take(&mut ebpf, STATS_MAP)?)
        .map_err(|e| LoadError::Map(STATS_MAP, e.to_string()))?;
    let fds = BpfHashMap::try_from(take(&mut ebpf, FDS_MAP)?)
        .map_err(|e| LoadError::Map(FDS_MAP, e.to_string()))?;
    let watched = BpfHashMap::try_from(take(&mut ebpf, WATCHED_MAP)?)
        .map_err(|e| LoadError::Map(WATCHED_MAP, e.to_string()))?;
    let mut inflight = BpfHashMap::try_from(take(&mut ebpf, INFLIGHT_MAP)?)
        .map_err(|e| LoadError::Map(INFLIGHT_MAP, e.to_string()))?;
    let blocked = prefill(&mut inflight, blocked::scan());
    let streams = BpfHashMap::try_from(take(&mut ebpf, STREAMS_MAP)?)
        .map_err(|e| LoadError::Map(STREAMS_MAP, e.to_string()))?;
    tracing::debug!(fd = events.as_raw_fd(), "ring buffer ready");
    Ok(Loaded {
        ebpf,
        events,
        stats,
        streams: KernelStreams::new(streams, watched, fds, opts.host.clone()),
        blocked,
        kernel_log,
        attached,
        failed,
    })
}

fn take(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, LoadError> {
    ebpf.take_map(name)
        .ok_or_else(|| LoadError::Map(name, "not in object".into()))
}

/// The map of syscalls between entry and exit, as the agent writes it.
pub type InflightMap = BpfHashMap<MapData, u64, InflightSyscall>;

/// What the start-up prefill of `INFLIGHT` did (see `blocked`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Prefilled {
    /// Threads blocked in a read/write-family syscall, written into `INFLIGHT`.
    pub written: usize,
    /// Of those, entries not written: the map was full, or the entry hook had made one.
    pub failed: usize,
}

/// Only creates: the syscall may have returned and the thread entered the next one since
/// the scan read it, and the entry hook's own entry is the exact one.
const BPF_NOEXIST: u64 = 1;

/// Writes the blocked syscalls the scan found into `INFLIGHT`, never over an entry the
/// entry hook made meanwhile.
fn prefill(map: &mut InflightMap, scan: blocked::Scan) -> Prefilled {
    tracing::debug!(
        blocked = scan.blocked.len(),
        unreadable = scan.unreadable,
        not_blocked = scan.not_blocked,
        "scanned threads for syscalls in progress"
    );
    let mut done = Prefilled::default();
    for (key, entry) in scan.blocked {
        match map.insert(key, entry, BPF_NOEXIST) {
            Ok(()) => done.written += 1,
            Err(_) => done.failed += 1,
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_object_loses_only_its_btf() {
        let object = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/mcp-probe"));
        let parsed = aya_obj::Object::parse(object).expect("the object parses");
        assert!(parsed.btf.is_some(), "rustc emitted BTF");
        let patched = without_btf(object);
        let without = aya_obj::Object::parse(patched.bytes()).expect("still parses");
        assert!(without.btf.is_none());
        assert_eq!(without.programs.len(), parsed.programs.len());
        assert_eq!(without.maps.len(), parsed.maps.len());
        // Nothing else changed: the two renamed sections differ by one byte each (plus a
        // relocation section whose name ends with one of them).
        let changed = object
            .iter()
            .zip(patched.bytes())
            .filter(|(a, b)| a != b)
            .count();
        assert!((2..=3).contains(&changed), "{changed} bytes changed");
    }
}
