//! mcp-probe's agent as a library: everything from a ring buffer record to a Prometheus
//! series. The binary (`main.rs`) wires it to the kernel; the fuzz targets
//! (`mcp-probe/fuzz`) and benchmarks drive the same code without one.
//!
//! Data flows one way: loader -> reader (ring buffer) -> decode -> pipeline (reassembly,
//! framing, JSON-RPC) -> correlate (pairing) -> metrics -> server (/metrics), and from
//! correlate to the sinks (request log, OTLP spans).
//!
//! The `kernel` feature (on by default) adds the modules that load and read the eBPF
//! programs; without it the crate builds on any host, with no BPF toolchain.

#[cfg(feature = "kernel")]
pub mod blocked;
pub mod correlate;
pub mod decode;
pub mod health;
pub mod identity;
#[cfg(feature = "kernel")]
pub mod kernel_offsets;
#[cfg(feature = "kernel")]
pub mod loader;
pub mod metrics;
pub mod pipeline;
pub mod privileges;
pub mod protocols;
#[cfg(feature = "kernel")]
pub mod reader;
pub mod server;
pub mod sessions;
pub mod sinks;
pub mod sockets;
