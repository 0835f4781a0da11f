//! `reliquary audit ...`: create, append to, verify and review the audit log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;

use reliquary_appliance::audit::checkpoint::verifier_key;
use reliquary_appliance::audit::query::{self, Filter};
use reliquary_appliance::audit::Clock;
use reliquary_appliance::audit::{
    verify_dir_each, AuditError, AuditLog, CheckpointStatus, Environment, LogEnd, Payload, Summary,
    PUBLIC_KEY_FILE, RESTORE_RESERVE_BYTES,
};
use reliquary_appliance::exit::ExitClass;
use reliquary_appliance::operators;
use reliquary_appliance::report;
use reliquary_image::keys::PublicKey;
use reliquary_image::TrustStore;

use super::output::{self, print_result, FileError};
use super::restore::read_pin;
use super::UsageError;

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Create the appliance key pair and a new log in DIR; prints the key
    /// fingerprint for enrolment. Never overwrites.
    #[command(
        after_help = "Example:\n  reliquary audit init --dir /media/audit --appliance-id line-3"
    )]
    Init(InitArgs),
    /// Check framing, sequence, hash chain and every signature (exit 3 on
    /// the first bad record).
    #[command(
        after_help = "Example:\n  reliquary audit verify --dir /media/audit --key enrolled/line-3.pub --checkpoint line-3.checkpoint"
    )]
    Verify(VerifyArgs),
    /// Sign a checkpoint (size and Merkle root) of the log and print the
    /// signed note, alone, on stdout.
    #[command(
        after_help = "Example:\n  reliquary audit checkpoint --dir /media/audit > line-3.checkpoint"
    )]
    Checkpoint(CheckpointArgs),
    /// Show the records as a table.
    #[command(
        after_help = "Example:\n  reliquary audit show --dir /media/audit --result failed --since 2026-03-01"
    )]
    Show(ShowArgs),
    /// Export every record with its verification status.
    #[command(
        after_help = "Example:\n  reliquary audit export --dir /media/audit --format csv > audit.csv"
    )]
    Export(ExportArgs),
    /// Append an operator note. When the trust store has an operators
    /// list the operator signs in first (PIN on stdin with --pin-stdin).
    #[command(
        after_help = "Example:\n  echo 471193 | reliquary audit note --dir /media/audit --trust /etc/reliquary/trust \\\n    --operator jdoe --pin-stdin --text \"disk replaced under WO-4711\""
    )]
    Note(NoteArgs),
    /// Write a PDF: the restore certificate of one restore (--seq), or a
    /// review of a period with its exceptions first (--since/--until).
    #[command(
        after_help = "Examples:\n  reliquary audit report --dir /media/audit --seq 12 -o WO-4711.pdf\n  \
                      reliquary audit report --dir /media/audit --since 2026-03-01 --until 2026-03-31 -o march.pdf"
    )]
    Report(ReportArgs),
}

#[derive(Debug, Args)]
struct DirArg {
    /// The audit directory.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct InitArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Name of this appliance (letters, digits, `.`, `_`, `-`); default
    /// `appliance-<key id>`.
    #[arg(long, value_name = "ID")]
    appliance_id: Option<String>,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The appliance public key, as enrolled on this workstation.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// A checkpoint kept elsewhere; the log must extend it.
    #[arg(long, value_name = "FILE")]
    checkpoint: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct CheckpointArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Also write the signed checkpoint to FILE.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct KeyArg {
    /// Public key to verify with (default: DIR/appliance.pub).
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

/// The result a row shows (`show --result`).
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ResultFilter {
    Success,
    Failed,
    Cancelled,
    Interrupted,
}

#[derive(Debug, Args)]
struct ShowArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(flatten)]
    key: KeyArg,
    /// Target disk serial number.
    #[arg(long, value_name = "SERIAL")]
    target_serial: Option<String>,
    /// Image name.
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
    /// Operator id.
    #[arg(long, value_name = "ID")]
    operator: Option<String>,
    /// Restore result: finished restores by outcome, or started ones that never finished.
    #[arg(long, value_enum, value_name = "RESULT")]
    result: Option<ResultFilter>,
    /// YYYY-MM-DD or RFC 3339, inclusive.
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// YYYY-MM-DD (the whole day) or RFC 3339, exclusive.
    #[arg(long, value_name = "DATE")]
    until: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

#[derive(Debug, Args)]
struct ExportArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(flatten)]
    key: KeyArg,
    /// jsonl: one JSON object per record; csv: RFC 4180 with a header row.
    /// With --json, one JSON array of the jsonl objects.
    #[arg(long, value_enum, default_value = "jsonl")]
    format: Format,
}

