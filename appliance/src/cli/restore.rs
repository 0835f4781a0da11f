//! `restore` and `check`.

use std::fs::File;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};

use clap::Args;
use nix::sys::signal::{SigSet, Signal};
use serde_json::json;

use reliquary_appliance::audit::{
    lock_shared, AuditLog, Digest, Environment, Operator, RESTORE_RESERVE_BYTES,
};
use reliquary_appliance::exit::ExitClass;
use reliquary_appliance::operators;
use reliquary_appliance::ops::{self, Recording};
use reliquary_appliance::restore::records::interrupted_restore;
use reliquary_appliance::restore::{
    self, AuditRecording, CancelToken, CheckReport, Outcome, Progress, RestoreMode, RestoreOptions,
    RestoreRequest, RestoreRun, Stage, TargetInfo, TargetRules, TargetRun, Unmapped,
};
use reliquary_image::{Image, TrustStore};

use super::inputs::open_image;
use super::output::{self, FileError};
use super::progress::{human_bytes, Meter};
use super::terminal;
use super::UsageError;

/// Where and as whom to record an operation in the audit log.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The audit log directory (see `reliquary audit init`).
    #[arg(long, value_name = "DIR", requires = "operator")]
    audit: Option<PathBuf>,
    /// The operator's id, recorded in the audit log.
    #[arg(long, value_name = "ID")]
    operator: Option<String>,
    /// The operator's full name (the operators list's name wins when the
    /// trust store has one).
    #[arg(long = "operator-name", value_name = "NAME")]
    operator_name: Option<String>,
    /// Read the operator's PIN from the first line of standard input (a
    /// pipe); needed when the trust store has an operators list. At a
    /// terminal the PIN is asked for with echo off, with or without this
    /// flag.
    #[arg(long = "pin-stdin")]
    pin_stdin: bool,
}

impl AuditArgs {
    /// Signs the operator in against `trust`'s operators list before
    /// anything is recorded in `log` (see `operators::sign_in`): a wrong
    /// PIN or unknown id is recorded there and refused. With no log the
    /// sign-in is still required when the trust store lists operators.
    pub fn sign_in(
        &self,
        trust: &TrustStore,
        trust_path: &Path,
        log: Option<&mut AuditLog>,
    ) -> anyhow::Result<Operator> {
        let Some(id) = &self.operator else {
            if trust.operators_text().is_some() {
                return Err(UsageError(
                    "this trust store has an operators list: sign in with \
                     --operator ID --pin-stdin"
                        .into(),
                )
                .into());
            }
            return Ok(self.operator());
        };
        let pin = self.read_pin(id, trust)?;
        operators::sign_in(
            trust,
            trust_path,
            log,
            id,
            self.operator_name.as_deref(),
            pin.as_deref(),
        )
        .map(|signed_in| signed_in.operator)
        .map_err(anyhow::Error::from)
    }

    /// Opens (and recovers) the audit log, if one was named.
    pub fn open_log(&self, trust: &TrustStore) -> anyhow::Result<Option<AuditLog>> {
        let Some(dir) = &self.audit else {
            return Ok(None);
        };
        Ok(Some(AuditLog::open(
            dir,
            Environment::system(Some(Digest(trust.digest()))),
        )?))
    }

    /// The PIN from a piped stdin with `--pin-stdin`; at a terminal, asked
    /// for with echo off when the flag is given or the trust store lists
    /// operators; else none.
    fn read_pin(&self, id: &str, trust: &TrustStore) -> anyhow::Result<Option<String>> {
        let stdin_is_terminal = std::io::stdin().is_terminal();
        if self.pin_stdin && !stdin_is_terminal {
            return read_pin().map(Some);
        }
        if self.pin_stdin || (stdin_is_terminal && trust.operators_text().is_some()) {
            let prompt = format!("PIN for {id}: ");
            return terminal::read_secret(&prompt).map(Some).map_err(|e| {
                FileError::new("cannot read the PIN from", Path::new("/dev/tty"), e).into()
            });
        }
        Ok(None)
    }

