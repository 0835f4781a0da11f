//! The read-back of the written targets, in one pass, and the judgement
//! of each.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::Sender;

use reliquary_image::{ExtentKind, Image, PartitionScheme, PlacedExtent};

use super::progress::Meter;
use super::{fail_together, Lane, IO_ALIGNMENT};
use crate::audit::Unmapped;
use crate::partition::validate_gpt;
use crate::restore::compare::{buffered_view, compare_disks, CheckReport, DiskView};
use crate::restore::tables::Edit;
use crate::restore::{CancelToken, Progress, RestoreError, RestoreOptions, Stage, Target};
use crate::sys::AlignedBuf;

/// Reads every live target back with O_DIRECT in one pass (each piece
/// hashed once, whatever the number of targets), edits included; then
/// checks each moved backup GPT and validates each written GPT. A target
/// that differs or cannot be read fails on its own.
pub(super) fn read_back(
    image: &Image<File>,
    lanes: &mut [Lane],
    opts: &RestoreOptions,
    progress: &Sender<Progress>,
    cancel: &CancelToken,
) {
    let sector = u64::from(image.sector_size());
    let zero_unmapped = opts.unmapped != Unmapped::Left;
    let live: Vec<usize> = (0..lanes.len()).filter(|&i| lanes[i].live()).collect();
    // Extents found matching by this run's comparison were read back then
    // and not written since.
    let already: Vec<_> = live
        .iter()
        .map(|&i| {
            let set = &lanes[i].already;
            move |e: &PlacedExtent| set.contains(e.ordinal)
        })
        .collect();
    let meters: Vec<Meter> = live
        .iter()
        .zip(&already)
        .map(|(&i, already)| {
            let total: u64 = image
                .extents()
                .filter(|e| (zero_unmapped || e.kind != ExtentKind::Unmapped) && !already(e))
                .map(|e| e.sector_count * sector)
                .sum();
            let meter = Meter::new(progress, lanes[i].index, Stage::ReadingBack, total, 0);
            meter.send(true);
            meter
        })
        .collect();
    let views: Vec<DiskView> = live
        .iter()
        .zip(&already)
        .map(|(&i, already)| DiskView {
            file: &lanes[i].target.file,
            edits: &lanes[i].tables.in_image,
            already_read: already,
        })
        .collect();
    let checks = compare_disks(
        image,
        &views,
        zero_unmapped,
        &|d, n| meters[d].add(n, 0),
        cancel,
    );
    for meter in &meters {
        meter.send(true);
    }
    drop(views);
    let checks = match checks {
        Ok(checks) => checks,
        Err(error) => {
            fail_together(lanes, &live, error);
            return;
        }
    };
    for (&i, check) in live.iter().zip(checks) {
        let lane = &mut lanes[i];
        match check.and_then(|check| verify_written(image, lane, check)) {
            Ok(digest) => {
                lane.report.readback_digest = Some(digest);
                lane.end_stage(Stage::ReadingBack);
            }
            Err(e) => lane.fail(e),
        }
    }
}

/// Judges one target's read-back: no extent may differ, the moved backup
/// GPT must read back as written and a GPT must validate. Returns the
/// image digest recomputed from the disk.
fn verify_written(
    image: &Image<File>,
    lane: &Lane,
    check: CheckReport,
) -> Result<[u8; 32], RestoreError> {
    let sector = u64::from(image.sector_size());
    if let Some(m) = check.mismatches.first() {
        return Err(RestoreError::Readback {
            extent: m.extent,
            start_sector: m.start_sector,
            end_sector: m.end_sector,
            what: m.kind.describe(),
        });
    }
    check_beyond_image(&lane.target, &lane.tables.beyond)?;
    if matches!(
        image.manifest().partition_table.scheme,
        PartitionScheme::Gpt { .. }
    ) {
        validate_gpt(
            &buffered_view(&lane.target.file)?,
            image.sector_size(),
            lane.target.info.size_bytes / sector,
        )
        .map_err(RestoreError::WrittenGpt)?;
    }
    Ok(check.digest)
}

/// Reads back what was written beyond the image's end (the moved backup
/// GPT) and compares it byte for byte.
fn check_beyond_image(target: &Target, beyond: &[Edit]) -> Result<(), RestoreError> {
    for edit in beyond {
        let mut buf = AlignedBuf::with_min_len(edit.bytes.len(), IO_ALIGNMENT)?;
        let read = &mut buf.as_mut_slice()[..edit.bytes.len()];
        FileExt::read_exact_at(&target.file, read, edit.offset).map_err(|source| {
            RestoreError::TargetIo {
                operation: "read back",
                offset: edit.offset,
                source,
            }
        })?;
        if !edit.holds(read, edit.offset) {
            return Err(RestoreError::BackupGptReadback {
                offset: edit.offset,
            });
        }
    }
    Ok(())
}
