//! Who a process is: the MCP server name it announced (`serverInfo.name`), or a name
//! derived from its executable and arguments for processes whose handshake the agent never
//! saw (servers started before the agent, or the 2026-07-28 stateless protocol).

use std::sync::Arc;

use crate::{host::Host, HashMap};

/// What the host says about a process, read once while it runs (on the lookup thread).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// Clock ticks after boot: tells a reused pid from the process first seen.
    pub start_time: Option<u64>,
    /// The name derived from its command line (never the command line itself: arguments
    /// can hold credentials).
    pub derived_name: Option<String>,
    pub uid: Option<u32>,
}

impl Identity {
    pub fn read(host: &dyn Host, tgid: u32) -> Self {
        // The start time first: should the pid be reused between the reads, the name
        // belongs to a process younger than the start time kept, so the next sweep (which
        // compares start times) forgets it and the name is read again; the other order
        // would pin the old process's name on the new one.
        let start_time = host.process_start_time(tgid);
        let cmdline = host.process_cmdline(tgid).unwrap_or_default();
        Self {
            start_time,
            derived_name: derive_name(&cmdline),
            uid: host.process_uid(tgid),
        }
    }
}

/// Per-process identity cache, keyed by tgid and checked against the process start time
/// so a reused pid never inherits an old name. Filled from [`Identity`] answers; nothing
/// here reads a process's files except the periodic liveness checks.
pub struct Processes {
    /// Where start times are read for liveness.
    host: Arc<dyn Host>,
    by_tgid: HashMap<u32, ProcessInfo>,
}

struct ProcessInfo {
    /// `None` until the process is identified.
    start_time: Option<u64>,
    derived_name: String,
    uid: Option<u32>,
    identified: bool,
}

impl ProcessInfo {
    fn unidentified(tgid: u32, comm: &str) -> Self {
        Self {
            start_time: None,
            derived_name: fallback_name(tgid, comm),
            uid: None,
            identified: false,
        }
    }
}

fn fallback_name(tgid: u32, comm: &str) -> String {
    if comm.is_empty() {
        format!("pid-{tgid}")
    } else {
        comm.to_owned()
    }
}

impl Processes {
    pub fn new(host: Arc<dyn Host>) -> Self {
        Self {
            host,
            by_tgid: HashMap::default(),
        }
    }

    /// The name derived from the process's command line (or its comm, or its pid while
    /// it is not identified).
    pub fn server_name(&mut self, tgid: u32) -> String {
        self.by_tgid
            .entry(tgid)
            .or_insert_with(|| ProcessInfo::unidentified(tgid, ""))
            .derived_name
            .clone()
    }

    /// Notes a process seen in traffic (named `comm` by the kernel) until it is identified.
    pub fn observe(&mut self, tgid: u32, comm: &str) {
        self.by_tgid
            .entry(tgid)
            .or_insert_with(|| ProcessInfo::unidentified(tgid, comm));
    }

    /// Whether `tgid` is identified already.
    pub fn is_identified(&self, tgid: u32) -> bool {
        self.by_tgid.get(&tgid).is_some_and(|i| i.identified)
    }

    /// What the host said about `tgid`.
    pub fn identified(&mut self, tgid: u32, identity: Identity) {
        let info = self
            .by_tgid
            .entry(tgid)
            .or_insert_with(|| ProcessInfo::unidentified(tgid, ""));
        tracing::debug!(tgid, name = ?identity.derived_name, "process identified");
        if let Some(name) = identity.derived_name {
            info.derived_name = name;
        }
        info.start_time = identity.start_time;
        info.uid = identity.uid;
        info.identified = true;
    }

    /// The process's uid, once identified.
    pub fn uid(&self, tgid: u32) -> Option<u32> {
        self.by_tgid.get(&tgid)?.uid
    }

    /// The process still runs and is the one we know (not a reused pid).
    pub fn is_alive(&self, tgid: u32) -> bool {
        let known = self.by_tgid.get(&tgid).and_then(|i| i.start_time);
        let now = self.host.process_start_time(tgid);
        now.is_some() && known.is_none_or(|k| Some(k) == now)
    }

    /// Forgets a process that exited.
    pub fn forget(&mut self, tgid: u32) {
        self.by_tgid.remove(&tgid);
    }

    /// Forgets processes that exited or whose pid now belongs to another process.
    pub fn sweep(&mut self) {
        let host = &self.host;
        self.by_tgid.retain(|&tgid, info| {
            let now = host.process_start_time(tgid);
            now.is_some() && (info.start_time.is_none() || now == info.start_time)
        });
    }
}

