//! Disk discovery: which whole disks exist, what they are, and whether it is
//! safe to restore onto them.
//!
//! [`discover`] is a pure parser over a sysfs root, a parsed `mountinfo` and
//! the device numbers of the system's roles, so it runs unchanged on the
//! captured trees under `tests/fixtures/sysfs/`. [`discover_system`] feeds it
//! the live `/sys`, `/proc/self/mountinfo` and `/run/udev/data`.
//!
//! sysfs is treated as untrusted input: every attribute read is bounded,
//! trimmed and decoded lossily; a missing optional attribute is `None`; a
//! required number that does not parse is an error naming the file.

mod mountinfo;
mod roles;
mod sysfs;

use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};

use serde::{Serialize, Serializer};

use crate::exit::ExitClass;

pub use mountinfo::{parse_mountinfo, MountEntry, MountinfoError};
pub use roles::SystemRoles;

/// The live system's sysfs.
pub const SYSFS_ROOT: &str = "/sys";
/// The live system's mount table.
pub const MOUNTINFO_PATH: &str = "/proc/self/mountinfo";
/// Where udev keeps what it learnt about each device (may be absent).
pub const UDEV_DATA_ROOT: &str = "/run/udev/data";

/// A failure to discover disks.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("could not list the block devices in {path}")]
    ListDisks { path: PathBuf, source: io::Error },
    #[error("could not read {path}")]
    ReadAttribute { path: PathBuf, source: io::Error },
    #[error("{path} is missing")]
    MissingAttribute { path: PathBuf },
    #[error("{path} holds {value:?}, which is not {expected}")]
    BadAttribute {
        path: PathBuf,
        value: String,
        expected: &'static str,
    },
    #[error("could not open {path}")]
    OpenMountinfo { path: PathBuf, source: io::Error },
    #[error("could not parse {path}")]
    Mountinfo {
        path: PathBuf,
        source: MountinfoError,
    },
    #[error("could not find the device holding {path}")]
    StatPath { path: PathBuf, source: io::Error },
}

impl DiscoverError {
    /// Discovery failures are runtime errors.
    pub fn exit_class(&self) -> ExitClass {
        ExitClass::Runtime
    }
}

/// A device number, `major:minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl DevNum {
    /// Parses `"8:1"` (the sysfs `dev` attribute and `mountinfo` field).
    pub fn parse(s: &str) -> Option<DevNum> {
        let (major, minor) = s.trim().split_once(':')?;
        Some(DevNum {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }

    /// Splits a Linux `dev_t` (`st_dev`, `st_rdev`) as glibc's `major()` and
    /// `minor()` do.
    pub fn from_dev_t(dev: u64) -> DevNum {
        // Truncation is the encoding: 12+20 bits of major, 8+24 of minor.
        DevNum {
            major: (((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0x0fff)) as u32,
            minor: (((dev >> 12) & 0xffff_ff00) | (dev & 0xff)) as u32,
        }
    }
}

impl fmt::Display for DevNum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl Serialize for DevNum {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// How a disk is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Sata,
    Nvme,
    Usb,
    Virtio,
    Mmc,
    Scsi,
    Loop,
    Unknown,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Sata => "sata",
            Transport::Nvme => "nvme",
            Transport::Usb => "usb",
            Transport::Virtio => "virtio",
            Transport::Mmc => "mmc",
            Transport::Scsi => "scsi",
            Transport::Loop => "loop",
            Transport::Unknown => "unknown",
        })
    }
}

/// A mount of a disk or one of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// The mounted device (`/dev/sda1`, or the disk itself).
    pub device: PathBuf,
    /// Where it is mounted (lossily decoded for display).
    pub mount_point: String,
    /// The file-system type.
    pub fs_type: String,
}

/// What a disk is to the running system.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DiskRoles {
    /// It holds the root file system (or what it is stacked on).
    pub system: bool,
    /// It holds the vault that images are read from.
    pub vault: bool,
    /// It holds the image file being restored.
    pub image: bool,
}

