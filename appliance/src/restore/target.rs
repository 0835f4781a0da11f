//! Choosing and opening the restore target: every safety refusal before
//! the operator confirms, and after it a check that the device opened is
//! the very one that was confirmed.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use reliquary_image::Image;

use super::RestoreError;
use crate::discover::{discover_system, DevNum, Disk, SystemPaths};
use crate::safety::{check_target, Refusal, TargetRequirement};
use crate::sys::{self, SysError, TargetKind};

/// What is known about the target, for the confirmation and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetInfo {
    pub path: PathBuf,
    pub is_block_device: bool,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    /// What the operator confirms; the restore refuses any other device.
    pub identity: TargetIdentity,
}

/// The fields that tell one target from another. A restore writes only a
/// target whose identity, read from the opened device, equals the one the
/// operator confirmed in every field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetIdentity {
    Disk {
        devnum: DevNum,
        diskseq: Option<u64>,
        backing_file: Option<PathBuf>,
        serial: Option<String>,
        wwn: Option<String>,
        size_bytes: u64,
        logical_sector_size: u32,
    },
    /// An existing regular file, by inode.
    File { dev: u64, ino: u64 },
    /// A regular file to create; it must still not exist when opened.
    NewFile,
}

impl TargetIdentity {
    /// The identity of a discovered disk.
    pub fn of_disk(disk: &Disk) -> Self {
        TargetIdentity::Disk {
            devnum: disk.devnum,
            diskseq: disk.diskseq,
            backing_file: disk.backing_file.clone(),
            serial: disk.serial.clone(),
            wwn: disk.wwn.clone(),
            size_bytes: disk.size_bytes,
            logical_sector_size: disk.logical_sector_size,
        }
    }

    /// The first field in which `found` differs from `self`, as
    /// (field, confirmed, found).
    fn difference(&self, found: &TargetIdentity) -> Option<(&'static str, String, String)> {
        use TargetIdentity::{Disk, File, NewFile};
        let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "none".into());
        match (self, found) {
            (
                Disk {
                    devnum: d1,
                    diskseq: q1,
                    backing_file: b1,
                    serial: s1,
                    wwn: w1,
                    size_bytes: z1,
                    logical_sector_size: l1,
                },
                Disk {
                    devnum: d2,
                    diskseq: q2,
                    backing_file: b2,
                    serial: s2,
                    wwn: w2,
                    size_bytes: z2,
                    logical_sector_size: l2,
                },
            ) => {
                if d1 != d2 {
                    Some((
                        "device number",
                        format!("{}:{}", d1.major, d1.minor),
                        format!("{}:{}", d2.major, d2.minor),
                    ))
                } else if q1 != q2 {
                    let seq = |q: &Option<u64>| q.map_or("none".into(), |q| q.to_string());
                    Some(("disk sequence number", seq(q1), seq(q2)))
                } else if b1 != b2 {
                    let file = |b: &Option<PathBuf>| {
                        b.as_ref()
                            .map_or("none".into(), |b| b.display().to_string())
                    };
                    Some(("backing file", file(b1), file(b2)))
                } else if s1 != s2 {
                    Some(("serial", text(s1), text(s2)))
                } else if w1 != w2 {
                    Some(("WWN", text(w1), text(w2)))
                } else if z1 != z2 {
                    Some(("size", format!("{z1} bytes"), format!("{z2} bytes")))
                } else if l1 != l2 {
                    Some(("logical sector size", l1.to_string(), l2.to_string()))
                } else {
                    None
                }
            }
            (File { dev: d1, ino: i1 }, File { dev: d2, ino: i2 }) => {
                (d1 != d2 || i1 != i2).then(|| {
                    (
                        "file",
                        format!("inode {d1}:{i1}"),
                        format!("inode {d2}:{i2}"),
                    )
                })
            }
            (NewFile, NewFile) => None,
            (confirmed, found) => Some(("kind", confirmed.kind(), found.kind())),
        }
    }

    fn kind(&self) -> String {
        match self {
            TargetIdentity::Disk { .. } => "a disk",
            TargetIdentity::File { .. } => "an existing file",
            TargetIdentity::NewFile => "a file to create",
        }
        .into()
    }
}

