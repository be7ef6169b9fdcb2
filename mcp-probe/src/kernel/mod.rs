//! The kernel side of the agent: loading the eBPF programs, and reading and writing their maps.

pub mod blocked;
pub mod loader;
pub mod offsets;
pub mod reader;
pub mod streams;