    fn operator(&self) -> Operator {
        Operator {
            id: self.operator.clone().unwrap_or_default(),
            name: self.operator_name.clone(),
        }
    }
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  reliquary restore win7-line3.rimg /dev/sdb --trust /etc/reliquary/trust \\\n    --audit /media/audit --operator jdoe --operator-name \"Jane Doe\""
)]
pub struct RestoreArgs {
    /// The signed image to restore.
    #[arg(value_name = "IMAGE.rimg")]
    image: PathBuf,
    /// The whole disks to overwrite, or regular files (created or
    /// extended). Several are written at once from one read of the image.
    #[arg(value_name = "TARGET", required = true)]
    targets: Vec<PathBuf>,
    /// A .pub file or a trust-store directory.
    #[arg(long, value_name = "PATH")]
    trust: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long)]
    yes: bool,
    /// Skip reading the written disk back (not recommended).
    #[arg(long = "no-readback")]
    no_readback: bool,
    /// Write zeros over extents the image did not capture (free space).
    #[arg(long = "zero-unmapped", conflicts_with = "discard_unmapped")]
    zero_unmapped: bool,
    /// Discard extents the image did not capture where the disk then reads
    /// zeros (TRIM); elsewhere they are zeroed.
    #[arg(long = "discard-unmapped")]
    discard_unmapped: bool,
    /// What this restore means, recorded with it (e.g. "replacement after
    /// disk failure"). Required unless --no-audit.
    #[arg(long, value_name = "TEXT", required_unless_present = "no_audit")]
    meaning: Option<String>,
    /// The work order it is done for, recorded with it (e.g. "WO-4711").
    /// Required unless --no-audit.
    #[arg(
        long,
        visible_alias = "work-order",
        value_name = "TEXT",
        required_unless_present = "no_audit"
    )]
    reason: Option<String>,
    /// Continue the interrupted restore of this image onto this disk that the
    /// audit log records: extents already correct are read back and kept,
    /// the rest written, and the tables written last as always. One target
    /// only.
    #[arg(long, requires = "audit", conflicts_with = "only_differences")]
    resume: bool,
    /// Write only the extents that differ from the image on a disk that
    /// already holds an older copy of it (read back and compared first).
    #[arg(long = "only-differences")]
    only_differences: bool,
    /// Create TARGET as a regular file if it does not exist (never under /dev).
    #[arg(long = "create-file")]
    create_file: bool,
    /// Record nothing (workstation use only): the restore leaves no audit record.
    #[arg(long = "no-audit", conflicts_with = "audit")]
    no_audit: bool,
    /// The vault the image comes from; its disk is never a target.
    #[arg(long, value_name = "DIR")]
    vault: Option<PathBuf>,
    #[command(flatten)]
    audit: AuditArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  reliquary check win7-line3.rimg /dev/sdb --trust /etc/reliquary/trust --json"
)]
pub struct CheckArgs {
    /// The signed image to compare with.
    #[arg(value_name = "IMAGE.rimg")]
    image: PathBuf,
    /// The disks or raw files to compare with the image (read only), all
    /// at once: a shelf of spare disks is proven in one run.
    #[arg(value_name = "TARGET", required = true)]
    targets: Vec<PathBuf>,
    /// A .pub file or a trust-store directory.
    #[arg(long, value_name = "PATH")]
    trust: PathBuf,
    #[command(flatten)]
    audit: AuditArgs,
}

/// A refusal decided by the CLI itself (no confirmation possible).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CliRefusal(pub String);

/// The restore or check finished, but not successfully; the class decides the exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Unsuccessful {
    pub message: String,
    pub class: ExitClass,
}

