//! The restore pipeline: the write phases of one or several targets (see
//! [`run_stages`]), and for the bulk of the disks one thread reading stored
//! chunks, workers on every core decompressing and verifying each into an
//! aligned buffer once, and the calling thread handing it to one O_DIRECT
//! writer thread per target. A pool of buffers within a fixed byte budget,
//! shared by all the targets, bounds memory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reliquary_image::{
    ChunkDecoder, ChunkEntry, ExtentKind, Image, ImageError, PartitionScheme, PlacedExtent, ReadAt,
    SectionName,
};

use super::compare::{buffered_view, compare_disks, walk_extents, CheckReport, DiskView};
use super::tables::{Edit, TablePlan};
use super::{
    CancelToken, Outcome, Progress, RestoreError, RestoreOptions, RestoreReport, Stage, Target,
    WIPE_BYTES,
};
use crate::audit::{RestoreMode, Unmapped};
use crate::io::{workers_within_budget, Gate, BUFFER_BUDGET_BYTES};
use crate::partition::validate_gpt;
use crate::sys::{self, AlignedBuf};

const IO_ALIGNMENT: usize = 4096;

/// Restores `image` onto every target at once, and returns one report per
/// target, in order. Each chunk is read and verified once and written to
/// every target that needs it. Never panics on bad data; every failure is
/// in its target's report, and a target that failed or was cancelled after
/// its first write is left with its partition-table areas wiped while the
/// others carry on.
pub fn run(
    image: &Image<File>,
    targets: Vec<(Target, Unmapped)>,
    opts: &RestoreOptions,
    mode: RestoreMode,
    progress: &Sender<Progress>,
    cancel: &CancelToken,
) -> Vec<RestoreReport> {
    let mut lanes: Vec<Lane> = targets
        .into_iter()
        .enumerate()
        .map(|(index, (target, unmapped))| {
            let mut lane = Lane::new(index, target, unmapped);
            if opts.unmapped == Unmapped::Discarded && unmapped != Unmapped::Discarded {
                lane.report.warnings.push(
                    "this disk does not read zeros after a discard without writing them, so the \
                     free space the image did not keep was zeroed instead"
                        .into(),
                );
            }
            lane
        })
        .collect();
    run_stages(image, &mut lanes, opts, mode, progress, cancel);
    lanes
        .into_iter()
        .map(|lane| lane.finish(image, progress))
        .collect()
}

/// What `target` does with unmapped extents when `requested` was asked:
/// a discard only where the disk then reads zeros without a write, zeros
/// elsewhere. Decided before the start is recorded, so the record says
/// what is done.
pub fn unmapped_for(requested: Unmapped, target: &Target) -> Unmapped {
    match requested {
        Unmapped::Discarded
            if !(target.info.is_block_device && sys::discards_to_zero(&target.file)) =>
        {
            Unmapped::Zeroed
        }
        other => other,
    }
}

/// One target's state through the phases.
struct Lane {
    /// The target's position in the request, as [`Progress::target`] names it.
    index: usize,
    target: Target,
    /// What this target does with unmapped extents (see [`unmapped_for`]).
    unmapped: Unmapped,
    tables: TablePlan,
    /// Extents the target already holds (a resume, `--only-differences`).
    already: ExtentSet,
    /// Extents from this ordinal on are written without being compared
    /// first: past a resume's frontier (see [`find_frontier`]). 0 when
    /// nothing is compared, `usize::MAX` when everything is.
    compare_before: usize,
    report: RestoreReport,
    /// The first failure; the lane does no more work once it is set.
    error: Option<RestoreError>,
    stage_started: Instant,
}

impl Lane {
    fn new(index: usize, target: Target, unmapped: Unmapped) -> Self {
        Self {
            index,
            target,
            unmapped,
            tables: TablePlan::default(),
            already: ExtentSet::default(),
            compare_before: 0,
            report: RestoreReport::new(),
            error: None,
            stage_started: Instant::now(),
        }
    }

    fn live(&self) -> bool {
        self.error.is_none()
    }

    fn fail(&mut self, error: RestoreError) {
        self.error.get_or_insert(error);
    }

    fn end_stage(&mut self, stage: Stage) {
        self.report
            .stage_durations
            .push((stage, self.stage_started.elapsed()));
        self.stage_started = Instant::now();
    }

