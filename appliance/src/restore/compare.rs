//! Comparing a disk with an image, extent by extent, with O_DIRECT reads so
//! the page cache cannot vouch for bytes the disk does not hold. Used for
//! the read-back after a restore and by `reliquary check`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use rayon::prelude::*;

use reliquary_image::digest::{sha256, ImageDigest};
use reliquary_image::{ExtentKind, Image, PlacedExtent, ReadAt};

use super::tables::{Edit, TablePlan};
use super::{CancelToken, RestoreError};
use crate::capture::is_zero;
use crate::partition::validate_gpt;
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

/// Pieces read and judged in parallel at a time: the memory a comparison
/// holds does not grow with the number of extents or the disk's size.
const BATCH_PIECES: usize = 64;

/// Zero extents are read in pieces of at least this size.
const MIN_ZERO_PIECE: u64 = 4 << 20;

/// One read of part or all of an extent; `len` 0 for an extent not read.
struct Piece {
    extent: PlacedExtent,
    offset: u64,
    len: usize,
    zero: bool,
    last: bool,
}

enum Verdict {
    Skipped,
    Data { sha: [u8; 32], edits_hold: bool },
    Zero { zero: bool, edits_hold: bool },
}

/// At most this many mismatches are listed in a report; the rest are
/// counted, so a disk that differs everywhere costs no more memory.
const MAX_LISTED_MISMATCHES: usize = 10_000;

/// Reads every data and zero extent of `image` from `disk` (and unmapped
/// ones when `unmapped_as_zero`) and compares, in batches. `edits` are
/// bytes the restore wrote over the image's (see [`TablePlan`]): the disk
/// must hold them, and the image's digest is recomputed with the image's
/// own bytes put back in their place. Extents for which `already_read`
/// is true were read from this disk and found matching earlier in the same
/// run (a resume's comparison) and are counted as matching without being
/// read again. `progress` gets bytes read.
pub(crate) fn compare_disk(
    image: &Image<File>,
    disk: &File,
    unmapped_as_zero: bool,
    edits: &[Edit],
    already_read: &dyn Fn(&PlacedExtent) -> bool,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &CancelToken,
) -> Result<CheckReport, RestoreError> {
    let mut digest = ImageDigest::new();
    let mut mismatches = Vec::new();
    let (mut compared, mut differing) = (0, 0);
    let mut visit = |e: &PlacedExtent, verdict: Option<ExtentCheck>| {
        let Some(check) = verdict else {
            let matched_sha = match e.kind {
                _ if !already_read(e) => None,
                ExtentKind::Data { chunk } => {
                    image.index().chunks.get(chunk as usize).map(|c| c.sha256)
                }
                ExtentKind::Zero | ExtentKind::Unmapped => None,
            };
            compared += usize::from(already_read(e));
            digest.add(e.sector_count, e.kind, matched_sha.as_ref());
            return;
        };
        compared += 1;
        // A zero extent that is not zero is reported as a mismatch; the
        // digest is meaningful only when there are none.
        digest.add(e.sector_count, e.kind, check.data_sha.as_ref());
        if let Some(kind) = check.mismatch {
            differing += 1;
            if mismatches.len() < MAX_LISTED_MISMATCHES {
                mismatches.push(ExtentMismatch {
                    extent: e.ordinal,
                    start_sector: e.start_sector,
                    end_sector: e.end_sector(),
                    kind,
                });
            }
        }
    };
    let read = |e: &PlacedExtent| match e.kind {
        _ if already_read(e) => false,
        ExtentKind::Data { .. } | ExtentKind::Zero => true,
        ExtentKind::Unmapped => unmapped_as_zero,
    };
    walk_extents(image, disk, &read, edits, progress, cancel, &mut visit)?;
    Ok(CheckReport {
        extents_compared: compared,
        extents_matching: compared - differing,
        mismatches,
        digest: digest.finish(),
        gpt_moved: false,
    })
}