#[derive(Debug, Args)]
struct NoteArgs {
    #[command(flatten)]
    dir: DirArg,
    /// The trust store whose operators list (if any) the operator signs in
    /// against.
    #[arg(long, value_name = "PATH")]
    trust: PathBuf,
    #[command(flatten)]
    operator: NoteOperator,
    /// The note.
    #[arg(long)]
    text: String,
}

/// Who writes a note.
#[derive(Debug, Args)]
struct NoteOperator {
    /// The operator's id.
    #[arg(long, value_name = "ID")]
    operator: String,
    /// The operator's full name (the operators list's name wins).
    #[arg(long, value_name = "NAME")]
    operator_name: Option<String>,
    /// Read the operator's PIN from the first line of standard input;
    /// needed when the trust store has an operators list.
    #[arg(long = "pin-stdin")]
    pin_stdin: bool,
}

#[derive(Debug, Args)]
struct ReportArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(flatten)]
    key: KeyArg,
    /// A RestoreStarted or RestoreFinished record: print its restore's certificate.
    #[arg(long, value_name = "N", required_unless_present_any = ["since", "until"], conflicts_with_all = ["since", "until"])]
    seq: Option<u64>,
    /// Start of the review period: YYYY-MM-DD or RFC 3339, inclusive.
    #[arg(long, value_name = "DATE")]
    since: Option<String>,
    /// End of the review period: YYYY-MM-DD (the whole day) or RFC 3339, exclusive.
    #[arg(long, value_name = "DATE")]
    until: Option<String>,
    /// The PDF file to write.
    #[arg(short, long, value_name = "FILE.pdf")]
    output: PathBuf,
}

impl AuditArgs {
    /// Whether the subcommand only reads the log and prints.
    pub fn only_prints(&self) -> bool {
        matches!(
            self.command,
            AuditCommand::Verify(_) | AuditCommand::Show(_) | AuditCommand::Export(_)
        )
    }
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::Init(a) => init(a),
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Checkpoint(a) => checkpoint(a),
        AuditCommand::Show(a) => show(a),
        AuditCommand::Export(a) => export(a),
        AuditCommand::Note(a) => note(a),
        AuditCommand::Report(a) => report_cmd(a),
    }
}

fn init(a: InitArgs) -> anyhow::Result<ExitCode> {
    let log = AuditLog::init(
        &a.dir.dir,
        a.appliance_id.as_deref(),
        Environment::system(None),
    )?;
    let key = log.public_key();
    let origin = reliquary_appliance::audit::Checkpoint::origin_for(log.appliance_id());
    let verifier = verifier_key(&origin, key.as_bytes());
    let public_file = a.dir.dir.join(PUBLIC_KEY_FILE);
    let summary = json!({
        "dir": a.dir.dir,
        "appliance_id": log.appliance_id(),
        "key_id": key.key_id(),
        "public_key": hex::encode(key.as_bytes()),
        "note_verifier": verifier,
        "public_key_file": public_file,
    });
    print_result(&summary, || {
        println!("created audit log in {}", a.dir.dir.display());
        println!("appliance id:  {}", log.appliance_id());
        println!("key id:        {}", key.key_id());
        println!("public key:    {}", hex::encode(key.as_bytes()));
        println!("note verifier: {verifier}");
        println!(
            "Enrol {} on the reviewing workstation; verify with `reliquary audit verify --key`.",
            public_file.display()
        );
    })?;
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let (key, _) = PublicKey::load(&a.key)?;
    let summary = verify_dir_each(&a.dir.dir, &key, a.checkpoint.as_deref(), &mut |_| Ok(()))?;
    print_result(&serde_json::to_value(&summary)?, || print_summary(&summary))?;
    fail_on_problem(&summary)
}

fn checkpoint(a: CheckpointArgs) -> anyhow::Result<ExitCode> {
    let log = open(&a.dir.dir)?;
    let (cp, note) = log.write_checkpoint()?;
    if let Some(path) = &a.output {
        std::fs::write(path, &note).map_err(|e| FileError::new("cannot write", path, e))?;
    }
    let summary = json!({
        "origin": cp.origin,
        "size": cp.size,
        "root": cp.root.to_hex(),
        "short_form": cp.short_form(),
        "note": note,
    });
    // Only the note goes to stdout, so `> FILE` saves a valid checkpoint.
    print_result(&summary, || print!("{note}"))?;
    output::info(format!("short form: {}", cp.short_form()));
    Ok(ExitCode::SUCCESS)
}

