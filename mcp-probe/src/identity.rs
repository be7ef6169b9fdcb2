//! Who a process is: the MCP server name it announced (`serverInfo.name`), or a name
//! derived from its executable and arguments for processes whose handshake the agent never
//! saw (servers started before the agent, or the 2026-07-28 stateless protocol).

use std::sync::Arc;

use crate::{host::Host, HashMap};

/// Per-process identity cache, keyed by tgid and checked against the process start time
/// so a reused pid never inherits an old name.
pub struct Processes {
    /// Where command lines and start times are read.
    host: Arc<dyn Host>,
    by_tgid: HashMap<u32, ProcessInfo>,
}

struct ProcessInfo {
    start_time: Option<u64>,
    derived_name: String,
}

impl Processes {
    pub fn new(host: Arc<dyn Host>) -> Self {
        Self {
            host,
            by_tgid: HashMap::default(),
        }
    }

    /// The name derived from the process's command line (or its comm).
    pub fn server_name(&mut self, tgid: u32) -> String {
        self.info(tgid, "").derived_name.clone()
    }

    /// Notes a process seen in traffic; its command line is read once, now, while it runs.
    pub fn observe(&mut self, tgid: u32, comm: &str) {
        self.info(tgid, comm);
    }

    /// The process still runs and is the one we know (not a reused pid).
    pub fn is_alive(&self, tgid: u32) -> bool {
        let known = self.by_tgid.get(&tgid).map(|i| i.start_time);
        let now = self.host.process_start_time(tgid);
        now.is_some() && known.is_none_or(|k| k == now)
    }

    fn info(&mut self, tgid: u32, comm: &str) -> &mut ProcessInfo {
        let host = &self.host;
        self.by_tgid.entry(tgid).or_insert_with(|| {
            // The start time first: should the pid be reused between the two reads, the
            // name belongs to a process younger than the start time kept, so the next
            // sweep (which compares start times) forgets it and the name is read again;
            // the other order would pin the old process's name on the new one.
            let start_time = host.process_start_time(tgid);
            let cmdline = host.process_cmdline(tgid).unwrap_or_default();
            let derived_name = derive_name(&cmdline).unwrap_or_else(|| {
                if comm.is_empty() {
                    format!("pid-{tgid}")
                } else {
                    comm.to_owned()
                }
            });
            // Never the command line: arguments can hold credentials.
            tracing::debug!(tgid, comm, name = %derived_name, "process identified");
            ProcessInfo {
                start_time,
                derived_name,
            }
        })
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
            now.is_some() && now == info.start_time
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

    #[test]
    fn names_a_process_from_its_command_line_else_its_comm_else_its_pid() {
        let (host, mut processes) = processes();
        host.spawn(100, 5_000, &["uvx", "mcp-server-git", "--repository", "."]);
        host.set_exists(101); // runs, but its command line cannot be read
        processes.observe(100, "uvx");
        processes.observe(101, "weather");
        assert_eq!(processes.server_name(100), "mcp-server-git");
        assert_eq!(processes.server_name(101), "weather");
        // Neither a command line nor a comm: only the pid is left.
        assert_eq!(processes.server_name(102), "pid-102");
    }

    #[test]
    fn reads_a_command_line_once_while_the_process_lives() {
        let (host, mut processes) = processes();
        host.spawn(100, 5_000, &["python3", "-m", "weather_mcp"]);
        processes.observe(100, "python3");
        // exec() changes the command line, not the process: the name stays.
        host.set_cmdline(100, &["/usr/bin/sleep", "10"]);
        assert_eq!(processes.server_name(100), "weather_mcp");
        assert!(processes.is_alive(100));
    }

    #[test]
    fn a_reused_pid_is_not_the_process_known_and_gets_its_own_name() {
        let (host, mut processes) = processes();
        host.spawn(100, 5_000, &["python3", "/srv/mcp/weather_server.py"]);
        processes.observe(100, "python3");
        assert_eq!(processes.server_name(100), "weather_server.py");

        // The process exits and its pid goes to another one, started later.
        host.exit(100);
        assert!(!processes.is_alive(100));
        host.spawn(100, 9_000, &["/opt/bin/github-mcp-server", "stdio"]);
        assert!(!processes.is_alive(100), "another process holds the pid");
        // Until a sweep, the old name is kept; the sweep compares start times.
        assert_eq!(processes.server_name(100), "weather_server.py");
        processes.sweep();
        assert_eq!(processes.server_name(100), "github-mcp-server");
        assert!(processes.is_alive(100));
    }

    #[test]
    fn a_sweep_keeps_live_processes_and_forgets_exited_ones() {
        let (host, mut processes) = processes();
        host.spawn(100, 5_000, &["node", "/x/server-everything/dist/index.js"]);
        host.spawn(200, 6_000, &["node", "/x/server-memory/dist/index.js"]);
        processes.observe(100, "node");
        processes.observe(200, "node");
        host.exit(200);
        processes.sweep();
        // 100 is kept: changing its command line now does not rename it.
        host.set_cmdline(100, &["bun", "other.js"]);
        assert_eq!(processes.server_name(100), "server-everything");
        // 200 was forgotten: asked again, it is read again (and is gone: its pid only).
        assert_eq!(processes.server_name(200), "pid-200");
        assert!(!processes.is_alive(200));
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