/// An open, checked target. A block device stays exclusively open for as
/// long as this value lives.
#[derive(Debug)]
pub struct Target {
    pub(super) info: TargetInfo,
    /// Opened with O_DIRECT where the file system allows it.
    pub(super) file: File,
}

impl TargetInfo {
    /// Whether writing `self` also writes `other`: the same disk, the same
    /// file, or a loop device and the file behind it.
    pub fn same_bytes(&self, other: &TargetInfo) -> bool {
        use TargetIdentity::{Disk, File};
        let file_of = |path: &Path| {
            std::fs::metadata(path).ok().map(|m| {
                (
                    std::os::unix::fs::MetadataExt::dev(&m),
                    std::os::unix::fs::MetadataExt::ino(&m),
                )
            })
        };
        match (&self.identity, &other.identity) {
            (Disk { devnum: a, .. }, Disk { devnum: b, .. }) if a == b => true,
            (
                Disk {
                    backing_file: Some(a),
                    ..
                },
                Disk {
                    backing_file: Some(b),
                    ..
                },
            ) => matches!((file_of(a), file_of(b)), (Some(a), Some(b)) if a == b),
            (File { dev, ino }, File { dev: d, ino: i }) => (dev, ino) == (d, i),
            (
                Disk {
                    backing_file: Some(backing),
                    ..
                },
                File { dev, ino },
            )
            | (
                File { dev, ino },
                Disk {
                    backing_file: Some(backing),
                    ..
                },
            ) => file_of(backing) == Some((*dev, *ino)),
            _ => self.path == other.path,
        }
    }

    /// A discovered disk as the operator confirms it.
    pub fn of_disk(disk: &Disk) -> Self {
        TargetInfo {
            path: disk.path.clone(),
            is_block_device: true,
            model: disk.model.clone(),
            serial: disk.serial.clone(),
            wwn: disk.wwn.clone(),
            size_bytes: disk.size_bytes,
            logical_sector_size: disk.logical_sector_size,
            physical_sector_size: disk.physical_sector_size,
            identity: TargetIdentity::of_disk(disk),
        }
    }
}

impl Target {
    pub fn info(&self) -> &TargetInfo {
        &self.info
    }
}

/// Where a restore may write.
#[derive(Debug, Clone, Copy)]
pub struct TargetRules<'a> {
    /// The image file being restored; neither it nor its disk is a target.
    pub image_path: &'a Path,
    /// The vault; its disk is never a target.
    pub vault: Option<&'a Path>,
    /// Whether a missing `path` may be created as a regular file.
    pub create_file: bool,
}

/// Runs every safety refusal for restoring `image` onto `path` without
/// opening it for writing, and says what it is: what the operator is asked
/// to confirm.
pub fn inspect_target(
    path: &Path,
    image: &Image<File>,
    rules: &TargetRules<'_>,
) -> Result<TargetInfo, RestoreError> {
    let requirement = requirement(image);
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return new_file_info(path, &requirement, rules)
        }
        Err(source) => {
            return Err(SysError::Open {
                path: path.to_path_buf(),
                source,
            }
            .into())
        }
    };
    if meta.file_type().is_block_device() {
        let disk = find_disk(path, meta.rdev(), rules)?;
        check_target(&disk, &requirement)?;
        Ok(TargetInfo {
            path: path.to_path_buf(),
            ..TargetInfo::of_disk(&disk)
        })
    } else if meta.file_type().is_file() {
        refuse_the_image_itself(path, &meta, rules.image_path)?;
        Ok(file_info(
            path,
            &requirement,
            meta.len(),
            TargetIdentity::File {
                dev: meta.dev(),
                ino: meta.ino(),
            },
        ))
    } else {
        Err(SysError::UnsupportedTarget {
            path: path.to_path_buf(),
        }
        .into())
    }
}

