//! The one entry point for a restore and its audit records. The CLI and
//! the TUI both call [`restore`]; neither orchestrates on its own.

use std::fs::File;
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use reliquary_image::Image;

use super::records::{log_started, StartDetails, StartedRestore};
use super::target::{open_confirmed, Target, TargetRules};
use super::TargetInfo;
use super::{pipeline, CancelToken, Progress, RestoreError, RestoreOptions, RestoreReport};
use crate::audit::{lock_shared, AuditError, AuditLog, Operator, RestoreMode, Unmapped};
use crate::safety::Refusal;

/// What to restore where.
#[derive(Debug, Clone, Copy)]
pub struct RestoreRequest<'a> {
    /// An image whose signatures met the trust policy.
    pub image: &'a Image<File>,
    pub image_path: &'a Path,
    /// The targets exactly as the operator confirmed them (from
    /// [`inspect_target`](super::inspect_target) or discovery): one, or
    /// several written at once from one read of the image.
    pub targets: &'a [TargetInfo],
    /// The vault the image comes from; its disk is never a target.
    pub vault: Option<&'a Path>,
    /// Whether a confirmed target that does not exist may be created as a
    /// regular file.
    pub create_file: bool,
    pub options: RestoreOptions,
    /// The meaning and reason the operator gave, and the kind of restore.
    pub meaning: Option<&'a str>,
    pub reason: Option<&'a str>,
    pub mode: RestoreMode,
}

/// Where and as whom a restore is recorded.
#[derive(Clone, Copy)]
pub struct AuditRecording<'a> {
    pub log: &'a Mutex<AuditLog>,
    pub operator: &'a Operator,
    /// Told the `RestoreStarted` sequence numbers, in the request's target
    /// order, once every start is synced and before the first write, so
    /// the operator can see the record while the restore runs.
    pub on_started: &'a dyn Fn(&[u64]),
}

impl std::fmt::Debug for AuditRecording<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditRecording")
            .field("operator", self.operator)
            .finish_non_exhaustive()
    }
}

/// How a restore went, with what was recorded of it.
#[derive(Debug)]
pub enum RestoreRun {
    /// Refused, or failed before the first write: nothing was written on
    /// any target and no start was recorded.
    NotStarted(RestoreError),
    /// The restore ran: one entry per target, in the request's order.
    Ran(Vec<TargetRun>),
}

/// How the restore went on one target.
#[derive(Debug)]
pub struct TargetRun {
    pub target: Box<TargetInfo>,
    /// `report.outcome` says how it ended.
    pub report: Box<RestoreReport>,
    /// The sequence number of `RestoreStarted`, when recorded.
    pub started_seq: Option<u64>,
    /// The `RestoreFinished` record's sequence number and the log's
    /// checkpoint, or why the end could not be recorded.
    pub finished: Option<Result<RecordedEnd, AuditError>>,
}

/// The recorded end of a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEnd {
    pub seq: u64,
    /// The checkpoint's short form, for the work order.
    pub checkpoint: String,
}

