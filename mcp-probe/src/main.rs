//! mcp-probe: measures MCP (Model Context Protocol) traffic of every process on the host from
//! the kernel, and exports Prometheus metrics. The stages live in the library (`lib.rs`);
//! this file parses the command line and wires them together.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use prometheus_client::registry::Registry;

use mcp_probe::{
    health,
    host::{Host, ProcHost},
    kernel::{loader, reader},
    lookups::Lookups,
    metrics::{self, BuildInfoLabels, Metrics},
    privileges, server, sinks,
    stitch::{StitchConfig, Stitcher},
    stream::{Pipeline, PipelineConfig},
};

/// Measures MCP traffic of every process on this host from the kernel (eBPF) and serves
/// Prometheus metrics. Needs root, or CAP_BPF + CAP_PERFMON (+ CAP_DAC_READ_SEARCH when not
/// uid 0); see the README's Privileges section.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address of the metrics endpoint (GET /metrics).
    #[arg(long, env = "MCP_PROBE_LISTEN", default_value = "0.0.0.0:9464")]
    listen: SocketAddr,
    /// A request with no response after this many seconds is counted as a timeout.
    #[arg(long, env = "MCP_PROBE_REQUEST_TIMEOUT_SECONDS", default_value_t = 300)]
    request_timeout_seconds: u64,
    /// Longest message reassembled and parsed; longer ones are counted with their exact
    /// size as oversized.
    #[arg(long, env = "MCP_PROBE_MAX_MESSAGE_BYTES", default_value_t = 16 << 20)]
    max_message_bytes: usize,
    /// Kernel ring buffer size in bytes (power of two, multiple of the page size).
    #[arg(long, env = "MCP_PROBE_RING_BYTES", default_value_t = mcp_probe_common::DEFAULT_RING_BYTES)]
    ring_bytes: u32,
    /// The kernel wakes the agent when this many bytes are waiting; otherwise it drains
    /// every --drain-interval-ms.
    #[arg(long, env = "MCP_PROBE_WAKEUP_BYTES", default_value_t = 1 << 20)]
    wakeup_bytes: u64,
    /// Drain interval in milliseconds.
    #[arg(long, env = "MCP_PROBE_DRAIN_INTERVAL_MS", default_value_t = 5)]
    drain_interval_ms: u64,
    /// Distinct mcp_method_name values before new ones become `_other`.
    #[arg(long, default_value_t = 256)]
    max_methods: usize,
    /// Distinct gen_ai_tool_name values before new ones become `_other`.
    #[arg(long, default_value_t = 1024)]
    max_tools: usize,
    /// Distinct gen_ai_prompt_name values before new ones become `_other`.
    #[arg(long, default_value_t = 256)]
    max_prompts: usize,
    /// Distinct mcp_server_name values before new ones become `_other`.
    #[arg(long, default_value_t = 256)]
    max_servers: usize,
    /// Distinct client_name values (clientInfo.name) before new ones become `_other`.
    #[arg(long, default_value_t = 256)]
    max_clients: usize,
    /// Distinct user values before new ones become `_other`.
    #[arg(long, default_value_t = 1024)]
    max_users: usize,
    /// Distinct error_type values (JSON-RPC error codes) before new ones become `_other`.
    #[arg(long, default_value_t = 128)]
    max_error_types: usize,
    /// Label combinations per per-request metric family and side; past it the
    /// traffic-derived labels of new combinations become `_other`.
    #[arg(long, default_value_t = 5_000)]
    max_series: usize,
    /// Stream directions reassembled at once; past it the least recently active go.
    #[arg(long, env = "MCP_PROBE_MAX_STREAMS", default_value_t = 32_768)]
    max_streams: usize,
    /// Bytes held for partial messages across all streams; past it a growing message is
    /// only sized (counted as oversized), not parsed.
    #[arg(long, env = "MCP_PROBE_MAX_BUFFERED_BYTES", default_value_t = 256 << 20)]
    max_buffered_bytes: usize,
    /// Requests waiting for their response, in all.
    #[arg(long, default_value_t = 100_000)]
    max_pending_requests: usize,
    /// Requests waiting for their response per process and direction.
    #[arg(long, default_value_t = 10_000)]
    max_pending_per_process: usize,
    /// MCP sessions tracked at once.
    #[arg(long, default_value_t = 100_000)]
    max_sessions: usize,
    /// Log format.
    #[arg(long, env = "MCP_PROBE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Request log and OTLP trace export.
    #[command(flatten)]
    sinks: sinks::SinkArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format);
    // Before loading anything: name a missing capability rather than fail on EPERM.
    let capabilities = privileges::preflight(std::path::Path::new(loader::TRACEFS))?;

    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    if let Some(effective) = capabilities {
        privileges::register(&mut registry, effective);
    }
    // Before loading anything: a request log that cannot be opened stops the agent here.
    let sinks = sinks::Sinks::start(&args.sinks, &mut registry)
        .context("cannot start the request log or the OTLP export")?;
    let kernel_release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    metrics
        .agent
        .build_info
        .get_or_create(&BuildInfoLabels {
            version: env!("CARGO_PKG_VERSION"),
            kernel_release: kernel_release.trim().to_owned(),
        })
        .set(1);

    // Every fact about processes and sockets is read from this host's /proc through one
    // interface.
    let host: Arc<dyn Host> = Arc::new(ProcHost::default());
    let loaded = loader::load(&loader::LoadOptions {
        ring_bytes: args.ring_bytes,
        wakeup_bytes: args.wakeup_bytes,
        host: host.clone(),
    })
    .context("cannot start the kernel side")?;
    // Loading parsed the kernel's BTF twice (for our offsets and for aya's relocations),
    // some 20 MB of heap that is free now: give it back rather than keep it resident.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    tracing::info!(
        hooks = loaded.attached.len(),
        "eBPF programs attached: {}",
        loaded.attached.join(", ")
    );
    tracing::info!(
        threads = loaded.blocked.written,
        not_written = loaded.blocked.failed,
        "threads already blocked in a read/write-family syscall: their next message is captured"
    );
    metrics.agent.ring_size.set(i64::from(args.ring_bytes));
    // 1 for each hook attached, 0 for an optional one that could not be.
    let hooks = loaded
        .attached
        .iter()
        .map(|h| (h, 1))
        .chain(loaded.failed.iter().map(|h| (h, 0)));
    for (hook, up) in hooks {
        metrics
            .agent
            .hooks
            .get_or_create(&metrics::HookLabels { hook: hook.clone() })
            .set(up);
    }
    let loader::Loaded {
        ebpf,
        events,
        stats,
        streams,
        kernel_log,
        ..
    } = loaded;

    let stitch_config = StitchConfig {
        request_timeout_ns: args.request_timeout_seconds.saturating_mul(1_000_000_000),
        max_methods: args.max_methods,
        max_tools: args.max_tools,
        max_prompts: args.max_prompts,
        max_servers: args.max_servers,
        max_pending: args.max_pending_requests,
        max_pending_per_process: args.max_pending_per_process,
        max_clients: args.max_clients,
        max_users: args.max_users,
        max_error_types: args.max_error_types,
        max_series: args.max_series,
        max_sessions: args.max_sessions,
    };
    let pipeline_config = PipelineConfig {
        max_message_bytes: args.max_message_bytes,
        max_streams: args.max_streams,
        max_buffered_bytes: args.max_buffered_bytes,
    };
    export_limits(&metrics.agent, &args);
    metrics.agent.init_loss_series();
    let stitcher = Stitcher::recording(stitch_config, metrics.clone(), sinks, host.clone());
    let pipeline = Pipeline::new(
        pipeline_config,
        stitcher,
        health::HealthFeed::spawn(
            health::Health::new(metrics.health.clone(), host.clone()),
            metrics.agent.clone(),
        )
        .context("cannot start the health thread")?,
        metrics.agent.clone(),
        streams,
        host.clone(),
        Lookups::spawn(host, metrics.agent.clone()).context("cannot start the lookup thread")?,
    );

    let stop = Arc::new(AtomicBool::new(false));
    let reader_thread = {
        let stop = stop.clone();
        let agent_metrics = metrics.agent.clone();
        let config = reader::ReaderConfig {
            drain_interval: Duration::from_millis(args.drain_interval_ms),
            wakeup_bytes: args.wakeup_bytes,
            sweep_interval: Duration::from_secs(1),
        };
        std::thread::Builder::new()
            .name("mcp-probe-reader".into())
            .spawn(move || {
                let kernel = reader::Kernel {
                    events,
                    stats,
                    log: kernel_log,
                };
                reader::run(kernel, pipeline, agent_metrics, config, stop)
            })
            .context("cannot start the reader thread")?
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let registry = Arc::new(registry);
    let served = runtime.block_on(async {
        let listener = server::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        tracing::info!(address = %args.listen, "serving metrics at /metrics");
        server::serve(listener, registry, shutdown_signal())
            .await
            .context("metrics server failed")
    });

    tracing::info!("shutting down: draining and detaching");
    stop.store(true, Ordering::Relaxed);
    if reader_thread.join().is_err() {
        tracing::error!("reader thread panicked");
    }
    drop(ebpf); // detaches every program and frees the maps
    served
}

/// The configured bounds, as `mcp_probe_limit{limit}`.
fn export_limits(m: &metrics::AgentMetrics, args: &Args) {
    for (limit, value) in [
        ("max_message_bytes", args.max_message_bytes),
        ("max_streams", args.max_streams),
        ("max_buffered_bytes", args.max_buffered_bytes),
        ("max_pending_requests", args.max_pending_requests),
        ("max_pending_per_process", args.max_pending_per_process),
        ("max_sessions", args.max_sessions),
        ("max_methods", args.max_methods),
        ("max_tools", args.max_tools),
        ("max_prompts", args.max_prompts),
        ("max_servers", args.max_servers),
        ("max_clients", args.max_clients),
        ("max_users", args.max_users),
        ("max_error_types", args.max_error_types),
        ("max_series", args.max_series),
        ("ring_bytes", args.ring_bytes as usize),
    ] {
        m.set_limit(limit, value);
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