pub fn restore_cmd(args: RestoreArgs) -> anyhow::Result<ExitCode> {
    if args.audit.audit.is_none() && !args.no_audit {
        return Err(UsageError(
            "restore records to an audit log: pass --audit DIR --operator ID, \
             or --no-audit on a workstation to record nothing"
                .into(),
        )
        .into());
    }
    // Block the signals before any thread starts, so only the waiter sees
    // them: before the first write they end the process, after it they
    // cancel the restore at a chunk boundary.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.thread_block()?;
    let cancel = CancelToken::new();
    let writing = Arc::new(AtomicBool::new(false));
    {
        let (cancel, writing) = (cancel.clone(), Arc::clone(&writing));
        std::thread::spawn(move || {
            while signals.wait().is_ok() {
                if !writing.load(Ordering::SeqCst) {
                    eprintln!("\ninterrupted; nothing was written");
                    std::process::exit(i32::from(ExitClass::Interrupted.code()));
                }
                eprintln!("\ncancelling at the next chunk boundary; the disk will be left wiped");
                cancel.cancel();
            }
        });
    }

    if args.resume && args.targets.len() > 1 {
        return Err(UsageError(
            "--resume continues one interrupted restore: name one target".into(),
        )
        .into());
    }
    let trust = TrustStore::load(&args.trust)?;
    let (tx, rx) = channel::<Progress>();
    let several = args.targets.len() > 1;
    let drawer = std::thread::spawn(move || draw_progress(rx, several));
    let _ = tx.send(Progress {
        target: 0,
        stage: Stage::CheckingSignatures,
        bytes_done: 0,
        bytes_total: 0,
        chunks_done: 0,
        chunks_total: 0,
        bytes_per_second: 0.0,
        eta: None,
    });
    let image = open_image(&args.image)?.verify(&trust)?;
    print_signers(&image);
    let log = args.audit.open_log(&trust)?.map(Mutex::new);
    match &log {
        Some(log) => lock_shared(log).ensure_space(RESTORE_RESERVE_BYTES)?,
        None => eprintln!("warning: --no-audit: this restore is recorded nowhere"),
    }
    let operator = match &log {
        Some(log) => args
            .audit
            .sign_in(&trust, &args.trust, Some(&mut lock_shared(log)))?,
        None => args.audit.sign_in(&trust, &args.trust, None)?,
    };
    let rules = TargetRules {
        image_path: &args.image,
        vault: args.vault.as_deref(),
        create_file: args.create_file,
    };
    let confirmed = args
        .targets
        .iter()
        .map(|target| restore::inspect_target(target, &image, &rules))
        .collect::<Result<Vec<_>, _>>()?;
    let mode = if args.resume {
        let interrupted = match &log {
            Some(log) => interrupted_restore(&lock_shared(log), &image, &confirmed[0])?,
            None => None,
        };
        let Some(interrupted_seq) = interrupted else {
            return Err(CliRefusal(format!(
                "refusing to resume onto {}: the audit log records no interrupted restore of \
                 image {} onto this disk. A restore cancelled with Ctrl-C is recorded as \
                 finished and left the disk wiped, so it is not resumable; only one cut off by \
                 power loss or a crash is. Start over without --resume",
                args.targets[0].display(),
                image.manifest().name
            ))
            .into());
        };
        output::info(format!(
            "resuming the restore interrupted at audit record {interrupted_seq}"
        ));
        RestoreMode::Resume { interrupted_seq }
    } else if args.only_differences {
        RestoreMode::OnlyDifferences
    } else {
        RestoreMode::Full
    };
    let unmapped = if args.discard_unmapped {
        Unmapped::Discarded
    } else if args.zero_unmapped {
        Unmapped::Zeroed
    } else {
        Unmapped::Left
    };
    if !args.yes {
        confirm(&confirmed, &image, unmapped, args.audit.pin_stdin)?;
    }
    writing.store(true, Ordering::SeqCst);
    let request = RestoreRequest {
        image: &image,
        image_path: &args.image,
        targets: &confirmed,
        vault: args.vault.as_deref(),
        create_file: args.create_file,
        options: RestoreOptions {
            readback: !args.no_readback,
            unmapped,
            only_differences: mode != RestoreMode::Full,
        },
        meaning: args.meaning.as_deref(),
        reason: args.reason.as_deref(),
        mode,
    };
    let recording = log.as_ref().map(|log| AuditRecording {
        log,
        operator: &operator,
        // Both records are printed with the outcome; a line now would cut
        // through the progress meter.
        on_started: &|_| {},
    });
    let run = restore::restore(&request, recording, &tx, &cancel);
    drop(tx);
    let _ = drawer.join();

    let runs = match run {
        RestoreRun::NotStarted(e) => return Err(e.into()),
        RestoreRun::Ran(runs) => runs,
    };
    let results: Vec<TargetResult> = runs
        .iter()
        .zip(&args.targets)
        .map(|(run, path)| TargetResult::of(run, path, &image))
        .collect();
    let class = results.iter().filter_map(|r| r.class).reduce(worse);
    let json = if several {
        json!({
            "outcome": if class.is_none() { "success" } else { "failed" },
            "image": image.manifest().name,
            "image_id": image.manifest().image_uuid.to_string(),
            "targets": results.iter().map(|r| &r.json).collect::<Vec<_>>(),
        })
    } else {
        results[0].json.clone()
    };
    output::print_result(&json, || {
        for result in &results {
            (result.print)();
        }
    })?;
    match class {
        None => Ok(ExitCode::SUCCESS),
        Some(class) => Err(AlreadyReported(class).into()),
    }
}

