//! The Linux capabilities the agent runs with, checked before anything is loaded, so that a
//! missing one is named ("missing CAP_BPF: ...") instead of surfacing as a bare EPERM from
//! the kernel, and the ones it can run without are reported with what they cost.
//!
//! What the agent needs (measured on Linux 6.18 by running it as uid 65534 with only
//! ambient capabilities; see the README's Privileges section):
//!
//! - required: `CAP_BPF` (create the maps, load the programs) and `CAP_PERFMON` (tracing
//!   programs that read kernel memory, attached through perf events). `CAP_SYS_ADMIN`
//!   stands in for either, as it does in the kernel.
//! - required when tracefs is not readable without it (it is root-only, mode 0700, so for
//!   any uid but 0): `CAP_DAC_READ_SEARCH`, to read the tracepoint ids and formats.
//! - required only when tracefs is not mounted: `CAP_SYS_ADMIN`, to mount it.
//! - optional: `CAP_DAC_READ_SEARCH` and `CAP_SYS_PTRACE`, to read other users' and
//!   more privileged processes' `/proc/PID/fd`.
//!
//! `CAP_SYS_RESOURCE` is not needed: BPF memory is charged to the memory cgroup, not to
//! RLIMIT_MEMLOCK (the agent loads with `RLIMIT_MEMLOCK` 0). BTF
//! (`/sys/kernel/btf/vmlinux`) and the rest of `/proc` the agent reads are world-readable.
//!
//! The effective set is read from `CapEff` in `/proc/self/status`: that is the set the
//! kernel checks, and reading it needs no library.

use std::{fmt, io::ErrorKind, path::Path};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{family::Family, gauge::Gauge},
    registry::Registry,
};

/// One Linux capability: its name and its bit in the capability sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    pub name: &'static str,
    bit: u8,
}

pub const CAP_DAC_READ_SEARCH: Capability = Capability {
    name: "CAP_DAC_READ_SEARCH",
    bit: 2,
};
pub const CAP_SYS_PTRACE: Capability = Capability {
    name: "CAP_SYS_PTRACE",
    bit: 19,
};
pub const CAP_SYS_ADMIN: Capability = Capability {
    name: "CAP_SYS_ADMIN",
    bit: 21,
};
pub const CAP_PERFMON: Capability = Capability {
    name: "CAP_PERFMON",
    bit: 38,
};
pub const CAP_BPF: Capability = Capability {
    name: "CAP_BPF",
    bit: 39,
};

/// The capabilities the agent looks at, in the order they are reported and exported.
pub const RELEVANT: &[Capability] = &[
    CAP_BPF,
    CAP_PERFMON,
    CAP_DAC_READ_SEARCH,
    CAP_SYS_PTRACE,
    CAP_SYS_ADMIN,
];

/// A capability set (a bit mask, as in `/proc/PID/status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CapSet(pub u64);

impl CapSet {
    /// The `CapEff` line of a `/proc/PID/status` text.
    pub fn effective_from_status(status: &str) -> Option<Self> {
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))?
            .trim();
        u64::from_str_radix(hex, 16).ok().map(CapSet)
    }

    pub fn of(caps: &[Capability]) -> Self {
        CapSet(caps.iter().fold(0, |m, c| m | 1 << c.bit))
    }

    pub fn has(self, cap: Capability) -> bool {
        self.0 & (1 << cap.bit) != 0
    }
}

/// Whether the agent can read tracefs, where aya finds the tracepoint ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tracefs {
    Readable,
    /// Mounted (or not visible) but not readable with the agent's credentials.
    Denied,
    /// Nothing at `<tracefs>/events`: the agent has to mount it.
    NotMounted,
}

impl Tracefs {
    /// Lists `<tracefs>/events` with the agent's own credentials.
    pub fn probe(tracefs: &Path) -> Self {
        match std::fs::read_dir(tracefs.join("events")) {
            Ok(_) => Tracefs::Readable,
            Err(e) if e.kind() == ErrorKind::NotFound => Tracefs::NotMounted,
            Err(_) => Tracefs::Denied,
        }
    }
}

/// What the check depends on: the effective set, the euid, the user namespace, tracefs.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub effective: CapSet,
    pub euid: u32,
    /// Running in a user namespace other than the initial one, whose capabilities the
    /// kernel does not accept for eBPF (`unshare -U`, rootless containers).
    pub user_namespace: bool,
    pub tracefs: Tracefs,
}

