//! The audit log as the viewer shows it: verified, one row per record.

use std::collections::HashMap;
use std::path::Path;

use reliquary_appliance::audit::query::format_time;
use reliquary_appliance::audit::{
    verify_dir, CheckResult, LogEnd, Payload, Record, RecordStatus, Report, RestoreOutcome,
    PUBLIC_KEY_FILE,
};
use reliquary_image::keys::PublicKey;

use super::targets::error_chain;
use crate::model::{AuditRow, ChainBanner};
use crate::ui::bytes;

/// Reads and verifies the log in `dir` with the appliance's own public key.
pub fn load(dir: &Path) -> (Vec<AuditRow>, ChainBanner) {
    let key = match PublicKey::load(&dir.join(PUBLIC_KEY_FILE)) {
        Ok((key, _)) => key,
        Err(e) => {
            return (
                Vec::new(),
                ChainBanner {
                    ok: false,
                    text: format!("CANNOT VERIFY: {}", error_chain(&e)),
                },
            )
        }
    };
    match verify_dir(dir, &key, None) {
        Ok(report) => (rows(&report), banner(&report)),
        Err(e) => (
            Vec::new(),
            ChainBanner {
                ok: false,
                text: format!("CANNOT VERIFY: {}", error_chain(&e)),
            },
        ),
    }
}

/// The banner: whether the chain verified, and what needs attention.
pub fn banner(report: &Report) -> ChainBanner {
    if let Some(problem) = report.first_problem() {
        return ChainBanner {
            ok: false,
            text: format!("CHAIN VERIFICATION FAILED: {problem}"),
        };
    }
    // Short enough that the whole key id fits 80 columns.
    let mut text = format!(
        "Chain verified: {} records, key {}",
        report.size, report.key_id
    );
    let interrupted = report.interrupted().len();
    if interrupted > 0 {
        text += &format!("; {interrupted} INTERRUPTED restore(s)");
    }
    if let LogEnd::TornTail { len, .. } = report.end {
        text += &format!("; a torn append of {len} bytes at the end");
    }
    ChainBanner { ok: true, text }
}

/// One row per record, in log order.
pub fn rows(report: &Report) -> Vec<AuditRow> {
    let outcomes: HashMap<u64, &RestoreOutcome> = report
        .records
        .iter()
        .filter_map(|r| match &r.record.as_ref()?.payload {
            Payload::RestoreFinished(f) => Some((f.started_seq, &f.outcome)),
            _ => None,
        })
        .collect();
    report
        .records
        .iter()
        .map(|vr| {
            let invalid = match &vr.status {
                RecordStatus::Verified => None,
                RecordStatus::Invalid(reason) => Some(reason.clone()),
            };
            let Some(rec) = &vr.record else {
                return AuditRow {
                    seq: vr.seq,
                    time: String::new(),
                    kind: "?".into(),
                    operator: String::new(),
                    result: None,
                    invalid: invalid.or_else(|| Some("the record does not decode".into())),
                    summary: String::new(),
                    details: Vec::new(),
                };
            };
            let result = match &rec.payload {
                Payload::RestoreStarted(_) => Some(
                    outcomes
                        .get(&vr.seq)
                        .map_or("INTERRUPTED", |o| o.word())
                        .to_string(),
                ),
                Payload::RestoreFinished(f) => Some(f.outcome.word().to_string()),
                Payload::ImageVerified { result, .. } | Payload::DiskChecked { result, .. } => {
                    Some(
                        match result {
                            CheckResult::Passed => "passed",
                            CheckResult::Failed { .. } => "failed",
                        }
                        .to_string(),
                    )
                }
                _ => None,
            };
            let time = format_time(rec.meta.time.unix_millis)
                .replace('T', " ")
                .chars()
                .take(19)
                .collect();
            let mut details = vec![
                (
                    "Operator".to_string(),
                    match &rec.meta.operator.name {
                        Some(name) => format!("{} ({name})", rec.meta.operator.id),
                        None => rec.meta.operator.id.clone(),
                    },
                ),
                (
                    "Appliance".to_string(),
                    format!("{} v{}", rec.meta.appliance_id, rec.meta.software_version),
                ),
                ("Boot".to_string(), rec.meta.boot_id.clone()),
            ];
            if rec.meta.time.clock_anomaly {
                details.push((
                    "Clock".into(),
                    format!(
                        "ANOMALY: the clock read {}; the floor was recorded",
                        format_time(rec.meta.time.rtc_unix_millis)
                    ),
                ));
            }
            let summary = describe(rec, &mut details);
            AuditRow {
                seq: vr.seq,
                time,
                kind: rec.kind.name().to_string(),
                operator: rec.meta.operator.id.clone(),
                result,
                invalid,
                summary,
                details,
            }
        })
        .collect()
}