/// What a check's audit records say of the disks or files it only reads,
/// each `(path, open file, size in bytes)`: for a whole disk, the model,
/// serial and WWN a restore would record; for anything else (a file, a
/// partition), its path, size and inode, with the image's `sector_size`.
/// The disks are discovered once, and only when one is a block device.
/// None of a restore's refusals apply, since they guard writes.
pub fn describe_for_reading(read: &[(&Path, &File, u64)], sector_size: u32) -> Vec<TargetInfo> {
    let metas: Vec<_> = read
        .iter()
        .map(|(_, file, _)| file.metadata().ok())
        .collect();
    let any_device = metas
        .iter()
        .flatten()
        .any(|m| m.file_type().is_block_device());
    let disks = if any_device {
        discover_system(true, &SystemPaths::default()).unwrap_or_default()
    } else {
        Vec::new()
    };
    read.iter()
        .zip(metas)
        .map(|(&(path, _, size_bytes), meta)| {
            describe_one(path, meta.as_ref(), size_bytes, sector_size, &disks)
        })
        .collect()
}

fn describe_one(
    path: &Path,
    meta: Option<&std::fs::Metadata>,
    size_bytes: u64,
    sector_size: u32,
    disks: &[Disk],
) -> TargetInfo {
    let is_block_device = meta.is_some_and(|m| m.file_type().is_block_device());
    let whole_disk = meta.filter(|_| is_block_device).and_then(|m| {
        let devnum = DevNum::from_dev_t(m.rdev());
        disks.iter().find(|d| d.devnum == devnum)
    });
    match whole_disk {
        Some(disk) => TargetInfo {
            path: path.to_path_buf(),
            ..TargetInfo::of_disk(disk)
        },
        None => TargetInfo {
            path: path.to_path_buf(),
            is_block_device,
            model: None,
            serial: None,
            wwn: None,
            size_bytes,
            logical_sector_size: sector_size,
            physical_sector_size: sector_size,
            identity: TargetIdentity::File {
                dev: meta.map_or(0, MetadataExt::dev),
                ino: meta.map_or(0, MetadataExt::ino),
            },
        },
    }
}

/// Opens the target the operator confirmed, refusing (exit 4) when the
/// device at its path is no longer that target in any field of its
/// identity, and rerunning every safety refusal on what was opened.
pub fn open_confirmed(
    confirmed: &TargetInfo,
    image: &Image<File>,
    rules: &TargetRules<'_>,
) -> Result<Target, RestoreError> {
    let requirement = requirement(image);
    let path = confirmed.path.as_path();
    let target = match confirmed.identity {
        TargetIdentity::Disk { .. } => open_block_device(path, &requirement, rules)?,
        TargetIdentity::File { .. } => open_existing_file(path, &requirement, rules)?,
        TargetIdentity::NewFile => create_file(path, &requirement, rules)?,
    };
    if let Some((field, confirmed, found)) = confirmed.identity.difference(&target.info.identity) {
        return Err(Refusal::NotTheConfirmedDisk {
            device: path.to_path_buf(),
            field,
            confirmed,
            found,
        }
        .into());
    }
    Ok(target)
}

fn requirement(image: &Image<File>) -> TargetRequirement {
    let manifest = image.manifest();
    TargetRequirement {
        min_size_bytes: manifest.logical_bytes(),
        logical_sector_size: manifest.source.logical_sector_size,
    }
}

