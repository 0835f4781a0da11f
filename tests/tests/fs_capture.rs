//! `reliquary capture` of real disks: the sector size a disk file was
//! written with, refusal of a source mounted read-write, and (per file
//! system) capture of the used clusters only, checked by restoring onto a
//! differently filled target and comparing files.
//!
//! Needs root (loop devices), `losetup`, `sgdisk` (gdisk), `sfdisk` and
//! `partx` (util-linux), `mkfs.ext4`/`e2fsck` (e2fsprogs),
//! `mkfs.fat`/`fsck.fat` (dosfstools), mtools (this kernel has no FAT
//! driver), `zstd` and `mount`. Without them a test skips (fails with
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
        unmount(&self.0);
    }
}

/// Unmounts `point`, retrying briefly: a file just closed can keep the
/// mount busy for a moment, and a mount left behind holds its loop device
/// (and the deleted backing file's space) for good.
fn unmount(point: &Path) {
    for _ in 0..20 {
        match Command::new("umount").arg(point).status() {
            Ok(status) if status.success() => return,
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    }
    eprintln!("warning: could not unmount {}", point.display());
}

// ------------------------------------------------ used clusters, per file system

/// A file system to build, check and fill in the round-trip tests. This
/// kernel has no FAT driver, so FAT is filled and read with mtools.
struct FsKind {
    /// As `inspect --json` names it.
    name: &'static str,
    mkfs: &'static [&'static str],
    fsck: &'static [&'static str],
    /// The MBR partition type for `sfdisk`.
    mbr_type: &'static str,
    access: Access,
    /// `mount -t` and `-o` for [`Access::Mount`].
    mount_type: Option<&'static str>,
    mount_options: &'static str,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Mounted with the kernel's driver.
    Mount,
    /// Written and read with mtools (`mcopy`, `mdel`, `mmd`).
    Mtools,
}

const EXT4: FsKind = FsKind {
    name: "ext4",
    mkfs: &["mkfs.ext4", "-q", "-F"],
    fsck: &["e2fsck", "-f", "-n"],
    mbr_type: "83",
    access: Access::Mount,
    mount_type: None,
    mount_options: "",
};

const NTFS: FsKind = FsKind {
    name: "NTFS",
    mkfs: &["mkntfs", "-q", "-F", "-f"],
    fsck: &["ntfsfix", "-n"],
    mbr_type: "7",
    access: Access::Mount,
    mount_type: Some("ntfs-3g"),
    mount_options: "streams_interface=windows,compression",
};

const FAT32: FsKind = FsKind {
    name: "FAT32",
    mkfs: &["mkfs.fat", "-F", "32"],
    fsck: &["fsck.fat", "-n"],
    mbr_type: "c",
    access: Access::Mtools,
    mount_type: None,
    mount_options: "",
};

const FAT16: FsKind = FsKind {
    name: "FAT16",
    mkfs: &["mkfs.fat", "-F", "16"],
    fsck: &["fsck.fat", "-n"],
    mbr_type: "6",
    access: Access::Mtools,
    mount_type: None,
    mount_options: "",
};
const DISK: u64 = 128 * MIB;
/// The partition: from 1 MiB, leaving the last 3 MiB outside it.
const PART_START: u64 = MIB;
const PART_LEN: u64 = DISK - 4 * MIB;

/// Attaches `file` (a whole disk) and returns the loop device and the node
/// of its first partition, made with `partx -u` where the kernel does not
/// parse partition tables.
fn attach_with_partition(file: &Path) -> Option<(LoopDevice, PathBuf)> {
    let backing = tempfile::NamedTempFile::new().expect("backing");
    std::fs::copy(file, backing.path()).expect("copy the disk");
    let lo = LoopDevice::attach_file(backing, None)?;
    let node = PathBuf::from(format!("{}p1", lo.path().display()));
    // `-u`, not `-a`: partitions added to an earlier user of this loop
    // number outlive its detach, with that disk's sizes.
    run(Command::new("partx").arg("-u").arg(lo.path()));
    for _ in 0..100 {
        if node.exists() {
            return Some((lo, node));
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("{} did not appear", node.display());
}

struct Mounted {
    point: PathBuf,
}

impl Mounted {
    fn new(fs: &FsKind, device: &Path, point: PathBuf, read_only: bool) -> Mounted {
        std::fs::create_dir_all(&point).expect("mount point");
        let mut cmd = Command::new("mount");
        if let Some(kind) = fs.mount_type {
            cmd.args(["-t", kind]);
        }
        let mut options: Vec<&str> = fs
            .mount_options
            .split(',')
            .filter(|o| !o.is_empty())
            .collect();
        if read_only {
            options.push("ro");
        }
        if !options.is_empty() {
            cmd.arg("-o").arg(options.join(","));
        }
        run(cmd.arg(device).arg(&point));
        Mounted { point }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        unmount(&self.point);
    }
}

/// A file system opened for the test: mounted, or reached through mtools.
enum Volume {
    Mounted(Mounted),
    Mtools { device: PathBuf, scratch: PathBuf },
}

impl Volume {
    fn open(fs: &FsKind, device: &Path, scratch: PathBuf, read_only: bool) -> Volume {
        match fs.access {
            Access::Mount => Volume::Mounted(Mounted::new(fs, device, scratch, read_only)),
            Access::Mtools => {
                std::fs::create_dir_all(&scratch).expect("scratch dir");
                Volume::Mtools {
                    device: device.to_path_buf(),
                    scratch,
                }
            }
        }
    }

    fn mtools(tool: &str, device: &Path) -> Command {
        let mut cmd = Command::new(tool);
        cmd.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(device);
        cmd
    }

    fn mkdir(&self, rel: &str) {
        match self {
            Volume::Mounted(m) => std::fs::create_dir(m.point.join(rel)).expect("mkdir"),
            Volume::Mtools { device, .. } => {
                run(Self::mtools("mmd", device).arg(format!("::/{rel}")));
            }
        }
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        match self {
            Volume::Mounted(m) => std::fs::write(m.point.join(rel), bytes).expect("write file"),
            Volume::Mtools { device, scratch } => {
                let host = scratch.join("upload");
                std::fs::write(&host, bytes).expect("write upload");
                run(Self::mtools("mcopy", device)
                    .arg(&host)
                    .arg(format!("::/{rel}")));
            }
        }
    }

    fn remove(&self, rel: &str) {
        match self {
            Volume::Mounted(m) => std::fs::remove_file(m.point.join(rel)).expect("delete file"),
            Volume::Mtools { device, .. } => {
                run(Self::mtools("mdel", device).arg(format!("::/{rel}")));
            }
        }
    }

    /// Fills the free space through one file (noise, or zeros without a
    /// seed), then deletes it.
    fn fill_free_space_then_delete(&self, noise_seed: Option<u64>) {
        let block = |n: u64| match noise_seed {
            Some(seed) => noise(seed + n, MIB as usize),
            None => vec![0u8; MIB as usize],
        };
        match self {
            Volume::Mounted(m) => {
                use std::io::Write;
                let path = m.point.join("filler");
                let mut f = File::create(&path).expect("create filler");
                for n in 0.. {
                    if f.write_all(&block(n)).is_err() || f.flush().is_err() {
                        break;
                    }
                }
                let _ = f.sync_all();
                drop(f);
                std::fs::remove_file(&path).expect("delete filler");
            }
            Volume::Mtools { device, scratch } => {
                // mdir ends with "N bytes free"; leave a little for the entry.
                let out = run(Self::mtools("mdir", device).arg("::/"));
                let listing = String::from_utf8_lossy(&out.stdout);
                let free: u64 = listing
                    .lines()
                    .filter_map(|l| l.trim().strip_suffix("bytes free"))
                    .filter_map(|n| n.split_whitespace().collect::<String>().parse().ok())
                    .next()
                    .expect("mdir reports the free bytes");
                let len = free.saturating_sub(64 << 10);
                let host = scratch.join("filler");
                {
                    use std::io::Write;
                    let mut f = File::create(&host).expect("create filler");
                    let mut left = len;
                    for n in 0.. {
                        if left == 0 {
                            break;
                        }
                        let b = block(n);
                        let take = left.min(MIB) as usize;
                        f.write_all(&b[..take]).expect("write filler");
                        left -= take as u64;
                    }
                }
                run(Self::mtools("mcopy", device).arg(&host).arg("::/filler"));
                run(Self::mtools("mdel", device).arg("::/filler"));
                std::fs::remove_file(&host).expect("delete host filler");
            }
        }
    }

    fn digests(&self) -> std::collections::BTreeMap<PathBuf, String> {
        match self {
            Volume::Mounted(m) => file_digests(&m.point),
            Volume::Mtools { device, scratch } => {
                let out = scratch.join("download");
                std::fs::create_dir_all(&out).expect("download dir");
                run(Self::mtools("mcopy", device)
                    .args(["-s", "-n"])
                    .arg("::/*")
                    .arg(&out));
                file_digests(&out)
            }
        }
    }
}

/// SHA-256 of every regular file under `dir`, by relative path.
fn file_digests(dir: &Path) -> std::collections::BTreeMap<PathBuf, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir") {
            let path = entry.expect("entry").path();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            if meta.is_dir() {
                if !path.ends_with("lost+found") {
                    stack.push(path);
                }
            } else if meta.is_file() {
                let bytes = std::fs::read(&path).expect("read file");
                let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
                out.insert(
                    path.strip_prefix(dir).expect("under dir").to_path_buf(),
                    hex::encode(digest.as_ref()),
                );
            }
        }
    }
    out
}

