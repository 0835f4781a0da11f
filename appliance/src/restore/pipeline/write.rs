//! The writes of the phases: the wipe, the partition-table areas, the
//! moved backup GPT and the first sector, and the primitives under them.

use std::fs::File;
use std::os::unix::fs::FileExt;

use reliquary_image::{ChunkDecoder, ExtentKind, Image, ImageError};

use super::progress::Meter;
#[cfg(doc)]
use super::Phase;
use super::{Lane, IO_ALIGNMENT};
use crate::audit::Unmapped;
use crate::restore::{CancelToken, RestoreError, RestoreOptions, Stage, Target, WIPE_BYTES};
use crate::sys::{self, AlignedBuf};

/// [`Phase::TableAreas`]: once the bulk is on the disk, writes the
/// extents in the partition-table areas in order, holding back the disk's
/// first physical sector, whose final bytes (edits included) it keeps in
/// the lane for [`Phase::FirstSector`].
pub(super) fn write_table_areas(
    image: &Image<File>,
    lane: &mut Lane,
    opts: &RestoreOptions,
    meter: &Meter,
    cancel: &CancelToken,
) -> Result<(), RestoreError> {
    sync(&lane.target)?;
    lane.first_sector = write_areas(image, lane, opts, meter, cancel)?;
    sync(&lane.target)
}

/// [`Phase::BackupGpt`]: the relocated backup GPT, on a larger GPT disk.
pub(super) fn write_backup_gpt(lane: &mut Lane) -> Result<(), RestoreError> {
    for edit in &lane.tables.beyond {
        write_bytes(
            &lane.target,
            &edit.bytes,
            edit.offset,
            "write the backup GPT",
        )?;
        lane.report.bytes_written += edit.bytes.len() as u64;
    }
    lane.report.backup_gpt_moved = !lane.tables.beyond.is_empty();
    sync(&lane.target)
}

/// [`Phase::FirstSector`]: the held-back first physical sector, alone.
pub(super) fn write_first_sector(lane: &mut Lane, meter: &Meter) -> Result<(), RestoreError> {
    let first_sector = std::mem::take(&mut lane.first_sector);
    write_bytes(&lane.target, &first_sector, 0, "write the first sector")?;
    lane.report.bytes_written += first_sector.len() as u64;
    sync(&lane.target)?;
    meter.send(true);
    lane.end_stage(Stage::Writing);
    Ok(())
}

/// The body of [`write_table_areas`]; returns the held-back sector.
fn write_areas(
    image: &Image<File>,
    lane: &mut Lane,
    opts: &RestoreOptions,
    meter: &Meter,
    cancel: &CancelToken,
) -> Result<Vec<u8>, RestoreError> {
    let (target, tables, report) = (&lane.target, &lane.tables, &mut lane.report);
    let sector = u64::from(image.sector_size());
    let physical = u64::from(target.info.physical_sector_size.max(image.sector_size()));
    let held_len = physical.min(image.manifest().logical_bytes()) as usize;
    let mut first_sector = vec![0u8; held_len];
    let mut decoder = ChunkDecoder::new();
    let mut decoded = Vec::new();
    for extent in image.extents().filter(|e| tables.in_areas(e)) {
        if cancel.is_cancelled() {
            return Err(RestoreError::Cancelled);
        }
        let (start, end) = (extent.start_sector * sector, extent.end_sector() * sector);
        // The part of this extent written now: all but the held-back sector.
        let from = start.max(held_len as u64);
        match extent.kind {
            ExtentKind::Data { chunk } => {
                image.read_chunk(chunk, &mut decoder, &mut decoded)?;
                // Verified: only now may the bytes reach the disk.
                let Some(bytes) = decoded.get_mut(..(end - start) as usize) else {
                    return Err(ImageError::InvalidIndex {
                        location: format!("chunk {chunk}"),
                        reason: "it is shorter than its extent".into(),
                    }
                    .into());
                };
                for edit in &tables.in_image {
                    edit.patch(bytes, start, false);
                }
                if start < held_len as u64 {
                    let n = (end.min(held_len as u64) - start) as usize;
                    first_sector[start as usize..start as usize + n].copy_from_slice(&bytes[..n]);
                }
                if from < end {
                    write_bytes(
                        target,
                        &bytes[(from - start) as usize..],
                        from,
                        "write the partition-table area",
                    )?;
                    report.bytes_written += end - from;
                }
                meter.add(end - start, 1);
            }
            ExtentKind::Unmapped if opts.unmapped == Unmapped::Left => {}
            ExtentKind::Zero | ExtentKind::Unmapped => {
                if from < end {
                    let discard =
                        extent.kind == ExtentKind::Unmapped && lane.unmapped == Unmapped::Discarded;
                    zero_range(target, from, end - from, discard)?;
                }
                for edit in &tables.in_image {
                    let (e_from, e_end) = (edit.offset.max(from), edit.end().min(end));
                    if e_from < e_end {
                        let bytes = &edit.bytes[(e_from - edit.offset) as usize..];
                        write_bytes(target, &bytes[..(e_end - e_from) as usize], e_from, "write")?;
                    }
                }
            }
        }
    }
    // The protective MBR's edit lands in the held-back sector whatever the
    // extent holding it.
    for edit in &tables.in_image {
        edit.patch(&mut first_sector, 0, false);
    }
    Ok(first_sector)
}