/// Opens every confirmed target (refusing any other device, and a disk
/// named twice), records each start (synced before the first byte reaches
/// any target), restores them all from one read of the image, and records
/// each end. The outcomes are returned even when recording an end fails,
/// so they can always be shown.
pub fn restore(
    request: &RestoreRequest<'_>,
    audit: Option<AuditRecording<'_>>,
    progress: &Sender<Progress>,
    cancel: &CancelToken,
) -> RestoreRun {
    if audit.is_some() {
        let stated = |text: Option<&str>| text.is_some_and(|t| !t.trim().is_empty());
        if !stated(request.meaning) {
            return RestoreRun::NotStarted(RestoreError::Unstated("meaning"));
        }
        if !stated(request.reason) {
            return RestoreRun::NotStarted(RestoreError::Unstated("work order"));
        }
    }
    let targets = match open_all(request) {
        Ok(targets) => targets,
        Err(e) => return RestoreRun::NotStarted(e),
    };
    let infos: Vec<TargetInfo> = targets.iter().map(|t| t.info().clone()).collect();
    let unmapped: Vec<Unmapped> = targets
        .iter()
        .map(|t| pipeline::unmapped_for(request.options.unmapped, t))
        .collect();
    let started = match audit {
        Some(audit) => match log_all_started(request, audit, &infos, &unmapped) {
            Ok(started) => {
                let seqs: Vec<u64> = started.iter().map(|s| s.seq).collect();
                (audit.on_started)(&seqs);
                started.into_iter().map(Some).collect()
            }
            Err(e) => return RestoreRun::NotStarted(e),
        },
        None => infos.iter().map(|_| None).collect::<Vec<_>>(),
    };
    let mut options = request.options;
    options.only_differences |= request.mode != RestoreMode::Full;
    // A bug that panics must still leave an end record for every start.
    let reports = std::panic::catch_unwind(AssertUnwindSafe(|| {
        pipeline::run(
            request.image,
            targets.into_iter().zip(unmapped).collect(),
            &options,
            request.mode,
            progress,
            cancel,
        )
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let error = Arc::new(RestoreError::Internal(what));
        infos
            .iter()
            .map(|_| RestoreReport::not_written(RestoreError::AllTargets(Arc::clone(&error))))
            .collect()
    });
    let runs = infos
        .into_iter()
        .zip(reports)
        .zip(started)
        .map(|((info, report), started)| {
            let started_seq = started.as_ref().map(|s| s.seq);
            let finished = audit.zip(started).map(|(audit, started)| {
                let mut log = lock_shared(audit.log);
                started
                    .log_finished(&mut log, audit.operator, &report)
                    .map(|record| RecordedEnd {
                        seq: record.seq,
                        checkpoint: log.checkpoint().short_form(),
                    })
            });
            TargetRun {
                target: Box::new(info),
                report: Box::new(report),
                started_seq,
                finished,
            }
        })
        .collect();
    RestoreRun::Ran(runs)
}

/// Opens every target, or none: a refusal of one refuses the restore.
fn open_all(request: &RestoreRequest<'_>) -> Result<Vec<Target>, RestoreError> {
    let rules = TargetRules {
        image_path: request.image_path,
        vault: request.vault,
        create_file: request.create_file,
    };
    let mut opened: Vec<Target> = Vec::with_capacity(request.targets.len());
    for confirmed in request.targets {
        let target = open_confirmed(confirmed, request.image, &rules)?;
        if let Some(earlier) = opened.iter().find(|t| t.info().same_bytes(target.info())) {
            return Err(Refusal::NamedTwice {
                first: earlier.info().path.clone(),
                second: target.info().path.clone(),
            }
            .into());
        }
        opened.push(target);
    }
    Ok(opened)
}

/// Records every target's start, synced, before anything is written. If
/// one cannot be recorded, the starts already recorded get their end
/// (failed, nothing written) and the restore does not start.
fn log_all_started(
    request: &RestoreRequest<'_>,
    audit: AuditRecording<'_>,
    targets: &[TargetInfo],
    unmapped: &[Unmapped],
) -> Result<Vec<StartedRestore>, RestoreError> {
    let mut log = lock_shared(audit.log);
    let mut started = Vec::with_capacity(targets.len());
    for (info, &unmapped) in targets.iter().zip(unmapped) {
        let how = StartDetails {
            meaning: request.meaning.map(str::to_owned),
            reason: request.reason.map(str::to_owned),
            mode: request.mode,
            unmapped,
        };
        match log_started(&mut log, audit.operator, request.image, info, &how) {
            Ok(s) => started.push(s),
            Err(e) if started.is_empty() => return Err(RestoreError::AuditStart(e)),
            Err(e) => {
                let error = Arc::new(RestoreError::AuditStart(e));
                for s in started {
                    let report =
                        RestoreReport::not_written(RestoreError::AllTargets(Arc::clone(&error)));
                    let _ = s.log_finished(&mut log, audit.operator, &report);
                }
                return Err(RestoreError::AllTargets(error));
            }
        }
    }
    Ok(started)
}