/// Builds a disk with one partition of `fs`, used as the issue describes:
/// files written, some deleted, and the free space filled with noise
/// through a file that is then deleted. The post-MBR gap and the sectors
/// after the partition hold noise too.
fn used_disk(fx: &Fixture, fs: &FsKind, fill: bool) -> PathBuf {
    let raw = fx.path("source.raw");
    let file = File::create(&raw).expect("create disk");
    file.set_len(DISK).expect("size disk");
    let table = format!(
        "label: dos\nstart={}, size={}, type={}\n",
        PART_START / 512,
        PART_LEN / 512,
        fs.mbr_type
    );
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(&raw)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sfdisk");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(table.as_bytes())
            .expect("write table");
    }
    assert!(child.wait().expect("sfdisk").success());
    file.write_all_at(&noise(1, (PART_START - 512) as usize), 512)
        .expect("post-MBR gap");
    file.write_all_at(
        &noise(2, (DISK - PART_START - PART_LEN) as usize),
        PART_START + PART_LEN,
    )
    .expect("tail");
    drop(file);

    let (lo, part) = attach_with_partition(&raw).expect("attach");
    run(Command::new(fs.mkfs[0]).args(&fs.mkfs[1..]).arg(&part));
    {
        let v = Volume::open(fs, &part, fx.path("build"), false);
        v.mkdir("dir");
        let name = |i: u64| {
            if i % 2 == 0 {
                format!("file{i}.bin")
            } else {
                format!("dir/file{i}.bin")
            }
        };
        for i in 0..24u64 {
            let len = 4096 * (1 + i * 37 % 200) as usize + (i as usize * 333);
            v.write(&name(i), &noise(100 + i, len));
        }
        for i in (0..24u64).step_by(3) {
            v.remove(&name(i));
        }
        if let (Volume::Mounted(m), "NTFS") = (&v, fs.name) {
            ntfs_special_files(&m.point);
        }
        if fill {
            v.fill_free_space_then_delete(Some(7));
        }
    }
    std::fs::copy(lo.backing_file(), &raw).expect("copy back");
    raw
}

/// `zstd -3` of `raw` after its free space is filled with zeros: the used
/// bytes compressed, measured with the file system's own tools.
fn used_bytes_compressed(fx: &Fixture, fs: &FsKind, raw: &Path) -> u64 {
    let (lo, part) = attach_with_partition(raw).expect("attach");
    Volume::open(fs, &part, fx.path("zero"), false).fill_free_space_then_delete(None);
    let out = run(Command::new("zstd")
        .args(["-3", "-c", "-q"])
        .arg(lo.backing_file()));
    out.stdout.len() as u64
}

fn round_trip(fs: &FsKind) {
    round_trip_with(fs, true);
}

