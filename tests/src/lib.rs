//! Helpers shared by the end-to-end tests.

pub mod hostile;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Environment variable that turns every skip into a failure (set it in CI
/// and on the appliance test rig, where root and `losetup` must be there).
pub const REQUIRE_ALL_ENV: &str = "RELIQUARY_REQUIRE_ALL";

/// Reports that a test cannot run here and why. Prints `SKIPPED: reason` and
/// returns, so the caller should `return` right after; panics instead when
/// `RELIQUARY_REQUIRE_ALL=1`, so a rig that should run everything never
/// passes by skipping.
pub fn skip_or_fail(reason: &str) {
    if std::env::var(REQUIRE_ALL_ENV).as_deref() == Ok("1") {
        panic!("{REQUIRE_ALL_ENV}=1 but this test cannot run: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// Whether the tests run with an effective uid of 0 (`/proc/self` belongs to
/// the effective user).
pub fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A loop device over a sparse temporary file, attached with partition
/// scanning (`losetup -f --show -P`) and detached when dropped.
///
/// ```no_run
/// # use reliquary_tests::LoopDevice;
/// let Some(lo) = LoopDevice::attach(64 << 20, None) else { return };
/// // lo.path() is /dev/loopN, lo.backing_file() the sparse file behind it.
/// ```
#[derive(Debug)]
pub struct LoopDevice {
    path: PathBuf,
    backing: tempfile::NamedTempFile,
}

impl LoopDevice {
    /// Attaches a loop device of `size` bytes (zero-filled, sparse), with a
    /// logical sector size of `sector_size` bytes if given (512 otherwise).
    /// Returns `None` after [`skip_or_fail`] when not root or `losetup` fails.
    pub fn attach(size: u64, sector_size: Option<u32>) -> Option<LoopDevice> {
        let backing = match tempfile::NamedTempFile::new() {
            Ok(f) => f,
            Err(e) => panic!("cannot create a loop backing file: {e}"),
        };
        if let Err(e) = backing.as_file().set_len(size) {
            panic!("cannot size the loop backing file to {size} bytes: {e}");
        }
        Self::attach_file(backing, sector_size)
    }

    /// Attaches a loop device over an existing file (for example a disk
    /// image built with `sfdisk`), which is deleted when the device is
    /// dropped.
    pub fn attach_file(
        backing: tempfile::NamedTempFile,
        sector_size: Option<u32>,
    ) -> Option<LoopDevice> {
        Self::attach_file_with(backing, sector_size, &[])
    }

    /// Attaches a read-only loop device (`losetup -r`) of `size` bytes.
    pub fn attach_read_only(size: u64, sector_size: Option<u32>) -> Option<LoopDevice> {
        let backing = match tempfile::NamedTempFile::new() {
            Ok(f) => f,
            Err(e) => panic!("cannot create a loop backing file: {e}"),
        };
        if let Err(e) = backing.as_file().set_len(size) {
            panic!("cannot size the loop backing file to {size} bytes: {e}");
        }
        Self::attach_file_with(backing, sector_size, &["-r"])
    }

    /// Like [`attach_file`](Self::attach_file), with extra `losetup`
    /// arguments (for example `-r`).
    pub fn attach_file_with(
        backing: tempfile::NamedTempFile,
        sector_size: Option<u32>,
        extra_args: &[&str],
    ) -> Option<LoopDevice> {
        if !running_as_root() {
            skip_or_fail("loop devices need root");
            return None;
        }
        let mut cmd = Command::new("losetup");
        cmd.args(["-f", "--show", "-P"]).args(extra_args);
        if let Some(s) = sector_size {
            cmd.arg("--sector-size").arg(s.to_string());
        }
        let out = match cmd.arg(backing.path()).output() {
            Ok(out) => out,
            Err(e) => {
                skip_or_fail(&format!("cannot run losetup: {e}"));
                return None;
            }
        };
        if !out.status.success() {
            skip_or_fail(&format!(
                "losetup failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            return None;
        }
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Some(LoopDevice { path, backing })
    }

    /// The device node, `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The kernel name, `loopN`.
    pub fn name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    /// The file behind the device.
    pub fn backing_file(&self) -> &Path {
        self.backing.path()
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // Partition nodes a test added (`partx -a`) hold the device: without
        // removing them, `losetup -d` only marks it for autoclear, and the
        // device and its deleted backing file outlive the test.
        let _ = Command::new("partx")
            .arg("-d")
            .arg(&self.path)
            .stderr(std::process::Stdio::null())
            .status();
        // Retry briefly: udev or a just-closed mount can hold it for a moment.
        for _ in 0..10 {
            match Command::new("losetup").arg("-d").arg(&self.path).status() {
                Ok(status) if status.success() => return,
                _ => std::thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
        eprintln!("warning: could not detach {}", self.path.display());
    }
}

/// The `reliquary` binary of the current build profile: walks up from this
/// test executable (`target/<profile>/deps/test-…`) to `target/<profile>/`.
/// Build it first (`cargo build -p reliquary-appliance`, or `cargo test
/// --workspace`, which builds it because the workspace includes it).
pub fn reliquary_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no current exe: {e}"));
    for dir in exe.ancestors().skip(1) {
        let candidate = dir.join("reliquary");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "cannot find the reliquary binary above {}; run `cargo build -p reliquary-appliance`",
        exe.display()
    );
}

/// Runs `reliquary` with `args`, writing `stdin` (a PIN, say) to its
/// standard input, and returns what it printed.
pub fn reliquary_with_stdin(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(reliquary_bin())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run reliquary {args:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .unwrap_or_else(|e| panic!("cannot write reliquary {args:?}'s stdin: {e}"));
    child.wait_with_output().expect("wait for reliquary")
}

/// The text of the QR code on `pdf`'s first page, rendered at 150 dpi with
/// `pdftoppm` beside it and read with `zbarimg --raw`; `None` when there
/// is no QR code to read.
pub fn scan_qr(pdf: &Path) -> Option<String> {
    let prefix = pdf.with_extension("qr");
    // -singlefile writes PREFIX.png.
    let png = pdf.with_extension("qr.png");
    let rendered = Command::new("pdftoppm")
        .args(["-r", "150", "-png", "-f", "1", "-l", "1", "-singlefile"])
        .arg(pdf)
        .arg(&prefix)
        .status()
        .expect("pdftoppm");
    assert!(rendered.success());
    let out = Command::new("zbarimg")
        .args(["-q", "--raw"])
        .arg(&png)
        .output()
        .expect("zbarimg");
    out.status
        .success()
        .then(|| String::from_utf8(out.stdout).expect("utf8 QR text"))
}

/// A binary of the current build profile, found like [`reliquary_bin`]:
/// `target/<profile>/<name>` above this test executable. Build it first
/// (`cargo build -p recovery-tui`, or `cargo test --workspace`, which builds
/// every workspace binary).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("no current exe: {e}"));
    for dir in exe.ancestors().skip(1) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "cannot find the {name} binary above {}; build it first (cargo test --workspace builds it)",
        exe.display()
    );
}

/// Whether this kernel finds the partitions of a loop device by itself
/// (`CONFIG_MSDOS_PARTITION` and friends): attaches a tiny loop device over
/// a disk with one MBR partition and looks for `/dev/loopNp1`. Some test
/// kernels have no partition-table parsers; tests then check the
/// partitions with `partx --show` (userspace) instead. The answer is
/// probed once per test process.
pub fn kernel_scans_partitions() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        if !running_as_root() {
            return false;
        }
        let Ok(backing) = tempfile::NamedTempFile::new() else {
            return false;
        };
        let mut sector0 = [0u8; 512];
        // One Linux partition (type 0x83) from sector 2048, 2048 sectors.
        let entry = &mut sector0[446..462];
        entry[4] = 0x83;
        entry[8..12].copy_from_slice(&2048u32.to_le_bytes());
        entry[12..16].copy_from_slice(&2048u32.to_le_bytes());
        sector0[510] = 0x55;
        sector0[511] = 0xAA;
        use std::io::Write;
        if backing.as_file().set_len(4 << 20).is_err()
            || backing.as_file().write_all(&sector0).is_err()
        {
            return false;
        }
        let Some(lo) = LoopDevice::attach_file(backing, None) else {
            return false;
        };
        let p1 = PathBuf::from(format!("{}p1", lo.path().display()));
        let sysfs = PathBuf::from(format!("/sys/class/block/{}/{}p1", lo.name(), lo.name()));
        for _ in 0..20 {
            if p1.exists() || sysfs.exists() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    })
}

/// A trust store without an operators list, as a workstation keeps: one
/// throwaway key's `.pub` file in `dir`. Commands that record (`audit
/// note`, `check --audit`) take it as `--trust` and then sign nobody in.
pub fn trust_without_operators(dir: &Path) -> PathBuf {
    let key = dir.join("workstation-trust");
    reliquary_image::keys::SigningKey::generate_to_files(&key, Some("Workstation"))
        .unwrap_or_else(|e| panic!("cannot make a trust key in {}: {e}", dir.display()));
    reliquary_image::keys::public_key_path(&key)
}