/// What the CLI says of one target's restore: its JSON object, the lines
/// printed for it, and its exit class if it did not fully succeed.
struct TargetResult<'a> {
    json: serde_json::Value,
    class: Option<ExitClass>,
    print: Box<dyn Fn() + 'a>,
}

impl<'a> TargetResult<'a> {
    fn of(run: &'a TargetRun, path: &'a Path, image: &'a Image<File>) -> Self {
        let report = &run.report;
        for warning in &report.warnings {
            output::warn(format!("{}: {warning}", path.display()));
        }
        // The outcome is printed first, whatever happens to its record.
        let outcome = match &report.outcome {
            Outcome::Success => Ok(()),
            Outcome::Cancelled => Err(Unsuccessful {
                message: format!(
                    "the restore onto {} was cancelled; {}",
                    path.display(),
                    wiped_sentence(&report.wiped)
                ),
                class: ExitClass::Interrupted,
            }),
            Outcome::Failed { error, .. } => Err(Unsuccessful {
                message: format!(
                    "the restore onto {} failed: {}; {}",
                    path.display(),
                    reliquary_appliance::error_chain(error),
                    wiped_sentence(&report.wiped)
                ),
                class: error.exit_class(),
            }),
        };
        let recorded = match &run.finished {
            Some(Ok(end)) => Ok(Some(end)),
            Some(Err(e)) => Err(e),
            None => Ok(None),
        };
        let class = match (&outcome, &recorded) {
            (Ok(()), Ok(_)) => None,
            (Ok(()), Err(_)) => Some(ExitClass::Runtime),
            (Err(failure), Ok(_)) => Some(failure.class),
            (Err(failure), Err(_)) => Some(worse(failure.class, ExitClass::Runtime)),
        };
        let mut problems: Vec<String> = Vec::new();
        if let Err(failure) = &outcome {
            problems.push(failure.message.clone());
        }
        if let Err(e) = &recorded {
            problems.push(format!(
                "the end of the restore onto {} could not be recorded in the audit log: {}",
                path.display(),
                reliquary_appliance::error_chain(*e)
            ));
        }
        let end = recorded.as_ref().ok().copied().flatten();
        let mut json = json!({
            "outcome": match &report.outcome {
                Outcome::Success => "success",
                Outcome::Cancelled => "cancelled",
                Outcome::Failed { .. } => "failed",
            },
            "image": image.manifest().name,
            "image_id": image.manifest().image_uuid.to_string(),
            "target": path.display().to_string(),
            "bytes_written": report.bytes_written,
            "bytes_skipped": report.bytes_skipped,
            "readback_digest": report.readback_digest.map(hex::encode),
            "backup_gpt_moved": report.backup_gpt_moved,
            "wiped": report.wiped.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "stage_seconds": report.stage_durations.iter()
                .map(|(stage, d)| json!([stage.to_string(), d.as_secs_f64()]))
                .collect::<Vec<_>>(),
            "warnings": report.warnings,
            "audit_started_seq": run.started_seq,
            "audit_finished_seq": end.map(|e| e.seq),
            "checkpoint": end.map(|e| e.checkpoint.clone()),
        });
        if let Some(class) = class {
            json["error"] = json!({
                "class": output::class_name(class),
                "message": problems.join("; "),
                "path": path.display().to_string(),
            });
        }
        let print = move || {
            for (stage, duration) in &report.stage_durations {
                println!("  {stage:<14} {:>8.1} s", duration.as_secs_f64());
            }
            if report.is_success() {
                println!(
                    "RESTORED {} onto {}: {} written{}{}{}",
                    image.manifest().name,
                    path.display(),
                    human_bytes(report.bytes_written),
                    if report.bytes_skipped > 0 {
                        format!(", {} already correct", human_bytes(report.bytes_skipped))
                    } else {
                        String::new()
                    },
                    match report.readback_digest {
                        Some(d) => format!(", read back and matching (digest {})", hex::encode(d)),
                        None => ", NOT read back (--no-readback)".into(),
                    },
                    if report.backup_gpt_moved {
                        "; backup GPT moved to the end of the disk"
                    } else {
                        ""
                    },
                );
            }
            if let Some(end) = end {
                println!(
                    "audit record {} (restore started at record {}); checkpoint {}",
                    end.seq,
                    run.started_seq.unwrap_or_default(),
                    end.checkpoint
                );
            }
            for problem in &problems {
                eprintln!("error: {problem}");
            }
        };
        Self {
            json,
            class,
            print: Box::new(print),
        }
    }
}

