//! The phases on plain files, without root: what needs a block device
//! (O_EXCL, BLKRRPART, discards, write order as `strace` sees it, kills)
//! is tested on loop devices in `tests/tests/restore.rs`.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::mpsc::channel;

use reliquary_image::{ExtentKind, Image};

use super::*;
use crate::restore::target::{TargetIdentity, TargetInfo};
use crate::restore::test_image::{disk_and_image, DISK};

/// A target over the regular file at `path`, holding `bytes`.
fn file_target(path: &Path, bytes: &[u8]) -> Target {
    std::fs::write(path, bytes).expect("writes the target");
    let file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .expect("opens the target");
    let meta = file.metadata().expect("stats the target");
    Target {
        info: TargetInfo {
            path: path.to_path_buf(),
            is_block_device: false,
            model: None,
            serial: None,
            wwn: None,
            size_bytes: meta.len(),
            logical_sector_size: 512,
            physical_sector_size: 4096,
            identity: TargetIdentity::File {
                dev: meta.dev(),
                ino: meta.ino(),
            },
        },
        file,
    }
}

fn restore_onto(
    image: &Image<File>,
    targets: Vec<Target>,
    opts: RestoreOptions,
    mode: RestoreMode,
) -> Vec<RestoreReport> {
    let (tx, _rx) = channel();
    let targets = targets.into_iter().map(|t| (t, Unmapped::Left)).collect();
    run(image, targets, &opts, mode, &tx, &CancelToken::new())
}

fn stages(report: &RestoreReport) -> Vec<Stage> {
    report.stage_durations.iter().map(|(s, _)| *s).collect()
}

/// The disk the image was captured from, `disk` bytes long, with its first
/// `kept` bytes and zeros after them.
fn prefix_of(disk: &[u8], kept: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; disk.len()];
    bytes[..kept].copy_from_slice(&disk[..kept]);
    bytes
}

#[test]
fn the_phases_come_in_their_order_the_first_sector_last() {
    assert_eq!(
        PHASES,
        [
            Phase::Wipe,
            Phase::Bulk,
            Phase::TableAreas,
            Phase::BackupGpt,
            Phase::FirstSector
        ]
    );
}

#[test]
fn a_restore_onto_a_plain_file_writes_every_byte_and_reads_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, image) = disk_and_image(dir.path());
    let path = dir.path().join("target.raw");
    let target = file_target(&path, &vec![0xAA; DISK as usize]);
    let report = restore_onto(
        &image,
        vec![target],
        RestoreOptions::default(),
        RestoreMode::Full,
    )
    .pop()
    .unwrap();
    assert!(report.is_success(), "{:?}", report.outcome);
    assert_eq!(std::fs::read(&path).unwrap(), disk);
    assert_eq!(report.readback_digest, Some(image.manifest().image_digest));
    assert_eq!(report.bytes_written, DISK);
    assert_eq!(
        stages(&report),
        [
            Stage::Wiping,
            Stage::Writing,
            Stage::ReadingBack,
            Stage::Finalising
        ]
    );
}

#[test]
fn before_the_last_phase_the_first_sector_is_zero_and_everything_else_final() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, image) = disk_and_image(dir.path());
    let path = dir.path().join("target.raw");
    let target = file_target(&path, &vec![0xAA; DISK as usize]);
    let mut lanes = vec![Lane::new(0, target, Unmapped::Left)];
    lanes[0].tables = TablePlan::new(&image, DISK / 512).unwrap();
    let (tx, _rx) = channel();
    let meters = writing_meters(&image, &lanes, &tx);
    let (opts, cancel) = (RestoreOptions::default(), CancelToken::new());
    for phase in &PHASES[..4] {
        run_phase(
            *phase,
            &image,
            &mut lanes,
            &meters,
            &opts,
            RestoreMode::Full,
            &tx,
            &cancel,
        );
    }
    assert!(lanes[0].live());
    let written = std::fs::read(&path).unwrap();
    assert!(
        written[..4096].iter().all(|&b| b == 0),
        "sector 0 is held back"
    );
    assert_eq!(written[4096..], disk[4096..]);
    run_phase(
        Phase::FirstSector,
        &image,
        &mut lanes,
        &meters,
        &opts,
        RestoreMode::Full,
        &tx,
        &cancel,
    );
    assert_eq!(std::fs::read(&path).unwrap(), disk);
}

#[test]
fn two_files_at_once_each_get_the_image_and_one_that_fails_does_not_stop_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, image) = disk_and_image(dir.path());
    let good = dir.path().join("good.raw");
    let good_target = file_target(&good, &vec![0xAA; DISK as usize]);
    let bad = dir.path().join("bad.raw");
    let mut bad_target = file_target(&bad, &vec![0xAA; DISK as usize]);
    // Opened read-only: its first write fails, as a dying disk's would.
    bad_target.file = File::open(&bad).unwrap();
    let reports = restore_onto(
        &image,
        vec![good_target, bad_target],
        RestoreOptions::default(),
        RestoreMode::Full,
    );
    assert!(reports[0].is_success(), "{:?}", reports[0].outcome);
    assert_eq!(std::fs::read(&good).unwrap(), disk);
    assert!(
        matches!(
            &reports[1].outcome,
            Outcome::Failed {
                error: RestoreError::Wipe(_),
                ..
            }
        ),
        "{:?}",
        reports[1].outcome
    );
    assert_eq!(std::fs::read(&bad).unwrap(), vec![0xAA; DISK as usize]);
}

