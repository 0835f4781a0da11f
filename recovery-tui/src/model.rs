//! Plain data the screens show. Everything here is built from the vault,
//! discovery, the restore engine and the audit log by the `engine` module,
//! or from fixed values in tests, so rendering never touches the system.

use std::path::PathBuf;

use reliquary_appliance::restore::{Stage, TargetInfo};

/// How far an image in the vault may be trusted, in the words the
/// technician sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustStatus {
    /// The trust store's signature policy is met.
    Trusted,
    /// Signed, but not by enough keys the trust store holds.
    Untrusted,
    /// A signing key or the image itself is revoked by policy.
    Revoked,
    /// The file is not an intact image (framing, manifest, index or a chunk).
    Damaged,
}

impl TrustStatus {
    pub fn word(self) -> &'static str {
        match self {
            TrustStatus::Trusted => "trusted",
            TrustStatus::Untrusted => "untrusted",
            TrustStatus::Revoked => "revoked",
            TrustStatus::Damaged => "damaged",
        }
    }
}

/// A signer of an image, as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerSummary {
    pub name: String,
    pub key_id: String,
    pub meaning: String,
    pub signed_unix: i64,
    /// `trusted`, `revoked`, `untrusted`, `unchecked` or `invalid`.
    pub status: String,
}

/// A partition recorded in the image's manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSummary {
    pub number: u32,
    pub start_sector: u64,
    pub size_bytes: u64,
    pub type_code: String,
    pub name: Option<String>,
    pub bootable: bool,
    /// How it was captured, in plain words ("free space not kept (NTFS
    /// used clusters only)").
    pub capture: Option<String>,
}

/// What the manifest says about an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSummary {
    pub uuid: String,
    pub name: String,
    pub version: String,
    pub description: String,
    pub created_unix: i64,
    pub creator: String,
    pub compatible: Vec<String>,
    pub disk_bytes: u64,
    pub stored_bytes: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    /// `MBR`, `GPT` or `none`.
    pub scheme: String,
    pub partitions: Vec<PartitionSummary>,
    /// `None` for an image that failed verification: its index is not read.
    pub chunks: Option<u64>,
    pub manifest_sha256: String,
    pub signers: Vec<SignerSummary>,
}

/// The full offline verification of every chunk of an image.
#[derive(Debug, Clone, PartialEq)]
pub enum FullCheck {
    NotRun,
    Running { done: u64, total: u64 },
    Passed { seconds: f64 },
    Failed { reason: String },
}

/// One file in the vault.
#[derive(Debug, Clone, PartialEq)]
pub struct VaultEntry {
    pub path: PathBuf,
    pub file_name: String,
    /// The manifest, when it could be decoded (even from an untrusted image).
    pub summary: Option<ImageSummary>,
    pub trust: TrustStatus,
    /// Why the image is not trusted, in a sentence.
    pub reason: Option<String>,
    pub check: FullCheck,
    /// Why the `ImageVerified` record could not be written, if it could not.
    pub audit_problem: Option<String>,
}

impl VaultEntry {
    /// Why this image cannot be chosen for a restore, if it cannot.
    pub fn refusal(&self) -> Option<String> {
        if let FullCheck::Failed { reason } = &self.check {
            return Some(format!("damaged: {reason}"));
        }
        match self.trust {
            TrustStatus::Trusted => None,
            other => Some(match &self.reason {
                Some(reason) => format!("{}: {reason}", other.word()),
                None => other.word().to_string(),
            }),
        }
    }

    pub fn display_name(&self) -> String {
        match &self.summary {
            Some(s) => s.name.clone(),
            None => self.file_name.clone(),
        }
    }
}

/// Whether a target is a disk or a regular file offered with `--target-file`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    Disk,
    File,
}

/// A disk or file the image could be restored onto.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetCandidate {
    pub kind: TargetKind,
    pub path: PathBuf,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub size_bytes: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    /// `sata`, `nvme`, `usb`, ..., or `file`.
    pub transport: String,
    /// The current partitions, e.g. `sda1 ntfs "System Reserved"`, so the
    /// technician recognises the old disk.
    pub partitions: Vec<String>,
    /// Every reason the target may not be written; empty when it may.
    pub refusals: Vec<String>,
    /// What the operator must type to confirm: the serial's last four
    /// characters, or a short code shown on screen.
    pub confirm_code: String,
    /// Whether `confirm_code` comes from the serial.
    pub code_is_serial: bool,
    /// The target as the operator confirms it, identity included; the
    /// restore refuses any other device. `None` when it could not be read.
    pub confirmed: Option<TargetInfo>,
    /// An interrupted restore of the chosen image onto this very disk, as
    /// the audit log records it: the restore can be resumed.
    pub resume: Option<ResumeOffer>,
}

