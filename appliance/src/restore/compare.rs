//! Comparing a disk with an image, extent by extent, with O_DIRECT reads so
//! the page cache cannot vouch for bytes the disk does not hold. Used for
//! the read-back after a restore and by `reliquary check`.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use rayon::prelude::*;

use reliquary_image::digest::{sha256, ImageDigest};
use reliquary_image::{ExtentKind, Image, PlacedExtent, ReadAt};

use super::tables::{Edit, TablePlan};
use super::{CancelToken, RestoreError};
use crate::io::{is_zero, workers_within_budget, Gate};
use crate::partition::validate_gpt;
use crate::sys::{self, AlignedBuf};

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

/// One disk of a comparison: the open file, the bytes a restore wrote
/// over the image's there (see [`TablePlan`]), and the extents already
/// read from it and found matching earlier in the same run (a resume's
/// comparison), which are counted as matching without being read again.
pub(crate) struct DiskView<'a> {
    pub file: &'a File,
    pub edits: &'a [Edit],
    pub already_read: &'a (dyn Fn(&PlacedExtent) -> bool + Sync),
}

/// Reads every data and zero extent of `image` from `disk` (and unmapped
/// ones when `unmapped_as_zero`) and compares, in batches: the one-disk
/// case of [`compare_disks`].
pub(crate) fn compare_disk(
    image: &Image<File>,
    disk: &DiskView<'_>,
    unmapped_as_zero: bool,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &CancelToken,
) -> Result<CheckReport, RestoreError> {
    let mut reports = compare_disks(
        image,
        std::slice::from_ref(disk),
        unmapped_as_zero,
        &|_, n| progress(n),
        cancel,
    )?;
    reports.pop().unwrap_or(Err(RestoreError::Cancelled))
}

