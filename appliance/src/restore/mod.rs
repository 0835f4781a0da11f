//! Restore: write a verified image onto a disk so that the disk ends up
//! either exactly right or clearly unusable.
//!
//! The order of work is what makes that true:
//! 1. the caller has checked the signature policy (`SealedImage::verify`);
//! 2. [`inspect_target`] runs every safety refusal and says what the
//!    operator confirms, identity included;
//! 3. [`restore`], the one entry point of the CLI and the TUI, opens the
//!    confirmed targets (one, or several written from one read of the
//!    image) with `O_EXCL` (refusing any other device), records each start
//!    in the audit log, and runs the write phases: wipe the partition-table
//!    areas, write the rest of the disk, then the tables, the moved backup
//!    GPT, and the first sector last, each phase flushed and each chunk
//!    verified before its write is issued;
//! 4. the written disks are read back with `O_DIRECT` in one pass and
//!    compared, edits included, and a GPT validated with the `gpt` crate;
//! 5. the kernel rereads the partition table, and the end is recorded.
//!
//! On any failure or cancel after the first write the partition-table
//! areas are wiped again.

mod compare;
mod engine;
mod estimate;
mod pipeline;
pub mod records;
mod tables;
mod target;
#[cfg(test)]
mod test_image;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reliquary_image::ImageError;

pub use compare::{check_disks, open_for_reading, CheckReport, ExtentMismatch, MismatchKind};
pub use engine::{restore, AuditRecording, RecordedEnd, RestoreRequest, RestoreRun, TargetRun};
pub use estimate::already_written_percent;
pub use pipeline::WipeArea;
pub use target::{
    describe_for_reading, inspect_target, Target, TargetIdentity, TargetInfo, TargetRules,
};

pub use crate::audit::{RestoreMode, Unmapped};
use crate::discover::DiscoverError;
use crate::exit::ExitClass;
use crate::partition::GptError;
use crate::safety::Refusal;
use crate::sys::{AlignError, SysError};

/// The size of each partition-table area wiped at the start and the end.
pub const WIPE_BYTES: u64 = 1 << 20;

/// How to restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreOptions {
    /// Read every written extent back with O_DIRECT and compare.
    pub readback: bool,
    /// What to do with extents the image did not capture: leave them,
    /// zero them, or discard them where the disk then reads zeros.
    pub unmapped: Unmapped,
    /// Read each extent outside the partition-table areas back first and
    /// write only those that differ from the image (a resume, or
    /// `--only-differences`).
    pub only_differences: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            readback: true,
            unmapped: Unmapped::Left,
            only_differences: false,
        }
    }
}

/// The stages a restore goes through, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    CheckingSignatures,
    Wiping,
    /// Reading the disk to find what already holds the image's bytes.
    Comparing,
    Writing,
    ReadingBack,
    Finalising,
    /// Wiping the partition-table areas again after a failure.
    WipingAfterFailure,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Stage::CheckingSignatures => "checking signatures",
            Stage::Wiping => "wiping",
            Stage::Comparing => "comparing",
            Stage::Writing => "writing",
            Stage::ReadingBack => "reading back",
            Stage::Finalising => "finalising",
            Stage::WipingAfterFailure => "wiping after the failure",
        })
    }
}

/// A progress event, sent over a channel to whoever draws it.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The target this is about: its position in the request.
    pub target: usize,
    pub stage: Stage,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub chunks_done: u64,
    pub chunks_total: u64,
    pub bytes_per_second: f64,
    pub eta: Option<Duration>,
}

/// Asks a running restore to stop at the next chunk boundary.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// What a restore did.
#[derive(Debug)]
pub struct RestoreReport {
    pub outcome: Outcome,
    /// Bytes of data and zeros written to the target.
    pub bytes_written: u64,
    /// Bytes already correct on the target and not rewritten (a resume,
    /// or `--only-differences`).
    pub bytes_skipped: u64,
    pub stage_durations: Vec<(Stage, Duration)>,
    /// The whole-image digest recomputed from the read-back of the disk.
    pub readback_digest: Option<[u8; 32]>,
    /// Whether the backup GPT was moved to the end of a larger disk.
    pub backup_gpt_moved: bool,
    /// The partition-table areas left zeroed: by the first phase, or after
    /// a failure or cancel (empty when nothing was written).
    pub wiped: Vec<WipeArea>,
    /// A problem after success that needs no action but should be shown,
    /// e.g. the kernel not rereading the partition table.
    pub warnings: Vec<String>,
}