/// The audit directory of a command that always records (`operators
/// unlock`).
#[derive(Debug, Args)]
pub struct AuditDir {
    /// The audit log directory (see `reliquary audit init`).
    #[arg(long = "audit", value_name = "DIR")]
    dir: PathBuf,
}

impl AuditDir {
    pub fn open(&self, trust: &TrustStore) -> anyhow::Result<AuditLog> {
        Ok(AuditLog::open(
            &self.dir,
            Environment::system(Some(Digest(trust.digest()))),
        )?)
    }
}

/// The first line of standard input, without its line end. The PIN is
/// never echoed, logged or recorded.
pub fn read_pin() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// What a failed or cancelled restore left on the disk, as a sentence.
fn wiped_sentence(wiped: &[restore::WipeArea]) -> String {
    if wiped.is_empty() {
        return "nothing was written to the disk".into();
    }
    let areas: Vec<String> = wiped.iter().map(ToString::to_string).collect();
    format!(
        "the disk was left wiped ({}), so it will not boot",
        areas.join(", ")
    )
}

/// The more serious of two exit classes: integrity and safety outrank a
/// runtime error, and an interruption outranks nothing the disk shows.
fn worse(a: ExitClass, b: ExitClass) -> ExitClass {
    let rank = |c: ExitClass| match c {
        ExitClass::Integrity => 4,
        ExitClass::Refused => 3,
        ExitClass::Runtime => 2,
        ExitClass::Interrupted => 1,
        ExitClass::Usage => 0,
    };
    if rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

/// A failure whose message was already printed; only its exit class is left.
#[derive(Debug, thiserror::Error)]
#[error("")]
pub struct AlreadyReported(pub ExitClass);

pub fn check_cmd(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let trust = TrustStore::load(&args.trust)?;
    let image = open_image(&args.image)?.verify(&trust)?;
    // The operator signs in before the disks are read, so a refused PIN
    // costs no check and leaves its own record.
    let log = args.audit.open_log(&trust)?.map(Mutex::new);
    let operator = match &log {
        Some(log) => Some(
            args.audit
                .sign_in(&trust, &args.trust, Some(&mut lock_shared(log)))?,
        ),
        None => None,
    };
    let disks = args
        .targets
        .iter()
        .map(|path| open_for_check(path, &image).map(|(file, bytes)| (path.as_path(), file, bytes)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let several = disks.len() > 1;
    let recording = log
        .as_ref()
        .zip(operator.as_ref())
        .map(|(log, operator)| Recording { log, operator });
    let meter = (!several).then(|| Meter::terminal_only("check", image.manifest().logical_bytes()));
    // One pass reads every disk; the image is not read at all, only its
    // signed digests, and each piece is hashed once for all the disks.
    let checks = ops::check_and_record(
        &image,
        &disks,
        recording,
        &|_, n| {
            if let Some(meter) = &meter {
                meter.add(n);
            }
        },
        &CancelToken::new(),
    )?;
    if let Some(meter) = meter {
        meter.finish();
    }
    let unmapped_extents = image
        .extents()
        .filter(|e| e.kind == reliquary_image::ExtentKind::Unmapped)
        .count();
    let mut summaries = Vec::new();
    let mut differing = Vec::new();
    let mut failure = None;
    for (path, check) in args.targets.iter().zip(checks) {
        let report = match check.report {
            Ok(report) => report,
            Err(e) => {
                output::warn(format!(
                    "{}: {}",
                    path.display(),
                    reliquary_appliance::error_chain(&e)
                ));
                failure.get_or_insert(e);
                continue;
            }
        };
        let audit_seq = check.record.transpose()?;
        if let Some(seq) = audit_seq {
            output::info(format!("{}: audit record {seq}", path.display()));
        }
        if !report.matches() {
            differing.push(format!(
                "{} does not match the image: {} extents differ",
                path.display(),
                report.mismatches.len()
            ));
        }
        summaries.push((path, report, audit_seq));
    }
    if let Some(e) = failure {
        return Err(e.into());
    }
    let json_of = |(path, report, audit_seq): &(&PathBuf, CheckReport, Option<u64>)| {
        let mismatches: Vec<_> = report
            .mismatches
            .iter()
            .map(|m| json!({"extent": m.extent, "start_sector": m.start_sector, "end_sector": m.end_sector, "problem": m.kind.describe()}))
            .collect();
        json!({
            "target": path,
            "matches": report.matches(),
            "extents_compared": report.extents_compared,
            "unmapped_extents_not_compared": unmapped_extents,
            "extents_matching": report.extents_matching,
            "mismatches": mismatches,
            "backup_gpt_moved": report.gpt_moved,
            "disk_digest": hex::encode(report.digest),
            "image_digest": hex::encode(image.manifest().image_digest),
            "audit_record": audit_seq,
        })
    };
    let summary = if several {
        json!({
            "matches": differing.is_empty(),
            "targets": summaries.iter().map(json_of).collect::<Vec<_>>(),
        })
    } else {
        json_of(&summaries[0])
    };
    // Under --json a mismatch is reported by the report itself and the
    // exit code; the error envelope would be a second JSON document.
    let json_mode = output::get().json;
    output::print_result(&summary, || {
        for (path, report, _) in &summaries {
            print_check(path, report, unmapped_extents, &image, several);
        }
    })?;
    if differing.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else if json_mode {
        Ok(ExitCode::from(ExitClass::Integrity.code()))
    } else {
        Err(Unsuccessful {
            message: differing.join("; "),
            class: ExitClass::Integrity,
        }
        .into())
    }
}

fn print_check(
    path: &Path,
    report: &CheckReport,
    unmapped_extents: usize,
    image: &Image<File>,
    several: bool,
) {
    let prefix = if several {
        format!("{}: ", path.display())
    } else {
        String::new()
    };
    for m in &report.mismatches {
        println!(
            "{prefix}MISMATCH extent {} (sectors {}..{}) {}",
            m.extent,
            m.start_sector,
            m.end_sector,
            m.kind.describe()
        );
    }
    println!(
        "{prefix}{} of {} extents match (data and zero extents only{})",
        report.extents_matching,
        report.extents_compared,
        if unmapped_extents > 0 {
            format!(
                "; {unmapped_extents} unmapped extents, free space the image did not keep, \
                 are not compared"
            )
        } else {
            String::new()
        }
    );
    if report.gpt_moved {
        println!(
            "{prefix}the backup GPT was moved to the end of this larger disk by the restore; \
             the moved tables are valid and nothing else differs there"
        );
    }
    if report.matches() {
        println!(
            "MATCH: {} equals image {} in all {} extents it holds (free space the image did not capture is not compared)",
            path.display(),
            image.manifest().name,
            report.extents_compared
        );
    }
}

/// Opens a disk read-only, with O_DIRECT where the file system allows it,
/// and returns it with its size; a disk smaller than the image cannot
/// match.
fn open_for_check(path: &Path, image: &Image<File>) -> anyhow::Result<(File, u64)> {
    let disk =
        restore::open_for_reading(path).map_err(|e| FileError::new("cannot open", path, e))?;
    let disk_bytes = disk
        .metadata()
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .map_or_else(|| reliquary_appliance::sys::device_size_bytes(&disk), Ok)?;
    if disk_bytes < image.manifest().logical_bytes() {
        return Err(Unsuccessful {
            message: format!(
                "{} holds {disk_bytes} bytes, fewer than the image's {}: it cannot match",
                path.display(),
                image.manifest().logical_bytes()
            ),
            class: ExitClass::Integrity,
        }
        .into());
    }
    Ok((disk, disk_bytes))
}

fn print_signers(image: &Image<File>) {
    for s in image.signers() {
        output::info(format_args!(
            "  signed by {} ({}), {}: {}",
            s.name,
            s.key_id,
            s.statement.meaning.as_str(),
            s.status.as_str()
        ));
    }
}

/// Asks the operator to confirm every target on a terminal; refuses
/// without one.
fn confirm(
    targets: &[TargetInfo],
    image: &Image<File>,
    unmapped: Unmapped,
    stdin_carries_pin: bool,
) -> anyhow::Result<()> {
    let stdin_is_terminal = std::io::stdin().is_terminal();
    // With the PIN on standard input, the question goes to the terminal.
    let ask_on_tty = !stdin_is_terminal && stdin_carries_pin && terminal::available();
    if !stdin_is_terminal && !ask_on_tty {
        let paths: Vec<String> = targets
            .iter()
            .map(|t| t.path.display().to_string())
            .collect();
        return Err(CliRefusal(format!(
            "refusing to overwrite {} without confirmation: no terminal to ask on; pass --yes",
            paths.join(", ")
        ))
        .into());
    }
    eprintln!("About to OVERWRITE:");
    for info in targets {
        eprintln!("  {}", info.path.display());
        eprintln!(
            "    model {}  serial {}  size {}  sectors {} B",
            info.model.as_deref().unwrap_or("-"),
            info.serial.as_deref().unwrap_or("-"),
            human_bytes(info.size_bytes),
            info.logical_sector_size
        );
    }
    eprintln!(
        "with image {} version {}: every extent it holds is written, and free space it did not capture is {}.",
        image.manifest().name,
        image.manifest().version,
        match unmapped {
            Unmapped::Left => "left as it is",
            Unmapped::Zeroed => "zeroed",
            Unmapped::Discarded => "discarded (or zeroed where a discard does not read back as zeros)",
        }
    );
    let prompt = "Type `yes` to continue: ";
    let answer = if ask_on_tty {
        terminal::ask(prompt)
            .map_err(|e| FileError::new("cannot ask on", Path::new("/dev/tty"), e))?
    } else {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        answer
    };
    if answer.trim() != "yes" {
        return Err(CliRefusal("not confirmed; nothing was written".into()).into());
    }
    Ok(())
}

/// Draws a bar per stage for one target; for several, a line each time a
/// target enters a stage.
fn draw_progress(rx: std::sync::mpsc::Receiver<Progress>, several: bool) {
    if several {
        let mut stages: Vec<Option<Stage>> = Vec::new();
        for p in rx {
            if stages.len() <= p.target {
                stages.resize(p.target + 1, None);
            }
            if stages[p.target] != Some(p.stage) {
                stages[p.target] = Some(p.stage);
                output::info(format!("target {}: {}", p.target + 1, stage_label(p.stage)));
            }
        }
        return;
    }
    let terminal = std::io::stderr().is_terminal();
    let mut current: Option<(Stage, Meter)> = None;
    for p in rx {
        if current.as_ref().is_none_or(|(stage, _)| *stage != p.stage) {
            if let Some((_, meter)) = current.take() {
                meter.finish();
            }
            if !terminal {
                output::info(format_args!("stage: {}", p.stage));
            }
            current = Some((
                p.stage,
                Meter::with_plain_lines(stage_label(p.stage), p.bytes_total),
            ));
        }
        if let Some((_, meter)) = &current {
            meter.set(p.bytes_done);
        }
    }
    if let Some((_, meter)) = current {
        meter.finish();
    }
}

fn stage_label(stage: Stage) -> &'static str {
    match stage {
        Stage::CheckingSignatures => "checking signatures",
        Stage::Wiping => "wiping",
        Stage::Comparing => "comparing with the disk",
        Stage::Writing => "writing",
        Stage::ReadingBack => "reading back",
        Stage::Finalising => "finalising",
        Stage::WipingAfterFailure => "wiping after the failure",
    }
}
