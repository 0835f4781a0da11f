//! Comparing a disk with an image, extent by extent, with O_DIRECT reads so
//! the page cache cannot vouch for bytes the disk does not hold. Used for
//! the read-back after a restore and by `reliquary check`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use rayon::prelude::*;

use reliquary_image::digest::{sha256, ImageDigest};
use reliquary_image::{ChunkDecoder, ExtentKind, Image, PartitionScheme};

use super::{CancelToken, RestoreError};
use crate::capture::is_zero;
use crate::partition::check_relocated;
use crate::sys::AlignedBuf;

/// Buffer alignment for O_DIRECT reads (a multiple of every sector size).
const IO_ALIGNMENT: usize = 4096;

/// The result of comparing a disk with an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Extents compared (unmapped ones are skipped unless zeroed).
    pub extents_compared: usize,
    pub extents_matching: usize,
    /// In extent order.
    pub mismatches: Vec<ExtentMismatch>,
    /// The whole-image digest recomputed from the disk's bytes.
    pub digest: [u8; 32],
    /// Differences that are exactly the backup GPT moved to the end of a
    /// larger disk by the restore; they are not counted as mismatches.
    pub gpt_moved: bool,
}

impl CheckReport {
    pub fn matches(&self) -> bool {
        self.mismatches.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtentMismatch {
    pub extent: usize,
    pub start_sector: u64,
    pub end_sector: u64,
    pub kind: MismatchKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MismatchKind {
    /// A data extent whose bytes differ from the image's.
    DataDiffers,
    /// A zero extent holding non-zero bytes.
    NotZero,
}

impl MismatchKind {
    pub fn describe(self) -> &'static str {
        match self {
            MismatchKind::DataDiffers => "differs from the image",
            MismatchKind::NotZero => "is not all zero",
        }
    }
}

/// One read of at most a chunk: part or all of an extent.
struct Piece {
    extent: usize,
    offset: u64,
    len: usize,
    zero: bool,
}

enum Verdict {
    Data([u8; 32]),
    Zero(bool),
}

/// Reads every data and zero extent of `image` from `disk` (and unmapped
/// ones when `unmapped_as_zero`) and compares. `progress` gets bytes read.
pub fn compare_disk(
    image: &Image<File>,
    disk: &File,
    unmapped_as_zero: bool,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &CancelToken,
) -> Result<CheckReport, RestoreError> {
    let sector = u64::from(image.sector_size());
    let chunk = u64::from(image.manifest().chunk_size);
    let mut pieces = Vec::new();
    for e in image.extents() {
        let zero = match e.kind {
            ExtentKind::Data { .. } => false,
            ExtentKind::Zero => true,
            ExtentKind::Unmapped if unmapped_as_zero => true,
            ExtentKind::Unmapped => continue,
        };
        let (start, end) = (e.start_sector * sector, e.end_sector() * sector);
        let mut at = start;
        while at < end {
            let len = (end - at).min(chunk);
            pieces.push(Piece {
                extent: e.ordinal,
                offset: at,
                len: len as usize,
                zero,
            });
            at += len;
        }
    }
    let results: Vec<(usize, Verdict)> = pieces
        .par_iter()
        .map_init(
            || AlignedBuf::new(chunk as usize, IO_ALIGNMENT),
            |buf, piece| -> Result<(usize, Verdict), RestoreError> {
                if cancel.is_cancelled() {
                    return Err(RestoreError::Cancelled);
                }
                let buf = buf.as_mut().map_err(|e| RestoreError::Buffer(e.clone()))?;
                let bytes = &mut buf.as_mut_slice()[..piece.len];
                disk.read_exact_at(bytes, piece.offset).map_err(|source| {
                    RestoreError::TargetIo {
                        operation: "read back",
                        offset: piece.offset,
                        source,
                    }
                })?;
                progress(piece.len as u64);
                let verdict = if piece.zero {
                    Verdict::Zero(is_zero(bytes))
                } else {
                    Verdict::Data(sha256(bytes))
                };
                Ok((piece.extent, verdict))
            },
        )
        .collect::<Result<_, _>>()?;

    let mut digest = ImageDigest::new();
    let mut mismatches = Vec::new();
    let mut compared = 0;
    let mut results = results.into_iter().peekable();
    for e in image.extents() {
        let mut zero_ok = true;
        let mut data_sha = None;
        let mut seen = false;
        while let Some((_, verdict)) = results.next_if(|(ordinal, _)| *ordinal == e.ordinal) {
            seen = true;
            match verdict {
                Verdict::Data(sha) => data_sha = Some(sha),
                Verdict::Zero(ok) => zero_ok &= ok,
            }
        }
        if !seen {
            digest.add(e.sector_count, e.kind, None);
            continue;
        }
        compared += 1;
        let mismatch = match e.kind {
            ExtentKind::Data { chunk } => {
                let expected = image.index().chunks.get(chunk as usize).map(|c| c.sha256);
                (data_sha != expected).then_some(MismatchKind::DataDiffers)
            }
            _ => (!zero_ok).then_some(MismatchKind::NotZero),
        };
        // A zero extent that is not zero is reported as a mismatch; the
        // digest is meaningful only when there are none.
        digest.add(e.sector_count, e.kind, data_sha.as_ref());
        if let Some(kind) = mismatch {
            mismatches.push(ExtentMismatch {
                extent: e.ordinal,
                start_sector: e.start_sector,
                end_sector: e.end_sector(),
                kind,
            });
        }
    }
    Ok(CheckReport {
        extents_compared: compared,
        extents_matching: compared - mismatches.len(),
        mismatches,
        digest: digest.finish(),
        gpt_moved: false,
    })
}

/// After a GPT image was restored onto a larger disk, the restore edited
/// the protective MBR, the primary header and the old backup area. This
/// forgives mismatches that consist of exactly those edits, on a disk
/// whose moved GPT is itself valid; any other differing byte still counts.
pub fn forgive_moved_gpt(
    image: &Image<File>,
    disk: &File,
    disk_bytes: u64,
    report: &mut CheckReport,
) -> Result<(), RestoreError> {
    let sector = u64::from(image.sector_size());
    let image_sectors = image.manifest().source.size_sectors;
    let disk_sectors = disk_bytes / sector;
    let is_gpt = matches!(
        image.manifest().partition_table.scheme,
        PartitionScheme::Gpt { .. }
    );
    if report.mismatches.is_empty() || !is_gpt || disk_sectors <= image_sectors {
        return Ok(());
    }
    // `disk` may be open with O_DIRECT; these few small reads go through
    // a buffered handle on the same open file.
    let disk = File::open(format!("/proc/self/fd/{}", disk.as_raw_fd())).map_err(|source| {
        RestoreError::TargetIo {
            operation: "reopen",
            offset: 0,
            source,
        }
    })?;
    let Ok(header) = check_relocated(&disk, image.sector_size(), disk_sectors) else {
        return Ok(());
    };
    // What `relocate_backup_gpt` zeroed: the old backup entries and header.
    let old_backup = image_sectors.saturating_sub(header.entries_sectors(image.sector_size()) + 1)
        ..image_sectors;
    let mut decoder = ChunkDecoder::new();
    let mut explained = Vec::new();
    for m in &report.mismatches {
        let Some(ExtentKind::Data { chunk }) = image.extent(m.extent).map(|e| e.kind) else {
            continue;
        };
        let mut expected = Vec::new();
        image.read_chunk(chunk, &mut decoder, &mut expected)?;
        let mut actual = AlignedBuf::new(
            expected.len().div_ceil(IO_ALIGNMENT) * IO_ALIGNMENT,
            IO_ALIGNMENT,
        )?;
        let actual = &mut actual.as_mut_slice()[..expected.len()];
        disk.read_exact_at(actual, m.start_sector * sector)
            .map_err(|source| RestoreError::TargetIo {
                operation: "read",
                offset: m.start_sector * sector,
                source,
            })?;
        let sectors = expected
            .chunks(sector as usize)
            .zip(actual.chunks(sector as usize));
        let only_gpt_edits = sectors.enumerate().all(|(i, (want, got))| {
            let lba = m.start_sector + i as u64;
            want == got
                || (lba == 0 && differs_only_in(want, got, &protective_size_fields(want)))
                || (lba == 1 && differs_only_in(want, got, &MOVED_HEADER_FIELDS))
                || (old_backup.contains(&lba) && is_zero(got))
        });
        if only_gpt_edits {
            explained.push(m.extent);
        }
    }
    if !explained.is_empty() {
        report.mismatches.retain(|m| !explained.contains(&m.extent));
        report.extents_matching += explained.len();
        report.gpt_moved = true;
    }
    Ok(())
}

/// The primary GPT header fields the move rewrites: its CRC, the backup
/// header's LBA and the last usable LBA.
const MOVED_HEADER_FIELDS: [std::ops::Range<usize>; 3] = [16..20, 32..40, 48..56];

/// The size fields of the protective (0xEE) entries of an MBR sector.
fn protective_size_fields(sector0: &[u8]) -> Vec<std::ops::Range<usize>> {
    (0..4)
        .map(|i| 446 + 16 * i)
        .filter(|&entry| sector0.get(entry + 4) == Some(&0xee))
        .map(|entry| entry + 12..entry + 16)
        .collect()
}

/// True when `a` and `b` differ only inside `fields`.
fn differs_only_in(a: &[u8], b: &[u8], fields: &[std::ops::Range<usize>]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .enumerate()
            .all(|(i, (x, y))| x == y || fields.iter().any(|f| f.contains(&i)))
}
