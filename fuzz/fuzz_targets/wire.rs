#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tapline_agent::fuzzing::wire(data));
