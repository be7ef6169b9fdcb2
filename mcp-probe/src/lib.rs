//! mcp-probe's agent as a library: everything from a ring buffer record to a Prometheus
//! series. The binary (`main.rs`) wires it to the kernel; the fuzz targets
//! (`mcp-probe/fuzz`) and the unit tests drive the same code without one.
//!
//! Data flows one way, and the modules below are listed in its order: the kernel side
//! loads the programs and drains the ring buffer; each record is decoded, followed per
//! stream, framed by its protocol and parsed as JSON-RPC; the stitcher pairs requests with
//! responses and hands finished exchanges on as events; the metrics recorder and the sinks
//! consume them; the server serves /metrics. `docs/architecture.md` has the map.
//!
//! The `kernel` feature (on by default) adds the modules that load and read the eBPF
//! programs; without it the crate builds on any host, with no BPF toolchain. The `testing`
//! feature exposes the test scaffolding to the fuzz targets.

/// Ring buffer record -> `Record`.
pub mod decode;
/// The events the stitcher hands on, and the `Consumer` trait of their consumers.
pub mod events;
/// Server health (uptime, memory, CPU, descriptors) from the host.
pub mod health;
/// Every fact read from /proc, behind one interface (`Host`) that tests fake.
pub mod host;
/// Process names from command lines, cached per process.
pub mod identity;
/// Loading the eBPF programs, BTF offsets, blocked-syscall prefill, the ring reader.
#[cfg(feature = "kernel")]
pub mod kernel;
/// Caps on label values and label combinations learned from traffic.
pub mod labels;
/// Lookups that read /proc or netlink, on their own thread.
pub mod lookups;
/// The Prometheus families, and the recorder that turns events into series.
pub mod metrics;
/// Vocabulary every stage shares: stream key, transport, server, side, observation.
pub mod model;
/// The capabilities the agent runs with, checked before loading anything.
pub mod privileges;
/// The protocol contract (`Framer`) and its implementations: JSON lines, HTTP with SSE,
/// JSON-RPC.
pub mod protocols;
/// The /metrics endpoint.
pub mod server;
/// Request log and OTLP spans: consumers of the same events.
pub mod sinks;
/// What a socket is (from the kernel's record, else the host) and who serves an address.
pub mod sockets;
/// Pairing requests with responses, naming servers, sessions, clients -> events.
pub mod stitch;
/// Per-stream state: one connection per stream key, reassembly, budgets, delivery.
pub mod stream;
/// Synthetic kernel records, a fake kernel, and the fuzz harnesses: compiled for unit
/// tests and, through the `testing` feature, for the fuzz targets.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// The maps of the per-record path. foldhash is several times faster than std's SipHash
/// for the short keys used here (ids, pids, inode addresses) and is seeded at random per
/// run, so traffic cannot aim collisions at the tables without knowing the seed.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
