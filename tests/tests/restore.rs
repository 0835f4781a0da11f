//! `reliquary restore` and `reliquary check` end to end: the real binary,
//! real loop devices, disks made with the real tools (`sfdisk`, `sgdisk`,
//! `mkntfs`, `ntfscp`).
//!
//! Needs root (loop devices), `losetup`, `sfdisk` and `partx` (util-linux /
//! fdisk), `sgdisk` (gdisk), `mkntfs` and `ntfscp` (ntfs-3g), `mkfs.ext4`
//! (e2fsprogs) and `mount`. Without them a test skips (fails with
//! `RELIQUARY_REQUIRE_ALL=1`). The cgroup v1 blkio controller, where
//! present, slows the interruption tests' target so they land mid-write.
//!
//! The refusal of the disk holding the running system is covered by the
//! unit tests of `appliance/src/safety.rs` (it cannot be staged on a loop
//! device without endangering the machine).

use std::ffi::OsStr;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use reliquary_image::ExtentKind;
use reliquary_tests::{
    kernel_scans_partitions, reliquary_bin, running_as_root, skip_or_fail, LoopDevice,
};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------- helpers

/// A temporary directory with a signing key (`key`, `key.pub`).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// Returns `None` (after skipping) when not root or a tool is missing.
    fn new(tools: &[&str]) -> Option<Fixture> {
        if !running_as_root() {
            skip_or_fail("restore tests need root for loop devices");
            return None;
        }
        for tool in ["losetup", "blockdev"].iter().chain(tools) {
            if !have(tool) {
                skip_or_fail(&format!("{tool} is not installed"));
                return None;
            }
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let fx = Fixture { dir };
        let out = reliquary(
            ["keygen", "--out"],
            &[fx.key()],
            &["--name", "restore tests"],
        );
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

    /// Captures every sector of `raw` (`--all-sectors`: these tests compare
    /// whole disks, noise in free clusters included) into `<name>.rimg`
    /// with the given chunk size.
    fn capture(&self, raw: &Path, name: &str, chunk_size: &str, sector_size: u32) -> PathBuf {
        let image = self.path(&format!("{name}.rimg"));
        let out = Command::new(reliquary_bin())
            .arg("capture")
            .arg(raw)
            .arg("-o")
            .arg(&image)
            .arg("--key")
            .arg(self.key())
            .args(["--name", name, "--chunk-size", chunk_size, "--all-sectors"])
            .arg("--sector-size")
            .arg(sector_size.to_string())
            .output()
            .expect("run reliquary capture");
        assert!(out.status.success(), "capture: {}", text(&out));
        image
    }

    /// `reliquary restore IMAGE TARGET --trust KEY.pub <extra>`.
    fn restore(&self, image: &Path, target: &Path, extra: &[&str]) -> Output {
        self.restore_cmd(image, target, extra)
            .output()
            .expect("run reliquary restore")
    }

    fn restore_cmd(&self, image: &Path, target: &Path, extra: &[&str]) -> Command {
        let mut cmd = Command::new(reliquary_bin());
        cmd.arg("restore")
            .arg(image)
            .arg(target)
            .arg("--trust")
            .arg(self.trust())
            .args(extra)
            .stdin(Stdio::null());
        cmd
    }

    /// `reliquary check IMAGE TARGET --trust KEY.pub`.
    fn check(&self, image: &Path, target: &Path) -> Output {
        Command::new(reliquary_bin())
            .arg("check")
            .arg(image)
            .arg(target)
            .arg("--trust")
            .arg(self.trust())
            .output()
            .expect("run reliquary check")
    }
}

fn reliquary<P: AsRef<OsStr>>(before: [&str; 2], paths: &[P], after: &[&str]) -> Output {
    Command::new(reliquary_bin())
        .args(before)
        .args(paths)
        .args(after)
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

/// Runs a tool with `input` on its stdin.
fn run_with_input(cmd: &mut Command, input: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{cmd:?} failed: {}", text(&out));
    out
}

/// Deterministic pseudo-random bytes (xorshift), incompressible enough to be
/// stored raw.
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

fn sparse_file(path: &Path, size: u64) {
    let f = File::create(path).expect("create raw disk");
    f.set_len(size).expect("size raw disk");
}

/// Waits up to 5 s for the device node of partition `n` of a loop device.
fn partition_node(lo: &Path, n: u32) -> Option<PathBuf> {
    let node = PathBuf::from(format!("{}p{n}", lo.display()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !node.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    node.exists().then_some(node)
}

/// Gives a loop device with a one-partition table its `p1` node: the kernel
/// makes it where it parses tables, `partx -a` (BLKPG) everywhere else.
fn first_partition(lo: &Path) -> Option<PathBuf> {
    if !kernel_scans_partitions() {
        run(Command::new("partx").arg("-a").arg(lo));
    }
    partition_node(lo, 1)
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let f = File::options()
        .write(true)
        .open(path)
        .expect("open for write");
    f.write_all_at(bytes, offset).expect("write");
    f.sync_all().expect("sync");
}

/// Reads `len` bytes at `offset` from a file or block device. Block
/// devices get their page cache dropped first (`blockdev --flushbufs`), so
/// what the restore wrote with O_DIRECT is what is read.
fn read_range(path: &Path, offset: u64, len: u64) -> Vec<u8> {
    if is_block_device(path) {
        let _ = Command::new("blockdev")
            .arg("--flushbufs")
            .arg(path)
            .status();
    }
    let f = File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut buf = vec![0u8; len as usize];
    f.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("read {} at {offset}: {e}", path.display()));
    buf
}

fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").len()
}

/// Asserts that `target` holds `raw` over `raw`'s whole length, naming the
/// first differing MiB.
fn assert_same_bytes(raw: &Path, target: &Path) {
    let len = file_len(raw);
    let mut at = 0;
    while at < len {
        let n = (4 * MIB).min(len - at);
        let want = read_range(raw, at, n);
        let got = read_range(target, at, n);
        if want != got {
            let first = want.iter().zip(&got).position(|(a, b)| a != b).unwrap_or(0) as u64 + at;
            panic!(
                "{} differs from {} at byte {first} (sector {})",
                target.display(),
                raw.display(),
                first / 512
            );
        }
        at += n;
    }
}

fn same_bytes(raw: &Path, target: &Path) -> bool {
    let len = file_len(raw);
    let mut at = 0;
    while at < len {
        let n = (8 * MIB).min(len - at);
        if read_range(raw, at, n) != read_range(target, at, n) {
            return false;
        }
        at += n;
    }
    true
}

/// Whether `target` equals `raw` everywhere except the first and last MiB.
fn same_outside_table_areas(raw: &Path, target: &Path) -> bool {
    let len = file_len(raw);
    let mut at = MIB;
    while at < len - MIB {
        let n = (8 * MIB).min(len - MIB - at);
        if read_range(raw, at, n) != read_range(target, at, n) {
            return false;
        }
        at += n;
    }
    true
}

/// The `inspect --json` description of an image.
fn inspect(image: &Path) -> serde_json::Value {
    let out = reliquary(["inspect", "--json"], &[image], &[]);
    assert!(out.status.success(), "inspect: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("inspect JSON")
}

/// Parses an image in-process (no signature check: the tests only need the
/// index to find chunks and extents).
fn open_image(image: &Path) -> reliquary_image::Image<File> {
    reliquary_image::open(File::open(image).expect("open image"))
        .expect("image framing")
        .open_unverified()
        .expect("image index")
}

/// The 64-hex read-back digest printed by a successful restore.
fn readback_digest(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let at = stdout
        .find("(digest ")
        .unwrap_or_else(|| panic!("no read-back digest printed: {}", text(out)));
    stdout[at + 8..at + 8 + 64].to_string()
}

/// A disk laid out like a Windows 7 install: a 16 MiB active "System
/// Reserved" NTFS partition and an NTFS partition over the rest, holding
/// some real files and a file of noise, written with mkntfs and ntfscp.
fn build_windows_disk(fx: &Fixture, name: &str, size: u64) -> PathBuf {
    let raw = fx.path(&format!("{name}.raw"));
    sparse_file(&raw, size);
    let sectors = size / 512;
    let (p1_start, p1_len) = (2048u64, 32768u64);
    let p2_start = p1_start + p1_len;
    let p2_len = sectors - p2_start;
    run_with_input(
        Command::new("sfdisk").arg("-q").arg(&raw),
        &format!("label: dos\n{p1_start},{p1_len},7,*\n{p2_start},{p2_len},7\n"),
    );
    let payload = fx.path(&format!("{name}-noise.bin"));
    std::fs::write(&payload, noise(size ^ 0x5eed, 3 * MIB as usize)).expect("write noise");
    for (start, len, label, files) in [
        (p1_start, p1_len, "System Reserved", vec![]),
        (
            p2_start,
            p2_len,
            "Windows",
            vec![
                ("/usr/bin/bash", "bash.exe"),
                ("/etc/services", "services.txt"),
                (payload.to_str().expect("utf-8 path"), "pagefile.bin"),
            ],
        ),
    ] {
        let part = fx.path(&format!("{name}-part.raw"));
        sparse_file(&part, len * 512);
        run(Command::new("mkntfs")
            .args(["-Q", "-F", "-q", "-L", label, "-H", "255", "-S", "63", "-p"])
            .arg(start.to_string())
            .arg(&part));
        for (src, dst) in files {
            if Path::new(src).exists() {
                run(Command::new("ntfscp").arg(&part).arg(src).arg(dst));
            }
        }
        run(Command::new("dd")
            .arg(format!("if={}", part.display()))
            .arg(format!("of={}", raw.display()))
            .args(["bs=1M", "conv=notrunc,sparse", "status=none"])
            .arg(format!("seek={}", start * 512))
            .arg("oflag=seek_bytes"));
        std::fs::remove_file(&part).expect("remove partition file");
    }
    raw
}

/// A GPT disk made with sgdisk: an EFI system partition, a Windows
/// partition and a data partition, with noise in the last two.
fn build_gpt_disk(fx: &Fixture, name: &str, size: u64) -> PathBuf {
    let raw = fx.path(&format!("{name}.raw"));
    sparse_file(&raw, size);
    run(Command::new("sgdisk")
        .args([
            "-o",
            "-n",
            "1:2048:+8M",
            "-t",
            "1:ef00",
            "-c",
            "1:EFI system partition",
        ])
        .args(["-n", "2:0:+24M", "-t", "2:0700", "-c", "2:Windows"])
        .args(["-n", "3:0:0", "-t", "3:0700", "-c", "3:Data"])
        .arg(&raw));
    for (n, start) in partitions_of(&raw).iter().map(|p| p.1).enumerate() {
        write_at(&raw, start * 512, &noise(n as u64 + 7, MIB as usize + 4096));
    }
    raw
}

/// `(number, start sector, sectors)` of each partition `partx` (userspace)
/// finds on a disk or file.
fn partitions_of(disk: &Path) -> Vec<(u32, u64, u64)> {
    let out = Command::new("partx")
        .args(["--show", "-g", "-b", "-o", "NR,START,SECTORS"])
        .arg(disk)
        .output()
        .expect("run partx");
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let f: Vec<u64> = line
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            (f.len() == 3).then(|| (f[0] as u32, f[1], f[2]))
        })
        .collect()
}

/// A loop device over a sparse file filled with a 0xAA pattern in its
/// first and last 4 MiB and around its middle, so writes are visible.
fn patterned_loop(size: u64, sector_size: Option<u32>) -> Option<LoopDevice> {
    let backing = tempfile::NamedTempFile::new().expect("backing file");
    backing.as_file().set_len(size).expect("size backing file");
    let pattern = vec![0xAAu8; (4 * MIB) as usize];
    for at in [0, size / 2 - 2 * MIB, size - 4 * MIB] {
        backing
            .as_file()
            .write_all_at(&pattern, at)
            .expect("pattern");
    }
    LoopDevice::attach_file(backing, sector_size)
}

/// Asserts that a refused restore exited 4 and its message contains every
/// one of `needles`.
fn assert_refused(out: &Output, needles: &[&str]) {
    assert_eq!(
        out.status.code(),
        Some(4),
        "expected a refusal (exit 4): {}",
        text(out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in needles {
        assert!(
            stderr.contains(needle),
            "the refusal does not mention {needle:?}: {}",
            text(out)
        );
    }
}

/// Asserts the first MiB of `target` is still the 0xAA pattern: a refusal
/// wrote nothing.
fn assert_untouched(target: &Path) {
    assert!(
        read_range(target, 0, MIB).iter().all(|&b| b == 0xAA),
        "{} was written although the restore was refused",
        target.display()
    );
}

/// A mount of `device` on a temporary directory, unmounted when dropped.
struct Mount {
    dir: tempfile::TempDir,
}

impl Mount {
    fn new(device: &Path) -> Mount {
        let dir = tempfile::tempdir().expect("mount point");
        run(Command::new("mount").arg(device).arg(dir.path()));
        Mount { dir }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        for _ in 0..20 {
            if Command::new("umount")
                .arg(self.dir.path())
                .status()
                .is_ok_and(|s| s.success())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not unmount {}", self.dir.path().display());
    }
}

/// A cgroup v1 blkio group throttling writes to one device; processes are
/// put in it by [`Throttle::command`], and it is removed when dropped.
struct Throttle {
    dir: PathBuf,
}

impl Throttle {
    fn writes(device: &Path, bytes_per_second: u64) -> Option<Throttle> {
        let root = Path::new("/sys/fs/cgroup/blkio");
        if !root.join("blkio.throttle.write_bps_device").exists() {
            return None;
        }
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(device).ok()?.rdev();
        let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
        let dir = root.join(format!("reliquary-test-{}-{}", std::process::id(), minor));
        std::fs::create_dir(&dir).ok()?;
        let throttle = Throttle { dir };
        std::fs::write(
            throttle.dir.join("blkio.throttle.write_bps_device"),
            format!("{major}:{minor} {bytes_per_second}"),
        )
        .ok()?;
        Some(throttle)
    }

    /// A command that joins the group, then execs `cmd`.
    fn command(&self, cmd: &Command) -> Command {
        let mut sh = Command::new("sh");
        sh.arg("-c")
            .arg(r#"echo $$ > "$0" && exec "$@""#)
            .arg(self.dir.join("cgroup.procs"))
            .arg(cmd.get_program())
            .args(cmd.get_args())
            .stdin(Stdio::null());
        sh
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("warning: could not remove cgroup {}", self.dir.display());
    }
}

/// Whether the partition-table areas of `target` (a disk of
/// `disk_bytes`, written from an image of `image_bytes`) hold anything a
/// firmware or tool would take for a partition table: the MBR signature at
/// sector 0, or a GPT header at LBA 1, at the image's last LBA or at the
/// disk's last LBA.
fn table_visible(target: &Path, sector: u64, image_bytes: u64, disk_bytes: u64) -> Option<String> {
    let s0 = read_range(target, 0, sector);
    if s0[510..512] == [0x55, 0xAA] {
        return Some("an MBR signature at sector 0".into());
    }
    for (what, lba) in [
        ("LBA 1", 1),
        ("the image's last LBA", image_bytes / sector - 1),
        ("the disk's last LBA", disk_bytes / sector - 1),
    ] {
        if read_range(target, lba * sector, 8) == b"EFI PART" {
            return Some(format!("a GPT header at {what}"));
        }
    }
    None
}

// ---------------------------------------------------------------- restores

#[test]
fn windows_mbr_disk_restores_byte_for_byte_onto_same_size_and_larger_disks() {
    let Some(fx) = Fixture::new(&["sfdisk", "mkntfs", "ntfscp", "partx"]) else {
        return;
    };
    let size = 96 * MIB;
    let raw = build_windows_disk(&fx, "win7", size);
    let image = fx.capture(&raw, "win7", "256K", 512);
    let digest = inspect(&image)["image_digest"]
        .as_str()
        .expect("image_digest")
        .to_string();

    for target_size in [size, size + 40 * MIB] {
        let Some(lo) = patterned_loop(target_size, None) else {
            return;
        };
        let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes"]);
        assert!(
            out.status.success(),
            "restore onto {target_size} bytes: {}",
            text(&out)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("did not reread"),
            "BLKRRPART failed: {}",
            text(&out)
        );
        assert_eq!(
            readback_digest(&out),
            digest,
            "read-back digest vs inspect's image_digest"
        );
        assert_same_bytes(&raw, lo.path());

        let parts = partitions_of(lo.path());
        assert_eq!(
            parts.iter().map(|p| (p.1, p.2)).collect::<Vec<_>>(),
            vec![(2048, 32768), (34816, size / 512 - 34816)],
            "partitions on the restored disk"
        );
        let check = fx.check(&image, lo.path());
        assert!(
            check.status.success(),
            "check after restore: {}",
            text(&check)
        );
        assert!(
            String::from_utf8_lossy(&check.stdout).contains("MATCH"),
            "{}",
            text(&check)
        );
    }
}

#[test]
fn gpt_disk_onto_a_larger_disk_moves_the_backup_to_the_end() {
    let Some(fx) = Fixture::new(&["sgdisk", "partx"]) else {
        return;
    };
    let size = 64 * MIB;
    let raw = build_gpt_disk(&fx, "gpt", size);
    let source_parts = partitions_of(&raw);
    assert_eq!(source_parts.len(), 3, "sgdisk made three partitions");
    let image = fx.capture(&raw, "gpt", "256K", 512);

    let target_size = size + 48 * MIB;
    let Some(lo) = patterned_loop(target_size, None) else {
        return;
    };
    let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes"]);
    assert!(out.status.success(), "restore: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("backup GPT moved"),
        "{}",
        text(&out)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("did not reread"),
        "BLKRRPART failed: {}",
        text(&out)
    );

    // sgdisk finds nothing wrong.
    let verify = Command::new("sgdisk")
        .arg("-v")
        .arg(lo.path())
        .output()
        .expect("run sgdisk -v");
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        verify.status.success() && report.contains("No problems found"),
        "sgdisk -v: {}",
        text(&verify)
    );

    // The backup header is the disk's last sector and says so.
    let last_lba = target_size / 512 - 1;
    let backup = read_range(lo.path(), last_lba * 512, 512);
    assert_eq!(
        &backup[..8],
        b"EFI PART",
        "no GPT header in the last sector"
    );
    let current = u64::from_le_bytes(backup[24..32].try_into().expect("8 bytes"));
    assert_eq!(current, last_lba, "the backup header's own LBA");
    let primary = read_range(lo.path(), 512, 512);
    let alternate = u64::from_le_bytes(primary[32..40].try_into().expect("8 bytes"));
    assert_eq!(alternate, last_lba, "the primary header's backup LBA");

    // `check` accepts exactly the moved GPT, and nothing more.
    let check = fx.check(&image, lo.path());
    assert!(
        check.status.success(),
        "check after the move: {}",
        text(&check)
    );
    assert!(
        String::from_utf8_lossy(&check.stdout).contains("backup GPT was moved"),
        "{}",
        text(&check)
    );
    let (_, first_start, _) = source_parts[0];
    let in_first = read_range(lo.path(), first_start * 512, 1);
    write_at(lo.path(), first_start * 512, &[in_first[0] ^ 0xff]);
    let check = fx.check(&image, lo.path());
    assert_eq!(
        check.status.code(),
        Some(3),
        "check after a change: {}",
        text(&check)
    );
    write_at(lo.path(), first_start * 512, &in_first);

    // Every partition's contents arrived.
    for (n, start, sectors) in &source_parts {
        let len = (*sectors * 512).min(2 * MIB);
        assert!(
            read_range(&raw, start * 512, len) == read_range(lo.path(), start * 512, len),
            "partition {n} differs"
        );
    }

    // The partitions are visible: to the kernel where it parses partition
    // tables, otherwise to userspace (partx) after a successful BLKRRPART.
    let restored = partitions_of(lo.path());
    assert_eq!(restored, source_parts, "partx on the restored disk");
    if kernel_scans_partitions() {
        for (n, _, _) in &source_parts {
            assert!(
                partition_node(lo.path(), *n).is_some(),
                "{}p{n} did not appear after the restore",
                lo.path().display()
            );
        }
    } else {
        eprintln!(
            "NOTE: this kernel does not parse partition tables (no {}p1 for a valid MBR), so \
             /dev/loopNpM cannot appear; checked partx --show and a successful BLKRRPART instead",
            lo.path().display()
        );
    }
}

#[test]
fn restores_onto_a_new_regular_file_and_onto_a_4096_byte_sector_disk() {
    let Some(fx) = Fixture::new(&["sfdisk"]) else {
        return;
    };
    // A regular file that does not exist yet is created at the image's size.
    let raw = fx.path("plain.raw");
    sparse_file(&raw, 32 * MIB);
    run_with_input(
        Command::new("sfdisk").arg("-q").arg(&raw),
        "label: dos\n2048,,7,*\n",
    );
    write_at(&raw, 3 * MIB, &noise(3, 2 * MIB as usize));
    let image = fx.capture(&raw, "plain", "256K", 512);
    let target = fx.path("new-disk.raw");
    let refused = fx.restore(&image, &target, &["--no-audit", "--yes"]);
    assert_refused(&refused, &["does not exist", "--create-file"]);
    assert!(!target.exists(), "a refused restore created its target");
    let out = fx.restore(&image, &target, &["--no-audit", "--yes", "--create-file"]);
    assert!(
        out.status.success(),
        "restore onto a new file: {}",
        text(&out)
    );
    assert_eq!(file_len(&target), 32 * MIB);
    assert_same_bytes(&raw, &target);

    // A 4096-byte-sector image onto a 4096-byte-sector loop device. The
    // partition table is written through a 4Kn loop device so sfdisk uses
    // 4096-byte sectors.
    let size = 48 * MIB;
    let raw4k = fx.path("4k.raw");
    {
        let Some(lo) = LoopDevice::attach(size, Some(4096)) else {
            return;
        };
        run_with_input(
            Command::new("sfdisk").arg("-q").arg(lo.path()),
            "label: dos\n256,,7,*\n",
        );
        let f = File::options()
            .write(true)
            .open(lo.path())
            .expect("open 4Kn loop");
        f.write_all_at(&noise(4, 3 * MIB as usize), 2 * MIB)
            .expect("noise");
        f.sync_all().expect("sync");
        drop(f);
        // Keep the disk: copy it out before the loop device and its
        // temporary backing file go away.
        std::fs::copy(lo.backing_file(), &raw4k).expect("copy 4Kn raw");
    }
    let image4k = fx.capture(&raw4k, "fourk", "256K", 4096);
    assert_eq!(inspect(&image4k)["source"]["logical_sector_size"], 4096);
    let Some(lo) = patterned_loop(size, Some(4096)) else {
        return;
    };
    let out = fx.restore(&image4k, lo.path(), &["--no-audit", "--yes"]);
    assert!(out.status.success(), "4Kn restore: {}", text(&out));
    assert_same_bytes(&raw4k, lo.path());
    let check = fx.check(&image4k, lo.path());
    assert!(check.status.success(), "4Kn check: {}", text(&check));
}

// ---------------------------------------------------------------- refusals

/// A small MBR image every refusal test restores (or fails to).
fn small_image(fx: &Fixture) -> (PathBuf, PathBuf) {
    let raw = fx.path("small.raw");
    sparse_file(&raw, 32 * MIB);
    run_with_input(
        Command::new("sfdisk").arg("-q").arg(&raw),
        "label: dos\n2048,,7,*\n",
    );
    write_at(&raw, 2 * MIB, &noise(9, MIB as usize));
    let image = fx.capture(&raw, "small", "256K", 512);
    (raw, image)
}

#[test]
fn refuses_a_target_that_is_too_small_naming_both_sizes() {
    let Some(fx) = Fixture::new(&["sfdisk"]) else {
        return;
    };
    let (_, image) = small_image(&fx);
    let Some(lo) = patterned_loop(24 * MIB, None) else {
        return;
    };
    let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes"]);
    assert_refused(
        &out,
        &[
            &lo.path().to_string_lossy(),
            &(24 * MIB).to_string(),
            &(32 * MIB).to_string(),
        ],
    );
    assert_untouched(lo.path());
}

#[test]
fn refuses_a_sector_size_mismatch_naming_both_sizes() {
    let Some(fx) = Fixture::new(&["sfdisk"]) else {
        return;
    };
    let (_, image) = small_image(&fx);
    let Some(lo) = patterned_loop(64 * MIB, Some(4096)) else {
        return;
    };
    let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes"]);
    assert_refused(&out, &["4096", "512", "sectors"]);
    assert_untouched(lo.path());
}

#[test]
fn refuses_a_read_only_target() {
    let Some(fx) = Fixture::new(&["sfdisk"]) else {
        return;
    };
    let (_, image) = small_image(&fx);
    let Some(lo) = LoopDevice::attach_read_only(64 * MIB, None) else {
        return;
    };
    let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes"]);
    assert_refused(&out, &["read-only"]);
}

#[test]
fn refuses_the_image_file_itself_as_target() {
    let Some(fx) = Fixture::new(&["sfdisk"]) else {
        return;
    };
    let (_, image) = small_image(&fx);
    let before = std::fs::read(&image).expect("read image");
    let out = fx.restore(&image, &image, &["--no-audit", "--yes"]);
    assert_refused(&out, &["image file being restored"]);
    assert!(
        std::fs::read(&image).expect("read image") == before,
        "the image was modified"
    );
    // The same file through another path (a hard link) is refused too.
    let link = fx.path("link.rimg");
    std::fs::hard_link(&image, &link).expect("hard link");
    let out = fx.restore(&image, &link, &["--no-audit", "--yes"]);
    assert_refused(&out, &["image file being restored"]);
}

#[test]
fn refuses_a_target_with_a_mounted_filesystem() {
    let Some(fx) = Fixture::new(&["sfdisk", "mkfs.ext4", "mount", "umount", "partx"]) else {
        return;
    };
    let (_, image) = small_image(&fx);

    // The whole target loop device mounted.
    {
        let Some(lo) = LoopDevice::attach(64 * MIB, None) else {
            return;
        };
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(lo.path()));
        let mount = Mount::new(lo.path());
        let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes"]);
        assert_refused(
            &out,
            &[
                "mounted",
                &lo.path().to_string_lossy(),
                &mount.dir.path().to_string_lossy(),
            ],
        );
        drop(mount);
    }

    // A partition of the target mounted (the kernel's partition added with
    // BLKPG by `partx -a`, which works without partition-table parsers).
    let Some(lo) = LoopDevice::attach(64 * MIB, None) else {
        return;
    };
    run_with_input(
        Command::new("sfdisk").arg("-q").arg(lo.path()),
        "label: dos\n2048,,83\n",
    );
    let Some(p1) = first_partition(lo.path()) else {
        skip_or_fail(&format!(
            "{}p1 did not appear: cannot mount a partition",
            lo.path().display()
        ));
        return;
    };
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&p1));
    let mount = Mount::new(&p1);
    let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes"]);
    assert_refused(
        &out,
        &[
            "mounted",
            &p1.to_string_lossy(),
            &mount.dir.path().to_string_lossy(),
        ],
    );
    drop(mount);
}

#[test]
fn refuses_a_partition_instead_of_a_whole_disk() {
    let Some(fx) = Fixture::new(&["sfdisk", "partx"]) else {
        return;
    };
    let (_, image) = small_image(&fx);
    let Some(lo) = LoopDevice::attach(96 * MIB, None) else {
        return;
    };
    run_with_input(
        Command::new("sfdisk").arg("-q").arg(lo.path()),
        "label: dos\n2048,,7\n",
    );
    let Some(p1) = first_partition(lo.path()) else {
        skip_or_fail(&format!(
            "{}p1 did not appear: cannot make a partition device",
            lo.path().display()
        ));
        return;
    };
    let out = fx.restore(&image, &p1, &["--no-audit", "--yes"]);
    assert_refused(&out, &["not a whole disk", &p1.to_string_lossy()]);
}

#[test]
fn refuses_a_target_another_process_holds_exclusively() {
    let Some(fx) = Fixture::new(&["sfdisk"]) else {
        return;
    };
    let (_, image) = small_image(&fx);
    let Some(lo) = patterned_loop(64 * MIB, None) else {
        return;
    };
    let holder = File::options()
        .read(true)
        .custom_flags(nix::libc::O_EXCL)
        .open(lo.path())
        .expect("hold the loop device with O_EXCL");
    let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes"]);
    assert_refused(&out, &["exclusively", &lo.path().to_string_lossy()]);
    drop(holder);
    assert_untouched(lo.path());
    // Released, the same restore goes through.
    let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes"]);
    assert!(
        out.status.success(),
        "restore after release: {}",
        text(&out)
    );
}

#[test]
fn restore_without_an_audit_choice_is_a_usage_error() {
    let Some(fx) = Fixture::new(&["sfdisk"]) else {
        return;
    };
    let (_, image) = small_image(&fx);
    let Some(lo) = patterned_loop(64 * MIB, None) else {
        return;
    };
    // The meaning and work order are given, so the missing choice is the
    // one refused.
    let stated = ["--yes", "--meaning", "replacement", "--reason", "WO-1"];
    let out = fx.restore(&image, lo.path(), &stated);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--no-audit"),
        "{}",
        text(&out)
    );
    assert_untouched(lo.path());
    // Without --yes and without a terminal, nothing is written either.
    let out = fx.restore(&image, lo.path(), &["--no-audit"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert_untouched(lo.path());
}

// ---------------------------------------------------------------- integrity

#[test]
fn a_corrupt_chunk_is_never_written_and_the_tables_are_wiped() {
    let Some(fx) = Fixture::new(&["sfdisk", "mkntfs", "ntfscp"]) else {
        return;
    };
    let size = 96 * MIB;
    let raw = build_windows_disk(&fx, "corrupt", size);
    // Noise where the pattern is, so the chunk there is data.
    write_at(&raw, size / 2 - 2 * MIB, &noise(11, (4 * MIB) as usize));
    let image = fx.capture(&raw, "corrupt", "256K", 512);

    // The data chunk covering the middle of the disk.
    let (chunk, entry, start, end) = {
        let img = open_image(&image);
        let mid = size / 2 / 512;
        let extent = img.extent_at_sector(mid).expect("extent at the middle");
        let ExtentKind::Data { chunk } = extent.kind else {
            panic!("the middle of the disk is not data: {extent:?}");
        };
        (
            chunk,
            img.index().chunks[chunk as usize],
            extent.start_sector,
            extent.end_sector(),
        )
    };
    let f = File::options()
        .read(true)
        .write(true)
        .open(&image)
        .expect("open image");
    let at = entry.offset + u64::from(entry.stored_len) / 2;
    let mut byte = [0u8];
    f.read_exact_at(&mut byte, at).expect("read");
    f.write_all_at(&[byte[0] ^ 0x40], at).expect("flip");
    drop(f);

    let Some(lo) = patterned_loop(size, None) else {
        return;
    };
    let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("chunk {chunk} ")),
        "the chunk is not named: {}",
        text(&out)
    );
    assert!(
        stderr.contains(&format!("sectors {start}..{end}")),
        "sectors not named: {}",
        text(&out)
    );
    assert!(stderr.contains("wiped"), "{}", text(&out));

    // The corrupt chunk's sectors still hold what was there before.
    let there = read_range(lo.path(), start * 512, (end - start) * 512);
    assert!(
        there.iter().all(|&b| b == 0xAA),
        "the corrupt chunk (sectors {start}..{end}) reached the disk"
    );
    // The partition-table areas are wiped.
    assert!(
        read_range(lo.path(), 0, MIB).iter().all(|&b| b == 0),
        "first MiB not wiped"
    );
    assert!(
        read_range(lo.path(), size - MIB, MIB)
            .iter()
            .all(|&b| b == 0),
        "last MiB not wiped"
    );
    assert_eq!(table_visible(lo.path(), 512, size, size), None);
}