/// The round trip; `fill` fills the free space with noise before use.
fn round_trip_with(fs: &FsKind, fill: bool) {
    let access_tools: &[&str] = match (fs.access, fs.mount_type) {
        (Access::Mount, Some(kind)) => &["mount", kind, "setfattr", "getfattr"],
        (Access::Mount, None) => &["mount"],
        (Access::Mtools, _) => &["mcopy", "mdel", "mmd", "mdir"],
    };
    let mut tools = vec!["sfdisk", "partx", "zstd", fs.mkfs[0], fs.fsck[0]];
    tools.extend_from_slice(access_tools);
    let Some(fx) = Fixture::new(&tools) else {
        return;
    };
    let raw = used_disk(&fx, fs, fill);
    let source_files = {
        let (_lo, part) = attach_with_partition(&raw).expect("attach");
        let volume = Volume::open(fs, &part, fx.path("source"), true);
        let files = volume.digests();
        drop(volume);
        files
    };
    assert!(source_files.len() >= 16, "{source_files:?}");
    if fs.name == "ext4" && !fill {
        let (_lo, part) = attach_with_partition(&raw).expect("attach");
        let out = run(Command::new("dumpe2fs").arg(&part));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("BLOCK_UNINIT"),
            "the disk has no BLOCK_UNINIT group to test"
        );
    }

    let (image, out) = fx.capture(&raw, fs.name, &[]);
    assert!(out.status.success(), "capture: {}", text(&out));
    let j = fx.inspect_json(&image);
    let capture = &j["partitions"][0]["capture"];
    assert_eq!(capture["mode"], "used-clusters", "{j}");
    assert_eq!(capture["file_system"], fs.name, "{j}");
    assert!(capture["volume_serial"].is_string(), "{j}");
    assert!(
        j["extents"]["unmapped_bytes"].as_u64().unwrap_or(0) > 0,
        "{j}"
    );

    let stored = j["stored_bytes"].as_u64().expect("stored_bytes");
    let reference = used_bytes_compressed(&fx, fs, &raw);
    assert!(
        stored as f64 <= reference as f64 * 1.05,
        "{} stored {stored} bytes, more than 5% over the used bytes compressed ({reference})",
        fs.name
    );

    let Some(target) = filled_loop(DISK, None, 0xa5) else {
        return;
    };
    let out = fx.restore(&image, target.path());
    assert!(out.status.success(), "restore: {}", text(&out));
    let restored = std::fs::read(target.backing_file()).expect("read target");
    let source = std::fs::read(&raw).expect("read source");
    let (p0, p1) = (PART_START as usize, (PART_START + PART_LEN) as usize);
    assert!(
        restored[..p0] == source[..p0],
        "MBR and post-MBR gap differ"
    );
    assert!(
        restored[p1..] == source[p1..],
        "sectors after the partition differ"
    );

    let (_lo, part) = attach_with_partition(target.backing_file()).expect("attach target");
    let out = Command::new(fs.fsck[0])
        .args(&fs.fsck[1..])
        .arg(&part)
        .output()
        .expect("run fsck");
    assert!(
        out.status.success(),
        "{} on the restored disk: {}",
        fs.fsck[0],
        text(&out)
    );
    let volume = Volume::open(fs, &part, fx.path("restored"), true);
    assert_eq!(volume.digests(), source_files);
    if let (Volume::Mounted(m), "NTFS") = (&volume, fs.name) {
        check_ntfs_special_files(&m.point);
    }
}

/// A 300-character path, longer than Windows' classic MAX_PATH of 260.
fn long_path(root: &Path) -> PathBuf {
    root.join("a".repeat(100))
        .join("b".repeat(100))
        .join(format!("{}.txt", "c".repeat(96)))
}

/// Compressed, sparse and ADS files, a hard link and a long path, made
/// through ntfs-3g.
fn ntfs_special_files(root: &Path) {
    let compressed = root.join("compressed");
    std::fs::create_dir(&compressed).expect("mkdir compressed");
    run(Command::new("setfattr")
        .args(["-n", "system.ntfs_attrib_be", "-v", "0x00000810"])
        .arg(&compressed));
    let text: Vec<u8> = b"setpoint 42; valve open\n"
        .iter()
        .copied()
        .cycle()
        .take(3 << 20)
        .collect();
    std::fs::write(compressed.join("log.txt"), &text).expect("write compressed");

    let sparse = File::create(root.join("sparse.bin")).expect("create sparse");
    sparse.write_all_at(b"head", 0).expect("sparse head");
    sparse
        .write_all_at(&noise(9, 70_000), 5 * MIB)
        .expect("sparse middle");
    sparse.set_len(9 * MIB).expect("sparse length");
    drop(sparse);

    std::fs::write(root.join("with-ads.txt"), b"main stream").expect("write main");
    std::fs::write(
        root.join("with-ads.txt:Zone.Identifier"),
        b"[ZoneTransfer]\r\nZoneId=3\r\n",
    )
    .expect("write ADS");
    std::fs::hard_link(root.join("with-ads.txt"), root.join("hard-link.txt")).expect("hard link");

    let long = long_path(root);
    std::fs::create_dir_all(long.parent().expect("parent")).expect("long dirs");
    std::fs::write(&long, noise(10, 10_000)).expect("long path file");
}

fn check_ntfs_special_files(root: &Path) {
    let out = run(Command::new("getfattr")
        .args(["-n", "system.ntfs_attrib_be", "-e", "hex"])
        .arg(root.join("compressed/log.txt")));
    let attrib = String::from_utf8_lossy(&out.stdout);
    let value = attrib
        .lines()
        .find_map(|l| l.strip_prefix("system.ntfs_attrib_be=0x"))
        .and_then(|v| u32::from_str_radix(v.trim(), 16).ok())
        .expect("the attribute value");
    assert!(
        value & 0x800 != 0,
        "log.txt is no longer compressed: {attrib}"
    );
    assert_eq!(
        std::fs::read(root.join("with-ads.txt:Zone.Identifier")).expect("read ADS"),
        b"[ZoneTransfer]\r\nZoneId=3\r\n"
    );
    use std::os::unix::fs::MetadataExt;
    let ino = |name: &str| std::fs::metadata(root.join(name)).expect("stat").ino();
    assert_eq!(
        ino("with-ads.txt"),
        ino("hard-link.txt"),
        "the hard link is gone"
    );
    assert!(long_path(root).as_os_str().len() > 260 + root.as_os_str().len());
    assert!(long_path(root).is_file());
    let sparse = std::fs::read(root.join("sparse.bin")).expect("read sparse");
    assert_eq!(sparse.len() as u64, 9 * MIB);
    assert_eq!(&sparse[..4], b"head");
    assert_eq!(
        &sparse[5 * MIB as usize..5 * MIB as usize + 70_000],
        &noise(9, 70_000)[..]
    );
}

#[test]
fn ntfs_round_trip_keeps_files_streams_links_and_stores_only_used_clusters() {
    round_trip(&NTFS);
}

#[test]
fn ext4_round_trip_keeps_files_and_stores_only_used_blocks() {
    round_trip(&EXT4);
}

/// Without the fill, most block groups stay BLOCK_UNINIT: their used
/// blocks (superblock backups, descriptors, flex_bg metadata) are computed,
/// not read from a bitmap, and must all survive.
#[test]
fn ext4_with_uninitialised_block_groups_round_trips() {
    round_trip_with(&EXT4, false);
}

#[test]
fn fat32_round_trip_keeps_files_and_stores_only_used_clusters() {
    round_trip(&FAT32);
}

#[test]
fn fat16_round_trip_keeps_files_and_stores_only_used_clusters() {
    round_trip(&FAT16);
}

// ----------------------------------------------------- hand parsers, corrupted