fn show(a: ShowArgs) -> anyhow::Result<ExitCode> {
    let date = |d: &Option<String>, end| {
        d.as_deref()
            .map(|d| query::parse_date(d, end))
            .transpose()
            .map_err(|e| UsageError(e.to_string()))
    };
    let filter = Filter {
        target_serial: a.target_serial,
        image: a.image,
        operator: a.operator,
        result: a.result.map(|r| {
            r.to_possible_value()
                .map(|v| v.get_name().to_string())
                .unwrap_or_default()
        }),
        since: date(&a.since, false)?,
        until: date(&a.until, true)?,
    };
    let (key, _) = PublicKey::load(&a.key.path(&a.dir.dir))?;
    let json = output::get().json;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut shown = 0u64;
    if json {
        write!(out, "{{\"records\": [")?;
    } else {
        query::write_table_header(&mut out)?;
    }
    let summary = verify_dir_each(&a.dir.dir, &key, None, &mut |vr| {
        if !filter.keeps(&vr) {
            return Ok(());
        }
        if json {
            let separator = if shown == 0 { "\n" } else { ",\n" };
            write!(out, "{separator}{}", query::row_json(&vr))?;
        } else {
            query::write_table_row(&vr, &mut out)?;
        }
        shown += 1;
        Ok(())
    })?;
    if json {
        let tail = json!({
            "shown": shown,
            "total": summary.records,
            "warnings": summary.warnings,
            "warning_count": summary.warning_count,
            "problem_count": summary.problem_count,
        });
        // The closing fields, appended to the object the records opened.
        let tail = serde_json::to_string(&tail)?;
        writeln!(out, "\n], {}", tail.trim_start_matches('{'))?;
    } else {
        writeln!(out, "{shown} of {} records shown", summary.records)?;
        if summary.problem_count > 0 {
            writeln!(
                out,
                "{} INVALID record(s) or log problem(s): the log does not verify",
                summary.problem_count
            )?;
        }
    }
    out.flush()?;
    drop(out);
    if !json {
        print_warnings(&summary);
    }
    fail_on_problem(&summary)
}

fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let (key, _) = PublicKey::load(&a.key.path(&a.dir.dir))?;
    let json = output::get().json;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut rows = 0u64;
    match (json, a.format) {
        (true, _) => write!(out, "[")?,
        (false, Format::Csv) => query::write_csv_header(&mut out)?,
        (false, Format::Jsonl) => {}
    }
    let summary = verify_dir_each(&a.dir.dir, &key, None, &mut |vr| {
        match (json, a.format) {
            (true, _) => {
                let separator = if rows == 0 { "\n" } else { ",\n" };
                write!(out, "{separator}{}", query::row_json(&vr))?;
            }
            (false, Format::Jsonl) => writeln!(out, "{}", query::row_json(&vr))?,
            (false, Format::Csv) => query::write_csv_row(&vr, &mut out)?,
        }
        rows += 1;
        Ok(())
    })?;
    if json {
        writeln!(out, "\n]")?;
    }
    out.flush()?;
    drop(out);
    // The export is complete either way; the exit code still tells.
    fail_on_problem(&summary)
}

fn note(a: NoteArgs) -> anyhow::Result<ExitCode> {
    let trust = TrustStore::load(&a.trust)?;
    let mut log = open(&a.dir.dir)?;
    log.ensure_space(RESTORE_RESERVE_BYTES)?;
    let pin = if a.operator.pin_stdin {
        Some(read_pin()?)
    } else {
        None
    };
    let operator = operators::sign_in(
        &trust,
        &a.trust,
        Some(&mut log),
        &a.operator.operator,
        a.operator.operator_name.as_deref(),
        pin.as_deref(),
    )?
    .operator;
    let rec = log.append(&operator, Payload::OperatorNote { text: a.text })?;
    print_result(&json!({ "seq": rec.seq }), || {
        println!("logged record {}", rec.seq)
    })?;
    Ok(ExitCode::SUCCESS)
}