/// The areas a wipe zeroes, each on its own so that one failing does not
/// keep the others from being tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WipeArea {
    /// The first MiB: MBR, primary GPT, boot loader.
    DiskHead,
    /// The last MiB of the image's range, where its backup GPT lies.
    ImageTail,
    /// The last MiB of the disk, where a backup GPT is looked for.
    DiskTail,
}

impl std::fmt::Display for WipeArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WipeArea::DiskHead => "the first MiB of the disk",
            WipeArea::ImageTail => "the last MiB of the image's range",
            WipeArea::DiskTail => "the last MiB of the disk",
        })
    }
}

/// What a wipe did.
#[derive(Debug)]
pub(super) struct WipeOutcome {
    pub(super) wiped: Vec<WipeArea>,
    failed: Vec<(WipeArea, RestoreError)>,
}

impl WipeOutcome {
    /// A sentence naming what was and was not wiped, if anything failed.
    pub(super) fn failure(&self) -> Option<String> {
        if self.failed.is_empty() {
            return None;
        }
        let failed: Vec<String> = self
            .failed
            .iter()
            .map(|(area, e)| format!("{area} could not be wiped ({e})"))
            .collect();
        let wiped: Vec<String> = self.wiped.iter().map(ToString::to_string).collect();
        Some(if wiped.is_empty() {
            format!("{}; nothing was wiped", failed.join("; "))
        } else {
            format!("{}; wiped: {}", failed.join("; "), wiped.join(", "))
        })
    }
}

/// Zeroes the first and last MiB of the target and the last MiB of the
/// image's range (fewer bytes on a smaller target), each area tried even
/// when another failed, then flushes.
pub(super) fn wipe(image: &Image<File>, target: &Target) -> WipeOutcome {
    let size = target.info.size_bytes;
    let image_end = image.manifest().logical_bytes().min(size);
    let areas = [
        (WipeArea::DiskHead, 0..WIPE_BYTES.min(size)),
        (
            WipeArea::ImageTail,
            image_end.saturating_sub(WIPE_BYTES)..image_end,
        ),
        (WipeArea::DiskTail, size.saturating_sub(WIPE_BYTES)..size),
    ];
    let mut outcome = WipeOutcome {
        wiped: Vec::new(),
        failed: Vec::new(),
    };
    for (area, range) in areas {
        let result = AlignedBuf::with_min_len((range.end - range.start) as usize, IO_ALIGNMENT)
            .map_err(RestoreError::from)
            .and_then(|zeros| {
                let len = (range.end - range.start) as usize;
                write_bytes_aligned(target, &zeros.as_slice()[..len], range.start, "wipe")
            });
        match result {
            Ok(()) => outcome.wiped.push(area),
            Err(e) => outcome.failed.push((area, e)),
        }
    }
    if let Err(e) = sync(target) {
        let areas = std::mem::take(&mut outcome.wiped);
        outcome
            .failed
            .extend(areas.into_iter().map(|a| (a, RestoreError::from_flush(&e))));
    }
    outcome
}

/// Makes a range read as zero: discarded where asked and the disk then
/// guarantees zeros, otherwise zeroed by the device or the file system,
/// and written with zeros as the last resort.
pub(super) fn zero_range(
    target: &Target,
    offset: u64,
    len: u64,
    discard: bool,
) -> Result<(), RestoreError> {
    let discarded = discard
        && target.info.is_block_device
        && sys::discard_zeroing(&target.file, offset, len).is_ok();
    let result = if discarded {
        Ok(())
    } else if target.info.is_block_device {
        sys::zero_out(&target.file, offset, len).map(|_| ())
    } else {
        sys::punch_or_zero_range(&target.file, offset, len).map(|_| ())
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.wants_zero_fallback() => {
            let zeros = AlignedBuf::with_min_len((4 << 20).min(len as usize), IO_ALIGNMENT)?;
            let mut at = offset;
            while at < offset + len {
                let n = (offset + len - at).min(zeros.len() as u64) as usize;
                write_bytes_aligned(target, &zeros.as_slice()[..n], at, "write zeros")?;
                at += n as u64;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Writes `bytes`, which must sit in an [`AlignedBuf`], at `offset`.
pub(super) fn write_bytes_aligned(
    target: &Target,
    bytes: &[u8],
    offset: u64,
    operation: &'static str,
) -> Result<(), RestoreError> {
    target
        .file
        .write_all_at(bytes, offset)
        .map_err(|source| RestoreError::TargetIo {
            operation,
            offset,
            source,
        })
}

/// Writes `bytes` from any buffer, through an aligned copy.
pub(super) fn write_bytes(
    target: &Target,
    bytes: &[u8],
    offset: u64,
    operation: &'static str,
) -> Result<(), RestoreError> {
    let mut buf = AlignedBuf::with_min_len(bytes.len(), IO_ALIGNMENT)?;
    buf.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
    write_bytes_aligned(target, &buf.as_slice()[..bytes.len()], offset, operation)
}

pub(super) fn sync(target: &Target) -> Result<(), RestoreError> {
    target
        .file
        .sync_all()
        .map_err(|source| RestoreError::TargetIo {
            operation: "flush",
            offset: 0,
            source,
        })
}