/// A restore that can be resumed instead of started over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeOffer {
    /// The sequence number of the interrupted `RestoreStarted`.
    pub interrupted_seq: u64,
    /// About how much of the image the disk already holds, in percent, or
    /// why the disk could not be sampled.
    pub percent_written: Result<u8, String>,
}

impl ResumeOffer {
    /// `about 62 % already in place`: what the sampled extents found
    /// matching the image, which the interrupted restore may not all have
    /// written (a disk holding an older copy matches too).
    pub fn written(&self) -> String {
        match &self.percent_written {
            Ok(percent) => format!("about {percent} % already in place"),
            Err(_) => "how much is written is unknown".to_string(),
        }
    }

    /// `Resume (about 62 % already in place)`.
    pub fn label(&self) -> String {
        format!("Resume ({})", self.written())
    }
}

impl TargetCandidate {
    pub fn is_selectable(&self) -> bool {
        self.refusals.is_empty()
    }

    /// A one-line description: model, serial and path.
    pub fn label(&self) -> String {
        match self.kind {
            TargetKind::File => format!("file {}", self.path.display()),
            TargetKind::Disk => format!(
                "{} {} ({})",
                self.model.as_deref().unwrap_or("unknown model"),
                self.serial
                    .as_deref()
                    .map(|s| format!("serial {s}"))
                    .unwrap_or_else(|| "no serial".into()),
                self.path.display()
            ),
        }
    }
}

/// The targets offered for the chosen image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetList {
    pub loading: bool,
    pub items: Vec<TargetCandidate>,
    /// Why disks could not be listed, if they could not.
    pub discovery_error: Option<String>,
    /// What the operator types to confirm several targets at once: a
    /// short code shown on screen, since no one serial names them all.
    pub group_code: String,
}

/// A snapshot of the restore's progress, as last reported by the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressView {
    /// The target this is about: its position among those restored.
    pub target: usize,
    pub stage: Stage,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub chunks_done: u64,
    pub chunks_total: u64,
    pub bytes_per_second: f64,
    pub eta_seconds: Option<u64>,
}

/// Why the operator restores, from a fixed list: the meaning of the
/// electronic signature the restore record is (21 CFR Part 11 §11.50).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RestoreMeaning {
    #[default]
    DiskReplacement,
    SoftwareFault,
    Malware,
    PlannedReimage,
    Commissioning,
}

impl RestoreMeaning {
    pub const ALL: [RestoreMeaning; 5] = [
        RestoreMeaning::DiskReplacement,
        RestoreMeaning::SoftwareFault,
        RestoreMeaning::Malware,
        RestoreMeaning::PlannedReimage,
        RestoreMeaning::Commissioning,
    ];

    /// The words recorded in the audit log and shown on screen.
    pub fn words(self) -> &'static str {
        match self {
            RestoreMeaning::DiskReplacement => "replacement after disk failure",
            RestoreMeaning::SoftwareFault => "recovery after a software fault",
            RestoreMeaning::Malware => "clean reinstall after malware",
            RestoreMeaning::PlannedReimage => "planned re-imaging (maintenance)",
            RestoreMeaning::Commissioning => "commissioning a new controller",
        }
    }

    pub fn next(self) -> Self {
        let i = Self::ALL.iter().position(|m| *m == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }

    pub fn previous(self) -> Self {
        let i = Self::ALL.iter().position(|m| *m == self).unwrap_or(0);
        Self::ALL[(i + Self::ALL.len() - 1) % Self::ALL.len()]
    }
}

/// What the operator states on the confirmation screen; the engine puts
/// both into the `RestoreStarted` record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RestoreIntent {
    pub meaning: RestoreMeaning,
    /// A work-order number or free text, as typed.
    pub reason: String,
}

