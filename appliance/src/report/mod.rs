//! Printable true copies of the audit log (21 CFR 11.10(b), EU GMP Annex 11
//! §8): the one-page restore certificate of one restore, and the review of
//! a period with its exceptions first. Both read a verified [`Report`].

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::audit::layout::{read_frame, FileSource};
use crate::audit::query::{format_time, target_label};
use crate::audit::{
    AuditError, Checkpoint, LogEnd, Payload, Record, RecordStatus, Report, RestoreFinished,
    RestoreOutcome, RestoreStarted, Summary, VerifiedRecord,
};
use crate::exit::ExitClass;
use reliquary_image::keys::PublicKey;

pub mod pdf;

use pdf::{Layout, PdfError};

/// Why a report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("the audit log {path} has no record {seq}")]
    NoRecord { path: PathBuf, seq: u64 },
    #[error("record {seq} of {path} is a {kind}, not a restore record (RestoreStarted or RestoreFinished)")]
    NotARestore {
        path: PathBuf,
        seq: u64,
        kind: &'static str,
    },
    #[error("record {seq} of {path} did not verify ({reason}); a certificate is only issued for a verified record")]
    Unverified {
        path: PathBuf,
        seq: u64,
        reason: String,
    },
    #[error("cannot read record {seq} from {path}: {reason}")]
    Frame {
        path: PathBuf,
        seq: u64,
        reason: String,
    },
    #[error(transparent)]
    Pdf(#[from] PdfError),
}

impl ReportError {
    pub fn exit_class(&self) -> ExitClass {
        match self {
            ReportError::NoRecord { .. } | ReportError::NotARestore { .. } => ExitClass::Usage,
            ReportError::Unverified { .. } => ExitClass::Integrity,
            ReportError::Frame { .. } | ReportError::Pdf(_) => ExitClass::Runtime,
        }
    }
}

/// The signed checkpoint to print, or the unsigned one computed from the
/// verified log when no signed note covers the record.
#[derive(Debug, Clone)]
pub struct CheckpointText {
    /// The note text (a signed note, or the bare body).
    pub note: String,
    pub signed: bool,
    pub short_form: String,
}

impl CheckpointText {
    /// The note in `note_path` when it verifies and covers record `seq`,
    /// otherwise the body of the log's current checkpoint, unsigned.
    pub fn for_record(report: &Report, seq: u64, note_path: &Path, key: &PublicKey) -> Self {
        if let Ok(text) = std::fs::read_to_string(note_path) {
            if let Ok(cp) = Checkpoint::parse_verified(&text, key) {
                if cp.size > seq && cp.size <= report.size {
                    return Self {
                        short_form: cp.short_form(),
                        note: text,
                        signed: true,
                    };
                }
            }
        }
        let cp = Checkpoint {
            origin: report.origin.clone().unwrap_or_default(),
            size: report.size,
            root: report.root,
        };
        Self {
            short_form: cp.short_form(),
            note: cp.body(),
            signed: false,
        }
    }
}

impl CheckpointText {
    /// The note in `note_path` when it verifies and is the checkpoint of
    /// the whole verified log, otherwise the log's checkpoint unsigned.
    pub fn for_log(summary: &Summary, note_path: &Path, key: &PublicKey) -> Self {
        let cp = Checkpoint {
            origin: summary.origin.clone().unwrap_or_default(),
            size: summary.size,
            root: summary.root,
        };
        if let Ok(text) = std::fs::read_to_string(note_path) {
            if Checkpoint::parse_verified(&text, key).is_ok_and(|signed| signed == cp) {
                return Self {
                    short_form: cp.short_form(),
                    note: text,
                    signed: true,
                };
            }
        }
        Self {
            short_form: cp.short_form(),
            note: cp.body(),
            signed: false,
        }
    }
}

/// Records a certificate keeps while reading the log.
const MAX_KEPT: usize = 16;

