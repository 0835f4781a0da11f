//! Which disks hold the running system, the vault and the image.

use std::collections::BTreeSet;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use super::{sysfs, DevNum, DiscoverError, MountEntry};

/// How deep to follow loop and device-mapper stacking.
const MAX_STACK_DEPTH: usize = 8;

/// The device numbers behind the running system and the paths a restore
/// reads from. Any disk these resolve to (through partitions, loop backing
/// files and device-mapper slaves) is never a valid target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemRoles {
    /// Devices holding `/`.
    pub system: Vec<DevNum>,
    /// Devices holding the vault directory.
    pub vault: Vec<DevNum>,
    /// Devices holding the image file.
    pub image: Vec<DevNum>,
}

/// Whole-disk names per role.
#[derive(Debug, Default)]
pub(super) struct RoleDisks {
    pub(super) system: BTreeSet<String>,
    pub(super) vault: BTreeSet<String>,
    pub(super) image: BTreeSet<String>,
}

impl SystemRoles {
    /// Finds the devices holding `root`, `vault` and `image` with `stat(2)`.
    ///
    /// A file system with an anonymous device number (tmpfs, overlayfs,
    /// btrfs) is traced through `mounts` to its source device when that is a
    /// block device; an initramfs root resolves to no disk at all.
    pub fn for_paths(
        root: &Path,
        vault: Option<&Path>,
        image: Option<&Path>,
        mounts: &[MountEntry],
    ) -> Result<SystemRoles, DiscoverError> {
        let devices = |path: Option<&Path>| match path {
            Some(p) => devices_holding(p, mounts),
            None => Ok(Vec::new()),
        };
        Ok(SystemRoles {
            system: devices(Some(root))?,
            vault: devices(vault)?,
            image: devices(image)?,
        })
    }

    /// Maps each role's devices to the names of the whole disks under them.
    pub(super) fn whole_disks(&self, sysfs_root: &Path) -> RoleDisks {
        let resolve = |devs: &[DevNum]| {
            let mut out = BTreeSet::new();
            for dev in devs {
                disks_under(sysfs_root, *dev, 0, &mut out);
            }
            out
        };
        RoleDisks {
            system: resolve(&self.system),
            vault: resolve(&self.vault),
            image: resolve(&self.image),
        }
    }
}

/// The device a path lives on, plus the mount source behind an anonymous
/// device number.
fn devices_holding(path: &Path, mounts: &[MountEntry]) -> Result<Vec<DevNum>, DiscoverError> {
    let meta = std::fs::metadata(path).map_err(|source| DiscoverError::StatPath {
        path: path.to_owned(),
        source,
    })?;
    let dev = DevNum::from_dev_t(meta.dev());
    let mut devs = vec![dev];
    for mount in mounts.iter().filter(|m| m.devnum == dev) {
        if let Ok(src) = std::fs::metadata(&mount.source) {
            if src.file_type().is_block_device() {
                devs.push(DevNum::from_dev_t(src.rdev()));
            }
        }
    }
    devs.sort();
    devs.dedup();
    Ok(devs)
}

/// Adds the whole disks under `dev` to `out`: the disk itself (or the disk of
/// a partition), and what loop devices and device-mapper targets sit on.
fn disks_under(sysfs_root: &Path, dev: DevNum, depth: usize, out: &mut BTreeSet<String>) {
    if depth > MAX_STACK_DEPTH {
        return;
    }
    let Ok(dev_dir) = sysfs_root
        .join("dev/block")
        .join(dev.to_string())
        .canonicalize()
    else {
        return;
    };
    let disk_dir = if dev_dir.join("partition").is_file() {
        match dev_dir.parent() {
            Some(parent) => parent.to_owned(),
            None => return,
        }
    } else {
        dev_dir.clone()
    };
    let Some(name) = disk_dir.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    if !out.insert(name.to_owned()) {
        return;
    }
    for dir in [&dev_dir, &disk_dir] {
        if let Ok(slaves) = std::fs::read_dir(dir.join("slaves")) {
            for slave in slaves.flatten() {
                if let Ok(slave_dev) = sysfs::devnum(&slave.path().join("dev")) {
                    disks_under(sysfs_root, slave_dev, depth + 1, out);
                }
            }
        }
    }
    if let Ok(Some(raw)) = sysfs::read_bounded(&disk_dir.join("loop/backing_file")) {
        let backing = String::from_utf8_lossy(&raw);
        if let Ok(meta) = std::fs::metadata(backing.trim_end_matches('\n')) {
            disks_under(sysfs_root, DevNum::from_dev_t(meta.dev()), depth + 1, out);
        }
    }
}
