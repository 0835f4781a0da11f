//! Reviewing a verified log: filters, the `show` table and the exports,
//! one record at a time as `verify_dir_each` hands them over, so every row
//! carries the verification status of its record and memory stays flat.

use std::io::{self, Write};

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

use reliquary_image::keys::PublicKey;

use super::record::{Payload, Record, RestoreOutcome, TargetRef};
use super::verify::{RecordStatus, VerifiedRecord};

/// What `show` keeps. Empty fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub target_serial: Option<String>,
    pub image: Option<String>,
    pub operator: Option<String>,
    /// success, failed, cancelled or interrupted.
    pub result: Option<String>,
    /// Unix milliseconds, inclusive.
    pub since: Option<i64>,
    /// Unix milliseconds, exclusive.
    pub until: Option<i64>,
}

/// Why a `--since`/`--until` date was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date: use YYYY-MM-DD or an RFC 3339 time such as 2026-03-01T08:00:00Z")]
pub struct DateError(pub String);

/// Parses `YYYY-MM-DD` (midnight UTC; with `end_of_day`, the next midnight)
/// or an RFC 3339 time, into Unix milliseconds.
pub fn parse_date(text: &str, end_of_day: bool) -> Result<i64, DateError> {
    let millis = |t: OffsetDateTime| (t.unix_timestamp_nanos() / 1_000_000) as i64;
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(millis(t));
    }
    let date = Date::parse(text, format_description!("[year]-[month]-[day]"))
        .map_err(|_| DateError(text.to_string()))?;
    let start = millis(PrimitiveDateTime::new(date, Time::MIDNIGHT).assume_utc());
    Ok(if end_of_day {
        start + 86_400_000
    } else {
        start
    })
}

/// Formats Unix milliseconds as an RFC 3339 UTC time.
pub fn format_time(unix_millis: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_millis) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| format!("@{unix_millis}ms"))
}

/// The result a record shows: "success", "failed" or "cancelled" on a
/// `RestoreFinished`, and "INTERRUPTED" on a `RestoreStarted` that has none.
/// A started restore that finished shows no result: its finish does.
pub fn restore_result(vr: &VerifiedRecord) -> Option<&'static str> {
    match &vr.record.as_ref()?.payload {
        Payload::RestoreStarted(_) if vr.interrupted => Some("INTERRUPTED"),
        Payload::RestoreFinished(f) => Some(f.outcome.word()),
        _ => None,
    }
}

impl Filter {
    /// Whether `show` lists the record. A record whose body did not decode
    /// is always listed: it is the news.
    pub fn keeps(&self, vr: &VerifiedRecord) -> bool {
        let Some(rec) = &vr.record else {
            return true;
        };
        let result = restore_result(vr);
        let t = rec.meta.time.unix_millis;
        let text_match = |want: &Option<String>, have: Option<&str>| {
            want.as_ref().is_none_or(|w| have == Some(w.as_str()))
        };
        text_match(
            &self.target_serial,
            rec.payload.target().map(|t| t.serial.as_str()),
        ) && text_match(&self.image, rec.payload.image().map(|i| i.name.as_str()))
            && text_match(&self.operator, Some(rec.meta.operator.id.as_str()))
            && self
                .result
                .as_ref()
                .is_none_or(|w| result.is_some_and(|r| r.eq_ignore_ascii_case(w)))
            && self.since.is_none_or(|s| t >= s)
            && self.until.is_none_or(|u| t < u)
    }
}

/// The header of the `show` table, widths fixed for an 80-column console:
/// SEQ, TIME (UTC), KIND, OPERATOR, RESULT, STATUS, DETAILS.
pub fn write_table_header(out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "{:>5}  {:<20}  {:<15}  {:<10}  {:<11}  {:<8}  DETAILS",
        "SEQ", "TIME (UTC)", "KIND", "OPERATOR", "RESULT", "STATUS"
    )
}

