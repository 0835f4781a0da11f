//! `reliquary capture` of real disks: the sector size a disk file was
//! written with, refusal of a source mounted read-write, and (per file
//! system) capture of the used clusters only, checked by restoring onto a
//! differently filled target and comparing files.
//!
//! Needs root (loop devices), `losetup`, `sgdisk` (gdisk), `mkfs.ext4`
//! (e2fsprogs) and `mount`. Without them a test skips (fails with
//! `RELIQUARY_REQUIRE_ALL=1`).

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use reliquary_tests::{reliquary_bin, running_as_root, skip_or_fail, LoopDevice};

const MIB: u64 = 1 << 20;

/// A temporary directory with a signing key (`key`, `key.pub`).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// Returns `None` (after skipping) when not root or a tool is missing.
    fn new(tools: &[&str]) -> Option<Fixture> {
        if !running_as_root() {
            skip_or_fail("capture tests need root for loop devices");
            return None;
        }
        for tool in ["losetup"].iter().chain(tools) {
            if !have(tool) {
                skip_or_fail(&format!("{tool} is not installed"));
                return None;
            }
        }
        let fx = Fixture {
            dir: tempfile::tempdir().expect("temp dir"),
        };
        let out = reliquary(&[
            "keygen".as_ref(),
            "--out".as_ref(),
            fx.key().as_os_str(),
            "--name".as_ref(),
            "capture tests".as_ref(),
        ]);
        assert!(out.status.success(), "keygen: {}", text(&out));
        Some(fx)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn key(&self) -> PathBuf {
        self.path("key")
    }

    fn trust(&self) -> PathBuf {
        self.path("key.pub")
    }

    /// `reliquary capture SOURCE -o <name>.rimg --key KEY --name NAME <extra>`.
    fn capture(&self, source: &Path, name: &str, extra: &[&str]) -> (PathBuf, Output) {
        let image = self.path(&format!("{name}.rimg"));
        let out = Command::new(reliquary_bin())
            .arg("capture")
            .arg(source)
            .arg("-o")
            .arg(&image)
            .arg("--key")
            .arg(self.key())
            .args(["--name", name, "--chunk-size", "1M"])
            .args(extra)
            .output()
            .expect("run reliquary capture");
        (image, out)
    }

    fn restore(&self, image: &Path, target: &Path) -> Output {
        Command::new(reliquary_bin())
            .arg("restore")
            .arg(image)
            .arg(target)
            .arg("--trust")
            .arg(self.trust())
            .args(["--no-audit", "--yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run reliquary restore")
    }

    fn inspect_json(&self, image: &Path) -> serde_json::Value {
        let out = reliquary(&["inspect".as_ref(), image.as_os_str(), "--json".as_ref()]);
        assert!(out.status.success(), "inspect: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("inspect --json")
    }
}

fn reliquary(args: &[&OsStr]) -> Output {
    Command::new(reliquary_bin())
        .args(args)
        .output()
        .expect("run reliquary")
}

fn have(tool: &str) -> bool {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|dir| Path::new(dir).join(tool).exists())
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a tool and panics with its output if it fails.
fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out));
    out
}

/// Deterministic pseudo-random bytes (xorshift).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A loop device of `size` bytes whose every byte is `fill`.
fn filled_loop(size: u64, sector_size: Option<u32>, fill: u8) -> Option<LoopDevice> {
    let backing = tempfile::NamedTempFile::new().expect("backing file");
    let block = vec![fill; MIB as usize];
    for at in (0..size).step_by(MIB as usize) {
        backing
            .as_file()
            .write_all_at(&block[..(size - at).min(MIB) as usize], at)
            .expect("fill the backing file");
    }
    LoopDevice::attach_file(backing, sector_size)
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    let (a, b) = (
        std::fs::read(a).expect("read a"),
        std::fs::read(b).expect("read b"),
    );
    a == b
}

// ------------------------------------------------------ sector size, mounts

