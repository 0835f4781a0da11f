//! Loop devices for this crate's unit tests. The end-to-end tests have the
//! documented equivalent in `reliquary-tests` (`LoopDevice`); this small copy
//! exists because a library's unit tests cannot depend on that crate.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Prints why a test is skipped, or panics when `RELIQUARY_REQUIRE_ALL=1`.
pub(crate) fn skip_or_fail(reason: &str) {
    if std::env::var("RELIQUARY_REQUIRE_ALL").as_deref() == Ok("1") {
        panic!("required test cannot run: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// A loop device over a sparse temporary file, detached on drop.
pub(crate) struct TestLoop {
    path: PathBuf,
    _backing: tempfile::NamedTempFile,
}

impl TestLoop {
    /// Attaches a loop device of `size` bytes with partition scanning, or
    /// returns `None` after [`skip_or_fail`] when that is impossible here.
    pub(crate) fn new(size: u64, sector_size: Option<u32>) -> Option<Self> {
        if !running_as_root() {
            skip_or_fail("loop-device tests need root");
            return None;
        }
        let backing = tempfile::NamedTempFile::new().expect("create backing file");
        backing.as_file().set_len(size).expect("size backing file");
        let mut cmd = Command::new("losetup");
        cmd.args(["-f", "--show", "-P"]);
        if let Some(s) = sector_size {
            cmd.arg("--sector-size").arg(s.to_string());
        }
        let out = match cmd.arg(backing.path()).output() {
            Ok(out) if out.status.success() => out,
            Ok(out) => {
                skip_or_fail(&format!(
                    "losetup failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
                return None;
            }
            Err(e) => {
                skip_or_fail(&format!("cannot run losetup: {e}"));
                return None;
            }
        };
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Some(TestLoop {
            path,
            _backing: backing,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// `/proc/self` belongs to the effective user; avoids an extra nix feature.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

impl Drop for TestLoop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}
