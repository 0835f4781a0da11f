//! `reliquary targets` end to end: the real binary, a real loop device.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use reliquary_appliance::restore::{describe_for_reading, TargetIdentity};
use reliquary_tests::{reliquary_bin, LoopDevice};

#[test]
fn json_lists_the_loop_device_with_its_geometry() {
    let Some(lo) = LoopDevice::attach(40 << 20, Some(4096)) else {
        return;
    };
    let out = Command::new(reliquary_bin())
        .args(["targets", "--include-loop", "--json"])
        .output()
        .expect("run reliquary");
    assert!(
        out.status.success(),
        "reliquary targets failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let disks: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let path = lo.path().to_string_lossy().into_owned();
    let disk = disks
        .as_array()
        .expect("an array")
        .iter()
        .find(|d| d["path"] == path.as_str())
        .unwrap_or_else(|| panic!("{path} not listed: {disks:#}"));
    assert_eq!(disk["size_bytes"], 40u64 << 20);
    assert_eq!(disk["logical_sector_size"], 4096);
    assert_eq!(disk["transport"], "loop");
    assert_eq!(disk["roles"]["system"], false);
}

#[test]
fn loop_devices_are_hidden_by_default() {
    let Some(lo) = LoopDevice::attach(8 << 20, None) else {
        return;
    };
    let out = Command::new(reliquary_bin())
        .arg("targets")
        .output()
        .expect("run reliquary");
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!table.contains(&*lo.path().to_string_lossy()), "{table}");

    let out = Command::new(reliquary_bin())
        .args(["targets", "--include-loop"])
        .output()
        .expect("run reliquary");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains(&*lo.path().to_string_lossy()), "{table}");
    assert!(table.starts_with("PATH"), "{table}");
}

/// What `check` records of the disk it read: a whole disk by the identity
/// discovery gives it (a loop device's backing file here; the model,
/// serial and WWN on a real disk), a file by its inode.
#[test]
fn a_checked_disk_is_described_by_its_identity() {
    let Some(lo) = LoopDevice::attach(8 << 20, None) else {
        return;
    };
    let disk = std::fs::File::open(lo.path()).expect("open the loop device");
    let file = std::fs::File::open(lo.backing_file()).expect("open the backing file");
    let meta = file.metadata().expect("stat");
    let described = describe_for_reading(
        &[
            (lo.path(), &disk, 8 << 20),
            (lo.backing_file(), &file, meta.len()),
        ],
        512,
    );
    let [info, file_info] = &described[..] else {
        panic!("{described:?}");
    };
    assert!(info.is_block_device, "{info:?}");
    assert_eq!(info.size_bytes, 8 << 20);
    match &info.identity {
        TargetIdentity::Disk { backing_file, .. } => {
            assert_eq!(backing_file.as_deref(), Some(lo.backing_file()), "{info:?}");
        }
        other => panic!("a loop device described as {other:?}"),
    }
    assert!(!file_info.is_block_device);
    assert_eq!(
        file_info.identity,
        TargetIdentity::File {
            dev: meta.dev(),
            ino: meta.ino()
        }
    );
}

/// Issue 21: `targets` listed the disks without the refusals its help
/// promised; it now gives the answer the TUI's list is built from
/// (`ops::targets`): every reason a disk may not take the image.
#[test]
fn targets_for_an_image_name_every_refusal_of_a_disk() {
    let Some(small) = LoopDevice::attach(8 << 20, None) else {
        return;
    };
    let Some(other_sectors) = LoopDevice::attach(32 << 20, Some(4096)) else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![7u8; 16 << 20]).expect("raw disk");
    let key = dir.path().join("key");
    let reliquary = |args: &[&str]| {
        let out = Command::new(reliquary_bin())
            .args(args)
            .output()
            .expect("run reliquary");
        assert!(out.status.success(), "{args:?}: {out:?}");
        out
    };
    let s = |p: &std::path::Path| p.to_string_lossy().into_owned();
    reliquary(&["keygen", "--out", &s(&key), "--name", "t"]);
    let image = dir.path().join("disk.rimg");
    reliquary(&[
        "capture",
        &s(&raw),
        "-o",
        &s(&image),
        "--key",
        &s(&key),
        "--name",
        "disk",
        "--sector-size",
        "512",
    ]);
    let out = reliquary(&["targets", "--include-loop", "--image", &s(&image), "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    let refusals_of = |lo: &LoopDevice| -> Vec<String> {
        let path = lo.path().to_string_lossy().into_owned();
        let disk = listed
            .as_array()
            .expect("an array")
            .iter()
            .find(|d| d["path"] == path.as_str())
            .unwrap_or_else(|| panic!("{path} not listed: {listed:#}"));
        disk["refusals"]
            .as_array()
            .expect("refusals")
            .iter()
            .map(|r| r.as_str().expect("a message").to_string())
            .collect()
    };
    let small_refusals = refusals_of(&small);
    assert!(
        small_refusals.iter().any(|r| r.contains("the image needs")),
        "{small_refusals:?}"
    );
    let other_refusals = refusals_of(&other_sectors);
    assert!(
        other_refusals
            .iter()
            .any(|r| r.contains("logical sectors are 4096")),
        "{other_refusals:?}"
    );
    // Without an image, only what holds for any image: none of these.
    let out = reliquary(&["targets", "--include-loop"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(!table.contains("the image needs"), "{table}");
    let out = reliquary(&["targets", "--include-loop", "--image", &s(&image)]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("refused: it holds"), "{table}");
}