/// One partition of a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Partition {
    /// The kernel name (`sda1`, `nvme0n1p1`).
    pub name: String,
    /// The device node (`/dev/sda1`).
    pub path: PathBuf,
    pub devnum: DevNum,
    /// The partition number.
    pub number: u32,
    /// The first sector, in 512-byte units (as sysfs reports it).
    pub start_sector_512: u64,
    /// The size in bytes.
    pub size_bytes: u64,
    pub read_only: bool,
    /// The partition name (GPT) from the kernel or udev.
    pub label: Option<String>,
    /// The partition type (MBR `0x7` or a GPT type GUID), from udev.
    pub part_type: Option<String>,
    /// The file-system type, from udev.
    pub fs_type: Option<String>,
    /// The file-system label, from udev.
    pub fs_label: Option<String>,
    /// Device-mapper, RAID or other devices stacked on this partition.
    pub holders: Vec<String>,
}

/// One whole disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Disk {
    /// The kernel name (`sda`, `nvme0n1`, `loop3`).
    pub name: String,
    /// The device node (`/dev/sda`).
    pub path: PathBuf,
    pub devnum: DevNum,
    /// The kernel's disk sequence number: it changes whenever other media
    /// appear behind the same node (a loop device re-attached, a card
    /// swapped), so it tells a re-enumerated disk from the confirmed one.
    pub diskseq: Option<u64>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// The world-wide name (`naa.…`, `eui.…`), where the device reports one.
    pub wwn: Option<String>,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub transport: Transport,
    pub removable: bool,
    pub rotational: bool,
    pub read_only: bool,
    /// The partition-table type (`dos`, `gpt`), from udev.
    pub partition_table: Option<String>,
    pub partitions: Vec<Partition>,
    /// Mounts of the disk itself and of its partitions.
    pub mounts: Vec<Mount>,
    /// Device-mapper, RAID or other devices stacked on the whole disk.
    pub holders: Vec<String>,
    pub roles: DiskRoles,
    /// For a loop device, the file behind it.
    pub backing_file: Option<PathBuf>,
    /// Why part of this disk's sysfs could not be read; such a disk is
    /// listed, and refused, so one bad attribute hides no other disk.
    pub unreadable: Option<String>,
}

impl Disk {
    /// Whether the disk or any of its partitions is mounted.
    pub fn is_mounted(&self) -> bool {
        !self.mounts.is_empty()
    }
}

/// What to look for, and where.
#[derive(Debug, Clone)]
pub struct DiscoverOptions {
    /// Report loop devices (that have a backing file).
    pub include_loop: bool,
    /// Where device nodes live (`/dev`).
    pub dev_root: PathBuf,
    /// udev's database (`/run/udev/data`), if any.
    pub udev_data_root: Option<PathBuf>,
}

impl Default for DiscoverOptions {
    fn default() -> Self {
        DiscoverOptions {
            include_loop: false,
            dev_root: PathBuf::from("/dev"),
            udev_data_root: Some(PathBuf::from(UDEV_DATA_ROOT)),
        }
    }
}

/// The paths whose disks must never be written.
#[derive(Debug, Clone, Default)]
pub struct SystemPaths {
    /// The vault directory images are read from.
    pub vault: Option<PathBuf>,
    /// The image file being restored.
    pub image: Option<PathBuf>,
}

