//! Health of the MCP server processes the agent has identified, and of the agent itself,
//! read from the host (/proc, through [`Host`]) on the sweep, on a thread of its own
//! ([`HealthFeed`]) so that the drain never waits on those reads.
//!
//! Per server name: the number of live processes, the youngest one's uptime (a restart
//! loop shows as an uptime that keeps falling back), the sum of their resident memory,
//! open descriptors and threads, and a monotonic CPU-seconds counter fed by the CPU time
//! each live process used since the previous sweep. Series of a server disappear once no
//! process of it is alive.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        mpsc::{self, SyncSender},
        Arc,
    },
    time::{Duration, Instant},
};

use crate::{
    host::Host,
    metrics::{AgentMetrics, ExitLabels, HealthMetrics, ServerLabels, ShedLookupLabels},
};
use prometheus_client::metrics::{counter::Counter, family::Family};

/// Health work queued for the sampler thread at most; more is shed (and counted).
const QUEUE: usize = 256;

/// What the pipeline hands over: exits as they happen, the server list on each sweep.
enum Work {
    Exit {
        tgid: u32,
        status: u32,
        server: Option<String>,
    },
    Update(Vec<(u32, String)>),
}

/// Where the pipeline sends health work: done at once (tests, fuzzing), or on the
/// sampler thread, in order, through a bounded queue.
pub struct HealthFeed(Feed);

enum Feed {
    Inline(Box<Health>),
    Thread {
        work: SyncSender<Work>,
        /// `mcp_probe_lookups_shed_total`.
        shed: Family<ShedLookupLabels, Counter>,
    },
}

impl From<Health> for HealthFeed {
    fn from(health: Health) -> Self {
        HealthFeed(Feed::Inline(Box::new(health)))
    }
}

impl HealthFeed {
    /// Starts the sampler thread; work it has no room for is counted in
    /// `mcp_probe_lookups_shed_total{lookup="health"}`.
    pub fn spawn(mut health: Health, metrics: AgentMetrics) -> std::io::Result<Self> {
        let (work, queue) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("mcp-probe-health".into())
            .spawn(move || {
                for job in queue {
                    health.run(job);
                }
            })?;
        Ok(HealthFeed(Feed::Thread {
            work,
            shed: metrics.lookups_shed.clone(),
        }))
    }

    /// A watched process exited with wait(2) status `status` (see [`Health::on_exit`]).
    pub fn on_exit(&mut self, tgid: u32, status: u32, server: Option<String>) {
        self.send(Work::Exit {
            tgid,
            status,
            server,
        });
    }

    /// Every live server process the agent knows, with its settled name.
    pub fn update(&mut self, servers: Vec<(u32, String)>) {
        self.send(Work::Update(servers));
    }

    fn send(&mut self, job: Work) {
        match &mut self.0 {
            Feed::Inline(health) => health.run(job),
            Feed::Thread { work, shed } => {
                if work.try_send(job).is_err() {
                    shed.get_or_create(&ShedLookupLabels {
                        lookup: "health",
                        reason: "queue_full",
                    })
                    .inc();
                }
            }
        }
    }
}

/// A server process appearing within this long of one of its name exiting is a restart.
const RESTART_WINDOW: Duration = Duration::from_secs(300);

pub struct Health {
    metrics: HealthMetrics,
    /// Where the samples are read.
    host: Arc<dyn Host>,
    /// Clock ticks per second: the unit of the samples' start and CPU times.
    ticks: f64,
    /// tgid -> (start time, CPU ticks at the previous sweep), to turn CPU time into a counter.
    last_cpu: HashMap<u32, (u64, u64)>,
    /// Server names that have series now.
    exported: HashSet<String>,
    /// Live server processes and their names at the last sweep (exits are named from it).
    names: HashMap<u32, String>,
    /// Server name -> when one of its processes last exited (for restart detection).
    recent_exits: HashMap<String, Instant>,
    agent_cpu_ticks: u64,
}

impl Health {
    pub fn new(metrics: HealthMetrics, host: Arc<dyn Host>) -> Self {
        Self {
            metrics,
            ticks: host.clock_ticks_per_second() as f64,
            host,
            last_cpu: HashMap::new(),
            exported: HashSet::new(),
            names: HashMap::new(),
            recent_exits: HashMap::new(),
            agent_cpu_ticks: 0,
        }
    }

