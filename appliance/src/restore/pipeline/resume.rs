//! Which extents a resume or `--only-differences` compares with the disk
//! before writing, where an interrupted restore stopped writing, and which
//! extents the disk already holds.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc::Sender;

use reliquary_image::digest::sha256;
use reliquary_image::{ExtentKind, Image, PlacedExtent};

use super::progress::Meter;
use super::{Lane, IO_ALIGNMENT};
use crate::audit::Unmapped;
use crate::restore::compare::walk_extents;
use crate::restore::{CancelToken, Progress, RestoreError, RestoreOptions, Stage};
use crate::sys::AlignedBuf;

/// Extents of the image, by ordinal, in one bit each.
#[derive(Debug, Default)]
pub(super) struct ExtentSet {
    words: Vec<u64>,
}

impl ExtentSet {
    pub(super) fn insert(&mut self, ordinal: usize) {
        let (word, bit) = (ordinal / 64, ordinal % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    pub(super) fn contains(&self, ordinal: usize) -> bool {
        self.words
            .get(ordinal / 64)
            .is_some_and(|w| w & (1 << (ordinal % 64)) != 0)
    }
}

/// The extents outside the partition-table areas that the target already
/// holds, their bytes, and of those the data extents and their bytes.
pub(super) struct Matching {
    pub(super) extents: ExtentSet,
    pub(super) bytes: u64,
    pub(super) data_bytes: u64,
    pub(super) data_extents: u64,
}

/// Which extents outside the partition-table areas are compared with the
/// disk before they are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compared {
    /// None: every extent is written (a full restore).
    Nothing,
    /// Those before this ordinal, where a resume's interrupted restore
    /// stopped writing (see [`find_frontier`]); those from it on are
    /// written without a look.
    Before(usize),
    /// All of them: `--only-differences`, or a resume of a disk that
    /// holds every data extent.
    Everything,
}

impl Compared {
    /// Whether the extent at `ordinal` is compared before it is written.
    pub(super) fn compares(self, ordinal: usize) -> bool {
        match self {
            Compared::Nothing => false,
            Compared::Before(frontier) => ordinal < frontier,
            Compared::Everything => true,
        }
    }
}

/// Where a resume's interrupted restore stopped writing: the first data
/// extent outside the table areas that the disk does not hold, found by
/// bisection (the bulk is written in image order), each probe reading and
/// hashing that one extent. Where the disk is not a clean prefix (the
/// ragged edge of the writers in flight, bytes altered since) the answer
/// is only less economical: extents before it are compared, extents from
/// it on written.
pub(super) fn find_frontier(
    image: &Image<File>,
    lane: &Lane,
    cancel: &CancelToken,
) -> Result<Compared, RestoreError> {
    let data: Vec<usize> = image
        .extents()
        .filter(|e| matches!(e.kind, ExtentKind::Data { .. }) && !lane.tables.in_areas(e))
        .map(|e| e.ordinal)
        .collect();
    let mut probe = FrontierProbe {
        image,
        file: &lane.target.file,
        buf: None,
    };
    let (mut held, mut missing) = (0, data.len());
    while held < missing {
        if cancel.is_cancelled() {
            return Err(RestoreError::Cancelled);
        }
        let mid = held + (missing - held) / 2;
        if probe.holds(data[mid])? {
            held = mid + 1;
        } else {
            missing = mid;
        }
    }
    Ok(match data.get(held) {
        None => Compared::Everything,
        Some(0) => Compared::Nothing,
        Some(&ordinal) => Compared::Before(ordinal),
    })
}

/// Reads single data extents of a disk and checks them against the image.
struct FrontierProbe<'a> {
    image: &'a Image<File>,
    file: &'a File,
    /// One aligned buffer, reused, as long as the longest extent probed.
    buf: Option<AlignedBuf>,
}

impl FrontierProbe<'_> {
    /// Whether the disk holds the data extent at `ordinal`: its bytes hash
    /// to its chunk's signed digest.
    fn holds(&mut self, ordinal: usize) -> Result<bool, RestoreError> {
        let Some(extent) = self.image.extent(ordinal) else {
            return Ok(false);
        };
        let ExtentKind::Data { chunk } = extent.kind else {
            return Ok(false);
        };
        let Some(expected) = self.image.index().chunks.get(chunk as usize) else {
            return Ok(false);
        };
        let sector = u64::from(self.image.sector_size());
        let (offset, len) = (
            extent.start_sector * sector,
            (extent.sector_count * sector) as usize,
        );
        if self.buf.as_ref().is_none_or(|b| b.len() < len) {
            self.buf = Some(AlignedBuf::with_min_len(len, IO_ALIGNMENT)?);
        }
        let Some(buf) = self.buf.as_mut() else {
            return Ok(false);
        };
        let bytes = &mut buf.as_mut_slice()[..len];
        match FileExt::read_exact_at(self.file, bytes, offset) {
            Ok(()) => Ok(sha256(bytes) == expected.sha256),
            // A disk shorter than the image was never fully written.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(source) => Err(RestoreError::TargetIo {
                operation: "compare",
                offset,
                source,
            }),
        }
    }
}

/// Reads every extent the lane's [`Compared`] names outside the
/// partition-table areas back with O_DIRECT, on every core, and keeps
/// those whose bytes already hash to the signed digest (or read as zeros
/// where they should): those need no write. The areas themselves are
/// always rewritten, in order. While writes run beside it (a resume), its
/// progress is shown as the writing's.
pub(super) fn matching_extents(
    image: &Image<File>,
    lane: &Lane,
    opts: &RestoreOptions,
    progress: &Sender<Progress>,
    cancel: &CancelToken,
) -> Result<Matching, RestoreError> {
    let sector = u64::from(image.sector_size());
    let read = |e: &PlacedExtent| {
        !lane.tables.in_areas(e)
            && lane.compared.compares(e.ordinal)
            && match e.kind {
                ExtentKind::Data { .. } | ExtentKind::Zero => true,
                ExtentKind::Unmapped => opts.unmapped != Unmapped::Left,
            }
    };
    let alone = lane.compared == Compared::Everything;
    let total: u64 = image
        .extents()
        .filter(|e| read(e))
        .map(|e| e.sector_count * sector)
        .sum();
    let meter = Meter::new(progress, lane.index, Stage::Comparing, total, 0);
    if alone {
        meter.send(true);
    }
    let mut found = Matching {
        extents: ExtentSet::default(),
        bytes: 0,
        data_bytes: 0,
        data_extents: 0,
    };
    walk_extents(
        image,
        &lane.target.file,
        &read,
        &[],
        &|n| {
            if alone {
                meter.add(n, 0);
            }
        },
        cancel,
        &mut |e, check| {
            if check.is_some_and(|c| c.mismatch.is_none()) {
                let bytes = e.sector_count * sector;
                found.extents.insert(e.ordinal);
                found.bytes += bytes;
                if matches!(e.kind, ExtentKind::Data { .. }) {
                    found.data_bytes += bytes;
                    found.data_extents += 1;
                }
            }
        },
    )?;
    if alone {
        meter.send(true);
    }
    Ok(found)
}