/// How a restore ended.
#[derive(Debug)]
pub enum Outcome {
    Success,
    /// The disk was left wiped; `error` says why.
    Failed {
        error: RestoreError,
        chunk: Option<u32>,
        sectors: Option<(u64, u64)>,
    },
    /// Cancelled at a chunk boundary; the disk was left wiped.
    Cancelled,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error(
        "refusing to write {path}: it is not a whole disk; choose the disk itself, not a partition"
    )]
    NotAWholeDisk { path: std::path::PathBuf },
    #[error("refusing to write {path}: it is the image file being restored")]
    TargetIsImage { path: std::path::PathBuf },
    #[error("cannot discover disks: {0}")]
    Discover(#[from] DiscoverError),
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error("cannot allocate an I/O buffer: {0}")]
    Buffer(#[from] AlignError),
    #[error("cannot {operation} the target at byte {offset}: {source}")]
    TargetIo {
        operation: &'static str,
        offset: u64,
        source: std::io::Error,
    },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("read-back of extent {extent} (sectors {start_sector}..{end_sector}) {what}: the disk did not store what was written")]
    Readback {
        extent: usize,
        start_sector: u64,
        end_sector: u64,
        what: &'static str,
    },
    #[error("the GPT cannot be moved to the end of this disk: {0}")]
    Gpt(#[from] GptError),
    #[error(
        "refusing to write this image: its GPT does not validate ({0}), so the disk would \
         not validate either; capture the source again after repairing its table"
    )]
    ImageGpt(#[source] GptError),
    #[error(
        "the GPT read back from the disk does not validate ({0}); the disk did not \
         store what was written: replace it"
    )]
    WrittenGpt(#[source] GptError),
    #[error("cannot wipe the partition-table areas: {0}")]
    Wipe(String),
    #[error("the moved backup GPT at byte {offset} read back differently: the disk did not store what was written")]
    BackupGptReadback { offset: u64 },
    #[error("the restore was cancelled")]
    Cancelled,
    #[error(
        "the restore stopped on an internal error ({0}); what the disk holds is unknown: \
         do not boot it, and restore it again"
    )]
    Internal(String),
    /// A failure of the shared reading of the image, which stops every
    /// target of a restore onto several at once.
    #[error("{0}")]
    AllTargets(Arc<RestoreError>),
    #[error("the start of the restore could not be recorded, so nothing was written: {0}")]
    AuditStart(#[source] crate::audit::AuditError),
    /// 21 CFR 11.50: a recorded restore states what it means and why.
    #[error("the restore states no {0}: every recorded restore needs its meaning and its work order; nothing was written")]
    Unstated(&'static str),
}

impl RestoreError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            RestoreError::Refused(_)
            | RestoreError::ImageGpt(_)
            | RestoreError::NotAWholeDisk { .. }
            | RestoreError::TargetIsImage { .. } => ExitClass::Refused,
            RestoreError::Sys(e) => e.exit_class(),
            RestoreError::AllTargets(e) => e.exit_class(),
            RestoreError::Image(e) if e.is_integrity_failure() => ExitClass::Integrity,
            RestoreError::Readback { .. } | RestoreError::BackupGptReadback { .. } => {
                ExitClass::Integrity
            }
            RestoreError::Unstated(_) => ExitClass::Usage,
            _ => ExitClass::Runtime,
        }
    }
}

impl RestoreError {
    /// A failed flush, restated for each area it leaves in doubt.
    fn from_flush(e: &RestoreError) -> RestoreError {
        RestoreError::Wipe(format!("the flush after the wipe failed: {e}"))
    }
}

impl RestoreReport {
    /// A successful restore that has done nothing yet.
    pub(crate) fn new() -> Self {
        Self {
            outcome: Outcome::Success,
            bytes_written: 0,
            bytes_skipped: 0,
            stage_durations: Vec::new(),
            readback_digest: None,
            backup_gpt_moved: false,
            wiped: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// A restore that failed before writing anything.
    pub(crate) fn not_written(error: RestoreError) -> Self {
        Self {
            outcome: Outcome::Failed {
                error,
                chunk: None,
                sectors: None,
            },
            ..Self::new()
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self.outcome, Outcome::Success)
    }
}
