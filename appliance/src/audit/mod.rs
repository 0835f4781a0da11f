//! The restore audit log: append-only, signed, crash-safe, verifiable
//! offline. `AUDIT-LOG.md` beside this crate specifies the bytes.
//!
//! A log directory holds `appliance.key` (0600), `appliance.pub`,
//! `audit.log`, the latest signed `checkpoint`, the `checkpoint.history` of
//! every checkpoint written, and any `audit.log.torn-*` files that recovery
//! copied aside.
//!
//! The restore engine uses it like this:
//! ```no_run
//! # use reliquary_appliance::audit::*;
//! # fn f(image: ImageRef, target: TargetRef) -> Result<(), AuditError> {
//! let mut log = AuditLog::open("/audit".as_ref(), Environment::system(None))?;
//! log.ensure_space(RESTORE_RESERVE_BYTES)?;
//! let op = Operator { id: "op7".into(), name: Some("A. Jones".into()) };
//! let started = log.append(&op, Payload::RestoreStarted(RestoreStarted {
//!     image: image.clone(), target: target.clone(), ..Default::default() }))?;
//! // ... write the disk only after `append` returned ...
//! log.append(&op, Payload::RestoreFinished(RestoreFinished {
//!     started_seq: started.seq, image, target, outcome: RestoreOutcome::Success,
//!     ..Default::default() }))?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::exit::ExitClass;

pub mod checkpoint;
pub mod layout;
mod log;
pub mod query;
mod record;
mod verify;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use log::{
    lock_shared, AppendedRecord, AuditLog, Clock, Environment, FixedClock, Recovery, SystemClock,
    BUILD_UNIX_SECONDS, RESTORE_RESERVE_BYTES,
};
pub use record::{
    BodyDefect, CheckResult, ImageRef, Kind, Operator, OperatorRef, Payload, Record, RecordMeta,
    RecordTime, RestoreFinished, RestoreMode, RestoreOutcome, RestoreStarted, SignInFailed,
    SignerRef, TargetRef, Unmapped,
};
pub use verify::{
    verify_bytes, verify_dir, verify_dir_each, CheckpointStatus, LogEnd, Problem, RecordStatus,
    Report, Summary, VerifiedRecord, MAX_LISTED_PROBLEMS, MAX_LISTED_WARNINGS,
};

/// The log file inside the audit directory.
pub const LOG_FILE: &str = "audit.log";
/// The appliance's PKCS#8 private key.
pub const KEY_FILE: &str = "appliance.key";
/// The appliance's public key, for enrolment on the reviewing workstation.
pub const PUBLIC_KEY_FILE: &str = "appliance.pub";
/// The latest checkpoint, rewritten after every finished restore.
pub const CHECKPOINT_FILE: &str = "checkpoint";
/// Every checkpoint the stick wrote, appended in order and never rewritten.
/// `AuditLog::open` refuses a log shorter than, or forked from, the last.
pub const CHECKPOINT_HISTORY_FILE: &str = "checkpoint.history";

/// A SHA-256 digest. Hex in JSON, 32 raw bytes in postcard.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Self(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&self.to_hex())
        } else {
            self.0.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let text = String::deserialize(d)?;
            Digest::from_hex(&text)
                .ok_or_else(|| serde::de::Error::custom("expected 64 hex digits"))
        } else {
            <[u8; 32]>::deserialize(d).map(Digest)
        }
    }
}