/// The fuzz targets' harnesses on real small file systems with random
/// bytes flipped in their metadata: no panic, no unbounded allocation.
/// (`fuzz/run.sh` runs the same harnesses under libFuzzer.)
#[test]
fn hand_parsers_survive_corrupted_real_file_systems() {
    let Some(fx) = Fixture::new(&["mkfs.ext4", "mkfs.fat", "mkntfs"]) else {
        return;
    };
    // An ext4 of 1 KiB blocks with files (their inodes, extents and a
    // symlink for the inode walker), a FAT16 and an NTFS.
    let files = fx.path("files");
    std::fs::create_dir_all(files.join("dir")).expect("files dir");
    std::fs::write(files.join("dir/big"), noise(5, 300_000)).expect("big file");
    std::fs::write(files.join("small"), b"setpoint 42").expect("small file");
    std::os::unix::fs::symlink("dir/big", files.join("link")).expect("symlink");
    let ext = fx.path("ext4.img");
    File::create(&ext)
        .and_then(|f| f.set_len(4 * MIB))
        .expect("ext4 image");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-b", "1024", "-d"])
        .arg(&files)
        .arg(&ext));
    let fat = fx.path("fat.img");
    run(Command::new("mkfs.fat")
        .args(["-C", "-F", "16", "-s", "1"])
        .arg(&fat)
        .arg("8192"));
    let ntfs = fx.path("ntfs.img");
    File::create(&ntfs)
        .and_then(|f| f.set_len(2 * MIB))
        .expect("ntfs image");
    run(Command::new("mkntfs").args(["-q", "-F", "-f"]).arg(&ntfs));
    /// An image, the harness that parses it, how many leading bytes hold
    /// the metadata worth corrupting, and how many corrupted copies to try
    /// (fewer for the walkers, which go over the whole image each time).
    type Case<'a> = (&'a Path, fn(&[u8]), usize, usize);
    use reliquary_appliance::fuzzing;
    let cases: [Case; 5] = [
        (&ext, fuzzing::ext_bitmaps, 64 << 10, 2000),
        (&ext, fuzzing::ext_inodes, 512 << 10, 200),
        (&fat, fuzzing::fat_table, 16 << 10, 2000),
        (&fat, fuzzing::fat_chains, 16 << 10, 2000),
        (&ntfs, fuzzing::ntfs_records, 2 << 20, 200),
    ];
    for (path, harness, metadata_len, rounds) in cases {
        let clean = std::fs::read(path).expect("read image");
        let started = std::time::Instant::now();
        harness(&clean);
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..rounds {
            let mut bytes = clean.clone();
            for _ in 0..4 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = (state % metadata_len as u64) as usize;
                bytes[at] = (state >> 32) as u8;
            }
            harness(&bytes);
            fuzzing::sector_size(&bytes);
        }
        eprintln!(
            "{} rounds on {}: {:?}",
            rounds,
            path.display(),
            started.elapsed()
        );
    }
}

// --------------------------------------------------------------- fallbacks

/// Sets the dirty flag of the NTFS volume at byte `start` of `raw`, as
/// Windows leaves it after a crash: bit 0 of `$Volume`'s
/// `$VOLUME_INFORMATION` flags (MFT record 3; mkntfs lays the MFT out
/// contiguously).
fn set_ntfs_dirty(raw: &Path, start: u64) {
    let file = File::options()
        .read(true)
        .write(true)
        .open(raw)
        .expect("open raw");
    let mut boot = [0u8; 512];
    file.read_exact_at(&mut boot, start).expect("boot sector");
    let sector = u64::from(u16::from_le_bytes([boot[11], boot[12]]));
    let cluster = sector * u64::from(boot[13]);
    let mft = u64::from_le_bytes(boot[48..56].try_into().expect("8 bytes")) * cluster;
    let record_size = match boot[64] as i8 {
        n if n < 0 => 1u64 << -n,
        n => n as u64 * cluster,
    };
    let at = start + mft + 3 * record_size;
    let mut record = vec![0u8; record_size as usize];
    file.read_exact_at(&mut record, at).expect("MFT record 3");
    assert_eq!(&record[..4], b"FILE", "MFT record 3");
    let mut attr = u16::from_le_bytes([record[20], record[21]]) as usize;
    loop {
        let kind = u32::from_le_bytes(record[attr..attr + 4].try_into().expect("4 bytes"));
        let len = u32::from_le_bytes(record[attr + 4..attr + 8].try_into().expect("4 bytes"));
        assert!(kind != 0xffff_ffff && len > 0, "no $VOLUME_INFORMATION");
        if kind == 0x70 {
            let value = attr + u16::from_le_bytes([record[attr + 20], record[attr + 21]]) as usize;
            let flags = at + value as u64 + 10;
            let mut b = [0u8; 1];
            file.read_exact_at(&mut b, flags).expect("flags");
            file.write_all_at(&[b[0] | 1], flags).expect("set dirty");
            return;
        }
        attr += len as usize;
    }
}

#[test]
fn a_dirty_ntfs_volume_is_captured_whole_and_the_manifest_says_why() {
    let Some(fx) = Fixture::new(&["sfdisk", "partx", "ntfs-3g", "setfattr", "mkntfs"]) else {
        return;
    };
    let raw = used_disk(&fx, &NTFS, true);
    set_ntfs_dirty(&raw, PART_START);
    let (image, out) = fx.capture(&raw, "dirty", &[]);
    assert!(out.status.success(), "capture: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: partition 1: every sector kept (NTFS:"),
        "{}",
        text(&out)
    );
    let j = fx.inspect_json(&image);
    let capture = &j["partitions"][0]["capture"];
    assert_eq!(capture["mode"], "all-sectors", "{j}");
    assert_eq!(capture["file_system"], "NTFS", "{j}");
    assert!(
        capture["fallback_reason"]
            .as_str()
            .is_some_and(|r| r.contains("dirty flag")),
        "{j}"
    );
    assert_eq!(j["extents"]["unmapped_bytes"], 0, "{j}");

    let Some(target) = filled_loop(DISK, None, 0xa5) else {
        return;
    };
    let out = fx.restore(&image, target.path());
    assert!(out.status.success(), "restore: {}", text(&out));
    assert!(
        same_bytes(&raw, target.backing_file()),
        "the restored disk differs from the dirty source"
    );
}

#[test]
fn all_sectors_keeps_the_free_space_of_a_clean_volume() {
    let Some(fx) = Fixture::new(&["sfdisk", "partx", "mkfs.ext4", "mount"]) else {
        return;
    };
    let raw = used_disk(&fx, &EXT4, true);
    let (image, out) = fx.capture(&raw, "all", &["--all-sectors"]);
    assert!(out.status.success(), "capture: {}", text(&out));
    let j = fx.inspect_json(&image);
    let capture = &j["partitions"][0]["capture"];
    assert_eq!(capture["mode"], "all-sectors", "{j}");
    assert_eq!(capture["fallback_reason"], "--all-sectors was given", "{j}");
    assert_eq!(j["extents"]["unmapped_bytes"], 0, "{j}");
    let Some(target) = filled_loop(DISK, None, 0xa5) else {
        return;
    };
    let out = fx.restore(&image, target.path());
    assert!(out.status.success(), "restore: {}", text(&out));
    assert!(same_bytes(&raw, target.backing_file()));
}