    /// Settles the outcome; a target that failed after writing anything
    /// has its partition-table areas wiped again.
    fn finish(mut self, image: &Image<File>, progress: &Sender<Progress>) -> RestoreReport {
        let Some(error) = self.error.take() else {
            return self.report;
        };
        if !self.report.wiped.is_empty() {
            let wipe_started = Instant::now();
            Meter::new(progress, self.index, Stage::Wiping, 0, 0).send(true);
            let wipe = wipe(image, &self.target);
            if let Some(failure) = wipe.failure() {
                self.report.warnings.push(format!(
                    "after the failure, {failure}; do not boot this disk, and wipe it before reuse"
                ));
            }
            self.report.wiped = wipe.wiped;
            self.report
                .stage_durations
                .push((Stage::Wiping, wipe_started.elapsed()));
        }
        self.report.outcome = match error {
            RestoreError::Cancelled => Outcome::Cancelled,
            error => {
                let (chunk, sectors) = locate(&error);
                Outcome::Failed {
                    error,
                    chunk,
                    sectors,
                }
            }
        };
        self.report
    }
}

/// The write phases of every target, each ending with a flush:
/// 1. wipe the partition-table areas;
/// 2. every extent outside them, in parallel, shared by all targets;
/// 3. the extents in them, in order, but for the disk's first physical
///    sector, with the GPT edits for a larger disk;
/// 4. on a larger GPT disk, the relocated backup GPT;
/// 5. the first physical sector alone: until it lands, the disk holds no
///    valid MBR or protective MBR and boots nowhere.
///
/// Nothing is written after phase 5; the read-back then checks it all.
/// Phases 3 to 5 and the read-back run for each target on its own thread.
fn run_stages(
    image: &Image<File>,
    lanes: &mut [Lane],
    opts: &RestoreOptions,
    mode: RestoreMode,
    progress: &Sender<Progress>,
    cancel: &CancelToken,
) {
    if cancel.is_cancelled() {
        lanes
            .iter_mut()
            .for_each(|l| l.fail(RestoreError::Cancelled));
        return;
    }
    let sector = u64::from(image.sector_size());
    for lane in lanes.iter_mut() {
        // Planned before the first write: an image whose table cannot be
        // moved fails here, with the disk untouched.
        match TablePlan::new(image, lane.target.info.size_bytes / sector) {
            Ok(tables) => lane.tables = tables,
            Err(e) => lane.fail(e),
        }
    }
    for lane in lanes.iter_mut().filter(|l| l.live()) {
        Meter::new(progress, lane.index, Stage::Wiping, 0, 0).send(true);
        let wipe = wipe(image, &lane.target);
        lane.report.wiped.clone_from(&wipe.wiped);
        match wipe.failure() {
            Some(failure) => lane.fail(RestoreError::Wipe(failure)),
            None => lane.end_stage(Stage::Wiping),
        }
    }

    if opts.only_differences {
        let resume = matches!(mode, RestoreMode::Resume { .. });
        for lane in lanes.iter_mut().filter(|l| l.live()) {
            match resume.then(|| find_frontier(image, lane, cancel)) {
                None => lane.compare_before = usize::MAX,
                Some(Ok(frontier)) => lane.compare_before = frontier,
                Some(Err(e)) => lane.fail(e),
            }
        }
    }
    // Extents a comparison finds already written count as done.
    let (data_bytes, data_extents) = image
        .extents()
        .filter(|e| matches!(e.kind, ExtentKind::Data { .. }))
        .fold((0, 0), |(bytes, count), e| {
            (bytes + e.sector_count * sector, count + 1)
        });
    let meters: Vec<Meter> = lanes
        .iter()
        .map(|lane| {
            Meter::new(
                progress,
                lane.index,
                Stage::Writing,
                data_bytes,
                data_extents,
            )
        })
        .collect();
    for (lane, meter) in lanes.iter().zip(&meters) {
        if lane.live() && lane.compare_before != usize::MAX {
            meter.send(true);
        }
    }

    // What lies past a resume's frontier is written while what lies before
    // it is compared; then the extents found differing are written.
    let (written, compared) = std::thread::scope(|scope| {
        let lanes: &[Lane] = lanes;
        let comparisons: Vec<_> = lanes
            .iter()
            .filter(|l| l.live() && l.compare_before > 0)
            .map(|lane| {
                (
                    lane.index,
                    scope.spawn(move || matching_extents(image, lane, opts, progress, cancel)),
                )
            })
            .collect();
        let written = spread_bulk(image, lanes, &meters, Region::Uncompared, opts, cancel);
        let compared: Vec<_> = comparisons
            .into_iter()
            .map(|(index, comparison)| {
                let found = comparison.join().unwrap_or_else(|_| {
                    Err(RestoreError::TargetIo {
                        operation: "compare",
                        offset: 0,
                        source: std::io::Error::other("the comparison thread panicked"),
                    })
                });
                (index, found)
            })
            .collect();
        (written, compared)
    });
    apply_bulk(lanes, written);
    for (index, found) in compared {
        let lane = &mut lanes[index];
        match found {
            Ok(found) => {
                lane.report.bytes_skipped = found.bytes;
                meters[index].add(found.data_bytes, found.data_extents);
                lane.already = found.extents;
                lane.end_stage(Stage::Comparing);
            }
            Err(e) => lane.fail(e),
        }
    }
    for (lane, meter) in lanes.iter().zip(&meters) {
        if lane.live() {
            meter.send(true);
        }
    }
    let differing = spread_bulk(image, lanes, &meters, Region::Compared, opts, cancel);
    apply_bulk(lanes, differing);

    // Each target decodes its table areas' chunks on its own (a stored
    // and a decoded chunk at a time): eight targets with 64 MiB chunks
    // took a gigabyte until they took turns within the budget.
    let chunk_size = image.manifest().chunk_size as usize;
    let tables_gate = Gate::new(workers_within_budget(2 * chunk_size, lanes.len()));
    std::thread::scope(|scope| {
        for (lane, meter) in lanes.iter_mut().zip(&meters).filter(|(l, _)| l.live()) {
            let gate = &tables_gate;
            scope.spawn(move || {
                let _permit = gate.enter();
                if let Err(e) = write_tables(image, lane, opts, meter, cancel) {
                    lane.fail(e);
                }
            });
        }
    });
    if opts.readback {
        read_back(image, lanes, opts, progress, cancel);
    }
    for lane in lanes.iter_mut().filter(|l| l.live()) {
        Meter::new(progress, lane.index, Stage::Finalising, 0, 0).send(true);
        if lane.target.info.is_block_device {
            if let Err(e) = sys::reread_partitions(&lane.target.file) {
                lane.report.warnings.push(format!(
                    "the disk is restored, but the kernel did not reread its partition \
                     table ({e}); it will on the next boot"
                ));
            }
        }
        lane.end_stage(Stage::Finalising);
    }
}