impl Host {
    /// This process, now.
    pub fn current(tracefs: &Path) -> Result<Self, PrivilegeError> {
        const STATUS: &str = "/proc/self/status";
        let status = std::fs::read_to_string(STATUS).map_err(|e| PrivilegeError::Status {
            path: STATUS,
            reason: e.to_string(),
        })?;
        let effective = CapSet::effective_from_status(&status).ok_or(PrivilegeError::Status {
            path: STATUS,
            reason: "no CapEff line".into(),
        })?;
        // The initial namespace maps every uid to itself; a child one maps fewer.
        let user_namespace = std::fs::read_to_string("/proc/self/uid_map")
            .map(|map| !is_identity_map(&map))
            .unwrap_or(false);
        Ok(Host {
            effective,
            // SAFETY: geteuid has no preconditions.
            euid: unsafe { libc::geteuid() },
            user_namespace,
            tracefs: Tracefs::probe(tracefs),
        })
    }
}

/// Whether a `/proc/PID/uid_map` text is the initial namespace's: `0 0 4294967295`.
fn is_identity_map(map: &str) -> bool {
    let fields: Vec<&str> = map.split_whitespace().collect();
    fields == ["0", "0", "4294967295"]
}

/// A capability the agent does not have, and what it is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub capability: Capability,
    /// A capability that would do instead (the kernel accepts CAP_SYS_ADMIN for CAP_BPF
    /// and CAP_PERFMON).
    pub or: Option<Capability>,
    /// "needed to ..." (required) or "without it ..." (optional).
    pub why: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "missing {}", self.capability.name)?;
        if let Some(or) = self.or {
            write!(f, " (or {})", or.name)?;
        }
        write!(f, ": {}", self.why)
    }
}

/// The outcome of a check: what stops the agent and what only degrades it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// Without these the programs cannot be loaded or attached.
    pub required: Vec<Missing>,
    /// Without these the agent runs with less information.
    pub optional: Vec<Missing>,
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot read the agent's capabilities from {path}: {reason}")]
    Status { path: &'static str, reason: String },
    #[error("mcp-probe lacks capabilities it needs:\n  {}", list(.0, "\n  "))]
    Missing(Vec<Missing>),
}

fn list(missing: &[Missing], sep: &str) -> String {
    missing
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(sep)
}

/// Which capabilities `host` lacks, with `tracefs` the path the agent uses.
pub fn check(host: &Host, tracefs: &Path) -> Check {
    let has = |c| host.effective.has(c);
    // eBPF, perf events and mounts check capabilities in the initial user namespace.
    let kernel_has = |c| has(c) && !host.user_namespace;
    let admin = kernel_has(CAP_SYS_ADMIN);
    let userns = if host.user_namespace {
        " (capabilities held in a user namespace do not count: the kernel checks them in \
         the initial one)"
    } else {
        ""
    };
    let mut out = Check::default();
    if !kernel_has(CAP_BPF) && !admin {
        out.required.push(Missing {
            capability: CAP_BPF,
            or: Some(CAP_SYS_ADMIN),
            why: format!("needed to create the eBPF maps and load the eBPF programs{userns}"),
        });
    }
    if !kernel_has(CAP_PERFMON) && !admin {
        out.required.push(Missing {
            capability: CAP_PERFMON,
            or: Some(CAP_SYS_ADMIN),
            why: format!(
                "needed to load tracing programs that read kernel memory and to attach \
                 them to the syscall tracepoints{userns}"
            ),
        });
    }
    let tracefs = tracefs.display();
    let mut dac_required = false;
    match host.tracefs {
        Tracefs::Readable => {}
        Tracefs::Denied if !has(CAP_DAC_READ_SEARCH) => {
            dac_required = true;
            out.required.push(Missing {
                capability: CAP_DAC_READ_SEARCH,
                or: None,
                why: format!(
                    "needed to read tracefs at {tracefs} (tracepoint ids and formats) as \
                     uid {}: tracefs is root-only (mode 0700) unless mounted otherwise",
                    host.euid
                ),
            });
        }
        // Denied with CAP_DAC_READ_SEARCH: not a capability problem (a security module,
        // a mount option); loading reports the error.
        Tracefs::Denied => {}
        Tracefs::NotMounted if !admin => out.required.push(Missing {
            capability: CAP_SYS_ADMIN,
            or: None,
            why: format!(
                "tracefs is not mounted at {tracefs} and mounting it needs CAP_SYS_ADMIN \
                 (or mount tracefs there before starting the agent)"
            ),
        }),
        Tracefs::NotMounted => {}
    }
    if !dac_required && !has(CAP_DAC_READ_SEARCH) {
        out.optional.push(Missing {
            capability: CAP_DAC_READ_SEARCH,
            or: None,
            why: "without it other users' /proc/PID/fd cannot be listed: their servers' \
                  mcp_server_open_fds reads 0 and their sockets cannot be traced to a process"
                .into(),
        });
    }
    if !has(CAP_SYS_PTRACE) {
        out.optional.push(Missing {
            capability: CAP_SYS_PTRACE,
            or: None,
            why: "without it the /proc/PID/fd links of other users' (and more privileged) \
                  processes cannot be read, so a local HTTP or unix-socket server cannot be \
                  traced from its client's socket to its process: the client side sees it as \
                  a remote endpoint"
                .into(),
        });
    }
    out
}