/// What reading one extent back found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExtentCheck {
    /// The SHA-256 of a data extent's bytes as read (edits undone).
    pub data_sha: Option<[u8; 32]>,
    pub mismatch: Option<MismatchKind>,
}

/// Reads back, in batches of pieces judged on every core, each extent for
/// which `read` is true (an unmapped one is expected to read as zeros),
/// and calls `visit` for every extent of the image in order: with `None`
/// for one not read. Memory stays bounded whatever the extent count.
pub(crate) fn walk_extents(
    image: &Image<File>,
    disk: &File,
    read: &dyn Fn(&PlacedExtent) -> bool,
    edits: &[Edit],
    progress: &(dyn Fn(u64) + Sync),
    cancel: &CancelToken,
    visit: &mut dyn FnMut(&PlacedExtent, Option<ExtentCheck>),
) -> Result<(), RestoreError> {
    let sector = u64::from(image.sector_size());
    let chunk = u64::from(image.manifest().chunk_size);
    let zero_piece = chunk.max(MIN_ZERO_PIECE);
    let mut pieces = image.extents().flat_map(|e| {
        let step = match e.kind {
            _ if !read(&e) => 0,
            ExtentKind::Data { .. } => chunk,
            ExtentKind::Zero | ExtentKind::Unmapped => zero_piece,
        };
        let zero = !matches!(e.kind, ExtentKind::Data { .. });
        let (start, end) = (e.start_sector * sector, e.end_sector() * sector);
        let count = if step == 0 {
            1
        } else {
            (end - start).div_ceil(step).max(1)
        };
        (0..count).map(move |i| {
            let offset = start + i * step;
            Piece {
                extent: e,
                offset,
                len: if step == 0 {
                    0
                } else {
                    (end - offset).min(step) as usize
                },
                zero,
                last: i + 1 == count,
            }
        })
    });
    let buffers = Mutex::new(Vec::<AlignedBuf>::new());
    let buffer_len = chunk.max(zero_piece) as usize;
    let mut current = ExtentVerdict::default();
    loop {
        let batch: Vec<Piece> = pieces.by_ref().take(BATCH_PIECES).collect();
        if batch.is_empty() {
            return Ok(());
        }
        let verdicts = batch
            .par_iter()
            .map(|piece| {
                if cancel.is_cancelled() {
                    return Err(RestoreError::Cancelled);
                }
                if piece.len == 0 {
                    return Ok(Verdict::Skipped);
                }
                let taken = buffers.lock().ok().and_then(|mut b| b.pop());
                let mut buf = match taken {
                    Some(buf) => buf,
                    None => AlignedBuf::new(buffer_len, IO_ALIGNMENT)?,
                };
                let verdict = judge(disk, piece, &mut buf, edits);
                if let Ok(mut pool) = buffers.lock() {
                    pool.push(buf);
                }
                if verdict.is_ok() {
                    progress(piece.len as u64);
                }
                verdict
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (piece, verdict) in batch.iter().zip(verdicts) {
            current.add(verdict);
            if !piece.last {
                continue;
            }
            let e = piece.extent;
            let verdict = std::mem::take(&mut current);
            if !verdict.read {
                visit(&e, None);
                continue;
            }
            let mismatch = match e.kind {
                ExtentKind::Data { chunk } => {
                    let expected = image.index().chunks.get(chunk as usize).map(|c| c.sha256);
                    (verdict.data_sha != expected || !verdict.edits_hold)
                        .then_some(MismatchKind::DataDiffers)
                }
                _ => (!verdict.zero || !verdict.edits_hold).then_some(MismatchKind::NotZero),
            };
            visit(
                &e,
                Some(ExtentCheck {
                    data_sha: verdict.data_sha,
                    mismatch,
                }),
            );
        }
    }
}

/// What the pieces of one extent said so far.
#[derive(Debug)]
struct ExtentVerdict {
    read: bool,
    data_sha: Option<[u8; 32]>,
    zero: bool,
    edits_hold: bool,
}

impl Default for ExtentVerdict {
    fn default() -> Self {
        Self {
            read: false,
            data_sha: None,
            zero: true,
            edits_hold: true,
        }
    }
}

impl ExtentVerdict {
    fn add(&mut self, verdict: Verdict) {
        match verdict {
            Verdict::Skipped => {}
            Verdict::Data { sha, edits_hold } => {
                self.read = true;
                self.data_sha = Some(sha);
                self.edits_hold &= edits_hold;
            }
            Verdict::Zero { zero, edits_hold } => {
                self.read = true;
                self.zero &= zero;
                self.edits_hold &= edits_hold;
            }
        }
    }
}

/// Reads one piece and judges it against the image.
fn judge(
    disk: &File,
    piece: &Piece,
    buf: &mut AlignedBuf,
    edits: &[Edit],
) -> Result<Verdict, RestoreError> {
    let bytes = &mut buf.as_mut_slice()[..piece.len];
    FileExt::read_exact_at(disk, bytes, piece.offset).map_err(|source| RestoreError::TargetIo {
        operation: "read back",
        offset: piece.offset,
        source,
    })?;
    let mut edits_hold = true;
    for edit in edits {
        edits_hold &= edit.holds(bytes, piece.offset);
        edit.patch(bytes, piece.offset, true);
    }
    Ok(if piece.zero {
        Verdict::Zero {
            zero: is_zero(bytes),
            edits_hold,
        }
    } else {
        Verdict::Data {
            sha: sha256(bytes),
            edits_hold,
        }
    })
}

/// Compares a disk of `disk_bytes` with the image, as `reliquary check`
/// does: the disk matches when it holds the image exactly, or exactly
/// what a restore onto a disk of its size writes (a GPT's backup moved to
/// the end of a larger disk, validated with the `gpt` crate).
pub fn check_disk(
    image: &Image<File>,
    disk: &File,
    disk_bytes: u64,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &CancelToken,
) -> Result<CheckReport, RestoreError> {
    let exact = compare_disk(image, disk, false, &[], &|_| false, progress, cancel)?;
    if exact.matches() {
        return Ok(exact);
    }
    let sector = u64::from(image.sector_size());
    let tables = TablePlan::new(image, disk_bytes / sector)?;
    let explained_by_edits = exact.mismatches.iter().all(|m| {
        tables
            .in_image
            .iter()
            .any(|e| e.offset < m.end_sector * sector && e.end() > m.start_sector * sector)
    });
    if tables.beyond.is_empty() || !explained_by_edits {
        return Ok(exact);
    }
    let buffered = buffered_view(disk)?;
    let moved_tables_hold = validate_gpt(&buffered, image.sector_size(), disk_bytes / sector)
        .is_ok()
        && tables.beyond.iter().all(|edit| {
            let mut bytes = vec![0u8; edit.bytes.len()];
            ReadAt::read_exact_at(&buffered, &mut bytes, edit.offset).is_ok()
                && edit.holds(&bytes, edit.offset)
        });
    if !moved_tables_hold {
        return Ok(exact);
    }
    let mut moved = compare_disk(
        image,
        disk,
        false,
        &tables.in_image,
        &|_| false,
        &|_| {},
        cancel,
    )?;
    moved.gpt_moved = moved.matches();
    Ok(if moved.matches() { moved } else { exact })
}

/// A buffered handle on the same open target, for small unaligned reads
/// that an O_DIRECT handle cannot do. Reopened through /proc, never by
/// path, so it is the very file that was written.
pub(super) fn buffered_view(file: &File) -> Result<File, RestoreError> {
    File::open(format!("/proc/self/fd/{}", file.as_raw_fd())).map_err(|source| {
        RestoreError::TargetIo {
            operation: "reopen",
            offset: 0,
            source,
        }
    })
}
