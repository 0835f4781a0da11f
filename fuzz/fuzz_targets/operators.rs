#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| reliquary_appliance::fuzzing::operators(data));
