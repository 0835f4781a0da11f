//! Reviewing a verified log: filters, the `show` table and the exports.
//! Everything here reads a [`Report`], so every row carries the
//! verification status of its record.

use std::collections::HashMap;
use std::io::{self, Write};

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime, Time};

use super::record::{Payload, Record, RestoreOutcome};
use super::verify::{RecordStatus, Report, VerifiedRecord};

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

/// The restore result of each `RestoreStarted`, by its sequence number.
fn outcomes(report: &Report) -> HashMap<u64, &RestoreOutcome> {
    report
        .records
        .iter()
        .filter_map(|r| match &r.record.as_ref()?.payload {
            Payload::RestoreFinished(f) => Some((f.started_seq, &f.outcome)),
            _ => None,
        })
        .collect()
}

/// "success", "failed", "cancelled" or "INTERRUPTED" for restore records.
fn restore_result(
    vr: &VerifiedRecord,
    outcomes: &HashMap<u64, &RestoreOutcome>,
) -> Option<&'static str> {
    match &vr.record.as_ref()?.payload {
        Payload::RestoreStarted(_) => {
            Some(outcomes.get(&vr.seq).map_or("INTERRUPTED", |o| o.word()))
        }
        Payload::RestoreFinished(f) => Some(f.outcome.word()),
        _ => None,
    }
}

impl Filter {
    fn keeps(&self, vr: &VerifiedRecord, result: Option<&str>) -> bool {
        let Some(rec) = &vr.record else {
            // Undecodable records are always shown: they are the news.
            return true;
        };
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

/// The `show` table, one line per record, widths fixed for an 80-column
/// console: SEQ, TIME (UTC), KIND, OPERATOR, RESULT, STATUS, DETAILS.
pub fn write_table(report: &Report, filter: &Filter, out: &mut dyn Write) -> io::Result<usize> {
    let outcomes = outcomes(report);
    writeln!(
        out,
        "{:>5}  {:<20}  {:<15}  {:<10}  {:<11}  {:<8}  DETAILS",
        "SEQ", "TIME (UTC)", "KIND", "OPERATOR", "RESULT", "STATUS"
    )?;
    let mut shown = 0;
    for vr in &report.records {
        let result = restore_result(vr, &outcomes);
        if !filter.keeps(vr, result) {
            continue;
        }
        shown += 1;
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
            None => (String::new(), "?", String::new(), String::new()),
        };
        writeln!(
            out,
            "{:>5}  {:<20}  {:<15}  {:<10}  {:<11}  {:<8}  {}",
            vr.seq,
            time,
            kind,
            operator,
            result.unwrap_or("-"),
            status,
            details
        )?;
        if let RecordStatus::Invalid(reason) = &vr.status {
            writeln!(out, "       ^ {reason}")?;
        }
    }
    Ok(shown)
}

/// One line per record: `{"seq", "offset", "status", "problem", "result",
/// "interrupted", "record"}`.
pub fn write_jsonl(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    let outcomes = outcomes(report);
    for vr in &report.records {
        let (status, problem) = status_fields(vr);
        let line = serde_json::json!({
            "seq": vr.seq,
            "offset": vr.offset,
            "status": status,
            "problem": problem,
            "result": restore_result(vr, &outcomes),
            "interrupted": vr.interrupted,
            "time": vr.record.as_ref().map(|r| format_time(r.meta.time.unix_millis)),
            "record": vr.record,
        });
        writeln!(out, "{line}")?;
    }
    Ok(())
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

/// RFC 4180 CSV with a header row.
pub fn write_csv(report: &Report, out: &mut dyn Write) -> io::Result<()> {
    writeln!(out, "{}", CSV_COLUMNS.join(","))?;
    let outcomes = outcomes(report);
    for vr in &report.records {
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
            restore_result(vr, &outcomes)
                .unwrap_or_default()
                .to_string(),
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
        writeln!(out, "{}", line.join(","))?;
    }
    Ok(())
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
        Payload::LogCreated { public_key } => format!(
            "appliance {} key {}",
            r.meta.appliance_id,
            &public_key.to_hex()[..16]
        ),
        Payload::RestoreStarted(s) => {
            let mut d = format!(
                "{} {} -> {} serial {}",
                s.image.name, s.image.version, s.target.model, s.target.serial
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
                    d.push_str(&format!(", reason: {reason}"));
                }
            }
            d
        }
        Payload::RestoreFinished(f) => {
            let mut d = format!(
                "{} {} -> serial {}, {} bytes (started at {})",
                f.image.name, f.image.version, f.target.serial, f.bytes_written, f.started_seq
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
            format!("serial {}: {:?}", target.serial, result)
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
    }
}
