//! How a restore is described in the audit log.

use std::fs::File;

use reliquary_image::Image;

use super::{Outcome, RestoreReport, TargetInfo};
use crate::audit::{
    AppendedRecord, AuditError, AuditLog, Digest, ImageRef, Operator, Payload, RestoreFinished,
    RestoreMode, RestoreOutcome, RestoreStarted, SignerRef, TargetRef, Unmapped,
    RESTORE_RESERVE_BYTES,
};

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
) -> Result<StartedRestore, AuditError> {
    log.ensure_space(RESTORE_RESERVE_BYTES)?;
    let (image, target) = (image_ref(image), target_ref(target));
    let appended = log.append(
        operator,
        Payload::RestoreStarted(RestoreStarted {
            image: image.clone(),
            target: target.clone(),
            meaning: None,
            reason: None,
            mode: RestoreMode::Full,
            unmapped: Unmapped::Left,
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
        bytes_skipped: 0,
        stage_millis: report
            .stage_durations
            .iter()
            .map(|(stage, d)| (stage.to_string(), d.as_millis() as u64))
            .collect(),
        readback_digest: report.readback_digest.map(Digest),
    }
}
