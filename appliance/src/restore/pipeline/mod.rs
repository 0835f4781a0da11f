//! The restore pipeline: the write phases of one or several targets, in
//! the order of [`PHASES`], then the read-back.
//!
//! - `bulk`: for the bulk of the disks one thread reading stored chunks,
//!   workers on every core decompressing and verifying each into an
//!   aligned buffer once, and the calling thread handing it to one
//!   O_DIRECT writer thread per target, within the shared buffer budget;
//! - `resume`: which extents a resume or `--only-differences` compares
//!   first, and where an interrupted restore stopped writing;
//! - `write`: the wipe, the table phases and the writes under them;
//! - `readback`: the read-back and the judgement of each target;
//! - `progress`: the throttled progress events.
//!
//! Nothing here needs a block device: the unit tests run every phase on
//! plain files, without root.

mod bulk;
mod progress;
mod readback;
mod resume;
#[cfg(test)]
mod tests;
mod write;

use std::fs::File;
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::Instant;

use reliquary_image::{ExtentKind, Image};

use super::tables::TablePlan;
use super::{
    CancelToken, Outcome, Progress, RestoreError, RestoreOptions, RestoreReport, Stage, Target,
};
use crate::audit::{RestoreMode, Unmapped};
use crate::io::{workers_within_budget, Gate};
use crate::sys;
use bulk::{apply_bulk, spread_bulk, Region};
use progress::Meter;
use readback::read_back;
use resume::{find_frontier, matching_extents, Compared, ExtentSet};
use write::{wipe, write_backup_gpt, write_first_sector, write_table_areas};

pub use write::WipeArea;

/// Buffer alignment for O_DIRECT (a multiple of every sector size).
const IO_ALIGNMENT: usize = 4096;

/// The write phases, in the order every target goes through them; each
/// ends with a flush of the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Zero the partition-table areas: the first MiB, the image's last
    /// MiB, the disk's last MiB.
    Wipe,
    /// Every extent outside the areas, in parallel, shared by all targets
    /// (a resume's or `--only-differences`' comparison included).
    Bulk,
    /// The extents in the areas, in order, with the GPT edits a larger
    /// disk needs, but for the disk's first physical sector.
    TableAreas,
    /// On a larger GPT disk, the relocated backup GPT.
    BackupGpt,
    /// The first physical sector alone: until it lands, the disk holds no
    /// valid MBR or protective MBR and boots nowhere. Nothing is written
    /// after it.
    FirstSector,
}

/// The phases of a restore, in order.
pub(crate) const PHASES: [Phase; 5] = [
    Phase::Wipe,
    Phase::Bulk,
    Phase::TableAreas,
    Phase::BackupGpt,
    Phase::FirstSector,
];

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
    /// Which extents are compared with the disk before they are written.
    compared: Compared,
    /// The disk's first physical sector, held back by the table phase for
    /// the last one.
    first_sector: Vec<u8>,
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
            compared: Compared::Nothing,
            first_sector: Vec::new(),
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
            Meter::new(progress, self.index, Stage::WipingAfterFailure, 0, 0).send(true);
            let wipe = wipe(image, &self.target);
            if let Some(failure) = wipe.failure() {
                self.report.warnings.push(format!(
                    "after the failure, {failure}; do not boot this disk, and wipe it before reuse"
                ));
            }
            self.report.wiped = wipe.wiped;
            self.report
                .stage_durations
                .push((Stage::WipingAfterFailure, wipe_started.elapsed()));
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

/// Plans each target's tables, runs [`PHASES`] in order for every live
/// target, reads the written targets back, and has the kernel reread
/// their tables. A target that fails drops out; the others carry on.
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
        // written fails here, with the disk untouched.
        match TablePlan::new(image, lane.target.info.size_bytes / sector) {
            Ok(tables) => lane.tables = tables,
            Err(e) => lane.fail(e),
        }
    }
    let writing = writing_meters(image, lanes, progress);
    for phase in PHASES {
        run_phase(phase, image, lanes, &writing, opts, mode, progress, cancel);
    }
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