/// One row of the `show` table; an invalid record gets a second line
/// saying why.
pub fn write_table_row(vr: &VerifiedRecord, out: &mut dyn Write) -> io::Result<()> {
    let status = match vr.status {
        RecordStatus::Verified => "ok",
        RecordStatus::Invalid(_) => "INVALID",
    };
    let (time, kind, operator, details) = match &vr.record {
        Some(r) => (
            format_time(r.meta.time.unix_millis)
                .chars()
                .take(19)
                .collect::<String>()
                + if r.meta.time.clock_anomaly { "!" } else { "" },
            r.kind.name(),
            r.meta.operator.id.clone(),
            details(r),
        ),
        None => (
            String::new(),
            "?",
            String::new(),
            format!("unreadable record at offset {}", vr.offset),
        ),
    };
    writeln!(
        out,
        "{:>5}  {:<20}  {:<15}  {:<10}  {:<11}  {:<8}  {}",
        vr.seq,
        time,
        kind,
        operator,
        restore_result(vr).unwrap_or("-"),
        status,
        details
    )?;
    if let RecordStatus::Invalid(reason) = &vr.status {
        writeln!(out, "       ^ INVALID: {reason}")?;
    }
    Ok(())
}

/// A record as one JSON object: `{"seq", "offset", "status", "problem",
/// "result", "interrupted", "time", "record"}`; `status` is `verified` or
/// `invalid`, and `problem` says why.
pub fn row_json(vr: &VerifiedRecord) -> serde_json::Value {
    let (status, problem) = status_fields(vr);
    serde_json::json!({
        "seq": vr.seq,
        "offset": vr.offset,
        "status": status,
        "problem": problem,
        "result": restore_result(vr),
        "interrupted": vr.interrupted,
        "time": vr.record.as_ref().map(|r| format_time(r.meta.time.unix_millis)),
        "record": vr.record,
    })
}

/// The CSV columns of `export --format csv`.
pub const CSV_COLUMNS: &[&str] = &[
    "seq",
    "time_utc",
    "clock_anomaly",
    "kind",
    "operator_id",
    "operator_name",
    "image_name",
    "image_version",
    "manifest_digest",
    "target_serial",
    "target_model",
    "result",
    "bytes_written",
    "readback_digest",
    "details",
    "status",
    "problem",
];

/// The header row of the RFC 4180 CSV export.
pub fn write_csv_header(out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{}", CSV_COLUMNS.join(","))
}

/// One CSV row per record, damaged ones included (`status` `invalid`).
pub fn write_csv_row(vr: &VerifiedRecord, out: &mut dyn Write) -> io::Result<()> {
    let (status, problem) = status_fields(vr);
    let r = vr.record.as_ref();
    let image = r.and_then(|r| r.payload.image());
    let target = r.and_then(|r| r.payload.target());
    let finished = r.and_then(|r| match &r.payload {
        Payload::RestoreFinished(f) => Some(f),
        _ => None,
    });
    let fields = [
        vr.seq.to_string(),
        r.map(|r| format_time(r.meta.time.unix_millis))
            .unwrap_or_default(),
        r.map(|r| r.meta.time.clock_anomaly.to_string())
            .unwrap_or_default(),
        r.map(|r| r.kind.name().to_string()).unwrap_or_default(),
        r.map(|r| r.meta.operator.id.clone()).unwrap_or_default(),
        r.and_then(|r| r.meta.operator.name.clone())
            .unwrap_or_default(),
        image.map(|i| i.name.clone()).unwrap_or_default(),
        image.map(|i| i.version.clone()).unwrap_or_default(),
        image
            .map(|i| i.manifest_digest.to_hex())
            .unwrap_or_default(),
        target.map(|t| t.serial.clone()).unwrap_or_default(),
        target.map(|t| t.model.clone()).unwrap_or_default(),
        restore_result(vr).unwrap_or_default().to_string(),
        finished
            .map(|f| f.bytes_written.to_string())
            .unwrap_or_default(),
        finished
            .and_then(|f| f.readback_digest)
            .map(|d| d.to_hex())
            .unwrap_or_default(),
        r.map(details).unwrap_or_default(),
        status.to_string(),
        problem.unwrap_or_default(),
    ];
    let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    writeln!(out, "{}", line.join(","))
}

