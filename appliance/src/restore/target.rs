//! Choosing and opening the restore target, with every safety refusal.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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
}

/// An open, checked target. A block device stays exclusively open for as
/// long as this value lives.
#[derive(Debug)]
pub struct Target {
    pub(super) info: TargetInfo,
    /// Opened with O_DIRECT where the file system allows it.
    pub(super) file: File,
}

impl Target {
    pub fn info(&self) -> &TargetInfo {
        &self.info
    }
}

/// Runs every safety refusal for restoring `image` (read from
/// `image_path`, found in `vault`) onto `path`, then opens it. A regular
/// file is created or extended to the image's size.
pub fn open_target(
    path: &Path,
    image: &Image<File>,
    image_path: &Path,
    vault: Option<&Path>,
) -> Result<Target, RestoreError> {
    let manifest = image.manifest();
    let requirement = TargetRequirement {
        min_size_bytes: manifest.logical_bytes(),
        logical_sector_size: manifest.source.logical_sector_size,
    };
    let is_block = std::fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device());
    if is_block {
        open_block_device(path, &requirement, image_path, vault)
    } else {
        open_regular_file(path, &requirement, image_path)
    }
}

fn open_block_device(
    path: &Path,
    requirement: &TargetRequirement,
    image_path: &Path,
    vault: Option<&Path>,
) -> Result<Target, RestoreError> {
    let disk = find_disk(path, image_path, vault)?;
    check_target(&disk, requirement)?;
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
            model: disk.model,
            serial: disk.serial,
            wwn: disk.wwn,
            size_bytes,
            logical_sector_size: logical,
            physical_sector_size: physical,
        },
        file: opened.file,
    })
}

/// Finds the whole disk `path` names among the discovered disks.
fn find_disk(path: &Path, image_path: &Path, vault: Option<&Path>) -> Result<Disk, RestoreError> {
    let rdev = std::fs::metadata(path)
        .map_err(|source| SysError::Open {
            path: path.to_path_buf(),
            source,
        })?
        .rdev();
    let devnum = DevNum::from_dev_t(rdev);
    let paths = SystemPaths {
        vault: vault.map(Path::to_path_buf),
        image: Some(image_path.to_path_buf()),
    };
    discover_system(true, &paths)?
        .into_iter()
        .find(|d| d.devnum == devnum)
        .ok_or_else(|| RestoreError::NotAWholeDisk {
            path: path.to_path_buf(),
        })
}

fn open_regular_file(
    path: &Path,
    requirement: &TargetRequirement,
    image_path: &Path,
) -> Result<Target, RestoreError> {
    if let (Ok(target), Ok(image)) = (std::fs::metadata(path), std::fs::metadata(image_path)) {
        if target.dev() == image.dev() && target.ino() == image.ino() {
            return Err(RestoreError::TargetIsImage {
                path: path.to_path_buf(),
            });
        }
    }
    let io_err = |operation, source| RestoreError::TargetIo {
        operation,
        offset: 0,
        source,
    };
    // Create it if missing; never follow the path to something that is
    // neither a regular file nor absent.
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| io_err("create", e))?;
    let file = match sys::open_exclusive_for_write(path, true) {
        Ok(t) => t.file,
        // Some file systems (tmpfs) refuse O_DIRECT; a file is then written
        // through the page cache and synced.
        Err(SysError::Open { source, .. }) if source.raw_os_error() == Some(nix::libc::EINVAL) => {
            sys::open_exclusive_for_write(path, false)?.file
        }
        Err(e) => return Err(e.into()),
    };
    let len = file.metadata().map_err(|e| io_err("stat", e))?.len();
    if len < requirement.min_size_bytes {
        file.set_len(requirement.min_size_bytes)
            .map_err(|e| io_err("extend", e))?;
    }
    Ok(Target {
        info: TargetInfo {
            path: path.to_path_buf(),
            is_block_device: false,
            model: None,
            serial: None,
            wwn: None,
            size_bytes: len.max(requirement.min_size_bytes),
            logical_sector_size: requirement.logical_sector_size,
            physical_sector_size: requirement.logical_sector_size,
        },
        file,
    })
}