/// One meter per target for the writing stage, over the image's data.
fn writing_meters<'a>(
    image: &Image<File>,
    lanes: &[Lane],
    progress: &'a Sender<Progress>,
) -> Vec<Meter<'a>> {
    let sector = u64::from(image.sector_size());
    let (data_bytes, data_extents) = image
        .extents()
        .filter(|e| matches!(e.kind, ExtentKind::Data { .. }))
        .fold((0, 0), |(bytes, count), e| {
            (bytes + e.sector_count * sector, count + 1)
        });
    lanes
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
        .collect()
}

/// Runs one phase for every live target.
#[allow(clippy::too_many_arguments)]
fn run_phase(
    phase: Phase,
    image: &Image<File>,
    lanes: &mut [Lane],
    meters: &[Meter<'_>],
    opts: &RestoreOptions,
    mode: RestoreMode,
    progress: &Sender<Progress>,
    cancel: &CancelToken,
) {
    let live = |lanes: &mut [Lane]| -> Vec<usize> {
        (0..lanes.len()).filter(|&i| lanes[i].live()).collect()
    };
    match phase {
        Phase::Wipe => {
            for i in live(lanes) {
                let lane = &mut lanes[i];
                Meter::new(progress, lane.index, Stage::Wiping, 0, 0).send(true);
                let wipe = wipe(image, &lane.target);
                lane.report.wiped.clone_from(&wipe.wiped);
                match wipe.failure() {
                    Some(failure) => lane.fail(RestoreError::Wipe(failure)),
                    None => lane.end_stage(Stage::Wiping),
                }
            }
        }
        Phase::Bulk => write_bulk(image, lanes, meters, opts, mode, progress, cancel),
        Phase::TableAreas => {
            // Each target decodes its table areas' chunks on its own (a
            // stored and a decoded chunk at a time): eight targets with
            // 64 MiB chunks took a gigabyte until they took turns within
            // the budget.
            let chunk_size = image.manifest().chunk_size as usize;
            let gate = Gate::new(workers_within_budget(2 * chunk_size, lanes.len()));
            std::thread::scope(|scope| {
                for (lane, meter) in lanes.iter_mut().zip(meters).filter(|(l, _)| l.live()) {
                    let gate = &gate;
                    scope.spawn(move || {
                        let _permit = gate.enter();
                        if let Err(e) = write_table_areas(image, lane, opts, meter, cancel) {
                            lane.fail(e);
                        }
                    });
                }
            });
        }
        Phase::BackupGpt => {
            for i in live(lanes) {
                if let Err(e) = write_backup_gpt(&mut lanes[i]) {
                    lanes[i].fail(e);
                }
            }
        }
        Phase::FirstSector => {
            for i in live(lanes) {
                if let Err(e) = write_first_sector(&mut lanes[i], &meters[i]) {
                    lanes[i].fail(e);
                }
            }
        }
    }
}

/// The bulk phase: what lies past a resume's frontier is written while
/// what lies before it is compared; then the extents found differing are
/// written.
fn write_bulk(
    image: &Image<File>,
    lanes: &mut [Lane],
    meters: &[Meter<'_>],
    opts: &RestoreOptions,
    mode: RestoreMode,
    progress: &Sender<Progress>,
    cancel: &CancelToken,
) {
    if opts.only_differences {
        let resume = matches!(mode, RestoreMode::Resume { .. });
        for lane in lanes.iter_mut().filter(|l| l.live()) {
            match resume.then(|| find_frontier(image, lane, cancel)) {
                None => lane.compared = Compared::Everything,
                Some(Ok(frontier)) => lane.compared = frontier,
                Some(Err(e)) => lane.fail(e),
            }
        }
    }
    for (lane, meter) in lanes.iter().zip(meters) {
        if lane.live() && lane.compared != Compared::Everything {
            meter.send(true);
        }
    }
    let (written, compared) = std::thread::scope(|scope| {
        let lanes: &[Lane] = lanes;
        let comparisons: Vec<_> = lanes
            .iter()
            .filter(|l| l.live() && l.compared != Compared::Nothing)
            .map(|lane| {
                (
                    lane.index,
                    scope.spawn(move || matching_extents(image, lane, opts, progress, cancel)),
                )
            })
            .collect();
        let written = spread_bulk(image, lanes, meters, Region::Uncompared, opts, cancel);
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
    for (lane, meter) in lanes.iter().zip(meters) {
        if lane.live() {
            meter.send(true);
        }
    }
    let differing = spread_bulk(image, lanes, meters, Region::Compared, opts, cancel);
    apply_bulk(lanes, differing);
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