/// Compares several disks with the image in one pass: each piece is read
/// from every disk, the first one's bytes hashed and the others' compared
/// with them byte for byte (hashed only where they differ), so N disks
/// cost one hashing, not N. Each disk's `edits` must hold and the image's
/// digest is recomputed with the image's own bytes put back in their
/// place. A disk that cannot be read gets its error and is read no
/// further; the others carry on. `progress` gets (disk, bytes read).
pub(crate) fn compare_disks(
    image: &Image<File>,
    disks: &[DiskView<'_>],
    unmapped_as_zero: bool,
    progress: &(dyn Fn(usize, u64) + Sync),
    cancel: &CancelToken,
) -> Result<Vec<Result<CheckReport, RestoreError>>, RestoreError> {
    struct Tally {
        digest: ImageDigest,
        mismatches: Vec<ExtentMismatch>,
        compared: usize,
        differing: usize,
    }
    let mut tallies: Vec<Tally> = disks
        .iter()
        .map(|_| Tally {
            digest: ImageDigest::new(),
            mismatches: Vec::new(),
            compared: 0,
            differing: 0,
        })
        .collect();
    let mut visit = |disk: usize, e: &PlacedExtent, verdict: Option<ExtentCheck>| {
        let tally = &mut tallies[disk];
        let Some(check) = verdict else {
            let already = (disks[disk].already_read)(e);
            let matched_sha = match e.kind {
                _ if !already => None,
                ExtentKind::Data { chunk } => {
                    image.index().chunks.get(chunk as usize).map(|c| c.sha256)
                }
                ExtentKind::Zero | ExtentKind::Unmapped => None,
            };
            tally.compared += usize::from(already);
            tally
                .digest
                .add(e.sector_count, e.kind, matched_sha.as_ref());
            return;
        };
        tally.compared += 1;
        // A zero extent that is not zero is reported as a mismatch; the
        // digest is meaningful only when there are none.
        tally
            .digest
            .add(e.sector_count, e.kind, check.data_sha.as_ref());
        if let Some(kind) = check.mismatch {
            tally.differing += 1;
            if tally.mismatches.len() < MAX_LISTED_MISMATCHES {
                tally.mismatches.push(ExtentMismatch {
                    extent: e.ordinal,
                    start_sector: e.start_sector,
                    end_sector: e.end_sector(),
                    kind,
                });
            }
        }
    };
    let read = |e: &PlacedExtent| match e.kind {
        ExtentKind::Data { .. } | ExtentKind::Zero => true,
        ExtentKind::Unmapped => unmapped_as_zero,
    };
    let outcomes = walk_disks(image, disks, &read, progress, cancel, &mut visit)?;
    Ok(outcomes
        .into_iter()
        .zip(tallies)
        .map(|(outcome, tally)| {
            outcome.map(|()| CheckReport {
                extents_compared: tally.compared,
                extents_matching: tally.compared - tally.differing,
                mismatches: tally.mismatches,
                digest: tally.digest.finish(),
                gpt_moved: false,
            })
        })
        .collect())
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
/// for one not read. Memory stays bounded whatever the extent count. The
/// one-disk case of [`walk_disks`]: its first read error ends the walk.
pub(crate) fn walk_extents(
    image: &Image<File>,
    disk: &File,
    read: &dyn Fn(&PlacedExtent) -> bool,
    edits: &[Edit],
    progress: &(dyn Fn(u64) + Sync),
    cancel: &CancelToken,
    visit: &mut dyn FnMut(&PlacedExtent, Option<ExtentCheck>),
) -> Result<(), RestoreError> {
    let view = DiskView {
        file: disk,
        edits,
        already_read: &|_| false,
    };
    let mut outcomes = walk_disks(
        image,
        std::slice::from_ref(&view),
        read,
        &|_, n| progress(n),
        cancel,
        &mut |_, e, check| visit(e, check),
    )?;
    outcomes.pop().unwrap_or(Ok(()))
}

/// [`walk_extents`] over several disks at once: each piece is read from
/// every disk that still needs it, and `visit` gets (disk, extent,
/// verdict). A disk whose read fails gets that error in the result and is
/// read no further; only a cancel ends the walk for all.
pub(crate) fn walk_disks(
    image: &Image<File>,
    disks: &[DiskView<'_>],
    read: &dyn Fn(&PlacedExtent) -> bool,
    progress: &(dyn Fn(usize, u64) + Sync),
    cancel: &CancelToken,
    visit: &mut dyn FnMut(usize, &PlacedExtent, Option<ExtentCheck>),
) -> Result<Vec<Result<(), RestoreError>>, RestoreError> {
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
    let buffers = BufferPool {
        free: Mutex::new(Vec::new()),
        len: chunk.max(zero_piece) as usize,
    };
    // A piece holds one buffer, two with several disks (the first disk's
    // bytes are kept to compare the others' with): 64 MiB chunks on many
    // cores or many disks must not multiply into gigabytes.
    let per_piece = buffers.len * disks.len().min(2);
    let threads = rayon::current_num_threads();
    let gate = Gate::new(workers_within_budget(per_piece, threads));
    let mut failed: Vec<Option<RestoreError>> = disks.iter().map(|_| None).collect();
    let mut current: Vec<ExtentVerdict> = disks.iter().map(|_| ExtentVerdict::default()).collect();
    while failed.iter().any(Option::is_none) {
        let batch: Vec<Piece> = pieces.by_ref().take(BATCH_PIECES).collect();
        if batch.is_empty() {
            break;
        }
        let live: Vec<bool> = failed.iter().map(Option::is_none).collect();
        let verdicts = batch
            .par_iter()
            .map(|piece| {
                if cancel.is_cancelled() {
                    return Err(RestoreError::Cancelled);
                }
                let _permit = gate.enter();
                judge_piece(disks, &live, piece, &buffers, progress)
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (piece, per_disk) in batch.iter().zip(verdicts) {
            for (d, verdict) in per_disk.into_iter().enumerate() {
                match verdict {
                    Ok(verdict) => current[d].add(verdict),
                    Err(e) => {
                        failed[d].get_or_insert(e);
                    }
                }
            }
            if !piece.last {
                continue;
            }
            let e = piece.extent;
            for (d, verdict) in current.iter_mut().enumerate() {
                let verdict = std::mem::take(verdict);
                if failed[d].is_some() {
                    continue;
                }
                if !verdict.read {
                    visit(d, &e, None);
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
                    d,
                    &e,
                    Some(ExtentCheck {
                        data_sha: verdict.data_sha,
                        mismatch,
                    }),
                );
            }
        }
    }
    Ok(failed.into_iter().map(|f| f.map_or(Ok(()), Err)).collect())
}

/// Reusable read buffers, each `len` bytes: as many as pieces in flight.
struct BufferPool {
    free: Mutex<Vec<AlignedBuf>>,
    len: usize,
}

impl BufferPool {
    fn take(&self) -> Result<AlignedBuf, RestoreError> {
        match self.free.lock().ok().and_then(|mut free| free.pop()) {
            Some(buf) => Ok(buf),
            None => Ok(AlignedBuf::new(self.len, IO_ALIGNMENT)?),
        }
    }

    fn give(&self, buf: AlignedBuf) {
        if let Ok(mut free) = self.free.lock() {
            free.push(buf);
        }
    }
}

/// Reads one piece from every live disk that still needs it and judges
/// each against the image. A data piece is hashed once: the first disk's
/// bytes are, and any other disk holding the same bytes shares the hash.
fn judge_piece(
    disks: &[DiskView<'_>],
    live: &[bool],
    piece: &Piece,
    buffers: &BufferPool,
    progress: &(dyn Fn(usize, u64) + Sync),
) -> Result<Vec<Result<Verdict, RestoreError>>, RestoreError> {
    let mut verdicts = Vec::with_capacity(disks.len());
    let mut first: Option<(AlignedBuf, [u8; 32])> = None;
    let mut scratch: Option<AlignedBuf> = None;
    for (d, disk) in disks.iter().enumerate() {
        if piece.len == 0 || !live[d] || (disk.already_read)(&piece.extent) {
            verdicts.push(Ok(Verdict::Skipped));
            continue;
        }
        let mut buf = match scratch.take() {
            Some(buf) => buf,
            None => buffers.take()?,
        };
        let bytes = &mut buf.as_mut_slice()[..piece.len];
        if let Err(source) = FileExt::read_exact_at(disk.file, bytes, piece.offset) {
            verdicts.push(Err(RestoreError::TargetIo {
                operation: "read back",
                offset: piece.offset,
                source,
            }));
            scratch = Some(buf);
            continue;
        }
        progress(d, piece.len as u64);
        let mut edits_hold = true;
        for edit in disk.edits {
            edits_hold &= edit.holds(bytes, piece.offset);
            edit.patch(bytes, piece.offset, true);
        }
        if piece.zero {
            verdicts.push(Ok(Verdict::Zero {
                zero: is_zero(bytes),
                edits_hold,
            }));
            scratch = Some(buf);
            continue;
        }
        let sha = match &first {
            Some((seen, sha)) if seen.as_slice()[..piece.len] == *bytes => *sha,
            _ => sha256(bytes),
        };
        verdicts.push(Ok(Verdict::Data { sha, edits_hold }));
        if first.is_none() {
            first = Some((buf, sha));
        } else {
            scratch = Some(buf);
        }
    }
    for buf in first.map(|(buf, _)| buf).into_iter().chain(scratch) {
        buffers.give(buf);
    }
    Ok(verdicts)
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

/// Compares disks, each `(file, size in bytes)`, with the image, as
/// `reliquary check` does, in one pass that hashes each piece once: a disk
/// matches when it holds the image exactly, or exactly what a restore onto
/// a disk of its size writes (a GPT's backup moved to the end of a larger
/// disk, validated with the `gpt` crate). `progress` gets (disk, bytes).
pub fn check_disks(
    image: &Image<File>,
    disks: &[(&File, u64)],
    progress: &(dyn Fn(usize, u64) + Sync),
    cancel: &CancelToken,
) -> Result<Vec<Result<CheckReport, RestoreError>>, RestoreError> {
    let views: Vec<DiskView> = disks
        .iter()
        .map(|&(file, _)| DiskView {
            file,
            edits: &[],
            already_read: &|_| false,
        })
        .collect();
    let exact = compare_disks(image, &views, false, progress, cancel)?;
    Ok(exact
        .into_iter()
        .zip(disks)
        .map(|(exact, (disk, disk_bytes))| {
            let exact = exact?;
            if exact.matches() {
                return Ok(exact);
            }
            restored_onto_larger(image, disk, *disk_bytes, exact, cancel)
        })
        .collect())
}

/// A disk that differs from the image exactly where a restore onto a disk
/// of `disk_bytes` edits the tables, with those moved tables valid, is
/// what that restore wrote: compared again with the edits, it matches.
fn restored_onto_larger(
    image: &Image<File>,
    disk: &File,
    disk_bytes: u64,
    exact: CheckReport,
    cancel: &CancelToken,
) -> Result<CheckReport, RestoreError> {
    let sector = u64::from(image.sector_size());
    if disk_bytes / sector <= image.manifest().source.size_sectors {
        return Ok(exact);
    }
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
        &DiskView {
            file: disk,
            edits: &tables.in_image,
            already_read: &|_| false,
        },
        false,
        &|_| {},
        cancel,
    )?;
    moved.gpt_moved = moved.matches();
    Ok(if moved.matches() { moved } else { exact })
}

/// Opens a disk or file read-only, with O_DIRECT so the page cache cannot
/// vouch for bytes the disk does not hold; file systems that refuse
/// O_DIRECT (tmpfs) are read through the cache.
pub fn open_for_reading(path: &Path) -> std::io::Result<File> {
    match sys::open_direct(path) {
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => File::open(path),
        opened => opened,
    }
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;

    use super::super::test_image::{disk_and_image, CHUNK, DISK};
    use super::*;

    #[test]
    fn several_disks_in_one_pass_are_judged_each_on_its_own_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (bytes, image) = disk_and_image(dir.path());
        let disk = |name: &str, len: u64| {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(dir.path().join(name))
                .expect("creates a disk");
            file.write_all_at(&bytes[..len as usize], 0)
                .expect("writes");
            file
        };
        let exact = disk("exact.raw", DISK);
        let changed = disk("changed.raw", DISK);
        changed
            .write_all_at(&[0], CHUNK + 10)
            .expect("flips a byte");
        let short = disk("short.raw", CHUNK);
        let none = |_: &PlacedExtent| false;
        let view = |file| DiskView {
            file,
            edits: &[],
            already_read: &none,
        };
        // Whichever disk is read first, each verdict is the disk's own.
        for order in [[&changed, &exact, &short], [&exact, &changed, &short]] {
            let views: Vec<DiskView> = order.iter().map(|f| view(f)).collect();
            let reports = compare_disks(&image, &views, false, &|_, _| {}, &CancelToken::new())
                .expect("walks");
            for (file, report) in order.iter().zip(&reports) {
                if std::ptr::eq(*file, &exact) {
                    let report = report.as_ref().expect("reads");
                    assert!(report.matches());
                    assert_eq!(report.digest, image.manifest().image_digest);
                } else if std::ptr::eq(*file, &changed) {
                    let report = report.as_ref().expect("reads");
                    let sectors = CHUNK / 512;
                    assert_eq!(
                        report
                            .mismatches
                            .iter()
                            .map(|m| (m.start_sector, m.kind))
                            .collect::<Vec<_>>(),
                        [(sectors, MismatchKind::DataDiffers)]
                    );
                } else {
                    assert!(report.is_err(), "the short disk read as {report:?}");
                }
            }
        }
    }
}
