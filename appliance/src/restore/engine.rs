//! The one entry point for a restore and its audit records. The CLI and
//! the TUI both call [`restore`]; neither orchestrates on its own.

use std::fs::File;
use std::path::Path;
use std::sync::mpsc::Sender;
use std::sync::Mutex;

use reliquary_image::Image;

use super::records::{log_started, StartDetails};
use super::target::{open_confirmed, TargetRules};
use super::TargetInfo;
use super::{pipeline, CancelToken, Progress, RestoreError, RestoreOptions, RestoreReport};
use crate::audit::{lock_shared, AuditError, AuditLog, Operator, RestoreMode};

/// What to restore where.
#[derive(Debug, Clone, Copy)]
pub struct RestoreRequest<'a> {
    /// An image whose signatures met the trust policy.
    pub image: &'a Image<File>,
    pub image_path: &'a Path,
    /// The target exactly as the operator confirmed it (from
    /// [`inspect_target`](super::inspect_target) or discovery).
    pub confirmed: &'a TargetInfo,
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
#[derive(Debug, Clone, Copy)]
pub struct AuditRecording<'a> {
    pub log: &'a Mutex<AuditLog>,
    pub operator: &'a Operator,
}

/// How a restore went, with what was recorded of it.
#[derive(Debug)]
pub enum RestoreRun {
    /// Refused, or failed before the first write: nothing was written and
    /// no start was recorded.
    NotStarted(RestoreError),
    /// The restore ran; `report.outcome` says how it ended.
    Ran {
        target: Box<TargetInfo>,
        report: Box<RestoreReport>,
        /// The sequence number of `RestoreStarted`, when recorded.
        started_seq: Option<u64>,
        /// The `RestoreFinished` record's sequence number and the log's
        /// checkpoint, or why the end could not be recorded.
        finished: Option<Result<RecordedEnd, AuditError>>,
    },
}

/// The recorded end of a restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEnd {
    pub seq: u64,
    /// The checkpoint's short form, for the work order.
    pub checkpoint: String,
}

/// Opens the confirmed target (refusing any other device), records the
/// start (synced before the first byte reaches the target), restores, and
/// records the end. The outcome is returned even when recording the end
/// fails, so it can always be shown.
pub fn restore(
    request: &RestoreRequest<'_>,
    audit: Option<AuditRecording<'_>>,
    progress: &Sender<Progress>,
    cancel: &CancelToken,
) -> RestoreRun {
    let rules = TargetRules {
        image_path: request.image_path,
        vault: request.vault,
        create_file: request.create_file,
    };
    let target = match open_confirmed(request.confirmed, request.image, &rules) {
        Ok(target) => target,
        Err(e) => return RestoreRun::NotStarted(e),
    };
    let info = target.info().clone();
    let started = match audit {
        Some(audit) => {
            let mut log = lock_shared(audit.log);
            let how = StartDetails {
                meaning: request.meaning.map(str::to_owned),
                reason: request.reason.map(str::to_owned),
                mode: request.mode,
                unmapped: request.options.unmapped,
            };
            match log_started(&mut log, audit.operator, request.image, &info, &how) {
                Ok(started) => Some(started),
                Err(e) => return RestoreRun::NotStarted(RestoreError::AuditStart(e)),
            }
        }
        None => None,
    };
    let mut options = request.options;
    options.only_differences |= request.mode != RestoreMode::Full;
    let report = pipeline::run(request.image, target, &options, progress, cancel);
    let started_seq = started.as_ref().map(|s| s.seq);
    let finished = match (audit, started) {
        (Some(audit), Some(started)) => {
            let mut log = lock_shared(audit.log);
            Some(
                started
                    .log_finished(&mut log, audit.operator, &report)
                    .map(|record| RecordedEnd {
                        seq: record.seq,
                        checkpoint: log.checkpoint().short_form(),
                    }),
            )
        }
        _ => None,
    };
    RestoreRun::Ran {
        target: Box::new(info),
        report: Box::new(report),
        started_seq,
        finished,
    }
}
