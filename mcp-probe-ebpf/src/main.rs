//! mcp-probe's kernel programs.
//!
//! Syscall tracepoints on the read/write family follow every pipe and socket of every
//! process whose first bytes look like JSON-RPC, and copy those bytes into a ring buffer
//! for the agent. Everything else is rejected with one map lookup at syscall entry.
#![no_std]
#![no_main]

mod capture;
mod classify;
mod fdtable;
mod io;
mod lifecycle;
mod maps;
mod stats;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
