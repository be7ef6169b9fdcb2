//! Test scaffolding: synthetic kernel records, a fake kernel, and the fuzz harnesses.

pub mod fake;
pub mod fuzz;
pub mod generator;
