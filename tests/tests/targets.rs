//! `reliquary targets` end to end: the real binary, a real loop device.

use std::process::Command;

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
