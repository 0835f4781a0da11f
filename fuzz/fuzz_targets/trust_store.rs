#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| reliquary_image::fuzzing::trust_store(data));