#[test]
fn a_hibernated_windows_is_captured_whole_and_the_manifest_says_why() {
    let Some(fx) = Fixture::new(&["sfdisk", "partx", "ntfs-3g", "setfattr", "mkntfs"]) else {
        return;
    };
    let raw = used_disk(&fx, &NTFS, false);
    {
        // A resume image's header, as Windows leaves it on hibernation.
        let (lo, part) = attach_with_partition(&raw).expect("attach");
        let volume = Volume::open(&NTFS, &part, fx.path("hibernate"), false);
        let mut image = b"HIBR".to_vec();
        image.extend(noise(12, 2 * MIB as usize));
        volume.write("hiberfil.sys", &image);
        drop(volume);
        std::fs::copy(lo.backing_file(), &raw).expect("copy back");
    }
    let (image, out) = fx.capture(&raw, "hibernated", &[]);
    assert!(out.status.success(), "capture: {}", text(&out));
    let j = fx.inspect_json(&image);
    let capture = &j["partitions"][0]["capture"];
    assert_eq!(capture["mode"], "all-sectors", "{j}");
    assert!(
        capture["fallback_reason"]
            .as_str()
            .is_some_and(|r| r.contains("hibernated")),
        "{j}"
    );
    assert_eq!(j["extents"]["unmapped_bytes"], 0, "{j}");
}

/// Whether the loop device `lo` zeroes ranges without writing them, as
/// its sysfs queue says.
fn zeroes_without_writing(lo: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let rdev = std::fs::metadata(lo).expect("stat").rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    std::fs::read_to_string(format!(
        "/sys/dev/block/{major}:{minor}/queue/write_zeroes_max_bytes"
    ))
    .ok()
    .and_then(|t| t.trim().parse::<u64>().ok())
    .is_some_and(|n| n > 0)
}

