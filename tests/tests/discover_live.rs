//! Discovery on the live system, against loop devices made for the test.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use reliquary_appliance::discover::{
    discover, discover_system, read_system_mounts, DevNum, DiscoverOptions, SystemPaths,
    SystemRoles, Transport,
};
use reliquary_appliance::safety::{refusals, Refusal, TargetRequirement};
use reliquary_appliance::sys::{open_exclusive_for_write, SysError};
use reliquary_tests::{skip_or_fail, LoopDevice};

#[test]
fn finds_a_512_byte_loop_device() {
    let Some(lo) = LoopDevice::attach(48 << 20, None) else {
        return;
    };
    let disks = discover_system(true, &SystemPaths::default()).expect("discover");
    let disk = disks
        .iter()
        .find(|d| d.path == lo.path())
        .unwrap_or_else(|| panic!("{} not among {disks:#?}", lo.path().display()));
    assert_eq!(disk.size_bytes, 48 << 20);
    assert_eq!(disk.logical_sector_size, 512);
    assert_eq!(disk.transport, Transport::Loop);
    assert_eq!(disk.backing_file.as_deref(), Some(lo.backing_file()));
    assert!(!disk.read_only && !disk.is_mounted());
    assert!(!disk.roles.system);

    let without = discover_system(false, &SystemPaths::default()).expect("discover");
    assert!(without.iter().all(|d| d.transport != Transport::Loop));
}

#[test]
fn finds_a_4096_byte_sector_loop_device() {
    let Some(lo) = LoopDevice::attach(32 << 20, Some(4096)) else {
        return;
    };
    let disks = discover_system(true, &SystemPaths::default()).expect("discover");
    let disk = disks
        .iter()
        .find(|d| d.path == lo.path())
        .unwrap_or_else(|| panic!("{} not among {disks:#?}", lo.path().display()));
    assert_eq!(disk.size_bytes, 32 << 20);
    assert_eq!(disk.logical_sector_size, 4096);
    assert_eq!(disk.physical_sector_size, 4096);
}

#[test]
fn a_mounted_loop_holding_the_image_is_marked_and_refused() {
    let Some(lo) = LoopDevice::attach(32 << 20, None) else {
        return;
    };
    let mkfs = Command::new("mkfs.ext4")
        .args(["-q", "-F"])
        .arg(lo.path())
        .status();
    if !matches!(mkfs, Ok(s) if s.success()) {
        skip_or_fail("mkfs.ext4 is not available");
        return;
    }
    let mnt = tempfile::tempdir().expect("mount point");
    let Some(_mount) = Mount::new(lo.path(), mnt.path()) else {
        return;
    };
    let image = mnt.path().join("disk.rimg");
    std::fs::write(&image, b"not really an image").expect("write image");

    let mounts = read_system_mounts().expect("mountinfo");
    let roles = SystemRoles::for_paths(Path::new("/"), None, Some(&image), &mounts).expect("roles");
    let options = DiscoverOptions {
        include_loop: true,
        ..DiscoverOptions::default()
    };
    let disks = discover(Path::new("/sys"), &mounts, &roles, &options).expect("discover");
    let disk = disks
        .iter()
        .find(|d| d.path == lo.path())
        .expect("loop listed");
    assert!(disk.roles.image, "{disk:#?}");
    assert_eq!(disk.mounts.len(), 1, "{disk:#?}");
    assert_eq!(disk.mounts[0].mount_point, mnt.path().to_string_lossy());
    // Through its backing file, the disk under the loop device holds the
    // image too.
    let backing_dev = DevNum::from_dev_t(std::fs::metadata(lo.backing_file()).expect("stat").dev());
    if let Some(under) = disks
        .iter()
        .find(|d| d.devnum == backing_dev || d.partitions.iter().any(|p| p.devnum == backing_dev))
    {
        assert!(under.roles.image, "{under:#?}");
    }

    let requirement = TargetRequirement {
        min_size_bytes: 1 << 20,
        logical_sector_size: 512,
    };
    let all = refusals(disk, &requirement);
    assert!(matches!(all[0], Refusal::HoldsImageFile { .. }), "{all:?}");
    assert!(
        all.iter().any(|r| matches!(r, Refusal::Mounted { .. })),
        "{all:?}"
    );

    // The kernel agrees: the exclusive open fails while it is mounted.
    let err = open_exclusive_for_write(lo.path(), false).expect_err("mounted");
    assert!(matches!(err, SysError::Busy { .. }), "{err:?}");
}

/// Unmounts on drop.
struct Mount(PathBuf);

impl Mount {
    fn new(device: &Path, at: &Path) -> Option<Mount> {
        let ok = Command::new("mount").arg(device).arg(at).status();
        if !matches!(ok, Ok(s) if s.success()) {
            skip_or_fail("cannot mount the test file system");
            return None;
        }
        Some(Mount(at.to_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