fn status_fields(vr: &VerifiedRecord) -> (&'static str, Option<String>) {
    match &vr.status {
        RecordStatus::Verified => ("verified", None),
        RecordStatus::Invalid(reason) => ("invalid", Some(reason.clone())),
    }
}

fn csv_field(f: &str) -> String {
    if f.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", f.replace('"', "\"\""))
    } else {
        f.to_string()
    }
}

/// A short human description of a record's payload.
fn details(r: &Record) -> String {
    match &r.payload {
        // The key id every other place prints, not a prefix of the key.
        Payload::LogCreated { public_key } => format!(
            "appliance {} key {}",
            r.meta.appliance_id,
            PublicKey::from_bytes(public_key.0)
                .map_or_else(|_| public_key.to_hex(), |k| k.key_id())
        ),
        Payload::RestoreStarted(s) => {
            let mut d = format!(
                "{} {} -> {}",
                s.image.name,
                s.image.version,
                target_label(&s.target)
            );
            // Version 1 records did not say; their defaults would be a guess.
            if r.body_version >= 2 {
                d.push_str(&format!(
                    ", {} restore, unmapped {}",
                    s.mode.describe(),
                    s.unmapped.word()
                ));
                if let Some(meaning) = &s.meaning {
                    d.push_str(&format!(", meaning: {meaning}"));
                }
                if let Some(reason) = &s.reason {
                    d.push_str(&format!(", work order: {reason}"));
                }
            }
            d
        }
        Payload::RestoreFinished(f) => {
            let mut d = format!(
                "{} {} -> {}, {} bytes (started at {})",
                f.image.name,
                f.image.version,
                target_label(&f.target),
                f.bytes_written,
                f.started_seq
            );
            if r.body_version >= 2 {
                d.push_str(&format!(", {} bytes already correct", f.bytes_skipped));
            }
            if let RestoreOutcome::Failed { chunk, reason } = &f.outcome {
                match chunk {
                    Some(c) => d.push_str(&format!(": chunk {c}: {reason}")),
                    None => d.push_str(&format!(": {reason}")),
                }
            }
            d
        }
        Payload::ImageVerified { image, result } => {
            format!("{} {}: {:?}", image.name, image.version, result)
        }
        Payload::DiskChecked { target, result } => {
            format!("{}: {:?}", target_label(target), result)
        }
        Payload::Recovered {
            offset,
            length,
            quarantine_file,
            ..
        } => format!("torn tail of {length} bytes at offset {offset} moved to {quarantine_file}"),
        Payload::OperatorNote { text } => text.replace(['\n', '\r'], " "),
        Payload::SignInFailed(f) => format!(
            "sign-in of {} failed (attempt {}){}",
            f.operator_id,
            f.attempt,
            if f.locked { ", operator locked" } else { "" }
        ),
        Payload::SignedIn(o) => format!("{} signed in after failed sign-ins", o.operator_id),
        Payload::OperatorUnlocked(o) => format!(
            "operator {} unlocked by {}",
            o.operator_id, r.meta.operator.id
        ),
    }
}

/// The target's path, with its model and serial when it reported them
/// (files and loop devices report none).
pub fn target_label(t: &TargetRef) -> String {
    let mut label = t.path.clone();
    let known = |s: &str| !s.is_empty() && s != "-";
    if known(&t.model) {
        label.push_str(&format!(" {}", t.model));
    }
    if known(&t.serial) {
        label.push_str(&format!(" serial {}", t.serial));
    }
    label
}