/// A 64 MiB GPT disk written on a 4Kn device: its GPT header sits at byte
/// 4096, and a capture of its file must record 4096-byte sectors.
fn gpt_4kn_disk_file(fx: &Fixture) -> Option<(LoopDevice, PathBuf)> {
    let lo = LoopDevice::attach(64 * MIB, Some(4096))?;
    run(Command::new("sgdisk")
        .args(["-n", "1:0:0", "-t", "1:0700", "-c", "1:data"])
        .arg(lo.path()));
    let partition_bytes = noise(11, 8 * MIB as usize);
    let device = File::options()
        .write(true)
        .open(lo.path())
        .expect("open the 4Kn device");
    device
        .write_all_at(&partition_bytes, MIB)
        .expect("write partition content");
    device.sync_all().expect("flush the 4Kn device");
    let raw = fx.path("4kn.raw");
    std::fs::copy(lo.backing_file(), &raw).expect("copy the disk file");
    Some((lo, raw))
}

#[test]
fn capture_of_a_4kn_gpt_file_records_4096_byte_sectors_and_restores_byte_exact() {
    let Some(fx) = Fixture::new(&["sgdisk"]) else {
        return;
    };
    let Some((_source, raw)) = gpt_4kn_disk_file(&fx) else {
        return;
    };
    let (image, out) = fx.capture(&raw, "four-k", &[]);
    assert!(out.status.success(), "capture: {}", text(&out));
    let j = fx.inspect_json(&image);
    assert_eq!(j["source"]["logical_sector_size"], 4096, "{j}");
    assert_eq!(j["partition_table"]["kind"], "gpt", "{j}");

    let Some(target) = filled_loop(64 * MIB, Some(4096), 0xa5) else {
        return;
    };
    let out = fx.restore(&image, target.path());
    assert!(out.status.success(), "restore: {}", text(&out));
    assert!(
        same_bytes(&raw, target.backing_file()),
        "the 4Kn target differs from the source disk file"
    );
}

#[test]
fn a_sector_size_contradicting_the_gpt_is_refused() {
    let Some(fx) = Fixture::new(&["sgdisk"]) else {
        return;
    };
    let Some((_source, raw)) = gpt_4kn_disk_file(&fx) else {
        return;
    };
    let (image, out) = fx.capture(&raw, "contradicted", &["--sector-size", "512"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("contradicts the source's GPT"),
        "{}",
        text(&out)
    );
    assert!(!image.exists());
    // The size the GPT states is accepted when given explicitly.
    let (_, out) = fx.capture(&raw, "agreed", &["--sector-size", "4096"]);
    assert!(out.status.success(), "capture: {}", text(&out));
}

#[test]
fn a_protective_mbr_without_a_gpt_cannot_decide_the_sector_size() {
    let Some(fx) = Fixture::new(&["sgdisk"]) else {
        return;
    };
    let Some((_source, raw)) = gpt_4kn_disk_file(&fx) else {
        return;
    };
    // Break the primary header's signature; the protective MBR stays.
    File::options()
        .write(true)
        .open(&raw)
        .expect("open raw")
        .write_all_at(b"NOT PART", 4096)
        .expect("break the header");
    let (image, out) = fx.capture(&raw, "undecided", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be known"),
        "{}",
        text(&out)
    );
    assert!(!image.exists());
}

#[test]
fn capturing_a_disk_mounted_read_write_is_refused_until_it_is_read_only() {
    let Some(fx) = Fixture::new(&["mkfs.ext4", "mount", "umount"]) else {
        return;
    };
    let Some(lo) = LoopDevice::attach(32 * MIB, None) else {
        return;
    };
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(lo.path()));
    let mount_point = fx.path("mnt");
    std::fs::create_dir(&mount_point).expect("mount point");
    run(Command::new("mount").arg(lo.path()).arg(&mount_point));
    let unmount = Unmount(mount_point.clone());

    let (image, out) = fx.capture(lo.path(), "mounted", &[]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mounted read-write"),
        "{}",
        text(&out)
    );
    assert!(!image.exists());

    run(Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&mount_point));
    let (_, out) = fx.capture(lo.path(), "mounted-ro", &[]);
    assert!(out.status.success(), "capture: {}", text(&out));
    drop(unmount);
}

/// Unmounts on drop, so a failed assertion leaves no mount behind.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
