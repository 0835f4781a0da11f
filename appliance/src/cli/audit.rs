//! `reliquary audit ...`: create, append to, verify and review the audit log.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use reliquary_appliance::audit::checkpoint::verifier_key;
use reliquary_appliance::audit::query::{self, Filter};
use reliquary_appliance::audit::{
    verify_dir, AuditError, AuditLog, CheckpointStatus, Environment, LogEnd, Operator, Payload,
    Report, PUBLIC_KEY_FILE, RESTORE_RESERVE_BYTES,
};
use reliquary_image::keys::PublicKey;

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
    Init(InitArgs),
    /// Check framing, sequence, hash chain and every signature (exit 3 on
    /// the first bad record).
    Verify(VerifyArgs),
    /// Sign and print a checkpoint (size and Merkle root) of the log.
    Checkpoint(CheckpointArgs),
    /// Show the records as a table.
    Show(ShowArgs),
    /// Export every record with its verification status.
    Export(ExportArgs),
    /// Append an operator note.
    Note(NoteArgs),
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
    /// Print the full report as JSON.
    #[arg(long)]
    json: bool,
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

#[derive(Debug, Args)]
struct ShowArgs {
    #[command(flatten)]
    dir: DirArg,
    #[command(flatten)]
    key: KeyArg,
    #[arg(long, value_name = "S")]
    target_serial: Option<String>,
    /// Image name.
    #[arg(long, value_name = "NAME")]
    image: Option<String>,
    /// Operator id.
    #[arg(long, value_name = "ID")]
    operator: Option<String>,
    /// success, failed, cancelled or interrupted.
    #[arg(long, value_name = "R")]
    result: Option<String>,
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
    #[arg(long)]
    format: Format,
}

#[derive(Debug, Args)]
struct NoteArgs {
    #[command(flatten)]
    dir: DirArg,
    #[arg(long, value_name = "ID")]
    operator: String,
    #[arg(long, value_name = "NAME")]
    operator_name: Option<String>,
    #[arg(long)]
    text: String,
}

pub fn run(args: AuditArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AuditCommand::Init(a) => init(a),
        AuditCommand::Verify(a) => verify(a),
        AuditCommand::Checkpoint(a) => checkpoint(a),
        AuditCommand::Show(a) => show(a),
        AuditCommand::Export(a) => export(a),
        AuditCommand::Note(a) => note(a),
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
    println!("created audit log in {}", a.dir.dir.display());
    println!("appliance id:  {}", log.appliance_id());
    println!("key id:        {}", key.key_id());
    println!("public key:    {}", hex::encode(key.as_bytes()));
    println!("note verifier: {}", verifier_key(&origin, key.as_bytes()));
    println!(
        "Enrol {} on the reviewing workstation; verify with `reliquary audit verify --key`.",
        a.dir.dir.join(PUBLIC_KEY_FILE).display()
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(a: VerifyArgs) -> anyhow::Result<ExitCode> {
    let (key, _) = PublicKey::load(&a.key)?;
    let report = verify_dir(&a.dir.dir, &key, a.checkpoint.as_deref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_summary(&report);
    }
    fail_on_problem(&report)
}

fn checkpoint(a: CheckpointArgs) -> anyhow::Result<ExitCode> {
    let log = open(&a.dir.dir)?;
    let (cp, note) = log.write_checkpoint()?;
    if let Some(path) = &a.output {
        std::fs::write(path, &note).with_context(|| format!("cannot write {}", path.display()))?;
    }
    print!("{note}");
    println!("short form: {}", cp.short_form());
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
        result: a.result,
        since: date(&a.since, false)?,
        until: date(&a.until, true)?,
    };
    let report = load_report(&a.dir.dir, &a.key)?;
    let mut out = std::io::stdout().lock();
    let shown = query::write_table(&report, &filter, &mut out)?;
    writeln!(out, "{shown} of {} records shown", report.records.len())?;
    for w in report.warnings() {
        eprintln!("warning: {w}");
    }
    fail_on_problem(&report)
}

fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let report = load_report(&a.dir.dir, &a.key)?;
    let mut out = std::io::stdout().lock();
    match a.format {
        Format::Jsonl => query::write_jsonl(&report, &mut out)?,
        Format::Csv => query::write_csv(&report, &mut out)?,
    }
    // The export is complete either way; the exit code still tells.
    fail_on_problem(&report)
}

fn note(a: NoteArgs) -> anyhow::Result<ExitCode> {
    let mut log = open(&a.dir.dir)?;
    log.ensure_space(RESTORE_RESERVE_BYTES)?;
    let operator = Operator {
        id: a.operator,
        name: a.operator_name,
    };
    let rec = log.append(&operator, Payload::OperatorNote { text: a.text })?;
    println!("logged record {}", rec.seq);
    Ok(ExitCode::SUCCESS)
}

/// Opens for writing, telling the operator about any recovery.
fn open(dir: &Path) -> Result<AuditLog, AuditError> {
    let log = AuditLog::open(dir, Environment::system(None))?;
    if let Some(r) = log.recovery() {
        eprintln!(
            "warning: recovered a torn append: {} bytes at offset {} copied to {} and cut off; record {} documents it",
            r.length,
            r.offset,
            r.quarantine.display(),
            r.record_seq
        );
    }
    Ok(log)
}

fn load_report(dir: &Path, key: &KeyArg) -> anyhow::Result<Report> {
    let key_path = key.key.clone().unwrap_or_else(|| dir.join(PUBLIC_KEY_FILE));
    let (key, _) = PublicKey::load(&key_path)?;
    Ok(verify_dir(dir, &key, None)?)
}

fn print_summary(report: &Report) {
    println!(
        "{}: {} records, appliance key {}, root {}",
        report.path.display(),
        report.size,
        report.key_id,
        &report.root.to_hex()[..8]
    );
    if let Some(CheckpointStatus::Extends { size }) = &report.checkpoint {
        println!("extends the witnessed checkpoint of size {size}");
    }
    if let LogEnd::Clean { .. } = report.end {
        if report.is_ok() {
            println!("every record verified");
        }
    }
    for w in report.warnings() {
        println!("warning: {w}");
    }
    for p in report.problems.iter().skip(1) {
        println!("also: {p}");
    }
}

fn fail_on_problem(report: &Report) -> anyhow::Result<ExitCode> {
    match report.first_problem() {
        Some(problem) => Err(AuditError::Verification {
            path: report.path.clone(),
            problem: problem.clone(),
        }
        .into()),
        None => Ok(ExitCode::SUCCESS),
    }
}
