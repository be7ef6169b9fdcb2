//! The drain loop: waits for the ring buffer (woken by the kernel only when a byte threshold
//! is crossed, see design rule 5 in docs/platform.md) or for the drain interval, drains everything in one
//! batch, and runs periodic work. Runs on its own thread; the stream stage and everything after it run here.
//! What reads `/proc` or asks netlink per connection or process runs on the lookup thread
//! ([`crate::lookups`]), whose answers wake this loop too.

use std::{
    os::fd::AsRawFd,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use aya::maps::{MapData, PerCpuArray, PerCpuValues, RingBuf};
use mcp_probe_common::Stat;

use crate::{
    kernel::loader::KernelLog,
    metrics::{AgentMetrics, EventLabels, ReasonLabels},
    model::StreamControl,
    stream::Pipeline,
};

pub struct ReaderConfig {
    pub drain_interval: Duration,
    pub sweep_interval: Duration,
    /// The kernel's wake-up threshold (`--wakeup-bytes`): the timer adapts to it.
    pub wakeup_bytes: u64,
}

/// Runs until `stop` is set.
/// The kernel's outputs the reader drains.
pub struct Kernel {
    pub events: RingBuf<MapData>,
    pub stats: PerCpuArray<MapData, u64>,
    pub log: Option<KernelLog>,
}

pub fn run<C: StreamControl>(
    kernel: Kernel,
    mut pipeline: Pipeline<C>,
    metrics: AgentMetrics,
    config: ReaderConfig,
    stop: Arc<AtomicBool>,
) {
    let Kernel {
        mut events,
        stats,
        log: mut kernel_log,
    } = kernel;
    let mut kernel = KernelStats::new(stats, metrics);
    let mut last_sweep = Instant::now();
    let busy_ms = config
        .drain_interval
        .as_millis()
        .clamp(1, IDLE_DRAIN_MS as u128) as i32;
    // The timer adapts to the traffic: a drain that found little (less than an eighth of
    // the wake-up threshold) doubles it, up to IDLE_DRAIN_MS; one that found much (half the
    // threshold) halves it, down to --drain-interval-ms. Every wake-up costs about the same
    // whatever it drains, and the kernel still wakes the agent at --wakeup-bytes, so a
    // burst is drained at once however long the timer.
    let mut timeout_ms = busy_ms;
    let fd = events.as_raw_fd();
    // The lookup thread's signal: records waiting for its answers are handled as soon as
    // they are in, not at the next drain.
    let lookups_fd = pipeline.lookups_fd().unwrap_or(-1);
    loop {
        let mut pfds = [fd, lookups_fd].map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        });
        let wait = timeout_ms.min(sweep_due_ms(last_sweep, config.sweep_interval));
        // SAFETY: two valid pollfds (a negative fd is ignored by poll).
        unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait) };
        if pfds[1].revents & libc::POLLIN != 0 {
            pipeline.on_lookups_signal();
        }
        // Let a burst build up into one batch before draining.
        let mut drained = 0u64;
        while let Some(item) = events.next() {
            drained += item.len() as u64;
            pipeline.on_record_bytes(&item);
        }
        timeout_ms = if drained < config.wakeup_bytes / 8 {
            (timeout_ms * 2).min(IDLE_DRAIN_MS)
        } else if drained > config.wakeup_bytes / 2 {
            (timeout_ms / 2).max(busy_ms)
        } else {
            timeout_ms
        };
        if let Some(log) = kernel_log.as_mut() {
            log.flush();
        }
        let stopping = stop.load(Ordering::Relaxed);
        if stopping || last_sweep.elapsed() >= config.sweep_interval {
            last_sweep = Instant::now();
            pipeline.sweep(monotonic_ns());
            kernel.update();
        }
        if stopping {
            break;
        }
    }
}

/// The longest the drain timer backs off to when little arrives (ms).
const IDLE_DRAIN_MS: i32 = 100;

