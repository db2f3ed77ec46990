#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tapline_agent::fuzzing::ebpf_records(data));