    fn run(&mut self, job: Work) {
        match job {
            Work::Exit {
                tgid,
                status,
                server,
            } => self.on_exit(tgid, status, server),
            Work::Update(servers) => self.update(&servers),
        }
    }

    /// A watched process exited with wait(2) status `status`.
    /// `server` is the name the stitcher knows the process by if it served MCP: a
    /// server that exits before the next sweep has listed it is still counted.
    pub fn on_exit(&mut self, tgid: u32, status: u32, server: Option<String>) {
        let Some(name) = self.names.remove(&tgid).or(server) else {
            return;
        };
        let status = match (status & 0x7f, (status >> 8) & 0xff) {
            (0, code) => format!("exit_{code}"),
            (signal, _) => format!("signal_{signal}"),
        };
        self.metrics
            .exits
            .get_or_create(&ExitLabels {
                mcp_server_name: name.clone(),
                status,
            })
            .inc();
        if self.recent_exits.len() < 4096 {
            self.recent_exits.insert(name, Instant::now());
        }
        self.last_cpu.remove(&tgid);
    }

    /// `servers`: every live server process the agent knows, with its settled name.
    pub fn update(&mut self, servers: &[(u32, String)]) {
        // A new process of a server that exited recently is a restart.
        for (tgid, name) in servers {
            if self.names.contains_key(tgid) {
                continue;
            }
            self.names.insert(*tgid, name.clone());
            if self
                .recent_exits
                .remove(name)
                .is_some_and(|at| at.elapsed() < RESTART_WINDOW)
            {
                self.metrics
                    .restarts
                    .get_or_create(&ServerLabels {
                        mcp_server_name: name.clone(),
                    })
                    .inc();
            }
        }
        self.names
            .retain(|tgid, _| servers.iter().any(|(t, _)| t == tgid));
        self.recent_exits
            .retain(|_, at| at.elapsed() < RESTART_WINDOW);
        let now = self.host.uptime_since_boot().unwrap_or(0.0);
        #[derive(Default)]
        struct Totals {
            processes: i64,
            youngest_uptime: Option<f64>,
            rss: u64,
            fds: u64,
            threads: u64,
            cpu_delta_ticks: u64,
        }
        let mut by_name: HashMap<&str, Totals> = HashMap::new();
        let mut seen = HashSet::new();
        for (tgid, name) in servers {
            let Some(s) = self.host.process_sample(*tgid) else {
                continue;
            };
            seen.insert(*tgid);
            let t = by_name.entry(name.as_str()).or_default();
            t.processes += 1;
            let uptime = (now - s.start_ticks as f64 / self.ticks).max(0.0);
            t.youngest_uptime = Some(t.youngest_uptime.map_or(uptime, |u: f64| u.min(uptime)));
            t.rss += s.rss_bytes;
            t.fds += s.fds;
            t.threads += s.threads;
            let previous = self.last_cpu.insert(*tgid, (s.start_ticks, s.cpu_ticks));
            // A process first seen counts from now; a reused pid (other start time) too.
            t.cpu_delta_ticks += match previous {
                Some((start, cpu)) if start == s.start_ticks => s.cpu_ticks.saturating_sub(cpu),
                _ => 0,
            };
        }
        self.last_cpu.retain(|tgid, _| seen.contains(tgid));
        let m = &self.metrics;
        for (name, t) in &by_name {
            let labels = ServerLabels {
                mcp_server_name: (*name).to_owned(),
            };
            m.processes.get_or_create(&labels).set(t.processes);
            m.uptime
                .get_or_create(&labels)
                .set(t.youngest_uptime.unwrap_or(0.0));
            m.resident_memory.get_or_create(&labels).set(t.rss as i64);
            m.open_fds.get_or_create(&labels).set(t.fds as i64);
            m.threads.get_or_create(&labels).set(t.threads as i64);
            m.cpu_seconds
                .get_or_create(&labels)
                .inc_by(t.cpu_delta_ticks as f64 / self.ticks);
        }
        // Servers with no live process: their series go (the CPU counter too; a returning
        // server starts it again, which rate() handles as a counter reset).
        let live: HashSet<String> = by_name.keys().map(|n| (*n).to_owned()).collect();
        for gone in self.exported.difference(&live) {
            let labels = ServerLabels {
                mcp_server_name: gone.clone(),
            };
            m.processes.remove(&labels);
            m.uptime.remove(&labels);
            m.resident_memory.remove(&labels);
            m.open_fds.remove(&labels);
            m.threads.remove(&labels);
            m.cpu_seconds.remove(&labels);
        }
        self.exported = live;
        self.update_agent();
    }