/// Phases 3 to 5 for one target whose bulk is written.
fn write_tables(
    image: &Image<File>,
    lane: &mut Lane,
    opts: &RestoreOptions,
    meter: &Meter,
    cancel: &CancelToken,
) -> Result<(), RestoreError> {
    sync(&lane.target)?;
    let first_sector = write_table_areas(image, lane, opts, meter, cancel)?;
    let (target, tables) = (&lane.target, &lane.tables);
    sync(target)?;

    for edit in &tables.beyond {
        write_bytes(target, &edit.bytes, edit.offset, "write the backup GPT")?;
        lane.report.bytes_written += edit.bytes.len() as u64;
    }
    lane.report.backup_gpt_moved = !tables.beyond.is_empty();
    sync(target)?;

    write_bytes(target, &first_sector, 0, "write the first sector")?;
    lane.report.bytes_written += first_sector.len() as u64;
    sync(target)?;
    meter.send(true);
    lane.end_stage(Stage::Writing);
    Ok(())
}

/// Reads every live target back with O_DIRECT in one pass (each piece
/// hashed once, whatever the number of targets), edits included; then
/// checks each moved backup GPT and validates each written GPT. A target
/// that differs or cannot be read fails on its own.
fn read_back(
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

/// Extents of the image, by ordinal, in one bit each.
#[derive(Debug, Default)]
struct ExtentSet {
    words: Vec<u64>,
}

impl ExtentSet {
    fn insert(&mut self, ordinal: usize) {
        let (word, bit) = (ordinal / 64, ordinal % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    fn contains(&self, ordinal: usize) -> bool {
        self.words
            .get(ordinal / 64)
            .is_some_and(|w| w & (1 << (ordinal % 64)) != 0)
    }
}

/// The extents outside the partition-table areas that the target already
/// holds, their bytes, and of those the data extents and their bytes.
struct Matching {
    extents: ExtentSet,
    bytes: u64,
    data_bytes: u64,
    data_extents: u64,
}

/// Where a resume's interrupted restore stopped writing: the ordinal of
/// the first data extent outside the table areas that the disk does not
/// hold, found by bisection (the bulk is written in image order), or
/// `usize::MAX` when it holds them all. Where the disk is not a clean
/// prefix (the ragged edge of the writers in flight, bytes altered since)
/// the answer is only less economical: extents before it are compared,
/// extents from it on written.
fn find_frontier(
    image: &Image<File>,
    lane: &Lane,
    cancel: &CancelToken,
) -> Result<usize, RestoreError> {
    let data: Vec<usize> = image
        .extents()
        .filter(|e| matches!(e.kind, ExtentKind::Data { .. }) && !lane.tables.in_areas(e))
        .map(|e| e.ordinal)
        .collect();
    let holds = |ordinal: usize| -> Result<bool, RestoreError> {
        let mut matched = false;
        walk_extents(
            image,
            &lane.target.file,
            &|e| e.ordinal == ordinal,
            &[],
            &|_| {},
            cancel,
            &mut |e, check| {
                if e.ordinal == ordinal {
                    matched = check.is_some_and(|c| c.mismatch.is_none());
                }
            },
        )?;
        Ok(matched)
    };
    let (mut held, mut missing) = (0, data.len());
    while held < missing {
        let mid = held + (missing - held) / 2;
        if holds(data[mid])? {
            held = mid + 1;
        } else {
            missing = mid;
        }
    }
    Ok(data.get(held).copied().unwrap_or(usize::MAX))
}

/// Reads every extent before the lane's `compare_before` and outside the
/// partition-table areas back with O_DIRECT, on every core, and keeps
/// those whose bytes already hash to the signed digest (or read as zeros
/// where they should): those need no write. The areas themselves are
/// always rewritten, in order. While writes run beside it (a resume), its
/// progress is shown as the writing's.
fn matching_extents(
    image: &Image<File>,
    lane: &Lane,
    opts: &RestoreOptions,
    progress: &Sender<Progress>,
    cancel: &CancelToken,
) -> Result<Matching, RestoreError> {
    let sector = u64::from(image.sector_size());
    let read = |e: &PlacedExtent| {
        !lane.tables.in_areas(e)
            && e.ordinal < lane.compare_before
            && match e.kind {
                ExtentKind::Data { .. } | ExtentKind::Zero => true,
                ExtentKind::Unmapped => opts.unmapped != Unmapped::Left,
            }
    };
    let alone = lane.compare_before == usize::MAX;
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

/// Phase 3: writes the extents in the partition-table areas in order,
/// holding back the disk's first physical sector, and returns that
/// sector's final bytes (edits included) for phase 5.
fn write_table_areas(
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
struct WipeOutcome {
    wiped: Vec<WipeArea>,
    failed: Vec<(WipeArea, RestoreError)>,
}

impl WipeOutcome {
    /// A sentence naming what was and was not wiped, if anything failed.
    fn failure(&self) -> Option<String> {
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
fn wipe(image: &Image<File>, target: &Target) -> WipeOutcome {
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

enum Job {
    Write {
        extent: PlacedExtent,
        buf: AlignedBuf,
        len: usize,
    },
    Zero(PlacedExtent),
    Failed(RestoreError),
}

struct DecodeJob {
    extent: PlacedExtent,
    chunk: u32,
    entry: ChunkEntry,
    /// The stored bytes are `stored[..entry.stored_len]`.
    stored: AlignedBuf,
    buf: AlignedBuf,
}

/// A verified chunk shared by the targets' writers; the last one to drop
/// it returns the buffer to the pool.
struct SharedChunk {
    buf: Option<AlignedBuf>,
    len: usize,
    pool: SyncSender<AlignedBuf>,
}

impl SharedChunk {
    fn bytes(&self) -> &[u8] {
        self.buf.as_ref().map_or(&[], |b| &b.as_slice()[..self.len])
    }
}

impl Drop for SharedChunk {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            // The pool has room for every buffer, so this never blocks;
            // it also wakes a reader waiting to stop.
            let _ = self.pool.send(buf);
        }
    }
}

/// Work for one target's writer.
enum TargetJob {
    Write(PlacedExtent, Arc<SharedChunk>),
    Zero(PlacedExtent),
}

/// Which extents of phase 2 a pass writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Region {
    /// Those not compared with the disk first: all of them, or those past
    /// a resume's frontier.
    Uncompared,
    /// Those compared and found differing.
    Compared,
}

/// What a pass of phase 2 did: each writer's result, by live lane, and the
/// error that stopped them all, if any.
struct BulkOutcome {
    live: Vec<usize>,
    results: Vec<WriterResult>,
    shared_error: Option<RestoreError>,
}

/// Phase 2 for every live target: one reader thread, decoders on every
/// core verifying each chunk once, this thread handing each verified chunk
/// to every target that needs it, and one O_DIRECT writer thread per
/// target. A target whose write fails drops out and the others carry on;
/// a chunk that fails its check, a read error or a cancel stops them all,
/// since nothing unverified may be written anywhere. Order does not matter
/// here: none of these extents is in a partition-table area.
fn spread_bulk(
    image: &Image<File>,
    lanes: &[Lane],
    meters: &[Meter],
    region: Region,
    opts: &RestoreOptions,
    cancel: &CancelToken,
) -> BulkOutcome {
    let live: Vec<usize> = (0..lanes.len()).filter(|&i| lanes[i].live()).collect();
    let anything = live.iter().any(|&i| match region {
        Region::Uncompared => lanes[i].compare_before != usize::MAX,
        Region::Compared => lanes[i].compare_before > 0,
    });
    if !anything {
        return BulkOutcome {
            live,
            results: Vec::new(),
            shared_error: None,
        };
    }
    let (results, shared_error) = spread_chunks(image, lanes, &live, meters, region, opts, cancel);
    BulkOutcome {
        live,
        results,
        shared_error,
    }
}

/// Records a pass of phase 2 in its lanes.
fn apply_bulk(lanes: &mut [Lane], outcome: BulkOutcome) {
    for (&i, result) in outcome.live.iter().zip(outcome.results) {
        lanes[i].report.bytes_written += result.written;
        if let Some(e) = result.error {
            lanes[i].fail(e);
        }
    }
    if let Some(error) = outcome.shared_error {
        fail_together(lanes, &outcome.live, error);
    }
}

/// Fails every lane of `lanes` still live among `live` with `error`, a
/// failure of work they shared: a cancel is each one's cancel, and with
/// several lanes each names the one error.
fn fail_together(lanes: &mut [Lane], live: &[usize], error: RestoreError) {
    let still: Vec<usize> = live.iter().copied().filter(|&i| lanes[i].live()).collect();
    match (error, still.as_slice()) {
        (RestoreError::Cancelled, _) => still
            .iter()
            .for_each(|&i| lanes[i].fail(RestoreError::Cancelled)),
        (error, &[only]) => lanes[only].fail(error),
        (error, _) => {
            let error = Arc::new(error);
            still
                .iter()
                .for_each(|&i| lanes[i].fail(RestoreError::AllTargets(Arc::clone(&error))));
        }
    }
}

/// Whether `lane` writes `extent` in the `region` pass of phase 2.
fn in_bulk(lane: &Lane, extent: &PlacedExtent, region: Region) -> bool {
    !lane.tables.in_areas(extent)
        && match region {
            Region::Uncompared => extent.ordinal >= lane.compare_before,
            Region::Compared => {
                extent.ordinal < lane.compare_before && !lane.already.contains(extent.ordinal)
            }
        }
}

/// What one target's writer did.
struct WriterResult {
    written: u64,
    error: Option<RestoreError>,
}

/// Runs phase 2's threads; returns each live lane's writer result and the
/// error that stopped them all, if any.
fn spread_chunks(
    image: &Image<File>,
    lanes: &[Lane],
    live: &[usize],
    meters: &[Meter],
    region: Region,
    opts: &RestoreOptions,
    cancel: &CancelToken,
) -> (Vec<WriterResult>, Option<RestoreError>) {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk_size = image.manifest().chunk_size as usize;
    // Buffers are counted against a byte budget, two thirds for decoded
    // chunks and one third for stored ones, so 64 MiB chunks on many cores
    // cannot multiply into gigabytes. The targets share the decoded ones.
    let fit = |share: usize, wanted: usize| (share / chunk_size.max(1)).clamp(1, wanted);
    let buffers = fit(BUFFER_BUDGET_BYTES * 2 / 3, threads * 2 + 2).max(2);
    // Stored bytes are read into reused buffers too: allocating and
    // zero-filling a fresh one per chunk costs as much as a core's hashing.
    let stored_buffers = fit(BUFFER_BUDGET_BYTES / 3, threads + 2);
    let (pool_tx, pool_rx) = sync_channel::<AlignedBuf>(buffers);
    let (stored_tx, stored_rx) = sync_channel::<AlignedBuf>(stored_buffers);
    for (pool, count) in [(&pool_tx, buffers), (&stored_tx, stored_buffers)] {
        for _ in 0..count {
            match AlignedBuf::new(chunk_size, IO_ALIGNMENT) {
                Ok(buf) => {
                    let _ = pool.send(buf);
                }
                Err(e) => return (Vec::new(), Some(e.into())),
            }
        }
    }
    let (decode_tx, decode_rx) = sync_channel::<DecodeJob>(threads);
    let (job_tx, job_rx) = sync_channel::<Job>(buffers);
    let decode_rx = Mutex::new(decode_rx);
    let stop = AtomicBool::new(false);
    let failed: Vec<AtomicBool> = live.iter().map(|_| AtomicBool::new(false)).collect();

    std::thread::scope(|scope| {
        let reader_jobs = job_tx.clone();
        let stop = &stop;
        let extents = image
            .extents()
            .filter(|e| live.iter().any(|&i| in_bulk(&lanes[i], e, region)));
        scope.spawn(move || {
            read_stored_chunks(
                image,
                extents,
                opts,
                Pools {
                    buffers: &pool_rx,
                    stored: &stored_rx,
                },
                &decode_tx,
                &reader_jobs,
                stop,
            )
        });
        for _ in 0..threads {
            let jobs = job_tx.clone();
            let stored_return = stored_tx.clone();
            let decode_rx = &decode_rx;
            scope.spawn(move || decode_chunks(decode_rx, &stored_return, &jobs));
        }
        drop(job_tx);

        let mut senders = Vec::with_capacity(live.len());
        let mut writers = Vec::with_capacity(live.len());
        for (slot, &i) in live.iter().enumerate() {
            let (tx, rx) = sync_channel::<TargetJob>(buffers);
            senders.push(tx);
            let (lane, meter, failed) = (&lanes[i], &meters[i], &failed[slot]);
            writers.push(scope.spawn(move || write_target(image, lane, meter, &rx, failed)));
        }

        let mut shared_error = None;
        for job in job_rx {
            if shared_error.is_none() && cancel.is_cancelled() {
                shared_error = Some(RestoreError::Cancelled);
                stop.store(true, Ordering::SeqCst);
            }
            let (extent, chunk) = match job {
                Job::Failed(e) => {
                    stop.store(true, Ordering::SeqCst);
                    shared_error.get_or_insert(e);
                    continue;
                }
                Job::Write { extent, buf, len } => (
                    extent,
                    Some(Arc::new(SharedChunk {
                        buf: Some(buf),
                        len,
                        pool: pool_tx.clone(),
                    })),
                ),
                Job::Zero(extent) => (extent, None),
            };
            if shared_error.is_some() {
                continue;
            }
            for (slot, &i) in live.iter().enumerate() {
                if failed[slot].load(Ordering::SeqCst) || !in_bulk(&lanes[i], &extent, region) {
                    continue;
                }
                let job = match &chunk {
                    Some(chunk) => TargetJob::Write(extent, Arc::clone(chunk)),
                    None => TargetJob::Zero(extent),
                };
                let _ = senders[slot].send(job);
            }
            if failed.iter().all(|f| f.load(Ordering::SeqCst)) {
                stop.store(true, Ordering::SeqCst);
            }
        }
        drop(senders);
        let results = writers
            .into_iter()
            .map(|writer| {
                writer.join().unwrap_or_else(|_| WriterResult {
                    written: 0,
                    error: Some(RestoreError::TargetIo {
                        operation: "write",
                        offset: 0,
                        source: std::io::Error::other("the writer thread panicked"),
                    }),
                })
            })
            .collect();
        (results, shared_error)
    })
}

/// One target's writer in phase 2. After a failed write it only drains
/// its queue, so the chunks it holds go back to the pool.
fn write_target(
    image: &Image<File>,
    lane: &Lane,
    meter: &Meter,
    jobs: &Receiver<TargetJob>,
    failed: &AtomicBool,
) -> WriterResult {
    let sector = u64::from(image.sector_size());
    let mut result = WriterResult {
        written: 0,
        error: None,
    };
    for job in jobs {
        if result.error.is_some() {
            continue;
        }
        let written = match &job {
            TargetJob::Write(extent, chunk) => {
                let bytes = chunk.bytes();
                write_bytes_aligned(&lane.target, bytes, extent.start_sector * sector, "write").map(
                    |()| {
                        meter.add(bytes.len() as u64, 1);
                        bytes.len() as u64
                    },
                )
            }
            TargetJob::Zero(extent) => {
                let discard =
                    extent.kind == ExtentKind::Unmapped && lane.unmapped == Unmapped::Discarded;
                let (offset, len) = (extent.start_sector * sector, extent.sector_count * sector);
                zero_range(&lane.target, offset, len, discard).map(|()| 0)
            }
        };
        match written {
            Ok(n) => result.written += n,
            Err(e) => {
                failed.store(true, Ordering::SeqCst);
                result.error = Some(e);
            }
        }
    }
    result
}

/// The reader's sources of reusable buffers.
struct Pools<'a> {
    /// Aligned buffers for decoded chunks, returned by the writer.
    buffers: &'a Receiver<AlignedBuf>,
    /// Buffers for stored bytes, returned by the decoders.
    stored: &'a Receiver<AlignedBuf>,
}

fn read_stored_chunks(
    image: &Image<File>,
    extents: impl Iterator<Item = PlacedExtent>,
    opts: &RestoreOptions,
    pools: Pools<'_>,
    decode: &SyncSender<DecodeJob>,
    jobs: &SyncSender<Job>,
    stop: &AtomicBool,
) {
    let reader = StoredReader::new(image);
    for extent in extents {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let sent = match extent.kind {
            ExtentKind::Data { chunk } => {
                let Ok(buf) = pools.buffers.recv() else {
                    return;
                };
                let Ok(mut stored) = pools.stored.recv() else {
                    return;
                };
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                match reader.read(chunk, &mut stored) {
                    Ok(entry) => decode
                        .send(DecodeJob {
                            extent,
                            chunk,
                            entry,
                            stored,
                            buf,
                        })
                        .is_ok(),
                    Err(e) => jobs.send(Job::Failed(e)).is_ok(),
                }
            }
            ExtentKind::Zero => jobs.send(Job::Zero(extent)).is_ok(),
            ExtentKind::Unmapped if opts.unmapped == Unmapped::Left => true,
            ExtentKind::Unmapped => jobs.send(Job::Zero(extent)).is_ok(),
        };
        if !sent {
            return;
        }
    }
}

/// Reads stored chunks, with O_DIRECT where the image's file system allows
/// it: a cold image on a USB stick is then read in whole-chunk requests
/// without filling, and copying through, the page cache.
struct StoredReader<'a> {
    image: &'a Image<File>,
    direct: Option<File>,
}

impl<'a> StoredReader<'a> {
    fn new(image: &'a Image<File>) -> Self {
        // Reopened through /proc: the exact file that was verified.
        let direct = sys::reopen_direct(image.source());
        Self { image, direct }
    }

    /// Reads a chunk's stored bytes into the start of `buf`.
    fn read(&self, chunk: u32, buf: &mut AlignedBuf) -> Result<ChunkEntry, RestoreError> {
        let entry = self.image.chunk_entry(chunk)?;
        let len = entry.stored_len as usize;
        // Chunks start 4096-aligned (the reader checked), so a read rounded
        // up to the alignment stays aligned at both ends.
        let aligned_len = len.div_ceil(IO_ALIGNMENT) * IO_ALIGNMENT;
        let read_err = |source| {
            RestoreError::Image(ImageError::Read {
                section: SectionName::Data,
                offset: entry.offset,
                source,
            })
        };
        let Some(window) = buf.as_mut_slice().get_mut(..aligned_len) else {
            return Err(ImageError::InvalidIndex {
                location: format!("chunk {chunk}"),
                reason: "it is larger than the chunk size".into(),
            }
            .into());
        };
        if let Some(direct) = &self.direct {
            if read_at_least(direct, window, entry.offset, len).is_ok() {
                return Ok(entry);
            }
        }
        // Buffered, for file systems that refuse O_DIRECT.
        ReadAt::read_exact_at(self.image.source(), &mut window[..len], entry.offset)
            .map_err(read_err)?;
        Ok(entry)
    }
}

/// Fills `buf` from `offset` until at least `min` bytes are in, stopping
/// early only at the end of the file.
fn read_at_least(file: &File, buf: &mut [u8], offset: u64, min: usize) -> std::io::Result<()> {
    let mut done = 0;
    while done < min {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn decode_chunks(
    jobs_in: &Mutex<Receiver<DecodeJob>>,
    stored_return: &SyncSender<AlignedBuf>,
    jobs_out: &SyncSender<Job>,
) {
    let mut decoder = ChunkDecoder::new();
    loop {
        let next = match jobs_in.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(mut job) = next else { return };
        let len = job.entry.raw_len as usize;
        let sectors = (job.extent.start_sector, job.extent.end_sector());
        let stored = &job.stored.as_slice()[..job.entry.stored_len as usize];
        let result = match job.buf.as_mut_slice().get_mut(..len) {
            Some(out) => decoder.decode_into(job.chunk, &job.entry, stored, out, sectors),
            None => Err(reliquary_image::ImageError::InvalidIndex {
                location: format!("chunk {}", job.chunk),
                reason: "it is larger than the chunk size".into(),
            }),
        };
        // The pool has room for every stored buffer, so this never blocks.
        let _ = stored_return.try_send(job.stored);
        let out = match result {
            // Verified: only now may the bytes reach the disk.
            Ok(()) => Job::Write {
                extent: job.extent,
                buf: job.buf,
                len,
            },
            Err(e) => Job::Failed(e.into()),
        };
        if jobs_out.send(out).is_err() {
            return;
        }
    }
}

/// Makes a range read as zero: discarded where asked and the disk then
/// guarantees zeros, otherwise zeroed by the device or the file system,
/// and written with zeros as the last resort.
fn zero_range(target: &Target, offset: u64, len: u64, discard: bool) -> Result<(), RestoreError> {
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
fn write_bytes_aligned(
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
fn write_bytes(
    target: &Target,
    bytes: &[u8],
    offset: u64,
    operation: &'static str,
) -> Result<(), RestoreError> {
    let mut buf = AlignedBuf::with_min_len(bytes.len(), IO_ALIGNMENT)?;
    buf.as_mut_slice()[..bytes.len()].copy_from_slice(bytes);
    write_bytes_aligned(target, &buf.as_slice()[..bytes.len()], offset, operation)
}

fn sync(target: &Target) -> Result<(), RestoreError> {
    target
        .file
        .sync_all()
        .map_err(|source| RestoreError::TargetIo {
            operation: "flush",
            offset: 0,
            source,
        })
}

/// The chunk and sectors a failure names, for the report.
fn locate(error: &RestoreError) -> (Option<u32>, Option<(u64, u64)>) {
    use reliquary_image::ImageError;
    match error {
        RestoreError::AllTargets(error) => locate(error),
        RestoreError::Image(ImageError::ChunkDigestMismatch {
            chunk,
            start_sector,
            end_sector,
            ..
        })
        | RestoreError::Image(ImageError::ChunkDecode {
            chunk,
            start_sector,
            end_sector,
            ..
        }) => (Some(*chunk), Some((*start_sector, *end_sector))),
        RestoreError::Readback {
            start_sector,
            end_sector,
            ..
        } => (None, Some((*start_sector, *end_sector))),
        _ => (None, None),
    }
}

/// Sends throttled progress events for one stage.
struct Meter<'a> {
    tx: &'a Sender<Progress>,
    target: usize,
    stage: Stage,
    total: u64,
    chunks_total: u64,
    state: Mutex<MeterState>,
    started: Instant,
}

struct MeterState {
    done: u64,
    chunks: u64,
    last_sent: Option<Instant>,
}

impl<'a> Meter<'a> {
    fn new(
        tx: &'a Sender<Progress>,
        target: usize,
        stage: Stage,
        total: u64,
        chunks_total: u64,
    ) -> Self {
        Self {
            tx,
            target,
            stage,
            total,
            chunks_total,
            state: Mutex::new(MeterState {
                done: 0,
                chunks: 0,
                last_sent: None,
            }),
            started: Instant::now(),
        }
    }

    fn add(&self, bytes: u64, chunks: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.done += bytes;
            s.chunks += chunks;
        }
        self.send(false);
    }

    /// Sends an event; unforced ones at most every 50 ms.
    fn send(&self, force: bool) {
        let Ok(mut s) = self.state.lock() else { return };
        if !force
            && s.last_sent
                .is_some_and(|t| t.elapsed() < Duration::from_millis(50))
        {
            return;
        }
        s.last_sent = Some(Instant::now());
        let elapsed = self.started.elapsed().as_secs_f64();
        let rate = if elapsed > 0.0 {
            s.done as f64 / elapsed
        } else {
            0.0
        };
        let eta = (rate > 0.0 && s.done <= self.total)
            .then(|| Duration::from_secs_f64((self.total - s.done) as f64 / rate));
        let _ = self.tx.send(Progress {
            target: self.target,
            stage: self.stage,
            bytes_done: s.done,
            bytes_total: self.total,
            chunks_done: s.chunks,
            chunks_total: self.chunks_total,
            bytes_per_second: rate,
            eta,
        });
    }
}