#[test]
fn discarded_or_zeroed_free_space_reads_zeros_and_the_record_says_which() {
    let fs = &EXT4;
    let Some(fx) = Fixture::new(&["sfdisk", "partx", "mkfs.ext4", "mount"]) else {
        return;
    };
    let raw = used_disk(&fx, fs, true);
    let (image, out) = fx.capture(&raw, "discard", &[]);
    assert!(out.status.success(), "capture: {}", text(&out));
    let (Some(discarded), Some(zeroed)) =
        (filled_loop(DISK, None, 0xa5), filled_loop(DISK, None, 0xa5))
    else {
        return;
    };
    let file = fx.path("target.disk");
    std::fs::write(&file, vec![0xa5u8; DISK as usize]).expect("file target");
    let audit = fx.path("audit");
    let out = reliquary(&[
        "audit".as_ref(),
        "init".as_ref(),
        "--dir".as_ref(),
        audit.as_os_str(),
    ]);
    assert!(out.status.success(), "audit init: {}", text(&out));
    let restore = |targets: &[&Path], flag: &str| {
        Command::new(reliquary_bin())
            .arg("restore")
            .arg(&image)
            .args(targets)
            .arg("--trust")
            .arg(fx.trust())
            .arg("--audit")
            .arg(&audit)
            .args(["--operator", "tech1", "--yes", flag])
            .args(["--meaning", "replacement", "--reason", "WO-4711"])
            .stdin(Stdio::null())
            .output()
            .expect("run reliquary restore")
    };
    // One restore asks both the loop device and the file for a discard.
    let out = restore(&[discarded.path(), &file], "--discard-unmapped");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("zeroed instead"),
        "the file target does not say its free space was zeroed: {}",
        text(&out)
    );
    let out = restore(&[zeroed.path()], "--zero-unmapped");
    assert!(out.status.success(), "{}", text(&out));
    // Discarded or zeroed, the free space reads as zeros on all three.
    let expected = std::fs::read(zeroed.backing_file()).expect("read zeroed");
    assert!(
        expected.chunks(512).all(|sector| sector != [0xa5; 512]),
        "the zeroed target still holds a sector of its old pattern"
    );
    for target in [discarded.backing_file(), file.as_path()] {
        assert!(
            std::fs::read(target).expect("read target") == expected,
            "{} does not read as the zeroed target",
            target.display()
        );
    }
    // Each start record says what was done on its disk.
    let out = reliquary(&[
        "audit".as_ref(),
        "export".as_ref(),
        "--format".as_ref(),
        "jsonl".as_ref(),
        "--dir".as_ref(),
        audit.as_os_str(),
    ]);
    let recorded: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|r| r["record"]["payload"].clone())
        .filter(|p| !p["mode"].is_null())
        .map(|p| {
            (
                p["target"]["path"].as_str().unwrap_or_default().to_string(),
                p["unmapped"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let loop_mode = if zeroes_without_writing(discarded.path()) {
        "Discarded"
    } else {
        "Zeroed"
    };
    assert_eq!(
        recorded,
        [
            (
                discarded.path().display().to_string(),
                loop_mode.to_string()
            ),
            (file.display().to_string(), "Zeroed".to_string()),
            (zeroed.path().display().to_string(), "Zeroed".to_string()),
        ]
    );
}

// ------------------------------------------- allocation maps that lie

/// An MFT record of the NTFS volume at byte `start` of `file`, with its
/// update sequence undone, and the cluster size.
fn ntfs_record(file: &File, start: u64, number: u64) -> (Vec<u8>, u64) {
    let mut boot = [0u8; 512];
    file.read_exact_at(&mut boot, start).expect("boot sector");
    let sector = u64::from(u16::from_le_bytes([boot[11], boot[12]]));
    let cluster = sector * u64::from(boot[13]);
    let mft = u64::from_le_bytes(boot[48..56].try_into().expect("8 bytes")) * cluster;
    let record_size = match boot[64] as i8 {
        n if n < 0 => 1u64 << -n,
        n => n as u64 * cluster,
    };
    let mut record = vec![0u8; record_size as usize];
    file.read_exact_at(&mut record, start + mft + number * record_size)
        .expect("MFT record");
    assert_eq!(&record[..4], b"FILE", "MFT record {number}");
    let usa = u16::from_le_bytes([record[4], record[5]]) as usize;
    for i in 0..record.len() / 512 {
        let end = (i + 1) * 512 - 2;
        record[end] = record[usa + 2 * (i + 1)];
        record[end + 1] = record[usa + 2 * (i + 1) + 1];
    }
    (record, cluster)
}

/// Partition byte offset and length of the first data run of MFT record
/// `number`'s unnamed `$DATA` (mkntfs lays system files out in one run).
fn ntfs_data_run(file: &File, start: u64, number: u64) -> (u64, u64) {
    let (record, cluster) = ntfs_record(file, start, number);
    let u16_at = |at: usize| u16::from_le_bytes([record[at], record[at + 1]]) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(record[at..at + 4].try_into().expect("4")) as usize;
    let mut attr = u16_at(20);
    loop {
        assert!(u32_at(attr) != 0xffff_ffff, "no $DATA in record {number}");
        if u32_at(attr) == 0x80 && record[attr + 9] == 0 {
            assert_eq!(record[attr + 8], 1, "$DATA of record {number} is resident");
            let pairs = attr + u16_at(attr + 32);
            let header = record[pairs];
            let (len_bytes, off_bytes) = ((header & 0xf) as usize, (header >> 4) as usize);
            let le = |b: &[u8]| b.iter().rev().fold(0u64, |n, &x| (n << 8) | u64::from(x));
            let length = le(&record[pairs + 1..pairs + 1 + len_bytes]);
            let lcn = le(&record[pairs + 1 + len_bytes..pairs + 1 + len_bytes + off_bytes]);
            return (lcn * cluster, length * cluster);
        }
        attr += u32_at(attr + 4);
    }
}

/// Where `needle` (at least 4 KiB of a file's noise) starts in the
/// partition at `start`, at a sector-aligned offset.
fn find_block(raw: &Path, start: u64, len: u64, needle: &[u8]) -> u64 {
    let disk = std::fs::read(raw).expect("read raw");
    let part = &disk[start as usize..(start + len) as usize];
    (0..part.len() - 4096)
        .step_by(512)
        .find(|&at| part[at..at + 4096] == needle[..4096])
        .expect("the file's first block is on the disk") as u64
}

/// Writes `name` with `bytes` into the first partition of `raw`.
fn add_file(fx: &Fixture, fs: &FsKind, raw: &Path, name: &str, bytes: &[u8]) {
    let (lo, part) = attach_with_partition(raw).expect("attach");
    let volume = Volume::open(fs, &part, fx.path("add"), false);
    volume.write(name, bytes);
    drop(volume);
    std::fs::copy(lo.backing_file(), raw).expect("copy back");
}

/// Captures `raw`, expects the partition kept whole with a reason holding
/// every one of `because` (on stderr and in `inspect --json`), and
/// restores it onto a differently filled disk that must then equal `raw`.
fn expect_kept_whole(fx: &Fixture, raw: &Path, name: &str, file_system: &str, because: &[&str]) {
    let (image, out) = fx.capture(raw, name, &[]);
    assert!(out.status.success(), "capture: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "warning: partition 1: every sector kept ({file_system}:"
        )),
        "{}",
        text(&out)
    );
    for why in because {
        assert!(stderr.contains(why), "stderr lacks {why:?}: {}", text(&out));
    }
    let j = fx.inspect_json(&image);
    let capture = &j["partitions"][0]["capture"];
    assert_eq!(capture["mode"], "all-sectors", "{j}");
    assert_eq!(capture["file_system"], file_system, "{j}");
    let reason = capture["fallback_reason"].as_str().unwrap_or_default();
    for why in because {
        assert!(reason.contains(why), "the reason lacks {why:?}: {j}");
    }
    assert_eq!(j["extents"]["unmapped_bytes"], 0, "{j}");
    let Some(target) = filled_loop(DISK, None, 0xa5) else {
        return;
    };
    let out = fx.restore(&image, target.path());
    assert!(out.status.success(), "restore: {}", text(&out));
    assert!(
        same_bytes(raw, target.backing_file()),
        "the restored disk differs from the source"
    );
}

/// A `$LogFile` restart page (4 KiB, version 1.1) as Windows writes it,
/// with one log client, "NTFS"; `clean` sets RESTART_VOLUME_IS_CLEAN.
fn restart_page(log_len: u64, lsn: u64, clean: bool) -> Vec<u8> {
    let mut page = vec![0u8; 4096];
    let put16 =
        |p: &mut Vec<u8>, at: usize, v: u16| p[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |p: &mut Vec<u8>, at: usize, v: u32| p[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |p: &mut Vec<u8>, at: usize, v: u64| p[at..at + 8].copy_from_slice(&v.to_le_bytes());
    page[..4].copy_from_slice(b"RSTR");
    put16(&mut page, 4, 0x1e); // update sequence array offset
    put16(&mut page, 6, 9); // 1 + 4096 / 512
    put32(&mut page, 16, 4096); // system page size
    put32(&mut page, 20, 4096); // log page size
    put16(&mut page, 24, 0x30); // restart area offset
    put16(&mut page, 26, 1); // minor version
    put16(&mut page, 28, 1); // major version
    let area = 0x30;
    put64(&mut page, area, lsn); // current LSN
    put16(&mut page, area + 8, 1); // log clients
    put16(&mut page, area + 10, 0xffff); // free list: none
    put16(&mut page, area + 12, 0); // in-use list: client 0
    put16(&mut page, area + 14, if clean { 2 } else { 0 });
    put32(&mut page, area + 16, 67 - (64 - log_len.leading_zeros())); // sequence number bits
    put16(&mut page, area + 20, 0x30 + 0xa0); // restart area length
    put16(&mut page, area + 22, 0x30); // client array offset
    put64(&mut page, area + 24, log_len); // file size
    put16(&mut page, area + 36, 0x30); // log record header length
    put16(&mut page, area + 38, 0x40); // log page data offset
    put32(&mut page, area + 40, 1); // restart log open count
    let client = area + 0x30;
    put64(&mut page, client, lsn); // oldest LSN
    put64(&mut page, client + 8, lsn); // client restart LSN
    put16(&mut page, client + 16, 0xffff); // previous client
    put16(&mut page, client + 18, 0xffff); // next client
    put32(&mut page, client + 28, 8); // name length in bytes
    for (i, c) in "NTFS".encode_utf16().enumerate() {
        put16(&mut page, client + 32 + 2 * i, c);
    }
    // The update sequence: sequence number 1 at the end of every sector,
    // the bytes it replaces (zeros) saved in the array.
    put16(&mut page, 0x1e, 1);
    for sector in 0..8 {
        put16(&mut page, sector * 512 + 510, 1);
    }
    page
}

/// Writes both restart pages of the `$LogFile` of the NTFS volume at
/// `start` of `raw`.
fn write_restart_pages(raw: &Path, start: u64, clean: bool) {
    let file = File::options()
        .read(true)
        .write(true)
        .open(raw)
        .expect("open raw");
    let (log_at, log_len) = ntfs_data_run(&file, start, 2);
    let lsn = 0x0010_0000;
    file.write_all_at(&restart_page(log_len, lsn, clean), start + log_at)
        .expect("first restart page");
    file.write_all_at(
        &restart_page(log_len, lsn + 1, clean),
        start + log_at + 4096,
    )
    .expect("second restart page");
}

/// What ntfs-3g says when it mounts the volume of `raw` (without
/// replaying anything itself: `norecover`).
fn ntfs_3g_mount(fx: &Fixture, raw: &Path) -> String {
    let (_lo, part) = attach_with_partition(raw).expect("attach");
    let point = fx.path("ntfs-3g-check");
    std::fs::create_dir_all(&point).expect("mount point");
    let out = Command::new("mount")
        .args(["-t", "ntfs-3g", "-o", "norecover"])
        .arg(&part)
        .arg(&point)
        .output()
        .expect("run mount");
    if out.status.success() {
        unmount(&point);
    }
    text(&out)
}

/// A power cut leaves the `$LogFile` restart area "client in use, not
/// clean" and no dirty flag. ntfs-3g calls such a volume unclean (and
/// mounts it read-only at most); capture keeps it whole. The same page
/// marked clean is accepted by ntfs-3g and captured used-clusters-only,
/// so the page itself is well formed.
#[test]
fn an_ntfs_volume_with_an_unreplayed_log_is_captured_whole() {
    let Some(fx) = Fixture::new(&["sfdisk", "partx", "ntfs-3g", "setfattr", "mkntfs"]) else {
        return;
    };
    let raw = used_disk(&fx, &NTFS, false);
    write_restart_pages(&raw, PART_START, true);
    let said = ntfs_3g_mount(&fx, &raw);
    assert!(
        !said.contains("unclean"),
        "ntfs-3g on the clean restart page: {said}"
    );
    let (image, out) = fx.capture(&raw, "clean-log", &[]);
    assert!(out.status.success(), "capture: {}", text(&out));
    let j = fx.inspect_json(&image);
    assert_eq!(
        j["partitions"][0]["capture"]["mode"], "used-clusters",
        "{j}"
    );

    write_restart_pages(&raw, PART_START, false);
    let said = ntfs_3g_mount(&fx, &raw);
    assert!(said.contains("unclean file system"), "ntfs-3g: {said}");
    expect_kept_whole(
        &fx,
        &raw,
        "unclean-log",
        "NTFS",
        &["$LogFile", "not cleanly unmounted"],
    );
}

/// `$Bitmap` clearing the 69 clusters of a file: the file's data runs
/// contradict it, and the partition is kept whole naming file and cluster.
#[test]
fn an_ntfs_bitmap_that_frees_a_files_clusters_is_not_trusted() {
    let Some(fx) = Fixture::new(&["sfdisk", "partx", "ntfs-3g", "setfattr", "mkntfs"]) else {
        return;
    };
    let raw = used_disk(&fx, &NTFS, false);
    let victim = noise(69, 69 * 4096);
    add_file(&fx, &NTFS, &raw, "victim.bin", &victim);
    let file = File::options()
        .read(true)
        .write(true)
        .open(&raw)
        .expect("open raw");
    let first = find_block(&raw, PART_START, PART_LEN, &victim) / 4096;
    let (bitmap_at, _) = ntfs_data_run(&file, PART_START, 6);
    for cluster in first..first + 69 {
        let at = PART_START + bitmap_at + cluster / 8;
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, at).expect("bitmap byte");
        file.write_all_at(&[b[0] & !(1 << (cluster % 8))], at)
            .expect("clear bitmap bit");
    }
    drop(file);
    expect_kept_whole(
        &fx,
        &raw,
        "ntfs-bitmap-lie",
        "NTFS",
        &[
            &format!("cluster {first}, which $Bitmap marks free"),
            "victim.bin",
        ],
    );
}

/// The FAT of the volume at `start` of `raw`: (offset of FAT n from the
/// partition start, for n = 0, 1), bytes per entry (2 or 4), data area
/// offset, cluster size.
fn fat_layout(raw: &Path, start: u64) -> ([u64; 2], u64, u64, u64) {
    let file = File::open(raw).expect("open raw");
    let mut b = [0u8; 512];
    file.read_exact_at(&mut b, start).expect("boot sector");
    let u16_at = |at: usize| u64::from(u16::from_le_bytes([b[at], b[at + 1]]));
    let sector = u16_at(11);
    let fat_sectors = match u16_at(22) {
        0 => u64::from(u32::from_le_bytes(b[36..40].try_into().expect("4"))),
        n => n,
    };
    let fat0 = u16_at(14) * sector;
    let fat_bytes = fat_sectors * sector;
    let root = (u16_at(17) * 32).div_ceil(sector) * sector;
    let entry = if u16_at(22) == 0 { 4 } else { 2 };
    (
        [fat0, fat0 + fat_bytes],
        entry,
        fat0 + 2 * fat_bytes + root,
        sector * u64::from(b[13]),
    )
}

/// The clusters of the chain that holds `needle`'s first block, from FAT 1.
fn fat_chain(raw: &Path, needle: &[u8]) -> Vec<u64> {
    let ([fat0, _], entry, data, cluster) = fat_layout(raw, PART_START);
    let at = find_block(raw, PART_START, PART_LEN, needle);
    let file = File::open(raw).expect("open raw");
    let mut chain = vec![(at - data) / cluster + 2];
    loop {
        let mut e = [0u8; 4];
        file.read_exact_at(
            &mut e[..entry as usize],
            PART_START + fat0 + chain.last().expect("a cluster") * entry,
        )
        .expect("FAT entry");
        let next = u64::from(u32::from_le_bytes(e)) & 0x0fff_ffff;
        if next >= if entry == 2 { 0xfff8 } else { 0x0fff_fff8 } {
            return chain;
        }
        chain.push(next);
    }
}

fn set_fat_entry(raw: &Path, fat: usize, cluster: u64, value: u32) {
    let (fats, entry, _, _) = fat_layout(raw, PART_START);
    let file = File::options().write(true).open(raw).expect("open raw");
    file.write_all_at(
        &value.to_le_bytes()[..entry as usize],
        PART_START + fats[fat] + cluster * entry,
    )
    .expect("write FAT entry");
}

fn fsck_fat_says(fx: &Fixture, raw: &Path, expected: &str) {
    let (_lo, part) = attach_with_partition(raw).expect("attach");
    let out = Command::new("fsck.fat")
        .arg("-n")
        .arg(&part)
        .output()
        .expect("fsck.fat");
    let _ = fx;
    assert!(
        text(&out).contains(expected),
        "fsck.fat does not see it: {}",
        text(&out)
    );
}

/// FAT 1 zeroed for a 1 MiB chain while FAT 2 is intact: the copies
/// differ, and which one lies is unknown.
#[test]
fn fat_copies_that_differ_are_not_trusted() {
    let Some(fx) = Fixture::new(&[
        "sfdisk", "partx", "mkfs.fat", "fsck.fat", "mcopy", "mdel", "mmd", "mdir",
    ]) else {
        return;
    };
    let raw = used_disk(&fx, &FAT16, false);
    let victim = noise(1, MIB as usize);
    add_file(&fx, &FAT16, &raw, "victim.bin", &victim);
    for cluster in fat_chain(&raw, &victim) {
        set_fat_entry(&raw, 0, cluster, 0);
    }
    fsck_fat_says(&fx, &raw, "FATs differ");
    expect_kept_whole(
        &fx,
        &raw,
        "fat-copies",
        "FAT16",
        &["FAT 2 differs from FAT 1"],
    );
}

/// Both FATs agree, but a file's chain runs into a cluster they mark
/// free, or loops back on itself.
#[test]
fn a_fat_chain_into_a_free_cluster_or_a_loop_is_not_trusted() {
    let Some(fx) = Fixture::new(&[
        "sfdisk", "partx", "mkfs.fat", "fsck.fat", "mcopy", "mdel", "mmd", "mdir",
    ]) else {
        return;
    };
    let raw = used_disk(&fx, &FAT32, false);
    let victim = noise(2, MIB as usize);
    add_file(&fx, &FAT32, &raw, "victim.bin", &victim);
    let chain = fat_chain(&raw, &victim);
    let pristine = std::fs::read(&raw).expect("read raw");
    for cluster in &chain[chain.len() / 2..] {
        for fat in 0..2 {
            set_fat_entry(&raw, fat, *cluster, 0);
        }
    }
    expect_kept_whole(
        &fx,
        &raw,
        "fat-free",
        "FAT32",
        &[&format!(
            "VICTIM.BIN: its chain reaches cluster {}, which the FAT marks free",
            chain[chain.len() / 2]
        )],
    );

    std::fs::write(&raw, &pristine).expect("restore raw");
    for fat in 0..2 {
        set_fat_entry(&raw, fat, chain[chain.len() - 1], chain[1] as u32);
    }
    expect_kept_whole(&fx, &raw, "fat-loop", "FAT32", &["a loop or a cross-link"]);
}

/// A small FAT32 (fewer than 65,525 clusters, as an ESP or FAT32 on
/// 4Kn) is read as FAT32: captured used-clusters-only, and the restored
/// volume passes `fsck.fat`. (mtools reads such a volume as FAT16 and
/// cannot write files into it, and this kernel has no FAT driver, so the
/// volume holds no files.)
#[test]
fn a_fat32_below_65525_clusters_is_read_as_fat32() {
    let Some(fx) = Fixture::new(&["sfdisk", "partx", "mkfs.fat", "fsck.fat"]) else {
        return;
    };
    let raw = fx.path("small-fat32.raw");
    File::create(&raw)
        .and_then(|f| f.set_len(DISK))
        .expect("create disk");
    let mut child = Command::new("sfdisk")
        .arg("-q")
        .arg(&raw)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("run sfdisk");
    {
        use std::io::Write;
        let table = format!(
            "label: dos\nstart={}, size={}, type=c\n",
            PART_START / 512,
            PART_LEN / 512
        );
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(table.as_bytes())
            .expect("table");
    }
    assert!(child.wait().expect("sfdisk").success());
    {
        let (lo, part) = attach_with_partition(&raw).expect("attach");
        run(Command::new("mkfs.fat")
            .args(["-F", "32", "-s", "8"])
            .arg(&part));
        std::fs::copy(lo.backing_file(), &raw).expect("copy back");
    }
    let ([fat0, _], entry, data, cluster) = fat_layout(&raw, PART_START);
    assert_eq!(entry, 4, "not laid out as FAT32");
    let clusters = (PART_LEN - data) / cluster;
    assert!(clusters < 65_525, "{clusters} clusters (FAT at {fat0})");

    let (image, out) = fx.capture(&raw, "small-fat32", &[]);
    assert!(out.status.success(), "capture: {}", text(&out));
    let j = fx.inspect_json(&image);
    let capture = &j["partitions"][0]["capture"];
    assert_eq!(capture["file_system"], "FAT32", "{j}");
    assert_eq!(capture["mode"], "used-clusters", "{j}");
    assert!(
        j["extents"]["unmapped_bytes"].as_u64().unwrap_or(0) > 0,
        "{j}"
    );
    let Some(target) = filled_loop(DISK, None, 0xa5) else {
        return;
    };
    let out = fx.restore(&image, target.path());
    assert!(out.status.success(), "restore: {}", text(&out));
    let (_lo, part) = attach_with_partition(target.backing_file()).expect("attach target");
    run(Command::new("fsck.fat").arg("-n").arg(&part));
}

/// An ext4 whose superblock free count disagrees with its groups, one
/// whose bitmap frees a file's block with every count adjusted (debugfs
/// `freeb`; only the inode contradicts it), one whose inode bitmap frees an
/// inode in use (`freei`), and one whose journal needs recovery.
#[test]
fn ext4_counts_or_bitmaps_that_disagree_or_a_journal_to_replay_keep_it_whole() {
    let Some(fx) = Fixture::new(&["sfdisk", "partx", "mkfs.ext4", "mount", "debugfs"]) else {
        return;
    };
    let raw = used_disk(&fx, &EXT4, false);
    let pristine = std::fs::read(&raw).expect("read raw");
    let debugfs = |request: &str| {
        let (lo, part) = attach_with_partition(&raw).expect("attach");
        let out = run(Command::new("debugfs")
            .args(["-w", "-R", request])
            .arg(&part));
        drop(part);
        std::fs::copy(lo.backing_file(), &raw).expect("copy back");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    debugfs("ssv free_blocks_count 1000");
    expect_kept_whole(
        &fx,
        &raw,
        "ext-count",
        "ext4",
        &["the superblock says 1000"],
    );

    // A file's first block freed in the bitmap (freeb), its group's and the
    // superblock's counts adjusted to match: only the inode's extents
    // contradict the bitmap.
    std::fs::write(&raw, &pristine).expect("restore raw");
    let blocks = debugfs("blocks <12>");
    let block: u64 = blocks
        .split_whitespace()
        .next()
        .and_then(|b| b.parse().ok())
        .expect("inode 12 has blocks");
    let stats = debugfs("stats");
    let field = |name: &str| -> u64 {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("debugfs stats has no {name:?}"))
    };
    let group = (block - field("First block:")) / field("Blocks per group:");
    let group_free: u64 = stats
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(&format!("Group {group:2}:")))
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("the group's free blocks");
    debugfs(&format!("freeb {block}"));
    debugfs(&format!(
        "set_bg {group} free_blocks_count {}",
        group_free + 1
    ));
    debugfs(&format!(
        "ssv free_blocks_count {}",
        field("Free blocks:") + 1
    ));
    expect_kept_whole(
        &fx,
        &raw,
        "ext-freeb",
        "ext4",
        &["which the block bitmap marks free"],
    );

    // debugfs's freei clears the inode's bit and leaves every count alone.
    std::fs::write(&raw, &pristine).expect("restore raw");
    debugfs("freei <12>");
    expect_kept_whole(&fx, &raw, "ext-inode-bitmap", "ext4", &["inode bitmap has"]);

    std::fs::write(&raw, &pristine).expect("restore raw");
    debugfs("feature needs_recovery");
    expect_kept_whole(
        &fx,
        &raw,
        "ext-journal",
        "ext4",
        &["journal needs recovery"],
    );
}