    fn update_agent(&mut self) {
        let Some(s) = self.host.agent_sample() else {
            return;
        };
        let m = &self.metrics;
        m.agent_resident_memory.set(s.rss_bytes as i64);
        m.agent_cpu_seconds
            .inc_by(s.cpu_ticks.saturating_sub(self.agent_cpu_ticks) as f64 / self.ticks);
        self.agent_cpu_ticks = s.cpu_ticks;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{FakeHost, ProcessSample};

    fn labels(name: &str) -> ServerLabels {
        ServerLabels {
            mcp_server_name: name.to_owned(),
        }
    }

    fn sample(start_ticks: u64, cpu_ticks: u64) -> ProcessSample {
        ProcessSample {
            start_ticks,
            cpu_ticks,
            rss_bytes: 10 << 20,
            fds: 12,
            threads: 3,
        }
    }

    #[test]
    fn sums_the_samples_of_a_servers_live_processes() {
        let host = Arc::new(FakeHost::new());
        host.set_ticks_per_second(100);
        host.set_uptime(1_000.0);
        // Two processes of one server, started 500 s and 900 s after boot.
        host.set_sample(10, sample(50_000, 1_000));
        host.set_sample(11, sample(90_000, 2_000));
        host.set_agent_sample(ProcessSample {
            rss_bytes: 30 << 20,
            cpu_ticks: 250,
            ..ProcessSample::default()
        });
        let metrics = HealthMetrics::default();
        let mut health = Health::new(metrics.clone(), host.clone());
        let servers = [(10, "weather".to_owned()), (11, "weather".to_owned())];
        health.update(&servers);

        let weather = labels("weather");
        assert_eq!(metrics.processes.get(&weather).map(|g| g.get()), Some(2));
        // The youngest process's uptime.
        assert_eq!(metrics.uptime.get(&weather).map(|g| g.get()), Some(100.0));
        assert_eq!(
            metrics.resident_memory.get(&weather).map(|g| g.get()),
            Some(20 << 20)
        );
        assert_eq!(metrics.open_fds.get(&weather).map(|g| g.get()), Some(24));
        assert_eq!(metrics.threads.get(&weather).map(|g| g.get()), Some(6));
        // CPU time counts from the first sweep that sees a process.
        assert_eq!(
            metrics.cpu_seconds.get(&weather).map(|c| c.get()),
            Some(0.0)
        );
        assert_eq!(metrics.agent_resident_memory.get(), 30 << 20);
        assert_eq!(metrics.agent_cpu_seconds.get(), 2.5);

        // A second sweep: 1.5 s and 0.5 s of CPU since; 11's pid was reused by a process
        // of the same name meanwhile, whose CPU time counts from now.
        host.set_sample(10, sample(50_000, 1_150));
        host.set_sample(11, sample(95_000, 40));
        host.set_agent_sample(ProcessSample {
            cpu_ticks: 300,
            ..ProcessSample::default()
        });
        health.update(&servers);
        assert_eq!(
            metrics.cpu_seconds.get(&weather).map(|c| c.get()),
            Some(1.5)
        );
        assert_eq!(metrics.uptime.get(&weather).map(|g| g.get()), Some(50.0));
        assert_eq!(metrics.agent_cpu_seconds.get(), 3.0);

        // 11 exits: only the live process is counted. Then 10: the series go.
        host.exit(11);
        health.update(&servers);
        assert_eq!(metrics.processes.get(&weather).map(|g| g.get()), Some(1));
        host.exit(10);
        health.update(&servers);
        assert!(metrics.processes.get(&weather).is_none());
        assert!(metrics.cpu_seconds.get(&weather).is_none());
    }
}