/// Programs that run a script or package named by a later argument.
const LAUNCHERS: &[&str] = &[
    "python", "python3", "node", "nodejs", "deno", "bun", "uv", "uvx", "npx", "pnpm", "yarn",
    "npm", "ruby", "java", "php", "perl", "sh", "bash", "dash", "env", "tsx", "ts-node", "pipx",
    "poetry",
];
/// Launcher sub-commands that come before the real target.
const SUBCOMMANDS: &[&str] = &["run", "exec", "x", "dlx", "tool"];
/// Directory names that say nothing about the program (walk past them to the package).
const GENERIC_DIRS: &[&str] = &[
    "dist", "build", "lib", "bin", "src", "out", "target", "release", "debug", "cli", "esm", "cjs",
];
/// File stems that say nothing about the program.
const GENERIC_STEMS: &[&str] = &["index", "main", "server", "cli", "__main__", "app", "run"];

/// Derives a readable server name from a command line, e.g.
/// `node /x/node_modules/@modelcontextprotocol/server-everything/dist/index.js stdio`
/// gives `server-everything`, `python3 -m weather_mcp` gives `weather_mcp`.
pub fn derive_name(cmdline: &[String]) -> Option<String> {
    let mut args = cmdline.iter().map(String::as_str).filter(|a| !a.is_empty());
    let mut current = args.next()?;
    loop {
        let base = basename(current);
        let is_launcher = LAUNCHERS.iter().any(|l| {
            base == *l
                || (base.starts_with(l)
                    && base[l.len()..]
                        .chars()
                        .all(|c| c.is_ascii_digit() || c == '.'))
        });
        if !is_launcher {
            return Some(program_name(current));
        }
        // Skip the launcher's own flags; `-m module` / `-c code` end the search.
        let mut next = None;
        while let Some(a) = args.next() {
            if a == "-m" {
                return args
                    .next()
                    .map(|m| m.to_owned())
                    .or_else(|| Some(base.to_owned()));
            }
            if a == "-c" || a == "-e" {
                return Some(base.to_owned());
            }
            if a.starts_with('-') || a.contains('=') && !a.contains('/') || SUBCOMMANDS.contains(&a)
            {
                continue;
            }
            next = Some(a);
            break;
        }
        match next {
            Some(a) => current = a,
            None => return Some(base.to_owned()),
        }
    }
}