#[test]
fn check_matches_a_clean_disk_and_names_the_extent_of_a_changed_byte() {
    let Some(fx) = Fixture::new(&["sfdisk", "mkntfs", "ntfscp"]) else {
        return;
    };
    let size = 64 * MIB;
    let raw = build_windows_disk(&fx, "check", size);
    let image = fx.capture(&raw, "check", "256K", 512);
    let Some(lo) = patterned_loop(size, None) else {
        return;
    };
    let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes", "--no-readback"]);
    assert!(out.status.success(), "restore: {}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("NOT read back"),
        "{}",
        text(&out)
    );

    let clean = fx.check(&image, lo.path());
    assert_eq!(
        clean.status.code(),
        Some(0),
        "check of a clean disk: {}",
        text(&clean)
    );
    assert!(
        String::from_utf8_lossy(&clean.stdout).contains("MATCH:"),
        "{}",
        text(&clean)
    );

    // One byte changed inside a data extent in the second partition.
    let byte_at = (34816 + 100) * 512 + 77;
    let sector = byte_at / 512;
    let img = open_image(&image);
    let extent = img.extent_at_sector(sector).expect("extent");
    let before = read_range(lo.path(), byte_at, 1)[0];
    write_at(lo.path(), byte_at, &[before ^ 0xFF]);
    let dirty = fx.check(&image, lo.path());
    assert_eq!(
        dirty.status.code(),
        Some(3),
        "check of a changed disk: {}",
        text(&dirty)
    );
    let stdout = String::from_utf8_lossy(&dirty.stdout);
    let expected = format!(
        "MISMATCH extent {} (sectors {}..{})",
        extent.ordinal,
        extent.start_sector,
        extent.end_sector()
    );
    assert!(
        stdout.contains(&expected),
        "expected {expected:?}: {}",
        text(&dirty)
    );
    assert_eq!(stdout.matches("MISMATCH").count(), 1, "{}", text(&dirty));

    // Restored again, it matches again.
    let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes"]);
    assert!(out.status.success(), "{}", text(&out));
    let again = fx.check(&image, lo.path());
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
}

