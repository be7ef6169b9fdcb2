#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| mcp_probe::testing::fuzz::http(data));