fn basename(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// A script path or package spec reduced to its most telling component.
fn program_name(arg: &str) -> String {
    // npm package spec: @scope/name@version -> name
    if arg.starts_with('@') && !arg.contains("/node_modules/") && arg.matches('/').count() == 1 {
        let name = arg.split('/').nth(1).unwrap_or(arg);
        return name.split('@').next().unwrap_or(name).to_owned();
    }
    let parts: Vec<&str> = arg.split('/').filter(|p| !p.is_empty()).collect();
    let Some((&file, dirs)) = parts.split_last() else {
        return arg.to_owned();
    };
    let stem = file.split('.').next().unwrap_or(file);
    if !GENERIC_STEMS.contains(&stem) {
        return if file.ends_with(".py")
            || file.ends_with(".js")
            || file.ends_with(".mjs")
            || file.ends_with(".ts")
            || file.ends_with(".cjs")
        {
            file.to_owned()
        } else {
            stem.split('@').next().unwrap_or(stem).to_owned()
        };
    }
    dirs.iter()
        .rev()
        .find(|d| !GENERIC_DIRS.contains(d))
        .map(|d| (*d).to_owned())
        .unwrap_or_else(|| file.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::FakeHost;

    fn processes() -> (Arc<FakeHost>, Processes) {
        let host = Arc::new(FakeHost::new());
        let processes = Processes::new(host.clone());
        (host, processes)
    }

    /// What the lookup thread would do: read the process, hand the answer on.
    fn identify(host: &FakeHost, processes: &mut Processes, tgid: u32) {
        processes.identified(tgid, Identity::read(host, tgid));
    }

    #[test]
    fn names_a_process_from_its_command_line_else_its_comm_else_its_pid() {
        let (host, mut processes) = processes();
        host.spawn(100, 5_000, &["uvx", "mcp-server-git", "--repository", "."]);
        host.set_exists(101); // runs, but its command line cannot be read
        processes.observe(100, "uvx");
        processes.observe(101, "weather");
        // Until the answer is in, the kernel's comm.
        assert_eq!(processes.server_name(100), "uvx");
        assert!(!processes.is_identified(100));
        identify(&host, &mut processes, 100);
        identify(&host, &mut processes, 101);
        assert!(processes.is_identified(100));
        assert_eq!(processes.server_name(100), "mcp-server-git");
        assert_eq!(processes.server_name(101), "weather");
        // Neither a command line nor a comm: only the pid is left.
        assert_eq!(processes.server_name(102), "pid-102");
    }

    #[test]
    fn keeps_the_name_read_while_the_process_lived() {
        let (host, mut processes) = processes();
        host.spawn(100, 5_000, &["python3", "-m", "weather_mcp"]);
        processes.observe(100, "python3");
        identify(&host, &mut processes, 100);
        // exec() changes the command line, not the process: the name stays.
        host.set_cmdline(100, &["/usr/bin/sleep", "10"]);
        assert_eq!(processes.server_name(100), "weather_mcp");
        assert!(processes.is_alive(100));
    }

    #[test]
    fn a_reused_pid_is_not_the_process_known() {
        let (host, mut processes) = processes();
        host.spawn(100, 5_000, &["python3", "/srv/mcp/weather_server.py"]);
        processes.observe(100, "python3");
        identify(&host, &mut processes, 100);
        assert_eq!(processes.server_name(100), "weather_server.py");

        // The process exits and its pid goes to another one, started later.
        host.exit(100);
        assert!(!processes.is_alive(100));
        host.spawn(100, 9_000, &["/opt/bin/github-mcp-server", "stdio"]);
        assert!(!processes.is_alive(100), "another process holds the pid");
        // Until a sweep, the old name is kept; the sweep compares start times and
        // forgets it, so the new process is identified afresh.
        assert_eq!(processes.server_name(100), "weather_server.py");
        processes.sweep();
        assert!(!processes.is_identified(100));
        identify(&host, &mut processes, 100);
        assert_eq!(processes.server_name(100), "github-mcp-server");
        assert!(processes.is_alive(100));
    }

    #[test]
    fn a_sweep_keeps_live_processes_and_forgets_exited_ones() {
        let (host, mut processes) = processes();
        host.spawn(100, 5_000, &["node", "/x/server-everything/dist/index.js"]);
        host.spawn(200, 6_000, &["node", "/x/server-memory/dist/index.js"]);
        host.spawn(300, 7_000, &["node", "/x/server-time/dist/index.js"]);
        processes.observe(100, "node");
        processes.observe(200, "node");
        processes.observe(300, "node"); // not identified yet: kept while it runs
        identify(&host, &mut processes, 100);
        identify(&host, &mut processes, 200);
        host.exit(200);
        processes.sweep();
        assert_eq!(processes.server_name(100), "server-everything");
        assert_eq!(processes.server_name(300), "node");
        // 200 was forgotten: asked again, only its pid is left.
        assert_eq!(processes.server_name(200), "pid-200");
        assert!(!processes.is_alive(200));
    }

    #[test]
    fn identity_reads_uid_and_start_time() {
        let host = FakeHost::new();
        host.spawn(100, 5_000, &["python3", "-m", "weather_mcp"]);
        let identity = Identity::read(&host, 100);
        assert_eq!(identity.start_time, Some(5_000));
        assert_eq!(identity.derived_name.as_deref(), Some("weather_mcp"));
        assert_eq!(Identity::read(&host, 999), Identity::default());
    }

    fn name(cmd: &str) -> Option<String> {
        derive_name(&cmd.split(' ').map(str::to_owned).collect::<Vec<_>>())
    }

    #[test]
    fn derives_names_from_command_lines() {
        assert_eq!(
            name("/usr/bin/python3.11 /srv/mcp/weather_server.py --stdio").as_deref(),
            Some("weather_server.py")
        );
        assert_eq!(
            name("python3 -u -m weather_mcp").as_deref(),
            Some("weather_mcp")
        );
        assert_eq!(
            name(
                "node /x/node_modules/@modelcontextprotocol/server-everything/dist/index.js stdio"
            )
            .as_deref(),
            Some("server-everything")
        );
        assert_eq!(
            name("npx -y @modelcontextprotocol/server-filesystem@2026.8.31 /tmp").as_deref(),
            Some("server-filesystem")
        );
        assert_eq!(name("uv run server.py").as_deref(), Some("server.py"));
        assert_eq!(
            name("uvx mcp-server-git --repository .").as_deref(),
            Some("mcp-server-git")
        );
        assert_eq!(
            name("/opt/bin/github-mcp-server stdio").as_deref(),
            Some("github-mcp-server")
        );
        assert_eq!(
            name("/usr/bin/env python3 /a/b/src/main.py").as_deref(),
            Some("b")
        );
        assert_eq!(name("bash -c exec thing").as_deref(), Some("bash"));
        assert_eq!(derive_name(&[]), None);
    }
}
