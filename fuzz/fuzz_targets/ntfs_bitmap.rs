//! The NTFS used-cluster entry point of capture must return, never panic:
//! the `ntfs` crate panics on some hostile volumes and capture catches
//! that (falling back to every sector of the partition). libFuzzer's panic
//! hook aborts before any unwinding, which would report every caught panic
//! as a crash; this target replaces that hook with one that stays quiet, and
//! treats only a panic that escapes the entry point as a crash. Hangs are
//! caught by libFuzzer's -timeout.
#![no_main]

use std::panic::{catch_unwind, set_hook};

libfuzzer_sys::fuzz_target!(
    init: {
        // Replaces libFuzzer's hook (abort on any panic): a panic caught
        // inside the product is its documented fallback, not a crash.
        set_hook(Box::new(|_| {}));
    },
    |data: &[u8]| {
        if let Err(panic) = catch_unwind(|| reliquary_appliance::fuzzing::ntfs_bitmap(data)) {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            eprintln!("a panic escaped the NTFS used-cluster entry point: {message}");
            std::process::abort();
        }
    }
);