/// Milliseconds until the next sweep is due (at least 1).
fn sweep_due_ms(last: Instant, every: Duration) -> i32 {
    every
        .saturating_sub(last.elapsed())
        .as_millis()
        .clamp(1, i32::MAX as u128) as i32
}

/// CLOCK_MONOTONIC in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Mirrors the kernel's per-CPU counters into Prometheus counters.
struct KernelStats {
    map: PerCpuArray<MapData, u64>,
    metrics: AgentMetrics,
    last: [u64; mcp_probe_common::STAT_COUNT as usize],
}

impl KernelStats {
    fn new(map: PerCpuArray<MapData, u64>, metrics: AgentMetrics) -> Self {
        Self {
            map,
            metrics,
            last: [0; mcp_probe_common::STAT_COUNT as usize],
        }
    }

    fn update(&mut self) {
        for stat in Stat::ALL {
            let Ok(values) = self.map.get(&(stat as u32), 0) else {
                continue;
            };
            if stat == Stat::RingHighWater {
                let high = values.iter().copied().max().unwrap_or(0);
                self.metrics.ring_high_water.set(high as i64);
                // Start the next interval from zero (a racing producer at worst loses one
                // observation of this interval).
                if let Ok(zeros) = PerCpuValues::try_from(vec![0u64; values.len()]) {
                    let _ = self.map.set(stat as u32, zeros, 0);
                }
                continue;
            }
            let total: u64 = values.iter().sum();
            let delta = total.saturating_sub(self.last[stat as usize]);
            self.last[stat as usize] = total;
            if delta == 0 {
                continue;
            }
            let m = &self.metrics;
            let reason = |r| ReasonLabels { reason: r };
            match stat {
                Stat::RecordsSubmitted => m.kernel_records.inc_by(delta),
                Stat::RingbufFullRecords => m
                    .lost_records
                    .get_or_create(&reason("ringbuf_full"))
                    .inc_by(delta),
                Stat::RingbufFullBytes => m
                    .lost_bytes
                    .get_or_create(&reason("ringbuf_full"))
                    .inc_by(delta),
                Stat::ReadFailedRecords => m
                    .lost_records
                    .get_or_create(&reason("read_failed"))
                    .inc_by(delta),
                Stat::ReadFailedBytes => m
                    .lost_bytes
                    .get_or_create(&reason("read_failed"))
                    .inc_by(delta),
                Stat::TruncatedBytes => m
                    .lost_bytes
                    .get_or_create(&reason("truncated"))
                    .inc_by(delta),
                Stat::FollowedSyscalls => m.followed_syscalls.inc_by(delta),
                Stat::FdLookupFailed => m
                    .kernel_errors
                    .get_or_create(&reason("fd_lookup_failed"))
                    .inc_by(delta),
                Stat::StreamsFollowed => m.streams_followed.inc_by(delta),
                Stat::StreamsIgnored => m
                    .streams_ignored
                    .get_or_create(&reason("not_json"))
                    .inc_by(delta),
                Stat::InflightInsertFailed => m
                    .kernel_errors
                    .get_or_create(&reason("inflight_map_full"))
                    .inc_by(delta),
                Stat::RingHighWater => 0, // handled above
                Stat::PrefillUsed => m
                    .kernel_events
                    .get_or_create(&EventLabels {
                        event: "blocked_syscall_captured",
                    })
                    .inc_by(delta),
                Stat::PrefillStale => m
                    .kernel_events
                    .get_or_create(&EventLabels {
                        event: "blocked_syscall_stale",
                    })
                    .inc_by(delta),
                Stat::FdStale => m
                    .kernel_events
                    .get_or_create(&EventLabels {
                        event: "fd_reclassified",
                    })
                    .inc_by(delta),
                Stat::TruncatedSyscalls => m
                    .kernel_errors
                    .get_or_create(&reason("truncated_syscalls"))
                    .inc_by(delta),
            };
        }
    }
}
