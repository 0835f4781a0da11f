//! Discovery on the captured sysfs trees in `tests/fixtures/sysfs/`
//! (regenerate them with `tests/fixtures/sysfs/make-fixtures.sh`).

use std::path::{Path, PathBuf};

use reliquary_appliance::discover::{
    discover, parse_mountinfo, DevNum, DiscoverError, DiscoverOptions, Disk, SystemRoles, Transport,
};
use reliquary_appliance::safety::{refusals, TargetRequirement};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/sysfs")
        .join(name)
}

fn options(include_loop: bool) -> DiscoverOptions {
    DiscoverOptions {
        include_loop,
        dev_root: PathBuf::from("/dev"),
        udev_data_root: None,
    }
}

fn run(name: &str, mountinfo: &str, roles: &SystemRoles, include_loop: bool) -> Vec<Disk> {
    let mounts = parse_mountinfo(mountinfo.as_bytes()).expect("mountinfo fixture parses");
    discover(&fixture(name), &mounts, roles, &options(include_loop)).expect("discover")
}

fn dev(major: u32, minor: u32) -> DevNum {
    DevNum { major, minor }
}

#[test]
fn sata_disk_with_two_partitions() {
    let mountinfo = "27 1 8:2 / / rw - ntfs3 /dev/sda2 rw\n";
    let roles = SystemRoles {
        system: vec![dev(8, 2)],
        ..SystemRoles::default()
    };
    let disks = run("sata-two-partitions", mountinfo, &roles, false);
    assert_eq!(disks.len(), 1);
    let sda = &disks[0];
    assert_eq!(sda.path, PathBuf::from("/dev/sda"));
    assert_eq!(sda.devnum, dev(8, 0));
    assert_eq!(sda.transport, Transport::Sata);
    assert_eq!(sda.vendor.as_deref(), Some("ATA"));
    assert_eq!(sda.model.as_deref(), Some("Samsung SSD 860"));
    assert_eq!(sda.serial.as_deref(), Some("S3Z9NB0K123A"));
    assert_eq!(sda.wwn.as_deref(), Some("naa.5002538e40a1b2c3"));
    assert_eq!(sda.size_bytes, 500_118_192 * 512);
    assert_eq!(
        (sda.logical_sector_size, sda.physical_sector_size),
        (512, 4096)
    );
    assert!(!sda.removable && !sda.rotational && !sda.read_only);
    assert_eq!(sda.partitions.len(), 2);
    let p1 = &sda.partitions[0];
    assert_eq!((p1.number, p1.start_sector_512), (1, 2048));
    assert_eq!(p1.size_bytes, 1_048_576 * 512);
    assert_eq!(p1.path, PathBuf::from("/dev/sda1"));
    assert_eq!(p1.label.as_deref(), Some("EFI System"));
    assert_eq!(sda.partitions[1].label.as_deref(), Some("Windows"));
    assert_eq!(sda.mounts.len(), 1);
    assert_eq!(sda.mounts[0].device, PathBuf::from("/dev/sda2"));
    assert_eq!(sda.mounts[0].mount_point, "/");
    assert!(sda.roles.system && !sda.roles.vault && !sda.roles.image);
}

#[test]
fn nvme_disk_reads_the_controller() {
    let disks = run("nvme", "", &SystemRoles::default(), false);
    assert_eq!(disks.len(), 1);
    let d = &disks[0];
    assert_eq!(d.path, PathBuf::from("/dev/nvme0n1"));
    assert_eq!(d.transport, Transport::Nvme);
    assert_eq!(d.model.as_deref(), Some("WDC PC SN730 SDBQNTY-512G-1001"));
    assert_eq!(d.serial.as_deref(), Some("20207F800123"));
    assert_eq!(
        d.wwn.as_deref(),
        Some("eui.e8238fa6bf530001001b448b4a1b2c3d")
    );
    assert_eq!(d.partitions[0].path, PathBuf::from("/dev/nvme0n1p1"));
    assert!(!d.is_mounted());
    assert_eq!(d.roles, Default::default());
}

#[test]
fn usb_stick_is_removable_and_holds_the_vault() {
    // The vault lives on the stick's mounted partition.
    let mountinfo = "40 27 8:17 / /vault\\040dir ro - vfat /dev/sdb1 ro\n";
    let roles = SystemRoles {
        vault: vec![dev(8, 17)],
        image: vec![dev(8, 17)],
        ..SystemRoles::default()
    };
    let disks = run("usb-stick", mountinfo, &roles, false);
    let d = &disks[0];
    assert_eq!(d.transport, Transport::Usb);
    assert!(d.removable);
    assert_eq!(d.serial.as_deref(), Some("4C530001231219116374"));
    assert_eq!(d.model.as_deref(), Some("Cruzer Blade"));
    assert_eq!(d.mounts[0].mount_point, "/vault dir");
    assert!(d.roles.vault && d.roles.image && !d.roles.system);
}