fn open_block_device(
    path: &Path,
    requirement: &TargetRequirement,
    rules: &TargetRules<'_>,
) -> Result<Target, RestoreError> {
    let opened = sys::open_exclusive_for_write(path, true).map_err(|e| match e {
        SysError::Busy { .. } => RestoreError::Refused(Refusal::Busy {
            device: path.to_path_buf(),
        }),
        other => other.into(),
    })?;
    if opened.kind != TargetKind::BlockDevice {
        return Err(RestoreError::NotAWholeDisk {
            path: path.to_path_buf(),
        });
    }
    // Identify what was opened, not what the path named a moment ago.
    let rdev = opened
        .file
        .metadata()
        .map_err(|source| SysError::Stat { source })?
        .rdev();
    let disk = find_disk(path, rdev, rules)?;
    check_target(&disk, requirement)?;
    // sysfs could be stale; the open device is what will be written.
    let size_bytes = sys::device_size_bytes(&opened.file)?;
    let logical = sys::logical_sector_size(&opened.file)?.get();
    let physical = sys::physical_sector_size(&opened.file)?.get();
    if logical != requirement.logical_sector_size {
        return Err(Refusal::SectorSizeMismatch {
            device: path.to_path_buf(),
            target: logical,
            image: requirement.logical_sector_size,
        }
        .into());
    }
    if size_bytes < requirement.min_size_bytes {
        return Err(Refusal::TooSmall {
            device: path.to_path_buf(),
            target_bytes: size_bytes,
            required_bytes: requirement.min_size_bytes,
        }
        .into());
    }
    Ok(Target {
        info: TargetInfo {
            path: path.to_path_buf(),
            is_block_device: true,
            model: disk.model.clone(),
            serial: disk.serial.clone(),
            wwn: disk.wwn.clone(),
            size_bytes,
            logical_sector_size: logical,
            physical_sector_size: physical,
            identity: TargetIdentity::Disk {
                devnum: disk.devnum,
                diskseq: disk.diskseq,
                backing_file: disk.backing_file,
                serial: disk.serial,
                wwn: disk.wwn,
                size_bytes,
                logical_sector_size: logical,
            },
        },
        file: opened.file,
    })
}

/// Finds the whole disk with device number `rdev` among the discovered disks.
fn find_disk(path: &Path, rdev: u64, rules: &TargetRules<'_>) -> Result<Disk, RestoreError> {
    let devnum = DevNum::from_dev_t(rdev);
    let paths = SystemPaths {
        vault: rules.vault.map(Path::to_path_buf),
        image: Some(rules.image_path.to_path_buf()),
    };
    discover_system(true, &paths)?
        .into_iter()
        .find(|d| d.devnum == devnum)
        .ok_or_else(|| RestoreError::NotAWholeDisk {
            path: path.to_path_buf(),
        })
}

fn refuse_the_image_itself(
    path: &Path,
    target: &std::fs::Metadata,
    image_path: &Path,
) -> Result<(), RestoreError> {
    if let Ok(image) = std::fs::metadata(image_path) {
        if target.dev() == image.dev() && target.ino() == image.ino() {
            return Err(RestoreError::TargetIsImage {
                path: path.to_path_buf(),
            });
        }
    }
    Ok(())
}

/// A file to be created: allowed only when asked for, and never under /dev.
fn new_file_info(
    path: &Path,
    requirement: &TargetRequirement,
    rules: &TargetRules<'_>,
) -> Result<TargetInfo, RestoreError> {
    if !rules.create_file {
        return Err(Refusal::NoSuchTarget {
            path: path.to_path_buf(),
        }
        .into());
    }
    if is_under_dev(path) {
        return Err(Refusal::FileUnderDev {
            path: path.to_path_buf(),
        }
        .into());
    }
    Ok(file_info(path, requirement, 0, TargetIdentity::NewFile))
}

/// Whether `path` (made absolute, with its existing parent resolved) lies
/// under /dev, where a created regular file would sit in RAM and look
/// like a device.
fn is_under_dev(path: &Path) -> bool {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let parent = absolute.parent().unwrap_or(Path::new("/"));
    let resolved = parent
        .canonicalize()
        .unwrap_or_else(|_| parent.to_path_buf());
    resolved.starts_with("/dev") || absolute.starts_with("/dev")
}

