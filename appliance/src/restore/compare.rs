//! Comparing a disk with an image, extent by extent, with O_DIRECT reads so
//! the page cache cannot vouch for bytes the disk does not hold. Used for
//! the read-back after a restore and by `reliquary check`.

use std::fs::File;
use std::os::unix::fs::FileExt;

use rayon::prelude::*;

use reliquary_image::digest::{sha256, ImageDigest};
use reliquary_image::{ExtentKind, Image};

use super::{CancelToken, RestoreError};
use crate::capture::is_zero;
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
    })
}