/// A one-line summary of a payload; its fields go into `details`.
fn describe(record: &Record, details: &mut Vec<(String, String)>) -> String {
    let payload = &record.payload;
    let mut add = |k: &str, v: String| details.push((k.to_string(), v));
    if let Some(image) = payload.image() {
        add("Image", format!("{} version {}", image.name, image.version));
        add("Image id", image.uuid.clone());
        add("Manifest", format!("sha256 {}", image.manifest_digest));
        for s in &image.signers {
            add(
                "Signer",
                format!("{} ({}) key {}", s.name, s.meaning, s.key_id),
            );
        }
    }
    if let Some(t) = payload.target() {
        add(
            "Target",
            format!("{} {} serial {}", t.path, t.model, t.serial),
        );
        add(
            "Size",
            format!(
                "{} ({} B / {} B sectors)",
                bytes(t.size_bytes),
                t.logical_sector_size,
                t.physical_sector_size
            ),
        );
        if let Some(wwn) = &t.wwn {
            add("WWN", wwn.clone());
        }
    }
    let target_name = |t: &reliquary_appliance::audit::TargetRef| {
        if t.serial.is_empty() {
            t.path.clone()
        } else {
            format!("serial {}", t.serial)
        }
    };
    match payload {
        Payload::LogCreated { .. } => "log created".into(),
        Payload::RestoreStarted(s) => {
            // Version 1 records did not say; their defaults would be a guess.
            if record.body_version >= 2 {
                add("Mode", s.mode.describe());
                add("Unmapped", s.unmapped.word().to_string());
                if let Some(meaning) = &s.meaning {
                    add("Meaning", meaning.clone());
                }
                if let Some(reason) = &s.reason {
                    add("Reason", reason.clone());
                }
            }
            format!(
                "{} {} -> {}",
                s.image.name,
                s.image.version,
                target_name(&s.target)
            )
        }
        Payload::RestoreFinished(f) => {
            add("Written", bytes(f.bytes_written));
            if record.body_version >= 2 {
                add("Already correct", bytes(f.bytes_skipped));
            }
            add(
                "Stages",
                reliquary_appliance::report::stage_list(&f.stage_millis),
            );
            if let Some(d) = &f.readback_digest {
                add("Read-back", format!("sha256 {d}"));
            }
            if let RestoreOutcome::Failed { chunk, reason } = &f.outcome {
                add("Failure", reason.clone());
                if let Some(chunk) = chunk {
                    add("Chunk", chunk.to_string());
                }
            }
            format!("of record {}: {}", f.started_seq, target_name(&f.target))
        }
        Payload::ImageVerified { image, result } => {
            let word = check_word(result, &mut add);
            format!("{} {} {word}", image.name, image.version)
        }
        Payload::DiskChecked { target, result } => {
            let word = check_word(result, &mut add);
            format!("{} {word}", target_name(target))
        }
        Payload::Recovered {
            length,
            quarantine_file,
            ..
        } => {
            add("Quarantine", quarantine_file.clone());
            format!("a torn tail of {length} bytes was copied aside")
        }
        Payload::OperatorNote { text } => text.clone(),
        Payload::SignInFailed(f) => {
            add("Attempt", f.attempt.to_string());
            if f.locked {
                add("Locked", "yes".into());
            }
            format!("sign-in of {} failed", f.operator_id)
        }
        Payload::SignedIn(o) => format!("{} signed in after failed sign-ins", o.operator_id),
        Payload::OperatorUnlocked(o) => {
            add("Unlocked by", record.meta.operator.id.clone());
            format!("operator {} unlocked", o.operator_id)
        }
    }
}

fn check_word(result: &CheckResult, add: &mut impl FnMut(&str, String)) -> &'static str {
    match result {
        CheckResult::Passed => "passed",
        CheckResult::Failed { reason } => {
            add("Failure", reason.clone());
            "FAILED"
        }
    }
}
