//! How a restore is described in the audit log.

use std::fs::File;

use reliquary_image::Image;

use super::{Outcome, RestoreReport, TargetInfo};

use crate::audit::{
    verify_dir, AppendedRecord, AuditError, AuditLog, Digest, ImageRef, Operator, Payload,
    RecordStatus, Report, RestoreFinished, RestoreMode, RestoreOutcome, RestoreStarted, SignerRef,
    TargetRef, Unmapped, RESTORE_RESERVE_BYTES,
};

/// What the start record says besides the image and the target: the
/// meaning of the operator's signature and the reason (21 CFR Part 11),
/// the kind of restore, and what happens to uncaptured extents.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartDetails {
    pub meaning: Option<String>,
    pub reason: Option<String>,
    pub mode: RestoreMode,
    pub unmapped: Unmapped,
}

/// A restore whose `RestoreStarted` record is on disk.
#[derive(Debug)]
pub struct StartedRestore {
    /// The sequence number of the `RestoreStarted` record.
    pub seq: u64,
    image: ImageRef,
    target: TargetRef,
}

/// Checks that the log has room for the whole restore's records, then
/// appends and syncs `RestoreStarted`. Nothing may reach the target before
/// this returns `Ok`.
pub fn log_started(
    log: &mut AuditLog,
    operator: &Operator,
    image: &Image<File>,
    target: &TargetInfo,
    how: &StartDetails,
) -> Result<StartedRestore, AuditError> {
    log.ensure_space(RESTORE_RESERVE_BYTES)?;
    let (image, target) = (image_ref(image), target_ref(target));
    let appended = log.append(
        operator,
        Payload::RestoreStarted(RestoreStarted {
            image: image.clone(),
            target: target.clone(),
            meaning: how.meaning.clone(),
            reason: how.reason.clone(),
            mode: how.mode,
            unmapped: how.unmapped,
        }),
    )?;
    Ok(StartedRestore {
        seq: appended.seq,
        image,
        target,
    })
}

impl StartedRestore {
    /// Appends the matching `RestoreFinished` (which also writes the
    /// checkpoint).
    pub fn log_finished(
        self,
        log: &mut AuditLog,
        operator: &Operator,
        report: &RestoreReport,
    ) -> Result<AppendedRecord, AuditError> {
        let finished = finished_record(self.seq, self.image, self.target, report);
        log.append(operator, Payload::RestoreFinished(finished))
    }
}

/// The sequence number of the latest restore of `image` onto `target`
/// that the verified log in `log`'s directory shows started and never
/// finished: what a resume continues. The disk must be the same by serial
/// and WWN (or, for disks without a serial, by path) and by size.
pub fn interrupted_restore(
    log: &AuditLog,
    image: &Image<File>,
    target: &TargetInfo,
) -> Result<Option<u64>, AuditError> {
    Ok(interrupted_restores(log, image, &[target])?.pop().flatten())
}

/// [`interrupted_restore`] for each of `targets`, verifying the log once.
pub fn interrupted_restores(
    log: &AuditLog,
    image: &Image<File>,
    targets: &[&TargetInfo],
) -> Result<Vec<Option<u64>>, AuditError> {
    let report = verify_dir(log.dir(), &log.public_key(), None)?;
    let uuid = image.manifest().image_uuid.to_string();
    Ok(targets
        .iter()
        .map(|target| newest_interrupted(&report, &uuid, target))
        .collect())
}

/// The answer of [`interrupted_restore`] for one target, from the log's
/// verified records.
fn newest_interrupted(report: &Report, uuid: &str, target: &TargetInfo) -> Option<u64> {
    let want = target_ref(target);
    let same_disk = |t: &TargetRef| {
        t.size_bytes == want.size_bytes
            && t.logical_sector_size == want.logical_sector_size
            && t.wwn == want.wwn
            && if want.serial.is_empty() {
                t.serial.is_empty() && t.path == want.path
            } else {
                t.serial == want.serial
            }
    };
    // The newest record about this image on this disk decides: a finish
    // (of the restore or of a resume) means there is nothing to resume.
    for r in report.records.iter().rev() {
        if r.status != RecordStatus::Verified {
            continue;
        }
        match r.record.as_ref().map(|rec| &rec.payload) {
            Some(Payload::RestoreStarted(s)) if s.image.uuid == uuid && same_disk(&s.target) => {
                return r.interrupted.then_some(r.seq);
            }
            Some(Payload::RestoreFinished(f)) if f.image.uuid == uuid && same_disk(&f.target) => {
                return None;
            }
            _ => {}
        }
    }
    None
}

/// The image as audit records name it.
pub fn image_ref(image: &Image<File>) -> ImageRef {
    let m = image.manifest();
    ImageRef {
        uuid: m.image_uuid.to_string(),
        name: m.name.clone(),
        version: m.version.clone(),
        manifest_digest: Digest(image.manifest_sha256()),
        signers: image
            .signers()
            .iter()
            .map(|s| SignerRef {
                name: s.name.clone(),
                key_id: s.key_id.clone(),
                meaning: s.statement.meaning.as_str().to_string(),
                signed_unix: Some(s.statement.signed_unix),
            })
            .collect(),
    }
}

/// The target as audit records name it.
pub fn target_ref(info: &TargetInfo) -> TargetRef {
    TargetRef {
        path: info.path.display().to_string(),
        model: info.model.clone().unwrap_or_default(),
        serial: info.serial.clone().unwrap_or_default(),
        wwn: info.wwn.clone(),
        size_bytes: info.size_bytes,
        logical_sector_size: info.logical_sector_size,
        physical_sector_size: info.physical_sector_size,
    }
}

/// The `RestoreFinished` record for a report.
fn finished_record(
    started_seq: u64,
    image: ImageRef,
    target: TargetRef,
    report: &RestoreReport,
) -> RestoreFinished {
    let outcome = match &report.outcome {
        Outcome::Success => RestoreOutcome::Success,
        Outcome::Cancelled => RestoreOutcome::Cancelled,
        Outcome::Failed { error, chunk, .. } => RestoreOutcome::Failed {
            chunk: chunk.map(u64::from),
            reason: error.to_string(),
        },
    };
    RestoreFinished {
        started_seq,
        image,
        target,
        outcome,
        bytes_written: report.bytes_written,
        bytes_skipped: report.bytes_skipped,
        stage_millis: report
            .stage_durations
            .iter()
            .map(|(stage, d)| (stage.to_string(), d.as_millis() as u64))
            .collect(),
        readback_digest: report.readback_digest.map(Digest),
    }
}