// ---------------------------------------------------------------- interruption

/// Writes the old disk onto the target, runs a restore (throttled when
/// possible), SIGKILLs it after `kill_after` (never if `None`), and returns
/// how long it ran.
fn restore_and_kill(
    fx: &Fixture,
    lo: &LoopDevice,
    old: &Path,
    image: &Path,
    throttle: Option<&Throttle>,
    kill_after: Option<Duration>,
) -> (Duration, std::process::ExitStatus) {
    let f = File::options()
        .write(true)
        .open(lo.path())
        .expect("open target");
    let old_bytes = std::fs::read(old).expect("read old disk");
    f.write_all_at(&old_bytes, 0).expect("write old disk");
    f.sync_all().expect("sync");
    drop(f);

    let cmd = fx.restore_cmd(image, lo.path(), &["--no-audit", "--yes"]);
    let mut cmd = match throttle {
        Some(t) => t.command(&cmd),
        None => cmd,
    };
    let started = Instant::now();
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn restore");
    if let Some(delay) = kill_after {
        std::thread::sleep(delay);
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let status = child.wait().expect("wait");
    (started.elapsed(), status)
}

/// SIGKILLs restores at several points of a throttled run onto a target
/// that held another valid disk, and checks each time that the target is
/// untouched, complete, or shows no partition table that anything would
/// use. Returns the outcomes.
fn interrupt_at_several_points(fx: &Fixture, raw: &Path, old: &Path, image: &Path) -> Vec<String> {
    let size = file_len(raw);
    let Some(lo) = LoopDevice::attach(size, None) else {
        return Vec::new();
    };
    // ~24 MB/s: a restore takes a couple of seconds.
    let throttle = Throttle::writes(lo.path(), 24 << 20);
    if throttle.is_none() {
        eprintln!("NOTE: no cgroup v1 blkio throttling here; the restores run at full speed");
    }
    // A whole run first, to know how long one takes.
    let (full, status) = restore_and_kill(fx, &lo, old, image, throttle.as_ref(), None);
    assert!(
        status.success(),
        "the uninterrupted restore failed: {status:?}"
    );
    assert_same_bytes(raw, lo.path());

    let mut outcomes = Vec::new();
    for percent in [0u32, 3, 10, 20, 35, 50, 65, 80, 90, 95, 99] {
        let delay = full * percent / 100;
        let (_, status) = restore_and_kill(fx, &lo, old, image, throttle.as_ref(), Some(delay));
        let outcome = if same_bytes(raw, lo.path()) {
            "complete".to_string()
        } else if same_bytes(old, lo.path()) {
            "untouched".to_string()
        } else if same_outside_table_areas(old, lo.path()) {
            // Killed during the wipe: not a byte of the new image was
            // written, so this is the old disk with (part of) its tables
            // wiped, never a mix of the two.
            "old disk, wipe interrupted".to_string()
        } else if has_valid_mbr(lo.path()) {
            panic!(
                "killed at {percent}% of a run ({delay:?}, {status:?}): the target is neither \
                 complete nor untouched but holds a valid MBR at LBA 0: a half-good disk"
            );
        } else {
            // Firmware takes a disk for partitioned only once LBA 0 holds
            // a valid MBR or protective MBR, written last of all.
            "no valid MBR at LBA 0".to_string()
        };
        outcomes.push(format!("{percent}%: {outcome}"));
    }
    eprintln!(
        "interruption outcomes (a run takes {full:?}): {}",
        outcomes.join(", ")
    );
    assert!(
        outcomes
            .iter()
            .any(|o| o.ends_with("no valid MBR at LBA 0")),
        "no kill landed mid-restore: {outcomes:?}"
    );
    outcomes
}

#[test]
fn sigkill_during_an_mbr_restore_never_leaves_a_half_good_disk() {
    let Some(fx) = Fixture::new(&["sfdisk", "mkntfs", "ntfscp"]) else {
        return;
    };
    let size = 64 * MIB;
    let raw = build_windows_disk(&fx, "interrupt", size);
    write_at(&raw, 20 * MIB, &noise(21, (24 * MIB) as usize));
    let image = fx.capture(&raw, "interrupt", "256K", 512);
    // The previous disk: another valid MBR layout with other contents.
    let old = fx.path("old.raw");
    sparse_file(&old, size);
    run_with_input(
        Command::new("sfdisk").arg("-q").arg(&old),
        "label: dos\n4096,,83,*\n",
    );
    write_at(&old, 8 * MIB, &noise(99, (40 * MIB) as usize));
    interrupt_at_several_points(&fx, &raw, &old, &image);
}

#[test]
fn sigkill_during_a_gpt_restore_never_leaves_a_half_good_disk() {
    let Some(fx) = Fixture::new(&["sgdisk", "sfdisk", "partx"]) else {
        return;
    };
    let size = 64 * MIB;
    let raw = build_gpt_disk(&fx, "gptint", size);
    write_at(&raw, 20 * MIB, &noise(22, (24 * MIB) as usize));
    let image = fx.capture(&raw, "gptint", "256K", 512);
    let old = fx.path("oldgpt.raw");
    sparse_file(&old, size);
    run(Command::new("sgdisk")
        .args(["-o", "-n", "1:4096:0", "-t", "1:8300"])
        .arg(&old));
    write_at(&old, 8 * MIB, &noise(98, (40 * MIB) as usize));
    interrupt_at_several_points(&fx, &raw, &old, &image);
}

// ---------------------------------------------------------------- write order

/// Whether `sector0` is a valid MBR or protective MBR: the boot signature
/// and at least one partition entry with a type and a size.
fn mbr_is_valid(sector0: &[u8]) -> bool {
    sector0.len() >= 512
        && sector0[510..512] == [0x55, 0xAA]
        && (0..4).any(|i| {
            let e = &sector0[446 + 16 * i..462 + 16 * i];
            e[4] != 0 && e[12..16] != [0, 0, 0, 0]
        })
}

/// Reads LBA 0 of `target` with O_DIRECT, past any cache, as firmware would.
fn read_lba0_direct(target: &File) -> Vec<u8> {
    let mut buf = reliquary_appliance::sys::AlignedBuf::new(4096, 4096).expect("aligned buffer");
    match target.read_at(buf.as_mut_slice(), 0) {
        Ok(n) if n >= 512 => buf.as_slice()[..512].to_vec(),
        _ => Vec::new(),
    }
}

fn has_valid_mbr(target: &Path) -> bool {
    let f = File::options()
        .read(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(target)
        .expect("open target");
    mbr_is_valid(&read_lba0_direct(&f))
}

/// A random MBR or GPT disk of `size` bytes: the tables of `sfdisk` or
/// `sgdisk`, and random bytes through the partitions.
fn random_disk(fx: &Fixture, name: &str, size: u64, gpt: bool, seed: u64) -> PathBuf {
    let raw = if gpt {
        build_gpt_disk(fx, name, size)
    } else {
        let raw = fx.path(&format!("{name}.raw"));
        sparse_file(&raw, size);
        run_with_input(
            Command::new("sfdisk").arg("-q").arg(&raw),
            "label: dos\n2048,16M,7,*\n,,7\n",
        );
        raw
    };
    // Random data across the partitions, leaving some holes.
    let mut at = 2 * MIB;
    let mut n = 0;
    while at + 2 * MIB < size - MIB {
        write_at(&raw, at, &noise(seed * 1000 + n, (3 * MIB / 2) as usize));
        at += 2 * MIB + (seed % 3) * MIB;
        n += 1;
    }
    raw
}

/// One write or flush of the restore's target, as strace saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetOp {
    Write { offset: u64, len: u64 },
    Flush,
}

/// The writes and flushes on `target` in an `strace -f -y` log, in the
/// order they were issued (an `<unfinished ...>` call counts at its start).
fn target_ops(log: &str, target: &Path) -> Vec<TargetOp> {
    let tag = format!("<{}>", target.display());
    let mut pending: std::collections::HashMap<String, String> = Default::default();
    let mut ordered: Vec<Option<String>> = Vec::new();
    let mut slot_of: std::collections::HashMap<String, usize> = Default::default();
    for line in log.lines() {
        let (pid, rest) = line.split_once(' ').unwrap_or(("", line));
        let rest = rest.trim_start();
        if let Some(head) = rest.strip_suffix(" <unfinished ...>") {
            pending.insert(pid.to_string(), head.to_string());
            slot_of.insert(pid.to_string(), ordered.len());
            ordered.push(None);
        } else if rest.starts_with("<... ") {
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            if let (Some(head), Some(slot)) = (pending.remove(pid), slot_of.remove(pid)) {
                ordered[slot] = Some(format!("{head}{tail}"));
            }
        } else {
            ordered.push(Some(rest.to_string()));
        }
    }
    let number = |s: &str| s.trim().trim_end_matches(')').parse::<u64>().ok();
    let mut ops = Vec::new();
    for call in ordered.into_iter().flatten() {
        let Some((name, args)) = call.split_once('(') else {
            continue;
        };
        if !args.starts_with(|c: char| c.is_ascii_digit()) || !args.contains(&tag) {
            continue;
        }
        let (args, result) = match args.rsplit_once(" = ") {
            Some((args, result)) => (args, Some(result.trim())),
            None => (args, None),
        };
        let fields: Vec<&str> = args.split(", ").collect();
        match name {
            "fsync" | "fdatasync" => ops.push(TargetOp::Flush),
            "pwrite64" | "pwritev" | "pwritev2" => {
                let len = result.and_then(number).expect("write length");
                let offset = fields
                    .iter()
                    .rev()
                    .find_map(|f| number(f))
                    .expect("write offset");
                ops.push(TargetOp::Write { offset, len });
            }
            "fallocate" => {
                let (offset, len) = (number(fields[2]), number(fields[3]));
                ops.push(TargetOp::Write {
                    offset: offset.expect("offset"),
                    len: len.expect("len"),
                });
            }
            "ioctl" if args.contains("BLKZEROOUT") => {
                let range = args.split_once('[').map_or("", |(_, r)| r);
                let mut nums = range
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse().ok());
                let (offset, len) = (nums.next(), nums.next());
                ops.push(TargetOp::Write {
                    offset: offset.expect("offset"),
                    len: len.expect("len"),
                });
            }
            _ => {}
        }
    }
    ops
}