/// The certificate of the restore that record `seq` of the log in `dir`
/// starts or finishes, refused when the log does not verify. The log is
/// read a record at a time (twice when `seq` finishes a restore), keeping
/// only the restore's two records, so memory stays flat whatever its size.
pub fn certificate_for(dir: &Path, key: &PublicKey, seq: u64) -> Result<Vec<u8>, CertificateError> {
    let keep = |wanted: &dyn Fn(&VerifiedRecord) -> bool| -> Result<Report, CertificateError> {
        let mut kept = Vec::new();
        let summary = crate::audit::verify_dir_each(dir, key, None, &mut |vr| {
            // A restore has two records; more that match are forged
            // copies, and are not kept.
            if wanted(&vr)
                && kept.len() < MAX_KEPT
                && !kept.iter().any(|k: &VerifiedRecord| k.seq == vr.seq)
            {
                kept.push(vr);
            }
            Ok(())
        })?;
        if let Some(problem) = summary.first_problem() {
            return Err(CertificateError::Log(AuditError::Verification {
                path: summary.path.clone(),
                problem: problem.clone(),
            }));
        }
        Ok(Report::from_parts(summary, kept))
    };
    let finishes = |started: u64| {
        move |vr: &VerifiedRecord| {
            vr.record.as_ref().is_some_and(
                |r| matches!(&r.payload, Payload::RestoreFinished(f) if f.started_seq == started),
            )
        }
    };
    let first = keep(&|vr| vr.seq == seq || finishes(seq)(vr))?;
    let started_seq = first
        .records
        .iter()
        .find(|vr| vr.seq == seq)
        .and_then(|vr| match &vr.record.as_ref()?.payload {
            Payload::RestoreFinished(f) => Some(f.started_seq),
            _ => None,
        });
    let report = match started_seq {
        Some(started) if started != seq => {
            keep(&|vr| vr.seq == started || vr.seq == seq || finishes(started)(vr))?
        }
        _ => first,
    };
    let checkpoint =
        CheckpointText::for_record(&report, seq, &dir.join(crate::audit::CHECKPOINT_FILE), key);
    Ok(certificate(&report, seq, &checkpoint)?)
}

/// The pair of records of one restore.
#[derive(Debug)]
pub struct Restore<'a> {
    pub started: Option<(&'a VerifiedRecord, &'a Record, &'a RestoreStarted)>,
    pub finished: Option<(&'a VerifiedRecord, &'a Record, &'a RestoreFinished)>,
}

impl<'a> Restore<'a> {
    /// Finds the restore that record `seq` starts or finishes.
    pub fn find(report: &'a Report, seq: u64) -> Result<Self, ReportError> {
        let vr = report
            .records
            .iter()
            .find(|r| r.seq == seq)
            .ok_or_else(|| ReportError::NoRecord {
                path: report.path.clone(),
                seq,
            })?;
        if let RecordStatus::Invalid(reason) = &vr.status {
            return Err(ReportError::Unverified {
                path: report.path.clone(),
                seq,
                reason: reason.clone(),
            });
        }
        let rec = vr.record.as_ref().ok_or_else(|| ReportError::Unverified {
            path: report.path.clone(),
            seq,
            reason: "its body does not decode".into(),
        })?;
        let started_seq = match &rec.payload {
            Payload::RestoreStarted(_) => seq,
            Payload::RestoreFinished(f) => f.started_seq,
            _ => {
                return Err(ReportError::NotARestore {
                    path: report.path.clone(),
                    seq,
                    kind: rec.kind.name(),
                })
            }
        };
        let verified = |r: &&VerifiedRecord| r.status == RecordStatus::Verified;
        let started = report
            .records
            .iter()
            .filter(verified)
            .find(|r| r.seq == started_seq)
            .and_then(|vr| {
                let rec = vr.record.as_ref()?;
                match &rec.payload {
                    Payload::RestoreStarted(s) => Some((vr, rec, s)),
                    _ => None,
                }
            });
        let finished = report.records.iter().filter(verified).find_map(|vr| {
            let rec = vr.record.as_ref()?;
            match &rec.payload {
                Payload::RestoreFinished(f) if f.started_seq == started_seq => Some((vr, rec, f)),
                _ => None,
            }
        });
        Ok(Self { started, finished })
    }

    /// "success", "failed", "cancelled" or "INTERRUPTED".
    pub fn result(&self) -> &'static str {
        self.finished
            .map_or("INTERRUPTED", |(_, _, f)| f.outcome.word())
    }
}

