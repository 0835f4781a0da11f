//! Check and record: disks compared with an image without writing, each
//! recorded as `DiskChecked` when a log is given.

use std::fs::File;
use std::path::Path;

use reliquary_image::Image;

use super::Recording;
use crate::audit::{lock_shared, AuditError, CheckResult, Payload};
use crate::restore::records::target_ref;
use crate::restore::{check_disks, describe_for_reading, CancelToken, CheckReport, RestoreError};

/// One disk to check: its path, the file opened for reading
/// (`restore::open_for_reading`) and its size in bytes.
pub type DiskToCheck<'a> = (&'a Path, File, u64);

/// What the check of one disk found and how it was recorded.
#[derive(Debug)]
pub struct DiskCheck {
    /// The comparison, or why the disk could not be read.
    pub report: Result<CheckReport, RestoreError>,
    /// The `DiskChecked` record's number, or why it could not be written;
    /// `None` without a log or for a disk that could not be read.
    pub record: Option<Result<u64, AuditError>>,
}

/// Compares every disk with `image` in one pass (`progress` gets (disk,
/// bytes read)), then records each disk's result, the disk described by
/// its identity (model, serial, WWN; a file by its inode).
pub fn check_and_record(
    image: &Image<File>,
    disks: &[DiskToCheck<'_>],
    recording: Option<Recording<'_>>,
    progress: &(dyn Fn(usize, u64) + Sync),
    cancel: &CancelToken,
) -> Result<Vec<DiskCheck>, RestoreError> {
    let opened: Vec<(&File, u64)> = disks
        .iter()
        .map(|(_, file, bytes)| (file, *bytes))
        .collect();
    let reports = check_disks(image, &opened, progress, cancel)?;
    // What each record says of its disk, found with one discovery.
    let described = match recording {
        Some(_) => {
            let read: Vec<(&Path, &File, u64)> = disks
                .iter()
                .map(|(path, file, bytes)| (*path, file, *bytes))
                .collect();
            describe_for_reading(&read, image.sector_size())
        }
        None => Vec::new(),
    };
    Ok(reports
        .into_iter()
        .enumerate()
        .map(|(index, report)| {
            let record = match (&report, recording, described.get(index)) {
                (Ok(report), Some(recording), Some(info)) => Some(
                    lock_shared(recording.log)
                        .append(
                            recording.operator,
                            Payload::DiskChecked {
                                target: target_ref(info),
                                result: check_result(report),
                            },
                        )
                        .map(|appended| appended.seq),
                ),
                _ => None,
            };
            DiskCheck { report, record }
        })
        .collect())
}

fn check_result(report: &CheckReport) -> CheckResult {
    if report.matches() {
        CheckResult::Passed
    } else {
        CheckResult::Failed {
            reason: format!(
                "{} of {} extents differ",
                report.mismatches.len(),
                report.extents_compared
            ),
        }
    }
}