/// Lists the whole disks under `sysfs_root` (a directory laid out like
/// `/sys`: `block/`, `dev/block/`, `devices/`), sorted by name.
///
/// RAM disks, zram, device-mapper, hidden (multipath) and zero-size devices
/// are never listed; loop devices only with `include_loop`. `mounts` marks
/// mounted disks and partitions; `roles` marks the disks holding the system,
/// the vault and the image.
pub fn discover(
    sysfs_root: &Path,
    mounts: &[MountEntry],
    roles: &SystemRoles,
    options: &DiscoverOptions,
) -> Result<Vec<Disk>, DiscoverError> {
    let block_dir = sysfs_root.join("block");
    let entries = std::fs::read_dir(&block_dir).map_err(|source| DiscoverError::ListDisks {
        path: block_dir.clone(),
        source,
    })?;
    let mut names = BTreeSet::new();
    for entry in entries {
        let entry = entry.map_err(|source| DiscoverError::ListDisks {
            path: block_dir.clone(),
            source,
        })?;
        // Kernel names are ASCII; anything else is not a disk we could name.
        if let Ok(name) = entry.file_name().into_string() {
            names.insert(name);
        }
    }
    let role_disks = roles.whole_disks(sysfs_root);
    let mut disks = Vec::new();
    for name in names {
        if !is_candidate(&name, options.include_loop) {
            continue;
        }
        let read = sysfs::read_disk(sysfs_root, &name, mounts, options)
            .unwrap_or_else(|e| Some(unreadable_disk(sysfs_root, &name, options, &e)));
        if let Some(mut disk) = read {
            disk.roles = DiskRoles {
                system: role_disks.system.contains(&name),
                vault: role_disks.vault.contains(&name),
                image: role_disks.image.contains(&name),
            };
            disks.push(disk);
        }
    }
    Ok(disks)
}

/// A disk whose sysfs directory could not be read whole: named, with the
/// attribute that failed, so the operator sees it and why it is refused.
fn unreadable_disk(
    sysfs_root: &Path,
    name: &str,
    options: &DiscoverOptions,
    error: &DiscoverError,
) -> Disk {
    let dev = std::fs::read_to_string(sysfs_root.join("block").join(name).join("dev"));
    Disk {
        name: name.to_owned(),
        path: options.dev_root.join(name),
        devnum: dev
            .ok()
            .and_then(|d| DevNum::parse(&d))
            .unwrap_or(DevNum { major: 0, minor: 0 }),
        diskseq: None,
        vendor: None,
        model: None,
        serial: None,
        wwn: None,
        size_bytes: 0,
        logical_sector_size: 0,
        physical_sector_size: 0,
        transport: Transport::Unknown,
        removable: false,
        rotational: false,
        read_only: true,
        partition_table: None,
        partitions: Vec::new(),
        mounts: Vec::new(),
        holders: Vec::new(),
        roles: DiskRoles::default(),
        backing_file: None,
        unreadable: Some(crate::error_chain(error)),
    }
}

/// Discovers the disks of the running system: `/sys`, `/proc/self/mountinfo`
/// and udev's database, with the roles of `/` and of `paths`.
pub fn discover_system(
    include_loop: bool,
    paths: &SystemPaths,
) -> Result<Vec<Disk>, DiscoverError> {
    let mounts = read_system_mounts()?;
    let roles = SystemRoles::for_paths(
        Path::new("/"),
        paths.vault.as_deref(),
        paths.image.as_deref(),
        &mounts,
    )?;
    let options = DiscoverOptions {
        include_loop,
        ..DiscoverOptions::default()
    };
    discover(Path::new(SYSFS_ROOT), &mounts, &roles, &options)
}

/// Reads and parses `/proc/self/mountinfo`.
pub fn read_system_mounts() -> Result<Vec<MountEntry>, DiscoverError> {
    let path = PathBuf::from(MOUNTINFO_PATH);
    let file = std::fs::File::open(&path).map_err(|source| DiscoverError::OpenMountinfo {
        path: path.clone(),
        source,
    })?;
    parse_mountinfo(BufReader::new(file))
        .map_err(|source| DiscoverError::Mountinfo { path, source })
}

/// Whether a `/sys/block` name can be a restore target at all.
fn is_candidate(name: &str, include_loop: bool) -> bool {
    const NEVER: [&str; 5] = ["ram", "zram", "dm-", "md", "nbd"];
    if NEVER.iter().any(|p| name.starts_with(p)) {
        return false;
    }
    include_loop || !name.starts_with("loop")
}