/// Writes the certificate of record `seq` of the audit log in `dir` to
/// `dir/certificate-SEQ.pdf`, as the stick's result screen does, and
/// returns its path. The log must verify against its own public key.
pub fn write_certificate(dir: &Path, seq: u64) -> Result<PathBuf, CertificateError> {
    let key_path = dir.join(crate::audit::PUBLIC_KEY_FILE);
    let (key, _) = reliquary_image::keys::PublicKey::load(&key_path)
        .map_err(|e| CertificateError::Key(e.to_string()))?;
    let pdf = certificate_for(dir, &key, seq)?;
    let path = dir.join(format!("certificate-{seq}.pdf"));
    let written = std::fs::File::create(&path).and_then(|mut file| {
        std::io::Write::write_all(&mut file, &pdf)?;
        file.sync_all()
    });
    written.map_err(|source| CertificateError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Why [`write_certificate`] wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error("cannot load the appliance's public key: {0}")]
    Key(String),
    #[error(transparent)]
    Log(#[from] crate::audit::AuditError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The one-page restore certificate of the restore that record `seq`
/// starts or finishes.
pub fn certificate(
    report: &Report,
    seq: u64,
    checkpoint: &CheckpointText,
) -> Result<Vec<u8>, ReportError> {
    let restore = Restore::find(report, seq)?;
    let (main_vr, main_rec, image, target) = match (restore.started, restore.finished) {
        (_, Some((vr, rec, f))) => (vr, rec, &f.image, &f.target),
        (Some((vr, rec, s)), None) => (vr, rec, &s.image, &s.target),
        (None, None) => {
            return Err(ReportError::NoRecord {
                path: report.path.clone(),
                seq,
            })
        }
    };
    let started_rec = restore.started.map(|(_, rec, _)| rec);

    let succeeded = restore
        .finished
        .is_some_and(|(_, _, f)| f.outcome == RestoreOutcome::Success);
    let mut doc = if succeeded {
        let mut doc = Layout::new("Reliquary restore certificate")?;
        doc.title("Restore certificate");
        doc
    } else {
        let mut doc = Layout::new("Reliquary restore certificate: RESTORE FAILED")?;
        doc.title("RESTORE FAILED");
        doc.banner(&format!("The target disk is {}.", disk_state(&restore)));
        doc
    };
    doc.paragraph(&format!(
        "A true copy of the signed restore record{} of the audit log {} ({}).",
        match (restore.started, restore.finished) {
            (Some((s, _, _)), Some((f, _, _))) => format!("s {} and {}", s.seq, f.seq),
            (_, _) => format!(" {}", main_vr.seq),
        },
        report.origin.as_deref().unwrap_or("of unknown origin"),
        report.path.display()
    ));

    doc.heading("Image");
    doc.field("Name", &image.name);
    doc.field("Version", &image.version);
    doc.field("Image id", &image.uuid);
    doc.field("Manifest digest", &image.manifest_digest.to_hex());
    if image.signers.is_empty() {
        doc.field("Signers", "none recorded");
    }
    for (i, s) in image.signers.iter().enumerate() {
        let label = if i == 0 { "Signers" } else { "" };
        let when = s.signed_unix.map_or_else(
            || "time not recorded".to_string(),
            |t| {
                format!(
                    "signed {}",
                    crate::audit::query::format_time(t.saturating_mul(1000))
                )
            },
        );
        doc.field(
            label,
            &format!("{}: {}, {when} (key {})", s.name, s.meaning, s.key_id),
        );
    }

    doc.heading("Target disk");
    doc.field("Path", &target.path);
    doc.field("Model", or_none(&target.model));
    doc.field("Serial", or_none(&target.serial));
    if let Some(wwn) = &target.wwn {
        doc.field("WWN", wwn);
    }
    doc.field(
        "Size",
        &format!(
            "{} bytes ({})",
            target.size_bytes,
            binary_size(target.size_bytes)
        ),
    );
    doc.field(
        "Sector sizes",
        &format!(
            "logical {} B, physical {} B",
            target.logical_sector_size, target.physical_sector_size
        ),
    );

    doc.heading("Operator and time");
    let operator = &started_rec.unwrap_or(main_rec).meta.operator;
    doc.field(
        "Operator",
        operator.name.as_deref().unwrap_or("not recorded"),
    );
    doc.field("Operator id", &operator.id);
    match restore.started {
        Some((_, rec, s)) if rec.body_version >= 2 => {
            doc.field("Meaning", s.meaning.as_deref().unwrap_or("not given"));
            doc.field(WORK_ORDER, s.reason.as_deref().unwrap_or("not given"));
            doc.field(
                "Restore",
                &format!(
                    "{}, unmapped extents {}",
                    s.mode.describe(),
                    s.unmapped.word()
                ),
            );
        }
        _ => {
            let why = "not recorded (audit record version 1)";
            doc.field("Meaning", why);
            doc.field(WORK_ORDER, why);
        }
    }
    if let Some(rec) = started_rec {
        doc.field("Started", &format_time(rec.meta.time.unix_millis));
    }
    if let Some((_, rec, _)) = restore.finished {
        doc.field("Finished", &format_time(rec.meta.time.unix_millis));
    }
    doc.field(
        "Clock source",
        &clock_source(started_rec.unwrap_or(main_rec)),
    );

    doc.heading("Result");
    doc.field(
        "Result",
        &if succeeded {
            restore.result().to_string()
        } else {
            format!("RESTORE FAILED ({})", restore.result())
        },
    );
    doc.field("Disk state", disk_state(&restore));
    if let Some((_, _, f)) = restore.finished {
        if let RestoreOutcome::Failed { chunk, reason } = &f.outcome {
            let at = chunk.map(|c| format!("chunk {c}: ")).unwrap_or_default();
            doc.field("Failure", &format!("{at}{reason}"));
        }
        doc.field("Bytes written", &f.bytes_written.to_string());
        if restore
            .finished
            .is_some_and(|(_, rec, _)| rec.body_version >= 2)
        {
            doc.field("Bytes already correct", &f.bytes_skipped.to_string());
        }
        doc.field("Stages", &stage_list(&f.stage_millis));
        doc.field(
            "Read-back digest",
            &f.readback_digest
                .map_or("not read back".into(), |d| d.to_hex()),
        );
    } else {
        doc.field(
            "Finish",
            "no RestoreFinished record: the restore was interrupted (power loss or a crash); the disk must be restored again",
        );
    }

    doc.heading("Stick and record");
    doc.field("Stick id", &main_rec.meta.appliance_id);
    doc.field("Software version", &main_rec.meta.software_version);
    doc.field("Boot id", &main_rec.meta.boot_id);
    if let Some(d) = &main_rec.meta.trust_store_digest {
        doc.field("Trust store digest", &d.to_hex());
    }

    for vr in [restore.started.map(|r| r.0), restore.finished.map(|r| r.0)]
        .into_iter()
        .flatten()
    {
        let (hash, signature) = frame_hash_and_signature(&report.path, vr)?;
        let kind = vr.record.as_ref().map_or("?", |r| r.kind.name());
        doc.field(&format!("Sequence {}", vr.seq), kind);
        doc.field("Record hash", &hash);
        doc.field("Signature", &signature[..64]);
        doc.field("", &signature[64..]);
    }
    doc.field(
        "Verified",
        &format!("every record verified with appliance key {}", report.key_id),
    );

    doc.heading("Checkpoint and how to verify");
    let lines: Vec<String> = checkpoint.note.lines().map(str::to_string).collect();
    doc.exact_lines(&lines);
    let dir = report
        .path
        .parent()
        .map_or_else(|| ".".into(), |p| p.display().to_string());
    let explanation = [
        format!(
            "Checkpoint {}; short form {}. The lines above are the whole note, each on one line{}.",
            if checkpoint.signed {
                "signed by the appliance"
            } else {
                "unsigned: computed from the verified log, no signed checkpoint covers this record"
            },
            checkpoint.short_form,
            if checkpoint.signed {
                "; the QR code holds the same note"
            } else {
                ""
            }
        ),
        format!(
            "How to verify: copy the lines into a file (or scan the QR code with zbarimg --raw) and run \
             reliquary audit verify --dir {dir} --key {} --checkpoint FILE. It checks every record's \
             signature and hash chain and that the log extends this checkpoint; LF or CRLF line ends and \
             a missing or extra final newline do not matter. Then reliquary audit show --dir {dir} lists record {}.",
            Path::new(&dir).join(crate::audit::PUBLIC_KEY_FILE).display(),
            main_vr.seq
        ),
    ];
    if checkpoint.signed {
        doc.text_with_qr(&explanation, &checkpoint.note, 110.0);
    } else {
        // A QR code of an unsigned note would scan to something no
        // verifier accepts.
        explanation.iter().for_each(|p| doc.paragraph(p));
    }
    Ok(doc.finish())
}

/// The label of the work order a restore was done for (the record's
/// `reason`), the same word on every paper and screen.
pub const WORK_ORDER: &str = "Work order";

/// What the target disk holds after the restore, in words.
fn disk_state(restore: &Restore<'_>) -> &'static str {
    match restore.finished.map(|(_, _, f)| &f.outcome) {
        Some(RestoreOutcome::Success) => "restored and read back",
        Some(_) => "wiped and will not boot; restore it again",
        None => {
            "partly written and will not boot (its first sector is written last); restore it again"
        }
    }
}

/// The stages with their times: "wiping 0.1 s, writing 3.2 s, ...".
pub fn stage_list(stages: &[(String, u64)]) -> String {
    stages
        .iter()
        .map(|(stage, ms)| format!("{stage} {:.1} s", *ms as f64 / 1000.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Failed sign-ins in a row by one operator from which the review lists
/// them as an exception even without a lockout.
pub const REPEATED_SIGN_IN_FAILURES: u32 = 3;
/// Characters of an operator note the review prints; the export has all.
const REVIEW_NOTE_CHARS: usize = 200;

/// What the review of a period says about where it came from.
#[derive(Debug, Clone)]
pub struct ReviewProvenance {
    /// When the review was made, Unix milliseconds.
    pub generated_unix_millis: i64,
    /// The signed checkpoint that covers the whole log, if the log's own
    /// checkpoint file does; otherwise the unsigned one computed here.
    pub checkpoint: CheckpointText,
}

/// The review of the records from `since` (inclusive) to `until`
/// (exclusive), Unix milliseconds, of the log in `dir`: its provenance,
/// the exceptions first, then every record, damaged ones included. The log
/// is read twice, a record at a time, so memory stays flat whatever its
/// size. Returns the PDF and what verification found: a review is written
/// for a log that does not verify too (it says so first), and the caller
/// decides the exit code.
pub fn review_log(
    dir: &Path,
    key: &PublicKey,
    since: Option<i64>,
    until: Option<i64>,
    generated_unix_millis: i64,
) -> Result<(Vec<u8>, Summary), CertificateError> {
    let in_period = |vr: &VerifiedRecord| {
        vr.record.as_ref().is_none_or(|r| {
            let t = r.meta.time.unix_millis;
            since.is_none_or(|s| t >= s) && until.is_none_or(|u| t < u)
        })
    };
    let mut exceptions = Exceptions::default();
    let mut in_period_count = 0u64;
    let summary = crate::audit::verify_dir_each(dir, key, None, &mut |vr| {
        if in_period(&vr) {
            in_period_count += 1;
            exceptions.add(&vr);
        }
        Ok(())
    })?;
    let exceptions = exceptions.finish();
    let checkpoint =
        CheckpointText::for_log(&summary, &dir.join(crate::audit::CHECKPOINT_FILE), key);
    let provenance = ReviewProvenance {
        generated_unix_millis,
        checkpoint,
    };

    let period = format!(
        "{} to {}",
        since.map_or("the first record".into(), format_time),
        until.map_or("the last record".into(), format_time)
    );
    let mut doc = Layout::new("Reliquary audit review").map_err(ReportError::from)?;
    doc.title("Audit review");
    if let Some(problem) = summary.first_problem() {
        doc.banner(&format!(
            "THE LOG DOES NOT VERIFY: {} problem(s); the first: {problem}",
            summary.problem_count
        ));
    }
    doc.field("Log", &summary.path.display().to_string());
    doc.field("Origin", summary.origin.as_deref().unwrap_or("unknown"));
    doc.field("Appliance key", &summary.key_id);
    doc.field(
        "Log size",
        &format!(
            "{} bytes, {} records ({} valid before the first problem)",
            summary.log_bytes, summary.records, summary.size
        ),
    );
    doc.field("Root hash", &summary.root.to_hex());
    doc.field("Period", &period);
    doc.field(
        "Records",
        &format!(
            "{in_period_count} in the period, {} in the log",
            summary.records
        ),
    );
    doc.field(
        "Log verification",
        &match summary.first_problem() {
            None => "every record verified".to_string(),
            Some(p) => format!("FAILED ({} problems): {p}", summary.problem_count),
        },
    );
    doc.field(
        "Generated",
        &format!(
            "{} by reliquary {}",
            format_time(provenance.generated_unix_millis),
            env!("CARGO_PKG_VERSION")
        ),
    );

    doc.heading(&format!("Exceptions ({})", exceptions.len()));
    if exceptions.is_empty() {
        doc.paragraph(
            "None: no failed, cancelled or interrupted restore, no locked or repeated failed sign-in, no invalid record, no recovered tail and no clock anomaly.",
        );
    }
    for (seq, text) in &exceptions {
        doc.field(&format!("Record {seq}"), text);
    }
    if let LogEnd::TornTail { offset, len } = summary.end {
        doc.field(
            "Log end",
            &format!("a torn append of {len} bytes at offset {offset}"),
        );
    }

    doc.heading("All records");
    crate::audit::verify_dir_each(dir, key, None, &mut |vr| {
        if in_period(&vr) {
            let label = format!(
                "{} {}",
                vr.seq,
                vr.record.as_ref().map_or("?", |r| r.kind.name())
            );
            doc.field(&label, &summary_line(&vr));
        }
        Ok(())
    })?;

    doc.heading("Checkpoint of the reviewed log");
    doc.paragraph(&format!(
        "Checkpoint {}; short form {}.",
        if provenance.checkpoint.signed {
            "signed by the appliance"
        } else {
            "unsigned: computed from the verified log"
        },
        provenance.checkpoint.short_form
    ));
    let lines: Vec<String> = provenance
        .checkpoint
        .note
        .lines()
        .map(str::to_string)
        .collect();
    doc.exact_lines(&lines);
    if provenance.checkpoint.signed {
        doc.text_with_qr(&[], &provenance.checkpoint.note, 90.0);
    }
    let dir_text = dir.display().to_string();
    doc.paragraph(&format!(
        "Verify this copy against the log with: reliquary audit verify --dir {dir_text} --key {}{}",
        dir.join(crate::audit::PUBLIC_KEY_FILE).display(),
        if provenance.checkpoint.signed {
            " --checkpoint FILE (the checkpoint above)"
        } else {
            ""
        }
    ));

    doc.heading("Review");
    doc.gap(4.0);
    for label in ["Reviewer name", "Signature", "Date", "Meaning"] {
        doc.field(label, "______________________________________________");
        doc.gap(8.0);
    }
    Ok((doc.finish(), summary))
}

/// The exceptions of a review, gathered a record at a time. Failed
/// sign-ins in a row by one operator are one exception: a lockout once,
/// a run of at least [`REPEATED_SIGN_IN_FAILURES`] without one once.
#[derive(Debug, Default)]
struct Exceptions {
    found: Vec<(u64, String)>,
    /// Per operator id: the open run of failed sign-ins.
    runs: std::collections::HashMap<String, SignInRun>,
}

#[derive(Debug)]
struct SignInRun {
    first_seq: u64,
    last_seq: u64,
    failures: u32,
    /// The record and attempt that locked the operator out.
    locked_at: Option<(u64, u32)>,
}

impl Exceptions {
    fn add(&mut self, vr: &VerifiedRecord) {
        if let Some(Record {
            payload: Payload::SignInFailed(f),
            ..
        }) = &vr.record
        {
            if vr.status == RecordStatus::Verified {
                // The attempt counter restarts at 1 after a good sign-in.
                let continues = f.attempt > 1 && self.runs.contains_key(&f.operator_id);
                if !continues {
                    if let Some(run) = self.runs.remove(&f.operator_id) {
                        self.close(&f.operator_id, run);
                    }
                }
                let run = self.runs.entry(f.operator_id.clone()).or_insert(SignInRun {
                    first_seq: vr.seq,
                    last_seq: vr.seq,
                    failures: 0,
                    locked_at: None,
                });
                run.last_seq = vr.seq;
                run.failures += 1;
                if f.locked && run.locked_at.is_none() {
                    run.locked_at = Some((vr.seq, f.attempt));
                }
                return;
            }
        }
        if let Some(found) = exception(vr) {
            self.found.push(found);
        }
    }

    fn close(&mut self, operator: &str, run: SignInRun) {
        let records = if run.first_seq == run.last_seq {
            format!("record {}", run.first_seq)
        } else {
            format!("records {} to {}", run.first_seq, run.last_seq)
        };
        let text = if let Some((seq, attempt)) = run.locked_at {
            format!(
                "LOCKED: operator {operator} was locked out after {attempt} failed sign-ins (record {seq}); {} failed in a row ({records})",
                run.failures
            )
        } else if run.failures >= REPEATED_SIGN_IN_FAILURES {
            format!(
                "REPEATED FAILED SIGN-INS: operator {operator} failed {} times in a row ({records})",
                run.failures
            )
        } else {
            return;
        };
        self.found.push((run.first_seq, text));
    }

    /// Every exception, in record order.
    fn finish(mut self) -> Vec<(u64, String)> {
        let runs: Vec<(String, SignInRun)> = self.runs.drain().collect();
        for (operator, run) in runs {
            self.close(&operator, run);
        }
        self.found.sort_by_key(|(seq, _)| *seq);
        self.found
    }
}

/// Why a record is an exception, if it is one (sign-ins aside: see
/// [`Exceptions`]).
fn exception(vr: &VerifiedRecord) -> Option<(u64, String)> {
    if let RecordStatus::Invalid(reason) = &vr.status {
        return Some((vr.seq, format!("INVALID: {reason}")));
    }
    let rec = vr.record.as_ref()?;
    let text = match &rec.payload {
        Payload::RestoreStarted(s) if vr.interrupted => format!(
            "INTERRUPTED restore of {} {} onto {} by {}",
            s.image.name,
            s.image.version,
            target_label(&s.target),
            rec.meta.operator.id
        ),
        Payload::RestoreFinished(f) if f.outcome != RestoreOutcome::Success => format!(
            "{} restore of {} {} onto {} by {}{}",
            f.outcome.word().to_uppercase(),
            f.image.name,
            f.image.version,
            target_label(&f.target),
            rec.meta.operator.id,
            match &f.outcome {
                RestoreOutcome::Failed { reason, .. } => format!(": {reason}"),
                _ => String::new(),
            }
        ),
        Payload::Recovered { offset, length, .. } => {
            format!("RECOVERED torn tail of {length} bytes at offset {offset}")
        }
        Payload::OperatorUnlocked(o) => format!(
            "UNLOCKED: operator {} was unlocked by {}",
            o.operator_id, rec.meta.operator.id
        ),
        _ if rec.meta.time.clock_anomaly => format!(
            "CLOCK: the real-time clock read {}, below the floor; the floor was recorded",
            format_time(rec.meta.time.rtc_unix_millis)
        ),
        _ => return None,
    };
    Some((vr.seq, text))
}

/// One line per record for the review.
fn summary_line(vr: &VerifiedRecord) -> String {
    let invalid = match &vr.status {
        RecordStatus::Invalid(reason) => format!("INVALID: {reason}"),
        RecordStatus::Verified => String::new(),
    };
    let Some(rec) = &vr.record else {
        return format!("unreadable record at offset {}; {invalid}", vr.offset);
    };
    let when = format_time(rec.meta.time.unix_millis);
    let what = match &rec.payload {
        Payload::RestoreStarted(s) => format!(
            "{} {} onto {}{}{}",
            s.image.name,
            s.image.version,
            target_label(&s.target),
            s.reason
                .as_deref()
                .map(|r| format!(", work order: {r}"))
                .unwrap_or_default(),
            if vr.interrupted { ", INTERRUPTED" } else { "" }
        ),
        Payload::RestoreFinished(f) => format!(
            "{}: {} {} onto {} (started at {})",
            f.outcome.word(),
            f.image.name,
            f.image.version,
            target_label(&f.target),
            f.started_seq
        ),
        Payload::ImageVerified { image, result } => {
            format!("{} {}: {result:?}", image.name, image.version)
        }
        Payload::DiskChecked { target, result } => {
            format!("{}: {result:?}", target_label(target))
        }
        Payload::Recovered { length, offset, .. } => {
            format!("torn tail of {length} bytes at offset {offset} recovered")
        }
        Payload::OperatorNote { text } => {
            let shown: String = text.chars().take(REVIEW_NOTE_CHARS).collect();
            let more = text.chars().count().saturating_sub(REVIEW_NOTE_CHARS);
            let shown = shown.replace(['\n', '\r'], " ");
            if more > 0 {
                format!("{shown}... ({more} more characters in the export)")
            } else {
                shown
            }
        }
        Payload::LogCreated { .. } => format!("log created by {}", rec.meta.appliance_id),
        Payload::SignInFailed(f) => format!(
            "failed sign-in of {} (attempt {}){}",
            f.operator_id,
            f.attempt,
            if f.locked { ", locked" } else { "" }
        ),
        Payload::SignedIn(o) => format!("{} signed in after failed sign-ins", o.operator_id),
        Payload::OperatorUnlocked(o) => format!("unlocked operator {}", o.operator_id),
    };
    let line = format!("{when} by {}: {what}", rec.meta.operator.id);
    if invalid.is_empty() {
        line
    } else {
        format!("{line}; {invalid}")
    }
}

fn clock_source(rec: &Record) -> String {
    let t = &rec.meta.time;
    if t.clock_anomaly {
        format!(
            "software floor (the real-time clock read {}, below the floor {}; it cannot be trusted)",
            format_time(t.rtc_unix_millis),
            format_time(t.floor_unix_millis)
        )
    } else {
        "real-time clock (at or above the floor of the previous record and the software build)"
            .into()
    }
}

/// The record hash and signature of a verified record, read from its frame.
fn frame_hash_and_signature(
    log: &Path,
    vr: &VerifiedRecord,
) -> Result<(String, String), ReportError> {
    let fail = |reason: String| ReportError::Frame {
        path: log.to_path_buf(),
        seq: vr.seq,
        reason,
    };
    let file = File::open(log).map_err(|e| fail(e.to_string()))?;
    let len = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    let frame = read_frame(&FileSource { file: &file, len }, vr.offset, &mut Vec::new())
        .map_err(|e| fail(e.to_string()))?;
    if frame.preamble.seq != vr.seq {
        return Err(fail(format!(
            "the frame at offset {} now holds record {}: the log changed while reading",
            vr.offset, frame.preamble.seq
        )));
    }
    Ok((frame.record_hash.to_hex(), hex::encode(frame.signature)))
}

fn or_none(text: &str) -> &str {
    if text.is_empty() {
        "not reported"
    } else {
        text
    }
}

/// 4.0 MiB, 465.8 GiB.
fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Digest, Kind, Operator, RecordMeta, RecordTime, SignInFailed};

    fn sign_in_failed(seq: u64, operator: &str, attempt: u32, locked: bool) -> VerifiedRecord {
        VerifiedRecord {
            seq,
            offset: 4096 * (seq + 1),
            record: Some(Record {
                body_version: 2,
                seq,
                kind: Kind::SignInFailed,
                prev_hash: Digest::default(),
                meta: RecordMeta {
                    time: RecordTime {
                        unix_millis: 0,
                        rtc_unix_millis: 0,
                        floor_unix_millis: 0,
                        clock_anomaly: false,
                    },
                    boot_id: String::new(),
                    appliance_id: "line-3".into(),
                    software_version: String::new(),
                    trust_store_digest: None,
                    operator: Operator {
                        id: operator.into(),
                        name: None,
                    },
                },
                payload: Payload::SignInFailed(SignInFailed {
                    operator_id: operator.into(),
                    attempt,
                    locked,
                }),
            }),
            status: RecordStatus::Verified,
            interrupted: false,
        }
    }

    #[test]
    fn failed_sign_ins_in_a_row_are_one_exception_a_lockout_once() {
        let mut exceptions = Exceptions::default();
        let records = [
            // mallory: five failures, the fifth locks, two more while locked.
            (1, "mallory", 1, false),
            (2, "mallory", 2, false),
            (3, "eve", 1, false),
            (4, "mallory", 3, false),
            (5, "mallory", 4, false),
            (6, "mallory", 5, true),
            (7, "mallory", 6, true),
            (8, "mallory", 7, true),
            // eve: three in a row, no lockout; then a good sign-in (the
            // counter restarts) and one more failure, which is no exception.
            (9, "eve", 2, false),
            (10, "eve", 3, false),
            (11, "eve", 1, false),
            // bob: two failures are no exception.
            (12, "bob", 1, false),
            (13, "bob", 2, false),
        ];
        for (seq, operator, attempt, locked) in records {
            exceptions.add(&sign_in_failed(seq, operator, attempt, locked));
        }
        let found = exceptions.finish();
        assert_eq!(
            found,
            vec![
                (
                    1,
                    "LOCKED: operator mallory was locked out after 5 failed sign-ins (record 6); 7 failed in a row (records 1 to 8)"
                        .to_string()
                ),
                (
                    3,
                    "REPEATED FAILED SIGN-INS: operator eve failed 3 times in a row (records 3 to 10)"
                        .to_string()
                ),
            ]
        );
    }
}