#[test]
fn the_first_sector_is_written_last_after_a_flush_as_strace_sees_it() {
    let Some(fx) = Fixture::new(&["sfdisk", "sgdisk", "strace"]) else {
        return;
    };
    let size = 48 * MIB;
    let mut runs = 0;
    for seed in 1..=5u64 {
        for gpt in [false, true] {
            let name = format!("order-{seed}-{gpt}");
            let raw = random_disk(&fx, &name, size, gpt, seed);
            let chunk = if seed % 2 == 0 { "4M" } else { "256K" };
            let image = fx.capture(&raw, &name, chunk, 512);
            for target_size in [size, size + 16 * MIB] {
                let Some(lo) = patterned_loop(target_size, None) else {
                    return;
                };
                let log = fx.path(&format!("{name}-{target_size}.strace"));
                let restore = fx.restore_cmd(&image, lo.path(), &["--no-audit", "--yes"]);
                let out = Command::new("strace")
                    .args(["-f", "-y", "-qq", "-o"])
                    .arg(&log)
                    .args([
                        "-e",
                        "trace=pwrite64,pwritev,pwritev2,fallocate,ioctl,fsync,fdatasync",
                    ])
                    .arg(restore.get_program())
                    .args(restore.get_args())
                    .stdin(Stdio::null())
                    .output()
                    .expect("run strace");
                assert!(out.status.success(), "restore under strace: {}", text(&out));
                let ops = target_ops(&std::fs::read_to_string(&log).expect("log"), lo.path());
                let writes: Vec<(usize, u64, u64)> = ops
                    .iter()
                    .enumerate()
                    .filter_map(|(i, op)| match op {
                        TargetOp::Write { offset, len } => Some((i, *offset, *len)),
                        TargetOp::Flush => None,
                    })
                    .collect();
                let &(last, offset, len) = writes.last().expect("the restore wrote");
                let context = format!("{name} onto {target_size} bytes: {ops:?}");
                assert_eq!(offset, 0, "the last write is not at LBA 0: {context}");
                assert!(
                    (512..=4096).contains(&len),
                    "the last write spans {len} bytes: {context}"
                );
                let (before, _, _) = writes[writes.len() - 2];
                assert!(
                    ops[before + 1..last].contains(&TargetOp::Flush),
                    "no flush between the last two writes: {context}"
                );
                assert!(
                    ops[last + 1..].contains(&TargetOp::Flush),
                    "the last write is not flushed: {context}"
                );
                // The tail area, and a moved backup GPT, were written (after
                // the three wipes) before LBA 0.
                let covers = |sector: u64| {
                    writes[3..writes.len() - 1]
                        .iter()
                        .any(|&(_, o, l)| o <= sector * 512 && sector * 512 < o + l)
                };
                assert!(
                    covers(size / 512 - 1),
                    "the image's last sector came late: {context}"
                );
                if gpt {
                    assert!(
                        covers(target_size / 512 - 1),
                        "the disk's last sector (backup GPT) came late: {context}"
                    );
                }
                assert_same_bytes_prefix(&raw, lo.path(), target_size == size);
                runs += 1;
            }
        }
    }
    assert_eq!(runs, 20);
}

