//! Sets `RELIQUARY_BUILD_UNIX`, the build time the audit log uses as a
//! clock floor: `SOURCE_DATE_EPOCH` (reproducible builds), else the time of
//! the git commit being built, else a fixed date. Never the wall clock, so
//! builds stay reproducible.

use std::process::Command;

/// 2026-01-01T00:00:00Z, used when neither source is available.
const FALLBACK: u64 = 1_767_225_600;

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=build.rs");
    let from_env = std::env::var("SOURCE_DATE_EPOCH").ok();
    let from_git = || {
        let out = Command::new("git")
            .args(["log", "-1", "--format=%ct"])
            .output()
            .ok()?;
        String::from_utf8(out.stdout).ok()
    };
    let seconds = from_env
        .or_else(from_git)
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(FALLBACK);
    println!("cargo:rustc-env=RELIQUARY_BUILD_UNIX={seconds}");
}