fn file_info(
    path: &Path,
    requirement: &TargetRequirement,
    len: u64,
    identity: TargetIdentity,
) -> TargetInfo {
    let sector = u64::from(requirement.logical_sector_size);
    TargetInfo {
        path: path.to_path_buf(),
        is_block_device: false,
        model: None,
        serial: None,
        wwn: None,
        // Whole sectors only: a file's odd tail is never part of the disk.
        size_bytes: (len / sector * sector).max(requirement.min_size_bytes),
        logical_sector_size: requirement.logical_sector_size,
        physical_sector_size: requirement.logical_sector_size,
        identity,
    }
}

fn open_existing_file(
    path: &Path,
    requirement: &TargetRequirement,
    rules: &TargetRules<'_>,
) -> Result<Target, RestoreError> {
    let file = match sys::open_exclusive_for_write(path, true) {
        Ok(t) => t.file,
        // Some file systems (tmpfs) refuse O_DIRECT; a file is then written
        // through the page cache and synced.
        Err(SysError::Open { source, .. }) if source.raw_os_error() == Some(nix::libc::EINVAL) => {
            sys::open_exclusive_for_write(path, false)?.file
        }
        Err(e) => return Err(e.into()),
    };
    file_target(path, file, requirement, rules)
}

fn create_file(
    path: &Path,
    requirement: &TargetRequirement,
    rules: &TargetRules<'_>,
) -> Result<Target, RestoreError> {
    new_file_info(path, requirement, rules)?;
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|source| RestoreError::TargetIo {
            operation: "create",
            offset: 0,
            source,
        })?;
    // Reopened through /proc, so O_DIRECT applies to the very file created;
    // file systems that refuse O_DIRECT (tmpfs) keep the buffered handle.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(format!("/proc/self/fd/{}", created.as_raw_fd()))
        .unwrap_or(created);
    let mut target = file_target(path, file, requirement, rules)?;
    // Created by this open: it is the file that was confirmed.
    target.info.identity = TargetIdentity::NewFile;
    Ok(target)
}

/// Checks an opened regular file and sizes it to hold the image.
fn file_target(
    path: &Path,
    file: File,
    requirement: &TargetRequirement,
    rules: &TargetRules<'_>,
) -> Result<Target, RestoreError> {
    let io_err = |operation, source| RestoreError::TargetIo {
        operation,
        offset: 0,
        source,
    };
    let meta = file.metadata().map_err(|e| io_err("stat", e))?;
    if !meta.file_type().is_file() {
        return Err(SysError::UnsupportedTarget {
            path: path.to_path_buf(),
        }
        .into());
    }
    refuse_the_image_itself(path, &meta, rules.image_path)?;
    if meta.len() < requirement.min_size_bytes {
        file.set_len(requirement.min_size_bytes)
            .map_err(|e| io_err("extend", e))?;
    }
    let identity = TargetIdentity::File {
        dev: meta.dev(),
        ino: meta.ino(),
    };
    Ok(Target {
        info: file_info(path, requirement, meta.len(), identity),
        file,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_under_dev_are_recognised_through_relative_paths() {
        assert!(is_under_dev(Path::new("/dev/nonexistent")));
        assert!(is_under_dev(Path::new("/dev/../dev/sdz")));
        assert!(!is_under_dev(Path::new("/tmp/disk.raw")));
    }

    #[test]
    fn identities_name_the_first_differing_field() {
        let disk = |serial: &str, size| TargetIdentity::Disk {
            devnum: DevNum { major: 8, minor: 0 },
            diskseq: Some(7),
            backing_file: None,
            serial: Some(serial.into()),
            wwn: None,
            size_bytes: size,
            logical_sector_size: 512,
        };
        assert_eq!(disk("A", 1).difference(&disk("A", 1)), None);
        assert_eq!(
            disk("A", 1).difference(&disk("B", 1)).map(|d| d.0),
            Some("serial")
        );
        assert_eq!(
            disk("A", 1).difference(&disk("A", 2)).map(|d| d.0),
            Some("size")
        );
        assert_eq!(
            disk("A", 1)
                .difference(&TargetIdentity::NewFile)
                .map(|d| d.0),
            Some("kind")
        );
    }
}