/// Compares `target` with `raw`: byte for byte when `exact`, else outside
/// the GPT fields a larger disk changes (the check command's job).
fn assert_same_bytes_prefix(raw: &Path, target: &Path, exact: bool) {
    if exact {
        assert_same_bytes(raw, target);
    } else {
        let len = file_len(raw);
        // Past the partition tables, the data is the image's.
        assert!(
            read_range(raw, MIB, len - 2 * MIB) == read_range(target, MIB, len - 2 * MIB),
            "{} differs from the image between its table areas",
            target.display()
        );
    }
}

/// Restores `image` onto `lo` (first filled with noise whose LBA 0 is no
/// MBR) while polling LBA 0 with O_DIRECT, and SIGKILLs the restore the
/// moment a valid MBR appears there. Returns whether the kill landed
/// before the restore ended by itself.
fn kill_when_lba0_turns_valid(fx: &Fixture, image: &Path, lo: &LoopDevice, size: u64) -> bool {
    let mut junk = noise(size ^ 0x5eed, size as usize);
    junk[510] = 0;
    let f = File::options()
        .write(true)
        .open(lo.path())
        .expect("open target");
    f.write_all_at(&junk, 0).expect("fill target");
    f.sync_all().expect("sync");
    drop(f);
    let poll = File::options()
        .read(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(lo.path())
        .expect("open for polling");
    let mut child = fx
        .restore_cmd(image, lo.path(), &["--no-audit", "--yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn restore");
    loop {
        if mbr_is_valid(&read_lba0_direct(&poll)) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let status = child.wait().expect("wait");
            return status.code().is_none();
        }
        if child.try_wait().expect("try_wait").is_some() {
            return false;
        }
    }
}

#[test]
fn killed_the_moment_lba0_turns_valid_every_byte_is_already_final() {
    let Some(fx) = Fixture::new(&["sfdisk", "sgdisk"]) else {
        return;
    };
    let size = 96 * MIB;
    let mut killed = 0;
    let mut runs = 0;
    for gpt in [false, true] {
        let name = if gpt { "worst-gpt" } else { "worst-mbr" };
        let raw = random_disk(&fx, name, size, gpt, 7);
        for chunk in ["4M", "64M"] {
            let image = fx.capture(&raw, &format!("{name}-{chunk}"), chunk, 512);
            let Some(lo) = LoopDevice::attach(size, None) else {
                return;
            };
            for _ in 0..5 {
                killed += u32::from(kill_when_lba0_turns_valid(&fx, &image, &lo, size));
                runs += 1;
                // Whether killed or finished, a valid LBA 0 means a whole disk.
                assert!(
                    has_valid_mbr(lo.path()),
                    "{name} {chunk}: LBA 0 never turned valid"
                );
                assert!(
                    same_bytes(&raw, lo.path()),
                    "{name} with {chunk} chunks: LBA 0 was valid while other bytes were not final"
                );
            }
        }
    }
    eprintln!("{killed} of {runs} restores killed the moment LBA 0 turned valid");
    assert_eq!(runs, 20);
    assert!(
        killed >= 15,
        "only {killed} of {runs} kills landed before the restore ended"
    );
}

#[test]
fn killed_at_random_moments_a_disk_is_complete_or_has_no_valid_mbr() {
    let Some(fx) = Fixture::new(&["sfdisk", "sgdisk"]) else {
        return;
    };
    let size = 64 * MIB;
    let mut state = u64::from(std::process::id()) | 1;
    let mut random = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut outcomes = Vec::new();
    for gpt in [false, true] {
        let name = if gpt { "random-gpt" } else { "random-mbr" };
        let raw = random_disk(&fx, name, size, gpt, 11);
        let image = fx.capture(&raw, name, "1M", 512);
        let old = fx.path(&format!("{name}-old.raw"));
        sparse_file(&old, size);
        let Some(lo) = LoopDevice::attach(size, None) else {
            return;
        };
        let (full, status) = restore_and_kill(&fx, &lo, &old, &image, None, None);
        assert!(status.success(), "the uninterrupted restore failed");
        for _ in 0..10 {
            let delay = full.mul_f64((random() % 1000) as f64 / 1000.0);
            restore_and_kill(&fx, &lo, &old, &image, None, Some(delay));
            let outcome = if same_bytes(&raw, lo.path()) {
                "complete"
            } else if has_valid_mbr(lo.path()) {
                panic!(
                    "{name} killed after {delay:?}: a valid MBR at LBA 0 over an incomplete disk"
                )
            } else {
                "no valid MBR at LBA 0"
            };
            outcomes.push(format!("{name} {delay:?}: {outcome}"));
        }
    }
    eprintln!("random kills: {}", outcomes.join(", "));
    assert_eq!(outcomes.len(), 20);
}

// ---------------------------------------------------------------- identity

#[test]
fn a_disk_swapped_at_the_confirmed_node_is_refused_and_left_untouched() {
    let Some(fx) = Fixture::new(&["sfdisk"]) else {
        return;
    };
    let (_, image) = small_image(&fx);
    // A node far above the ones `losetup -f` hands out, so that no other
    // test can take it between the detach and the re-attach below.
    let node = PathBuf::from(format!("/dev/loop{}", 200 + std::process::id() % 50));
    let first = fx.path("first.raw");
    std::fs::write(&first, vec![0xAAu8; (64 * MIB) as usize]).expect("first disk");
    run(Command::new("losetup").arg(&node).arg(&first));
    let other = fx.path("other.raw");
    let pattern = noise(77, (64 * MIB) as usize);
    std::fs::write(&other, &pattern).expect("other disk");

    // A pseudo-terminal as standard input, so the restore asks to confirm.
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut child = fx
        .restore_cmd(&image, &node, &["--no-audit"])
        .stdin(Stdio::from(pty.slave))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn restore");
    let mut answer = File::from(pty.master);
    let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let said = std::sync::Arc::clone(&said);
        let mut stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = std::io::Read::read(&mut stderr, &mut buf) {
                if n == 0 {
                    break;
                }
                if let Ok(mut s) = said.lock() {
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            }
        })
    };
    let asked = Instant::now();
    while !said.lock().is_ok_and(|s| s.contains("Type `yes`")) {
        if asked.elapsed() > Duration::from_secs(30) {
            let _ = Command::new("losetup").arg("-d").arg(&node).status();
            panic!(
                "no confirmation prompt: {}",
                said.lock().map(|s| s.clone()).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Between the confirmation and the restore, the node gets other media.
    run(Command::new("losetup").arg("-d").arg(&node));
    run(Command::new("losetup").arg(&node).arg(&other));
    answer.write_all(b"yes\n").expect("answer");
    let status = child.wait().expect("wait");
    let _ = reader.join();
    let said = said.lock().map(|s| s.clone()).unwrap_or_default();
    let _ = Command::new("losetup").arg("-d").arg(&node).status();
    assert_eq!(status.code(), Some(4), "expected a refusal: {said}");
    assert!(said.contains("not the disk that was confirmed"), "{said}");
    assert!(
        std::fs::read(&other).expect("read other") == pattern,
        "the new backing file was written"
    );
}

#[test]
fn a_target_path_that_does_not_exist_is_refused_and_nothing_is_created() {
    let Some(fx) = Fixture::new(&["sfdisk"]) else {
        return;
    };
    let (_, image) = small_image(&fx);
    for target in ["/dev/nonexistent", "relative-missing.raw"] {
        let out = fx
            .restore_cmd(&image, Path::new(target), &["--no-audit", "--yes"])
            .current_dir(fx.path(""))
            .output()
            .expect("run restore");
        assert_refused(&out, &["does not exist"]);
        assert!(!fx.path(target).exists() && !Path::new(target).exists());
    }
    let out = fx.restore(
        &image,
        Path::new("/dev/nonexistent"),
        &["--no-audit", "--yes", "--create-file"],
    );
    assert_refused(&out, &["under /dev"]);
    assert!(!Path::new("/dev/nonexistent").exists());
}

// ---------------------------------------------------------------- sizes

#[test]
fn a_gpt_disk_with_4096_byte_sectors_onto_a_larger_disk_validates_everywhere() {
    let Some(fx) = Fixture::new(&["sgdisk"]) else {
        return;
    };
    let size = 48 * MIB;
    let raw = fx.path("gpt4k.raw");
    {
        let Some(lo) = LoopDevice::attach(size, Some(4096)) else {
            return;
        };
        run(Command::new("sgdisk")
            .args([
                "-o",
                "-n",
                "1:256:+8M",
                "-t",
                "1:ef00",
                "-n",
                "2:0:0",
                "-t",
                "2:0700",
            ])
            .arg(lo.path()));
        let f = File::options().write(true).open(lo.path()).expect("open");
        f.write_all_at(&noise(41, (4 * MIB) as usize), 2 * MIB)
            .expect("noise");
        f.sync_all().expect("sync");
        drop(f);
        std::fs::copy(lo.backing_file(), &raw).expect("copy 4Kn GPT disk");
    }
    let image = fx.capture(&raw, "gpt4k", "1M", 4096);
    let Some(lo) = patterned_loop(size + 32 * MIB, Some(4096)) else {
        return;
    };
    let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes"]);
    assert!(out.status.success(), "4Kn GPT restore: {}", text(&out));
    assert!(text(&out).contains("backup GPT moved"), "{}", text(&out));
    let verify = run(Command::new("sgdisk").arg("-v").arg(lo.path()));
    let said = String::from_utf8_lossy(&verify.stdout);
    assert!(said.contains("No problems found"), "sgdisk -v: {said}");
    let check = fx.check(&image, lo.path());
    assert!(check.status.success(), "check: {}", text(&check));
}

/// Rewrites the GPT of `raw` (made by sgdisk: 128 entries of 128 bytes)
/// with entries of 256 bytes, legal in UEFI: each entry in the first half
/// of its slot, the arrays and both headers moved and re-checksummed.
fn widen_gpt_entries(raw: &Path) {
    const ENTRIES: usize = 128;
    let sectors = file_len(raw) / 512;
    let last = sectors - 1;
    let old = read_range(raw, 2 * 512, (ENTRIES * 128) as u64);
    let mut entries = vec![0u8; ENTRIES * 256];
    for (i, entry) in old.chunks_exact(128).enumerate() {
        entries[i * 256..i * 256 + 128].copy_from_slice(entry);
    }
    let entries_sectors = (entries.len() / 512) as u64;
    let crc = |bytes: &[u8]| {
        // CRC-32 (IEEE), as the GPT uses, bit by bit: a test needs no speed.
        let mut c = !0u32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xedb8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    };
    let header = |current: u64, backup: u64, entries_lba: u64| {
        let mut h = read_range(raw, 512, 92);
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + entries_sectors).to_le_bytes());
        h[48..56].copy_from_slice(&(last - entries_sectors - 1).to_le_bytes());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&256u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc(&entries).to_le_bytes());
        h[16..20].fill(0);
        let sum = crc(&h);
        h[16..20].copy_from_slice(&sum.to_le_bytes());
        h
    };
    // sgdisk's old backup (33 sectors) lies inside the new one's span.
    write_at(raw, (last - 33) * 512, &[0u8; 34 * 512]);
    write_at(raw, 512, &header(1, last, 2));
    write_at(raw, 2 * 512, &entries);
    write_at(raw, (last - entries_sectors) * 512, &entries);
    write_at(raw, last * 512, &header(last, 1, last - entries_sectors));
}