#[test]
fn virtio_disk_listed_and_zram_skipped() {
    let mountinfo = "27 1 254:0 / / rw - ext4 /dev/vda rw\n";
    let roles = SystemRoles {
        system: vec![dev(254, 0)],
        ..SystemRoles::default()
    };
    let disks = run("virtio", mountinfo, &roles, true);
    assert_eq!(disks.len(), 1, "{disks:?}");
    let d = &disks[0];
    assert_eq!(d.transport, Transport::Virtio);
    assert_eq!(d.serial.as_deref(), Some("overlayblk1"));
    assert!(d.rotational);
    assert!(d.roles.system);
    assert_eq!(d.mounts[0].device, PathBuf::from("/dev/vda"));
}

#[test]
fn loop_devices_only_when_asked_and_only_attached() {
    assert!(run("loop", "", &SystemRoles::default(), false).is_empty());
    let disks = run("loop", "", &SystemRoles::default(), true);
    assert_eq!(disks.len(), 1, "loop1 has nothing attached: {disks:?}");
    let d = &disks[0];
    assert_eq!(d.name, "loop0");
    assert_eq!(d.transport, Transport::Loop);
    assert_eq!(d.size_bytes, 1 << 30);
    assert_eq!(
        (d.logical_sector_size, d.physical_sector_size),
        (4096, 4096)
    );
    assert_eq!(
        d.backing_file,
        Some(PathBuf::from("/var/tmp/disk image.raw"))
    );
}

#[test]
fn garbage_size_lists_the_disk_refused_naming_the_file() {
    let disks = run("garbage-size", "", &SystemRoles::default(), false);
    assert_eq!(disks.len(), 1);
    let reason = disks[0].unreadable.as_deref().expect("sda is unreadable");
    assert!(
        reason.contains("block/sda/size") && reason.contains("12x4"),
        "{reason}"
    );
    let refusals = refusals(&disks[0], &REQUIREMENT);
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert!(refusals[0].to_string().contains("12x4"), "{}", refusals[0]);
}

#[test]
fn one_unreadable_attribute_hides_no_other_disk() {
    let disks = run("one-bad-of-two", "", &SystemRoles::default(), false);
    let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["sda", "sdb"]);
    assert_eq!(disks[0].unreadable, None);
    assert!(refusals(&disks[0], &REQUIREMENT).is_empty());
    let reason = disks[1].unreadable.as_deref().expect("sdb is unreadable");
    assert!(reason.contains("logical_block_size"), "{reason}");
    assert_eq!(disks[1].devnum, dev(8, 16));
    assert!(!refusals(&disks[1], &REQUIREMENT).is_empty());
}

const REQUIREMENT: TargetRequirement = TargetRequirement {
    min_size_bytes: 512,
    logical_sector_size: 512,
};

#[test]
fn garbage_text_is_cleaned_and_bounded() {
    let disks = run("garbage-text", "", &SystemRoles::default(), false);
    let d = &disks[0];
    let model = d.model.as_deref().expect("model");
    assert!(model.starts_with("Bad\u{fffd}Model"), "{model:?}");
    assert!(!model.chars().any(char::is_control), "{model:?}");
    // 10000-byte wwid is cut at the 4 KiB read bound.
    assert_eq!(d.wwn.as_deref().map(str::len), Some(4096));
    // A VPD page claiming more bytes than it holds gives no serial.
    assert_eq!(d.serial, None);
}

#[test]
fn missing_sysfs_root_is_an_error() {
    let err = discover(
        &fixture("does-not-exist"),
        &[],
        &SystemRoles::default(),
        &options(true),
    )
    .expect_err("missing root");
    assert!(matches!(err, DiscoverError::ListDisks { .. }), "{err:?}");
}

#[test]
fn disks_serialize_to_json() {
    let disks = run("sata-two-partitions", "", &SystemRoles::default(), false);
    let json = serde_json::to_value(&disks).expect("serialize");
    assert_eq!(json[0]["path"], "/dev/sda");
    assert_eq!(json[0]["devnum"], "8:0");
    assert_eq!(json[0]["transport"], "sata");
    assert_eq!(json[0]["partitions"][1]["size_bytes"], 499_065_856u64 * 512);
}