fn report_cmd(a: ReportArgs) -> anyhow::Result<ExitCode> {
    let date = |d: &Option<String>, end| {
        d.as_deref()
            .map(|d| query::parse_date(d, end))
            .transpose()
            .map_err(|e| UsageError(e.to_string()))
    };
    let (since, until) = (date(&a.since, false)?, date(&a.until, true)?);
    let key_path = a.key.path(&a.dir.dir);
    let (key, _) = PublicKey::load(&key_path)?;
    let (pdf, unverified) = match a.seq {
        Some(seq) => (
            report::certificate_for(&a.dir.dir, &key, seq).map_err(certificate_error)?,
            None,
        ),
        None => {
            let now = reliquary_appliance::audit::SystemClock.now_unix_millis();
            let (pdf, summary) = report::review_log(&a.dir.dir, &key, since, until, now)
                .map_err(certificate_error)?;
            (pdf, Some(summary).filter(|s| !s.is_ok()))
        }
    };
    // Never over an existing file: a certificate is a record, not a cache.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&a.output)
        .and_then(|mut file| {
            std::io::Write::write_all(&mut file, &pdf)?;
            file.sync_all()
        })
        .map_err(|e| FileError::new("cannot write", &a.output, e))?;
    let summary = json!({
        "output": a.output,
        "bytes": pdf.len(),
        "seq": a.seq,
        "log_verified": unverified.is_none(),
    });
    print_result(&summary, || println!("wrote {}", a.output.display()))?;
    // A review of a log that does not verify is written (it says so on its
    // first page) and the command still fails.
    match unverified {
        Some(summary) => fail_on_problem(&summary),
        None => Ok(ExitCode::SUCCESS),
    }
}

/// The error inside, so its exit code and path are found as usual.
fn certificate_error(e: report::CertificateError) -> anyhow::Error {
    match e {
        report::CertificateError::Log(e) => e.into(),
        report::CertificateError::Report(e) => e.into(),
        e => e.into(),
    }
}

/// Opens for writing, telling the operator about any recovery.
fn open(dir: &Path) -> Result<AuditLog, AuditError> {
    let log = AuditLog::open(dir, Environment::system(None))?;
    if let Some(r) = log.recovery() {
        output::warn(format_args!(
            "recovered a torn append: {} bytes at offset {} copied to {} and cut off; record {} documents it",
            r.length,
            r.offset,
            r.quarantine.display(),
            r.record_seq
        ));
    }
    Ok(log)
}

impl KeyArg {
    fn path(&self, dir: &Path) -> PathBuf {
        self.key
            .clone()
            .unwrap_or_else(|| dir.join(PUBLIC_KEY_FILE))
    }
}

fn print_summary(summary: &Summary) {
    println!(
        "{}: {} records, {} bytes, appliance key {}, root {}",
        summary.path.display(),
        summary.size,
        summary.log_bytes,
        summary.key_id,
        &summary.root.to_hex()[..8]
    );
    if let Some(CheckpointStatus::Extends { size }) = &summary.checkpoint {
        println!("extends the witnessed checkpoint of size {size}");
    }
    if let LogEnd::Clean { .. } = summary.end {
        if summary.is_ok() {
            println!("every record verified");
        }
    }
    print_warnings(summary);
    for p in summary.problems.iter().skip(1) {
        eprintln!("also: {p}");
    }
    let unlisted = summary.problem_count - summary.problems.len() as u64;
    if unlisted > 0 {
        eprintln!(
            "and {unlisted} more problems; `reliquary audit export` lists every invalid record"
        );
    }
}

/// Warnings go to stderr, so stdout stays the result alone.
fn print_warnings(summary: &Summary) {
    for w in &summary.warnings {
        output::warn(w);
    }
    let unlisted = summary.warning_count - summary.warnings.len() as u64;
    if unlisted > 0 {
        output::warn(format_args!("and {unlisted} more warnings"));
    }
}

/// Exit 3 when the log failed verification. Under `--json` the result
/// already printed says why, so no second (error) document follows.
fn fail_on_problem(report: &Summary) -> anyhow::Result<ExitCode> {
    match report.first_problem() {
        Some(_) if output::get().json => Ok(ExitCode::from(ExitClass::Integrity.code())),
        Some(problem) => Err(AuditError::Verification {
            path: report.path.clone(),
            problem: problem.clone(),
        }
        .into()),
        None => Ok(ExitCode::SUCCESS),
    }
}