/// One thing wrong with the stick, found at start, with what to do about
/// it on this stick (it has no shell: no workstation commands).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickProblem {
    /// What was checked: `audit log`, `audit space`, `trust store`, ...
    pub part: String,
    pub problem: String,
    pub remedy: String,
}

/// The restore screen's state.
#[derive(Debug, Clone, PartialEq)]
pub struct RestoreView {
    pub image_name: String,
    pub image_version: Option<String>,
    /// The vault row restored, so a chunk failure can mark it damaged.
    pub image_index: usize,
    pub target_label: String,
    pub intent: RestoreIntent,
    /// The interrupted restore this one resumes (its `RestoreStarted`).
    pub resumes: Option<u64>,
    /// The `RestoreStarted` records, one per target; empty until the engine
    /// has accepted the targets and logged their starts.
    pub started_seqs: Vec<u64>,
    pub progress: Option<ProgressView>,
    /// Whether the writing stage has completed (read-back is running or done).
    pub written: bool,
    /// Throughput samples in MB/s, oldest first, for the sparkline.
    pub throughput: Vec<u64>,
    pub cancel_requested: bool,
    /// One row per target when several are restored at once (empty for
    /// one: `progress` then says it all).
    pub rows: Vec<TargetProgress>,
}

/// One target's row on the restore screen of a restore onto several.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetProgress {
    pub target_label: String,
    pub progress: Option<ProgressView>,
}

/// How a restore ended, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResultOutcome {
    Success,
    Failed {
        reason: String,
        chunk: Option<u32>,
        sectors: Option<(u64, u64)>,
    },
    Cancelled,
    /// Refused before anything was written (safety, or the audit log).
    Refused {
        reason: String,
    },
}

/// The result screen's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultView {
    pub outcome: ResultOutcome,
    pub image_name: String,
    pub target_label: String,
    pub bytes_written: u64,
    /// Bytes already correct on the disk and not rewritten (a resume).
    pub bytes_skipped: u64,
    /// (stage, seconds with one decimal), in order.
    pub stage_seconds: Vec<(String, String)>,
    pub readback_digest: Option<String>,
    pub warnings: Vec<String>,
    /// The `RestoreFinished` record's sequence number.
    pub audit_seq: Option<u64>,
    /// e.g. `size 12 root 1a2b3c4d`.
    pub checkpoint_short: Option<String>,
    /// The signed checkpoint note, for the QR code.
    pub checkpoint_note: Option<String>,
    /// Why the audit log could not record the end of the restore.
    pub audit_problem: Option<String>,
    /// One result per target when several were restored at once (empty
    /// for one: the fields above then say it all).
    pub per_target: Vec<TargetResult>,
}

/// How the restore went on one of several targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetResult {
    pub target_label: String,
    pub outcome: ResultOutcome,
    pub bytes_written: u64,
    pub readback_digest: Option<String>,
    /// The target's `RestoreFinished` record.
    pub audit_seq: Option<u64>,
    /// Why the audit log could not record this target's end.
    pub audit_problem: Option<String>,
}

/// One audit record, as the viewer shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRow {
    pub seq: u64,
    pub time: String,
    pub kind: String,
    pub operator: String,
    /// `success`, `failed`, `cancelled` or `INTERRUPTED` for restore records.
    pub result: Option<String>,
    /// Why the record failed verification, if it did.
    pub invalid: Option<String>,
    pub summary: String,
    pub details: Vec<(String, String)>,
}

impl AuditRow {
    /// FAILED, INTERRUPTED and invalid records must stand out.
    pub fn is_alarming(&self) -> bool {
        self.invalid.is_some() || matches!(self.result.as_deref(), Some("failed" | "INTERRUPTED"))
    }

    pub fn matches(&self, filter: &str) -> bool {
        if filter.is_empty() {
            return true;
        }
        let needle = filter.to_lowercase();
        let fields = [&self.kind, &self.operator, &self.summary, &self.time];
        fields.iter().any(|f| f.to_lowercase().contains(&needle))
            || self
                .result
                .as_deref()
                .is_some_and(|r| r.to_lowercase().contains(&needle))
            || self
                .details
                .iter()
                .any(|(_, v)| v.to_lowercase().contains(&needle))
    }
}

/// The chain-verification banner of the audit viewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBanner {
    pub ok: bool,
    pub text: String,
}
