//! Per-CPU counters: every loss and every error ends up here, never swallowed.

use mcp_probe_common::Stat;

use crate::maps::STATS;

/// Keeps the largest value seen (for high-water marks).
#[inline(always)]
pub fn max(stat: Stat, n: u64) {
    if let Some(p) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe {
            if *p < n {
                *p = n;
            }
        }
    }
}

#[inline(always)]
pub fn add(stat: Stat, n: u64) {
    if let Some(p) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while we run.
        unsafe { *p += n };
    }
}
