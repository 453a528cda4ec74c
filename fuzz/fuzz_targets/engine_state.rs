#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pulse_fuzz::engine_state(data));
