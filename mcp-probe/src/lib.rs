//! mcp-probe's agent as a library: everything from a ring buffer record to a Prometheus
//! series. The binary (`main.rs`) wires it to the kernel; the fuzz targets
//! (`mcp-probe/fuzz`) and benchmarks drive the same code without one.
//!
//! Data flows one way: loader -> reader (ring buffer) -> decode -> pipeline (reassembly,
//! framing, JSON-RPC) -> correlate (pairing) -> metrics -> server (/metrics), and from
//! correlate to the sinks (request log, OTLP spans).
//!
//! The `kernel` feature (on by default) adds the modules that load and read the eBPF
//! programs (`kernel`); without it the crate builds on any host, with no BPF toolchain.
//! The `testing` feature exposes the test scaffolding (`testing`) to the fuzz targets.

pub mod correlate;
pub mod decode;
pub mod health;
pub mod identity;
#[cfg(feature = "kernel")]
pub mod kernel;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod privileges;
pub mod protocols;
pub mod server;
pub mod sessions;
pub mod sinks;
pub mod sockets;
/// Synthetic kernel records, a fake kernel, and the fuzz harnesses (`mcp-probe/fuzz`):
/// compiled for unit tests and, through the `testing` feature, for the fuzz targets.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// The maps of the per-record path. foldhash is several times faster than std's SipHash
/// for the short keys used here (ids, pids, inode addresses) and is seeded at random per
/// run, so traffic cannot aim collisions at the tables without knowing the seed.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub(crate) type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;