/// Issue 21: the `gpt` crate asserts that entries are 128 bytes, so a
/// restore of a table with 256-byte entries panicked in its read-back,
/// after the whole disk was written, and recorded no end.
#[test]
fn a_gpt_with_256_byte_entries_restores_validates_and_is_recorded() {
    let Some(fx) = Fixture::new(&["sgdisk", "partx"]) else {
        return;
    };
    let size = 64 * MIB;
    let raw = build_gpt_disk(&fx, "wide", size);
    let source_parts = partitions_of(&raw);
    widen_gpt_entries(&raw);
    let image = fx.capture(&raw, "wide", "1M", 512);
    let summary = inspect(&image);
    assert_eq!(
        summary["partitions"].as_array().map(Vec::len),
        Some(source_parts.len()),
        "the capture read the wide table: {summary}"
    );
    let audit = audit_dir(&fx);
    let args = recorded(&audit, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (Some(same), Some(larger)) = (
        patterned_loop(size, None),
        patterned_loop(size + 16 * MIB, None),
    ) else {
        return;
    };
    for lo in [&same, &larger] {
        let out = fx.restore(&image, lo.path(), &args);
        assert!(out.status.success(), "restore: {}", text(&out));
        let check = fx.check(&image, lo.path());
        assert!(check.status.success(), "check: {}", text(&check));
        let finish = audit_records(&audit).pop().expect("a record");
        assert_eq!(finish["record"]["kind"], "RestoreFinished", "{finish}");
    }
    assert_same_bytes(&raw, same.path());
    let last = (size + 16 * MIB) / 512 - 1;
    let backup = read_range(larger.path(), last * 512, 512);
    assert_eq!(&backup[..8], b"EFI PART", "the backup moved to the end");
    assert_eq!(
        u32::from_le_bytes(backup[84..88].try_into().expect("4")),
        256
    );
    audit_verifies(&audit);
}

#[test]
fn tiny_images_restore_onto_files_and_loop_devices() {
    let Some(fx) = Fixture::new(&[]) else {
        return;
    };
    for (name, len) in [
        ("one-sector", 512u64),
        ("203k", 203 * 1024),
        ("1m512", MIB + 512),
    ] {
        let raw = fx.path(&format!("{name}.raw"));
        std::fs::write(&raw, noise(len, len as usize)).expect("write raw");
        let image = fx.capture(&raw, name, "64K", 512);
        let file = fx.path(&format!("{name}.restored"));
        let out = fx.restore(&image, &file, &["--no-audit", "--yes", "--create-file"]);
        assert!(out.status.success(), "{name} onto a file: {}", text(&out));
        assert_same_bytes(&raw, &file);
        let backing = tempfile::NamedTempFile::new().expect("backing");
        backing.as_file().set_len(len).expect("size");
        let Some(lo) = LoopDevice::attach_file(backing, None) else {
            return;
        };
        let out = fx.restore(&image, lo.path(), &["--no-audit", "--yes"]);
        assert!(
            out.status.success(),
            "{name} onto a loop device: {}",
            text(&out)
        );
        assert_same_bytes(&raw, lo.path());
    }
}

#[test]
fn ctrl_c_mid_restore_exits_130_and_says_the_disk_was_wiped() {
    let Some(fx) = Fixture::new(&["sfdisk"]) else {
        return;
    };
    let size = 64 * MIB;
    let raw = random_disk(&fx, "sigint", size, false, 3);
    let image = fx.capture(&raw, "sigint", "256K", 512);
    let Some(lo) = LoopDevice::attach(size, None) else {
        return;
    };
    let Some(throttle) = Throttle::writes(lo.path(), 8 << 20) else {
        skip_or_fail("the cgroup v1 blkio controller is needed to slow the restore down");
        return;
    };
    let cmd = fx.restore_cmd(&image, lo.path(), &["--no-audit", "--yes"]);
    let child = throttle
        .command(&cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn restore");
    std::thread::sleep(Duration::from_millis(1500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    assert!(text(&out).contains("left wiped"), "{}", text(&out));
    assert!(
        !has_valid_mbr(lo.path()),
        "a cancelled restore left a valid MBR"
    );
}

// ---------------------------------------------------------------- resume

/// An audit directory made with `reliquary audit init`.
fn audit_dir(fx: &Fixture) -> PathBuf {
    let dir = fx.path("audit");
    let out = reliquary(
        ["audit", "init"],
        &[] as &[&str],
        &["--dir", &dir.to_string_lossy()],
    );
    assert!(out.status.success(), "audit init: {}", text(&out));
    dir
}

fn recorded<'a>(audit: &'a Path, extra: &[&'a str]) -> Vec<String> {
    let mut args = vec!["--audit".to_string(), audit.display().to_string()];
    args.extend(
        [
            "--operator",
            "tech1",
            "--yes",
            "--meaning",
            "replacement",
            "--reason",
            "WO-4711",
        ]
        .map(String::from),
    );
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// The audit log's records as `audit export --format jsonl` gives them.
fn audit_records(audit: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(reliquary_bin())
        .args(["audit", "export", "--format", "jsonl", "--dir"])
        .arg(audit)
        .output()
        .expect("run audit export");
    assert!(out.status.success(), "audit export: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl"))
        .collect()
}

fn audit_verifies(audit: &Path) {
    let out = Command::new(reliquary_bin())
        .args(["audit", "verify", "--dir"])
        .arg(audit)
        .arg("--key")
        .arg(audit.join("appliance.pub"))
        .output()
        .expect("run audit verify");
    assert!(out.status.success(), "audit verify: {}", text(&out));
}

#[test]
fn a_killed_restore_resumes_to_an_exact_disk_at_ten_random_points() {
    let Some(fx) = Fixture::new(&["sfdisk", "sgdisk"]) else {
        return;
    };
    let size = 64 * MIB;
    let raw = random_disk(&fx, "resume", size, true, 5);
    let image = fx.capture(&raw, "resume", "1M", 512);
    let audit = audit_dir(&fx);
    let Some(lo) = LoopDevice::attach(size, None) else {
        return;
    };
    let started = Instant::now();
    let args = recorded(&audit, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = fx.restore(&image, lo.path(), &args);
    assert!(out.status.success(), "{}", text(&out));
    let full = started.elapsed();
    let mut state = u64::from(std::process::id()) | 1;
    let mut skipped_late = false;
    for i in 0..10u32 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        // Spread the kills over the run; the last lands during the
        // read-back, the moment LBA 0 is written, whatever the load.
        let delay = full.mul_f64((f64::from(i) + (state % 100) as f64 / 100.0) / 10.0);
        let mut child = fx
            .restore_cmd(&image, lo.path(), &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        if i == 9 {
            let poll = File::options()
                .read(true)
                .custom_flags(nix::libc::O_DIRECT)
                .open(lo.path())
                .expect("open");
            // The previous resume left a whole disk: wait for the wipe first.
            while mbr_is_valid(&read_lba0_direct(&poll))
                && child.try_wait().expect("try_wait").is_none()
            {}
            while !mbr_is_valid(&read_lba0_direct(&poll))
                && child.try_wait().expect("try_wait").is_none()
            {}
        } else {
            std::thread::sleep(delay);
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let killed = child.wait().expect("wait").code().is_none();
        if !killed {
            continue;
        }
        let resume = recorded(&audit, &["--resume"]);
        let resume: Vec<&str> = resume.iter().map(String::as_str).collect();
        let interrupted = audit_records(&audit)
            .last()
            .is_some_and(|r| r["interrupted"] == true);
        let out = fx.restore(&image, lo.path(), &resume);
        if !out.status.success() && !interrupted {
            // Killed before its start was recorded: nothing was written,
            // so there is nothing to resume.
            assert_refused(&out, &["no interrupted restore"]);
            continue;
        }
        assert!(
            out.status.success(),
            "resume after {delay:?}: {}",
            text(&out)
        );
        assert_same_bytes(&raw, lo.path());
        let records = audit_records(&audit);
        let finish = records.last().expect("a finish record");
        let skipped = finish["record"]["payload"]["bytes_skipped"]
            .as_u64()
            .unwrap_or_default();
        if i == 9 && skipped > 0 {
            skipped_late = true;
        }
        let start = &records[records.len() - 2]["record"]["payload"];
        assert!(
            start["mode"]["Resume"]["interrupted_seq"]
                .as_u64()
                .is_some(),
            "the resume's start does not name the interrupted one: {start}"
        );
    }
    assert!(
        skipped_late,
        "no late resume kept any already-written bytes"
    );
    audit_verifies(&audit);
    // `audit show` links each resume to the start it continues.
    let out = Command::new(reliquary_bin())
        .args(["audit", "show", "--dir"])
        .arg(&audit)
        .output()
        .expect("run audit show");
    assert!(out.status.success(), "audit show: {}", text(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    for start in audit_records(&audit)
        .iter()
        .filter_map(|r| r["record"]["payload"]["mode"]["Resume"]["interrupted_seq"].as_u64())
    {
        assert!(
            shown.contains(&format!("resume of record {start}")),
            "audit show does not link a resume to record {start}: {shown}"
        );
    }
}

#[test]
fn a_resume_onto_another_disk_or_with_another_image_is_refused() {
    let Some(fx) = Fixture::new(&["sfdisk"]) else {
        return;
    };
    let size = 32 * MIB;
    let raw = random_disk(&fx, "wrong", size, false, 9);
    let image = fx.capture(&raw, "wrong", "1M", 512);
    let other_image = fx.capture(&raw, "other", "1M", 512);
    let audit = audit_dir(&fx);
    let (Some(lo), Some(other_disk)) = (patterned_loop(size, None), patterned_loop(size, None))
    else {
        return;
    };
    // An interrupted restore onto `lo`: killed right after it started.
    let args = recorded(&audit, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let throttle = Throttle::writes(lo.path(), 4 << 20);
    let cmd = fx.restore_cmd(&image, lo.path(), &args);
    let mut cmd = match &throttle {
        Some(t) => t.command(&cmd),
        None => cmd,
    };
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(700));
    let _ = child.kill();
    let _ = child.wait();
    let resume = recorded(&audit, &["--resume"]);
    let resume: Vec<&str> = resume.iter().map(String::as_str).collect();
    let out = fx.restore(&image, other_disk.path(), &resume);
    assert_refused(&out, &["no interrupted restore"]);
    assert_untouched(other_disk.path());
    let out = fx.restore(&other_image, lo.path(), &resume);
    assert_refused(&out, &["no interrupted restore"]);
    let out = fx.restore(&image, lo.path(), &resume);
    assert!(out.status.success(), "the right resume: {}", text(&out));
    assert_same_bytes(&raw, lo.path());
}

#[test]
fn a_resume_rewrites_an_extent_altered_after_the_kill() {
    let Some(fx) = Fixture::new(&["sfdisk"]) else {
        return;
    };
    let size = 64 * MIB;
    let raw = random_disk(&fx, "altered", size, false, 13);
    let image = fx.capture(&raw, "altered", "1M", 512);
    let audit = audit_dir(&fx);
    let Some(lo) = LoopDevice::attach(size, None) else {
        return;
    };
    let args = recorded(&audit, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    // Kill during the read-back, when every extent has been written.
    let mut child = fx
        .restore_cmd(&image, lo.path(), &args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let poll = File::options()
        .read(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(lo.path())
        .expect("open");
    while !mbr_is_valid(&read_lba0_direct(&poll)) {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "finished too soon"
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    // Bytes of an already-written extent change before the resume.
    let flip_at = 20 * MIB + 12345;
    let mut byte = read_range(lo.path(), flip_at, 1);
    byte[0] ^= 0xff;
    let f = File::options().write(true).open(lo.path()).expect("open");
    f.write_all_at(&byte, flip_at).expect("flip");
    f.sync_all().expect("sync");
    drop(f);
    let resume = recorded(&audit, &["--resume"]);
    let resume: Vec<&str> = resume.iter().map(String::as_str).collect();
    let out = fx.restore(&image, lo.path(), &resume);
    assert!(out.status.success(), "resume: {}", text(&out));
    assert_same_bytes(&raw, lo.path());
    let records = audit_records(&audit);
    let finish = &records.last().expect("finish")["record"]["payload"];
    let (written, skipped) = (
        finish["bytes_written"].as_u64().unwrap_or_default(),
        finish["bytes_skipped"].as_u64().unwrap_or_default(),
    );
    assert!(skipped > 0, "nothing was kept: {finish}");
    assert!(
        written < size / 2,
        "the resume rewrote {written} bytes: {finish}"
    );
    audit_verifies(&audit);
}

// ---------------------------------------------------------------- sign-in

#[test]
fn with_an_operators_list_restore_needs_a_valid_id_and_its_pin() {
    let Some(fx) = Fixture::new(&["sfdisk"]) else {
        return;
    };
    let (raw, image) = small_image(&fx);
    let trust = fx.path("trust");
    std::fs::create_dir(&trust).expect("trust dir");
    std::fs::copy(fx.trust(), trust.join("eng.pub")).expect("key");
    let mut add = Command::new(reliquary_bin())
        .args(["operators", "add", "--trust"])
        .arg(&trust)
        .args(["tech1", "--name", "A. Tech"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("operators add");
    add.stdin
        .take()
        .expect("stdin")
        .write_all(b"471100\n")
        .expect("pin");
    assert!(add.wait().expect("wait").success());
    let audit = audit_dir(&fx);
    let Some(lo) = patterned_loop(32 * MIB, None) else {
        return;
    };
    let restore = |operator: &str, pin: Option<&str>| {
        let mut cmd = Command::new(reliquary_bin());
        cmd.arg("restore")
            .arg(&image)
            .arg(lo.path())
            .arg("--trust")
            .arg(&trust)
            .arg("--audit")
            .arg(&audit)
            .args(["--operator", operator, "--yes", "--reason", "WO-4711"])
            .args(["--meaning", "replacement"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if pin.is_some() {
            cmd.arg("--pin-stdin");
        }
        let mut child = cmd.spawn().expect("restore");
        if let Some(pin) = pin {
            let _ = child
                .stdin
                .take()
                .expect("stdin")
                .write_all(format!("{pin}\n").as_bytes());
        }
        child.wait_with_output().expect("wait")
    };
    let out = restore("bad id with spaces", None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = restore("tech1", None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("PIN"), "{}", text(&out));
    let out = restore("tech1", Some("000000"));
    assert_refused(&out, &["tech1"]);
    assert_untouched(lo.path());
    let records = audit_records(&audit);
    let failed = records.last().expect("a record");
    assert_eq!(failed["record"]["kind"], "SignInFailed", "{failed}");
    assert!(
        !failed.to_string().contains("000000"),
        "the PIN was recorded: {failed}"
    );
    let out = restore("tech1", Some("471100"));
    assert!(out.status.success(), "{}", text(&out));
    assert_same_bytes(&raw, lo.path());
    let records = audit_records(&audit);
    let start = &records[records.len() - 2]["record"];
    assert_eq!(start["meta"]["operator"]["name"], "A. Tech", "{start}");
    assert_eq!(start["payload"]["reason"], "WO-4711", "{start}");
}

// ---------------------------------------------------------------- several targets

/// A loop device of `size` bytes over a file in a tmpfs of `fs_bytes`:
/// once the tmpfs is full, writes to the device fail as on a dying disk.
fn loop_on_small_tmpfs(fx: &Fixture, size: u64, fs_bytes: u64) -> Option<(Mount, LoopDevice)> {
    let dir = tempfile::tempdir_in(fx.dir.path()).expect("mount point");
    let out = run(Command::new("mount")
        .args(["-t", "tmpfs", "-o"])
        .arg(format!("size={fs_bytes}"))
        .arg("tmpfs")
        .arg(dir.path()));
    if !out.status.success() {
        skip_or_fail(&format!("cannot mount a tmpfs: {}", text(&out)));
        return None;
    }
    let mount = Mount { dir };
    let backing = tempfile::NamedTempFile::new_in(mount.dir.path()).expect("backing file");
    backing.as_file().set_len(size).expect("size backing file");
    let lo = LoopDevice::attach_file(backing, None)?;
    Some((mount, lo))
}

/// The `--json` report of a restore or check onto several targets.
fn json_targets(out: &Output) -> Vec<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(out)));
    v["targets"].as_array().expect("targets").clone()
}

#[test]
fn three_targets_from_one_read_carry_on_when_one_is_cut_off_and_one_fails() {
    let Some(fx) = Fixture::new(&["sfdisk", "mount"]) else {
        return;
    };
    let size = 128 * MIB;
    let raw = random_disk(&fx, "spares", size, false, 21);
    let image = fx.capture(&raw, "spares", "1M", 512);
    let audit = audit_dir(&fx);
    let (Some(good1), Some(good2), Some(cut)) = (
        patterned_loop(size, None),
        patterned_loop(size, None),
        patterned_loop(size, None),
    ) else {
        return;
    };
    // The fourth fails its writes part way: its tmpfs holds 40 MiB.
    let Some((_tmpfs, failing)) = loop_on_small_tmpfs(&fx, size, 40 * MIB) else {
        return;
    };
    // Throttled, the cut-off target sets the pace, so the cut lands mid-run.
    let Some(throttle) = Throttle::writes(cut.path(), 24 << 20) else {
        skip_or_fail("the cgroup v1 blkio controller is needed to pace the restore");
        return;
    };
    let mut args = recorded(&audit, &["--json"]);
    args.extend(
        [good2.path(), cut.path(), failing.path()]
            .iter()
            .map(|p| p.display().to_string()),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let child = throttle
        .command(&fx.restore_cmd(&image, good1.path(), &args))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    // Halfway through (128 MiB at 24 MB/s), the cut-off disk loses what
    // it was given so far: the backing file is truncated under it.
    std::thread::sleep(Duration::from_millis(2500));
    File::options()
        .write(true)
        .open(cut.backing_file())
        .and_then(|f| f.set_len(0))
        .expect("truncate the backing file");
    let out = child.wait_with_output().expect("wait");
    drop(throttle);
    // Both failures are I/O errors of their disks: a runtime failure.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let targets = json_targets(&out);
    let outcomes: Vec<&str> = targets
        .iter()
        .map(|t| t["outcome"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        outcomes,
        ["success", "success", "failed", "failed"],
        "{}",
        text(&out)
    );
    assert_same_bytes(&raw, good1.path());
    assert_same_bytes(&raw, good2.path());
    for (lo, t) in [(&cut, &targets[2]), (&failing, &targets[3])] {
        assert!(
            !has_valid_mbr(lo.path()),
            "a failed target was left with a valid MBR: {t}"
        );
        assert!(
            read_range(lo.path(), 0, MIB).iter().all(|&b| b == 0),
            "a failed target's first MiB was not left wiped: {t}"
        );
        assert!(t["wiped"].as_array().is_some_and(|w| !w.is_empty()), "{t}");
    }
    // One start and one finish per target, each with its own outcome.
    let records = audit_records(&audit);
    let payloads: Vec<&serde_json::Value> =
        records.iter().map(|r| &r["record"]["payload"]).collect();
    // A start names its mode; a finish, the start it ends.
    let starts = payloads
        .iter()
        .filter(|p| !p["mode"].is_null() && p["started_seq"].is_null())
        .count();
    let finishes: Vec<String> = payloads
        .iter()
        .filter(|p| !p["started_seq"].is_null())
        .map(|f| {
            format!(
                "{} {}",
                f["target"]["path"].as_str().unwrap_or_default(),
                if f["outcome"] == "Success" {
                    "success"
                } else {
                    "failed"
                }
            )
        })
        .collect();
    assert_eq!(starts, 4, "{payloads:?}");
    let expected: Vec<String> = [
        (&good1, "success"),
        (&good2, "success"),
        (&cut, "failed"),
        (&failing, "failed"),
    ]
    .iter()
    .map(|(lo, o)| format!("{} {o}", lo.path().display()))
    .collect();
    assert_eq!(finishes, expected);
    audit_verifies(&audit);

    // The shelf check: every disk at once, each with its own verdict.
    let out = Command::new(reliquary_bin())
        .args(["--json", "check"])
        .arg(&image)
        .args([good1.path(), good2.path(), failing.path()])
        .arg("--trust")
        .arg(fx.trust())
        .output()
        .expect("run check");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let verdicts: Vec<bool> = json_targets(&out)
        .iter()
        .map(|t| t["matches"].as_bool().unwrap_or(true))
        .collect();
    assert_eq!(verdicts, [true, true, false], "{}", text(&out));
}

/// The `pread64` calls on `image` in an `strace -f -y` log.
fn image_reads(log: &str, image: &Path) -> usize {
    let name = format!("<{}>", image.display());
    log.lines()
        .filter(|l| l.contains("pread64(") && l.contains(&name))
        .count()
}

#[test]
fn several_targets_read_each_chunk_of_the_image_once_as_strace_sees_it() {
    let Some(fx) = Fixture::new(&["sfdisk", "strace"]) else {
        return;
    };
    let size = 64 * MIB;
    let raw = random_disk(&fx, "once", size, false, 33);
    let image = fx.capture(&raw, "once", "1M", 512);
    let reads = |targets: &[PathBuf]| {
        let log = fx.path("strace.log");
        let mut cmd = Command::new("strace");
        cmd.args(["-f", "-y", "-e", "trace=pread64", "-o"])
            .arg(&log)
            .arg(reliquary_bin())
            .arg("restore")
            .arg(&image)
            .args(targets)
            .args(["--create-file", "--no-audit", "--yes", "--trust"])
            .arg(fx.trust());
        let out = run(&mut cmd);
        assert!(out.status.success(), "{}", text(&out));
        for t in targets {
            assert_same_bytes(&raw, t);
        }
        image_reads(&std::fs::read_to_string(&log).expect("strace log"), &image)
    };
    let one = reads(&[fx.path("one.disk")]);
    let three = reads(&[fx.path("a.disk"), fx.path("b.disk"), fx.path("c.disk")]);
    let chunks = inspect(&image)["chunks"].as_u64().expect("chunk count");
    assert!(one as u64 >= chunks, "{one} reads for {chunks} chunks");
    // Only the chunks in the partition-table areas (the first and last
    // MiB: one 1 MiB chunk each) are read again for each further target.
    assert!(
        three <= one + 2 * 2,
        "three targets read the image {three} times, one target {one} times"
    );
}