/// Errors from creating, opening, appending to and checking an audit log.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{path} already exists; `audit init` never overwrites a key or a log")]
    AlreadyExists { path: PathBuf },
    #[error("the appliance id {id:?} is invalid: use 1 to 64 letters, digits, `.`, `_` or `-`")]
    InvalidApplianceId { id: String },
    #[error("{field} is invalid: {reason}")]
    InvalidField { field: &'static str, reason: String },
    #[error("cannot create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot use the appliance key: {0}")]
    Key(#[from] reliquary_image::keys::KeyError),
    #[error("the key {key} does not match the public key in the log header of {log}; this is not the key that started this log")]
    KeyMismatch { key: PathBuf, log: PathBuf },
    #[error("cannot open the audit log {path}: {source}; run `reliquary audit init --dir DIR` if this stick has no log yet")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the audit log {path} is in use by another process; wait for it to finish")]
    Locked { path: PathBuf },
    #[error("cannot read {path} at offset {offset}: {source}")]
    Read {
        path: PathBuf,
        offset: u64,
        source: std::io::Error,
    },
    #[error("the header of {path} is invalid: {defect}")]
    Header {
        path: PathBuf,
        defect: layout::HeaderDefect,
    },
    #[error("{path}: {problem}; damage followed by valid records is tampering or corruption, so the log is left untouched and new records are refused; keep the stick for the auditor and run `reliquary audit verify`")]
    Damaged { path: PathBuf, problem: Problem },
    #[error("cannot copy the torn tail of {path} (offset {offset}) aside to {quarantine}: {source}; the log was not changed")]
    Quarantine {
        path: PathBuf,
        offset: u64,
        quarantine: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot cut the torn tail off {path} at offset {offset}: {source}; the log is degraded and refuses new records")]
    Truncate {
        path: PathBuf,
        offset: u64,
        source: std::io::Error,
    },
    #[error("cannot encode record {seq}: {reason}")]
    Encode { seq: u64, reason: String },
    #[error("record {seq} would be {len} bytes, more than the {max} a record may hold; shorten its text", max = layout::MAX_BODY_LEN)]
    RecordTooLarge { seq: u64, len: usize },
    #[error("writing record {seq} to {path} at offset {offset} failed: {source}; the log is now degraded: nothing more is recorded and restores are refused until the stick is checked")]
    AppendWrite {
        path: PathBuf,
        seq: u64,
        offset: u64,
        source: std::io::Error,
    },
    #[error("syncing record {seq} to {path} failed: {source}; the record may be lost, the log is now degraded: nothing more is recorded and restores are refused until the stick is checked")]
    AppendSync {
        path: PathBuf,
        seq: u64,
        source: std::io::Error,
    },
    #[error("the audit log {path} is degraded ({reason}); restores and new records are refused until the stick is checked and the log reopened")]
    Degraded { path: PathBuf, reason: String },
    #[error("the file system holding the audit log {path} has {available} bytes free, but {needed} are needed to record a restore from start to finish; free space on the stick before restoring")]
    NoSpace {
        path: PathBuf,
        available: u64,
        needed: u64,
    },
    #[error("cannot measure free space for {path}: {source}")]
    Statvfs { path: PathBuf, source: nix::Error },
    #[error("cannot write checkpoint {path}: {source}")]
    WriteCheckpoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("record {seq} was logged, but the checkpoint after it could not be written: {reason}")]
    CheckpointAfterRestore { seq: u64, reason: String },
    #[error("cannot read checkpoint {path}: {source}")]
    ReadCheckpoint {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("checkpoint {path} is not valid: {source}")]
    BadCheckpoint {
        path: PathBuf,
        source: CheckpointError,
    },
    #[error("cannot write the records out: {source}")]
    Output { source: std::io::Error },
    #[error("the audit log {path} failed verification: {problem}")]
    Verification { path: PathBuf, problem: Problem },
    #[error("the audit log {path} {reason}, as witnessed by the checkpoint this stick wrote in {witness}; records were removed or replaced, so the log is refused: keep the stick for the auditor and run `reliquary audit verify`")]
    Witness {
        path: PathBuf,
        witness: PathBuf,
        reason: String,
    },
}

impl AuditError {
    pub fn exit_class(&self) -> ExitClass {
        use AuditError::*;
        match self {
            InvalidApplianceId { .. } | InvalidField { .. } => ExitClass::Usage,
            AlreadyExists { .. }
            | Locked { .. }
            | Damaged { .. }
            | Truncate { .. }
            | AppendWrite { .. }
            | AppendSync { .. }
            | Degraded { .. }
            | NoSpace { .. } => ExitClass::Refused,
            // A malformed note is a copy to fix, not evidence of tampering.
            BadCheckpoint { source, .. } if source.is_malformed() => ExitClass::Usage,
            KeyMismatch { .. }
            | Header { .. }
            | BadCheckpoint { .. }
            | Verification { .. }
            | Witness { .. } => ExitClass::Integrity,
            Create { .. }
            | Key(_)
            | Open { .. }
            | Read { .. }
            | Quarantine { .. }
            | Encode { .. }
            | RecordTooLarge { .. }
            | Statvfs { .. }
            | WriteCheckpoint { .. }
            | CheckpointAfterRestore { .. }
            | ReadCheckpoint { .. }
            | Output { .. } => ExitClass::Runtime,
        }
    }
}