#[test]
fn a_cancel_before_the_start_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, image) = disk_and_image(dir.path());
    let path = dir.path().join("target.raw");
    let target = file_target(&path, &vec![0xAA; DISK as usize]);
    let (tx, _rx) = channel();
    let cancel = CancelToken::new();
    cancel.cancel();
    let opts = RestoreOptions::default();
    let report = run(
        &image,
        vec![(target, Unmapped::Left)],
        &opts,
        RestoreMode::Full,
        &tx,
        &cancel,
    )
    .pop()
    .unwrap();
    assert!(matches!(report.outcome, Outcome::Cancelled));
    assert!(report.wiped.is_empty());
    assert_eq!(std::fs::read(&path).unwrap(), vec![0xAA; DISK as usize]);
}

/// The ordinal of the first data extent not wholly before `byte`.
fn first_data_extent_from(image: &Image<File>, byte: u64) -> usize {
    image
        .extents()
        .find(|e| matches!(e.kind, ExtentKind::Data { .. }) && e.end_sector() * 512 > byte)
        .map(|e| e.ordinal)
        .unwrap()
}

#[test]
fn the_frontier_is_the_first_data_extent_the_disk_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, image) = disk_and_image(dir.path());
    let path = dir.path().join("target.raw");
    let frontier_of = |bytes: &[u8]| {
        let mut lane = Lane::new(0, file_target(&path, bytes), Unmapped::Left);
        lane.tables = TablePlan::new(&image, DISK / 512).unwrap();
        find_frontier(&image, &lane, &CancelToken::new()).unwrap()
    };
    assert_eq!(frontier_of(&disk), Compared::Everything);
    // Nothing past the head area: the first data extent after it.
    let after_head = first_data_extent_from(&image, 1 << 20);
    assert_eq!(
        frontier_of(&prefix_of(&disk, 1 << 20)),
        Compared::Before(after_head)
    );
    for kept in [DISK / 3, DISK / 2, DISK - (2 << 20)] {
        assert_eq!(
            frontier_of(&prefix_of(&disk, kept as usize)),
            Compared::Before(first_data_extent_from(&image, kept)),
            "{kept} bytes kept"
        );
    }
    // A disk shorter than the image holds nothing past its end.
    let short = &disk[..(DISK / 2) as usize];
    assert_eq!(
        frontier_of(short),
        Compared::Before(first_data_extent_from(&image, DISK / 2))
    );
}

#[test]
fn what_is_compared_follows_the_frontier() {
    assert!(!Compared::Nothing.compares(0));
    assert!(Compared::Before(5).compares(4));
    assert!(!Compared::Before(5).compares(5));
    assert!(Compared::Everything.compares(usize::MAX));
}

#[test]
fn a_resume_keeps_what_the_disk_holds_before_the_frontier_and_writes_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, image) = disk_and_image(dir.path());
    let path = dir.path().join("target.raw");
    let mut interrupted = prefix_of(&disk, (DISK / 2) as usize);
    // A byte changed since the interruption, before the frontier.
    let altered = (DISK / 4) as usize;
    interrupted[altered] ^= 0xff;
    let target = file_target(&path, &interrupted);
    let opts = RestoreOptions {
        only_differences: true,
        ..RestoreOptions::default()
    };
    let report = restore_onto(
        &image,
        vec![target],
        opts,
        RestoreMode::Resume { interrupted_seq: 1 },
    )
    .pop()
    .unwrap();
    assert!(report.is_success(), "{:?}", report.outcome);
    assert_eq!(std::fs::read(&path).unwrap(), disk);
    // Kept: the first half but the head area and the altered extent.
    let extent = 64 << 10;
    assert!(
        report.bytes_skipped >= DISK / 2 - (1 << 20) - extent - extent,
        "kept {} bytes",
        report.bytes_skipped
    );
    assert!(report.bytes_skipped < DISK / 2);
    assert!(report.bytes_written < DISK / 2 + (1 << 20) + 2 * extent);
    assert_eq!(
        stages(&report),
        [
            Stage::Wiping,
            Stage::Comparing,
            Stage::Writing,
            Stage::ReadingBack,
            Stage::Finalising
        ]
    );
}

#[test]
fn only_differences_rewrites_just_the_extents_that_differ() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, image) = disk_and_image(dir.path());
    let path = dir.path().join("target.raw");
    let mut older = disk.clone();
    for at in [DISK / 3, DISK / 2 + 7] {
        older[at as usize] ^= 1;
    }
    let target = file_target(&path, &older);
    let opts = RestoreOptions {
        only_differences: true,
        ..RestoreOptions::default()
    };
    let report = restore_onto(&image, vec![target], opts, RestoreMode::OnlyDifferences)
        .pop()
        .unwrap();
    assert!(report.is_success(), "{:?}", report.outcome);
    assert_eq!(std::fs::read(&path).unwrap(), disk);
    // Two 64 KiB extents and the table areas (two MiB) are written.
    assert!(report.bytes_written <= (2 << 20) + 2 * (64 << 10) + 4096);
    let target_file = File::open(&path).unwrap();
    let mut sector0 = [0u8; 512];
    target_file.read_exact_at(&mut sector0, 0).unwrap();
    assert_eq!(sector0[..], disk[..512]);
}