/// Checks this process before loading: fails naming every missing required capability,
/// warns for each missing optional one. Returns the effective set, or `None` (after a
/// warning) when it cannot be read, in which case loading reports what fails.
pub fn preflight(tracefs: &Path) -> Result<Option<CapSet>, PrivilegeError> {
    let host = match Host::current(tracefs) {
        Ok(host) => host,
        Err(e) => {
            tracing::warn!(error = %e, "capabilities not checked");
            return Ok(None);
        }
    };
    let found = check(&host, tracefs);
    if !found.required.is_empty() {
        return Err(PrivilegeError::Missing(found.required));
    }
    for missing in &found.optional {
        tracing::warn!(capability = missing.capability.name, "{missing}");
    }
    let held: Vec<&str> = RELEVANT
        .iter()
        .filter(|c| host.effective.has(**c))
        .map(|c| c.name)
        .collect();
    tracing::info!(
        uid = host.euid,
        capabilities = %held.join(","),
        "running with capabilities"
    );
    Ok(Some(host.effective))
}

/// For a load or attach error: " (missing CAP_X: ...; ...)" naming the required
/// capabilities this process lacks, or "" when it lacks none (or cannot tell).
pub fn hint(tracefs: &Path) -> String {
    let Ok(host) = Host::current(tracefs) else {
        return String::new();
    };
    let found = check(&host, tracefs);
    if found.required.is_empty() {
        String::new()
    } else {
        format!(" ({})", list(&found.required, "; "))
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapabilityLabels {
    pub capability: &'static str,
}

/// Exports `mcp_probe_capability{capability}`: 1 for each relevant capability the agent
/// runs with, 0 for each it lacks.
pub fn register(registry: &mut Registry, effective: CapSet) {
    let family = Family::<CapabilityLabels, Gauge>::default();
    for cap in RELEVANT {
        family
            .get_or_create(&CapabilityLabels {
                capability: cap.name,
            })
            .set(i64::from(effective.has(*cap)));
    }
    registry.register(
        "mcp_probe_capability",
        "Linux capabilities the agent runs with (1) or without (0), of those it uses",
        family,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACEFS: &str = "/sys/kernel/tracing";

    fn host(caps: &[Capability], euid: u32, tracefs: Tracefs) -> Host {
        Host {
            effective: CapSet::of(caps),
            euid,
            user_namespace: false,
            tracefs,
        }
    }

    fn names(missing: &[Missing]) -> Vec<&'static str> {
        missing.iter().map(|m| m.capability.name).collect()
    }

    fn run(h: Host) -> Check {
        check(&h, Path::new(TRACEFS))
    }

    #[test]
    fn reads_the_effective_set_from_status() {
        let status = "Name:\tmcp-probe\nCapInh:\t0000000000000000\nCapPrm:\t000000c000080004\n\
                      CapEff:\t000000c000080004\nCapBnd:\t000001ffffffffff\n";
        let eff = CapSet::effective_from_status(status).expect("CapEff");
        assert_eq!(
            eff,
            CapSet::of(&[CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE])
        );
        assert!(!eff.has(CAP_SYS_ADMIN));
        assert_eq!(CapSet::effective_from_status("CapEff:\tzz\n"), None);
        assert_eq!(CapSet::effective_from_status("Name:\tx\n"), None);
    }

    #[test]
    fn full_root_lacks_nothing() {
        let all = CapSet(0x1ff_ffff_ffff);
        let c = run(Host {
            effective: all,
            euid: 0,
            user_namespace: false,
            tracefs: Tracefs::Readable,
        });
        assert_eq!(c, Check::default());
    }

    #[test]
    fn capabilities_in_a_user_namespace_do_not_count_for_ebpf() {
        let c = run(Host {
            effective: CapSet(0x1ff_ffff_ffff),
            euid: 0,
            user_namespace: true,
            tracefs: Tracefs::Readable,
        });
        assert_eq!(names(&c.required), ["CAP_BPF", "CAP_PERFMON"]);
        assert!(c.required[0].to_string().contains("user namespace"));
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("         0          0          1\n"));
        assert!(!is_identity_map("         0       1000          1\n"));
    }

    #[test]
    fn the_reduced_set_as_nobody_lacks_nothing() {
        let reduced = [CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE];
        // With CAP_DAC_READ_SEARCH the agent reads tracefs.
        let c = run(host(&reduced, 65534, Tracefs::Readable));
        assert_eq!(c, Check::default());
    }

    #[test]
    fn names_each_missing_required_capability() {
        let c = run(host(&[CAP_PERFMON], 0, Tracefs::Readable));
        assert_eq!(names(&c.required), ["CAP_BPF"]);
        assert!(c.required[0]
            .to_string()
            .starts_with("missing CAP_BPF (or CAP_SYS_ADMIN): needed to create the eBPF maps"));
        let c = run(host(&[CAP_BPF], 0, Tracefs::Readable));
        assert_eq!(names(&c.required), ["CAP_PERFMON"]);
        let c = run(host(&[], 0, Tracefs::Readable));
        assert_eq!(names(&c.required), ["CAP_BPF", "CAP_PERFMON"]);
    }

    #[test]
    fn sys_admin_stands_in_for_bpf_and_perfmon() {
        let c = run(host(&[CAP_SYS_ADMIN], 0, Tracefs::NotMounted));
        assert!(c.required.is_empty(), "{:?}", c.required);
    }

    #[test]
    fn unreadable_tracefs_needs_dac_read_search() {
        let c = run(host(&[CAP_BPF, CAP_PERFMON], 65534, Tracefs::Denied));
        assert_eq!(names(&c.required), ["CAP_DAC_READ_SEARCH"]);
        let text = c.required[0].to_string();
        assert!(
            text.contains(TRACEFS) && text.contains("uid 65534"),
            "{text}"
        );
        // Required, so not listed again as optional.
        assert_eq!(names(&c.optional), ["CAP_SYS_PTRACE"]);
        // Denied although the agent has it: not a capability problem.
        let c = run(host(
            &[CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH],
            65534,
            Tracefs::Denied,
        ));
        assert!(c.required.is_empty());
    }

    #[test]
    fn sys_admin_is_required_only_to_mount_tracefs() {
        let reduced = [CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE];
        let c = run(host(&reduced, 65534, Tracefs::NotMounted));
        assert_eq!(names(&c.required), ["CAP_SYS_ADMIN"]);
        assert!(c.required[0].to_string().contains("not mounted"));
        assert!(run(host(&reduced, 65534, Tracefs::Readable))
            .required
            .is_empty());
    }

    #[test]
    fn optional_capabilities_are_reported_with_what_degrades() {
        let c = run(host(&[CAP_BPF, CAP_PERFMON], 0, Tracefs::Readable));
        assert!(c.required.is_empty());
        assert_eq!(
            names(&c.optional),
            ["CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"]
        );
        assert!(c.optional[1].to_string().contains("remote endpoint"));
    }

    #[test]
    fn exports_one_gauge_per_relevant_capability() {
        let mut registry = Registry::default();
        register(&mut registry, CapSet::of(&[CAP_BPF, CAP_PERFMON]));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encode");
        assert!(text.contains("mcp_probe_capability{capability=\"CAP_BPF\"} 1"));
        assert!(text.contains("mcp_probe_capability{capability=\"CAP_PERFMON\"} 1"));
        assert!(text.contains("mcp_probe_capability{capability=\"CAP_SYS_PTRACE\"} 0"));
        assert!(text.contains("mcp_probe_capability{capability=\"CAP_SYS_ADMIN\"} 0"));
    }
}
