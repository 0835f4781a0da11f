//! The work behind the screens: the vault, verification, discovery, the
//! restore and the audit log. Long work runs on its own thread and reports
//! back as [`WorkerEvent`]s, so the UI answers keys during full-speed I/O.

pub mod audit_view;
pub mod targets;
pub mod vault;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reliquary_appliance::audit::{
    lock_shared, AuditLog, Digest, Environment, Operator, CHECKPOINT_FILE,
};
use reliquary_appliance::ops::{self, Recording};
use reliquary_appliance::restore::{
    self, AuditRecording, CancelToken, Outcome, Progress, RestoreMode, RestoreOptions,
    RestoreReport, RestoreRequest, RestoreRun, Stage, TargetInfo, TargetRun,
};
use reliquary_appliance::safety::TargetRequirement;
use reliquary_image::{Image, TrustStore};

use crate::app::{Action, App, SignedIn, WorkerEvent};
use crate::model::{
    FullCheck, ProgressView, RestoreIntent, ResultOutcome, ResultView, TargetCandidate,
    TargetResult, VaultEntry,
};
use crate::operators::{OperatorList, OperatorsError};
use crate::runner::{AppEvent, Effects};
use targets::{error_chain, TargetQuery};

/// The least time between two progress reports forwarded to the UI.
pub const PROGRESS_INTERVAL: Duration = Duration::from_millis(50);

/// Where the session's files are.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    pub vault: PathBuf,
    pub trust: PathBuf,
    pub audit: PathBuf,
    pub include_loop: bool,
    pub target_files: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("cannot load the trust store {path}: {source}")]
    Trust {
        path: PathBuf,
        source: reliquary_image::TrustError,
    },
    #[error(transparent)]
    Operators(#[from] OperatorsError),
}

/// What a session holds while the UI runs: the opened images, the audit
/// log, and the running restore.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    images: Vec<Option<Arc<Image<File>>>>,
    /// The open audit log, or why it could not be opened (restores are
    /// then refused, and the viewer still shows the log).
    audit: Result<Arc<Mutex<AuditLog>>, String>,
    events: Sender<AppEvent>,
    cancel: Option<CancelToken>,
    restore_thread: Option<JoinHandle<()>>,
}

impl Session {
    /// Loads the trust store, the operators list and the vault, and opens
    /// the audit log. Returns the session and the app's starting state.
    pub fn start(
        config: SessionConfig,
        events: Sender<AppEvent>,
        demo: bool,
    ) -> Result<(Self, App), SessionError> {
        let trust = TrustStore::load(&config.trust).map_err(|source| SessionError::Trust {
            path: config.trust.clone(),
            source,
        })?;
        let operators = OperatorList::from_trust(&trust, &config.trust)?;
        let (entries, images, vault_error) = match vault::scan_vault(&config.vault, &trust) {
            Ok(scanned) => {
                let (entries, images): (Vec<VaultEntry>, Vec<_>) =
                    scanned.into_iter().map(|s| (s.entry, s.image)).unzip();
                (entries, images, None)
            }
            Err(e) => (
                Vec::new(),
                Vec::new(),
                Some(format!("{}: {e}", config.vault.display())),
            ),
        };
        let env = Environment::system(Some(Digest(trust.digest())));
        let audit = AuditLog::open(&config.audit, env)
            .map(|log| Arc::new(Mutex::new(log)))
            .map_err(|e| error_chain(&e));
        let mut app = App::new(entries, operators, demo);
        app.vault_error = vault_error;
        let session = Session {
            config,
            images,
            audit,
            events,
            cancel: None,
            restore_thread: None,
        };
        Ok((session, app))
    }

    /// Why restores are refused, if the audit log is unusable.
    pub fn audit_problem(&self) -> Option<&str> {
        self.audit.as_ref().err().map(String::as_str)
    }

    /// Waits for a running restore thread to log its end.
    pub fn finish(&mut self) {
        if let Some(cancel) = &self.cancel {
            cancel.cancel();
        }
        if let Some(thread) = self.restore_thread.take() {
            let _ = thread.join();
        }
    }

    fn verify(&self, index: usize, operator: Operator) {
        let Some(Some(image)) = self.images.get(index).cloned() else {
            return;
        };
        let events = self.events.clone();
        let audit = self.audit.clone();
        std::thread::spawn(move || {
            let total = image.manifest().stored_bytes;
            let done = AtomicU64::new(0);
            let last = Mutex::new(Instant::now());
            let recording = audit.as_ref().ok().map(|log| Recording {
                log,
                operator: &operator,
            });
            let verification = ops::verify_and_record(&image, recording, &|n| {
                let now_done = done.fetch_add(n, Ordering::Relaxed) + n;
                if let Ok(mut last) = last.try_lock() {
                    if last.elapsed() >= PROGRESS_INTERVAL {
                        *last = Instant::now();
                        let _ = events.send(AppEvent::worker(WorkerEvent::VerifyProgress {
                            image: index,
                            done: now_done,
                            total,
                        }));
                    }
                }
            });
            let check = match verification.result {
                Ok(()) => FullCheck::Passed {
                    seconds: verification.took.as_secs_f64(),
                },
                Err(e) => FullCheck::Failed {
                    reason: e.to_string(),
                },
            };
            let audit_problem = match (&audit, verification.record) {
                (Err(e), _) => Some(format!("the audit log is unavailable: {e}")),
                (_, Some(Err(e))) => Some(error_chain(&e)),
                _ => None,
            };
            let _ = events.send(AppEvent::worker(WorkerEvent::VerifyFinished {
                image: index,
                check,
                audit_problem,
            }));
        });
    }

    fn load_targets(&self, app: &App, index: usize) {
        let (Some(Some(image)), Some(entry)) =
            (self.images.get(index).cloned(), app.vault.get(index))
        else {
            return;
        };
        let path = entry.path.clone();
        let config = self.config.clone();
        let events = self.events.clone();
        let audit = self.audit.clone();
        std::thread::spawn(move || {
            let m = image.manifest();
            let query = TargetQuery {
                requirement: TargetRequirement {
                    min_size_bytes: m.logical_bytes(),
                    logical_sector_size: m.source.logical_sector_size,
                },
                image_path: &path,
                vault: &config.vault,
                include_loop: config.include_loop,
                target_files: &config.target_files,
            };
            let mut list = targets::load_targets(&query);
            if let Ok(log) = &audit {
                targets::offer_resumes(&mut list, &image, &lock_shared(log));
            }
            let _ = events.send(AppEvent::worker(WorkerEvent::TargetsLoaded(list)));
        });
    }

    fn start_restore(
        &mut self,
        app: &App,
        image_index: usize,
        target_indices: &[usize],
        intent: &RestoreIntent,
        resume: Option<u64>,
        operator: Operator,
    ) {
        let (Some(Some(image)), Some(entry)) = (
            self.images.get(image_index).cloned(),
            app.vault.get(image_index),
        ) else {
            return;
        };
        // A target no longer in the list is refused by the job, like one
        // whose identity could not be read.
        let chosen: Vec<Option<&TargetCandidate>> = target_indices
            .iter()
            .map(|i| app.targets.items.get(*i))
            .collect();
        let cancel = CancelToken::new();
        self.cancel = Some(cancel.clone());
        let job = RestoreJob {
            image,
            image_path: entry.path.clone(),
            image_name: entry.display_name(),
            targets: chosen
                .iter()
                .map(|t| t.and_then(|t| t.confirmed.clone()))
                .collect(),
            target_labels: chosen
                .iter()
                .map(|t| t.map_or_else(String::new, TargetCandidate::label))
                .collect(),
            vault: self.config.vault.clone(),
            audit_dir: self.config.audit.clone(),
            operator,
            meaning: intent.meaning.words(),
            reason: intent.reason.clone(),
            mode: match resume {
                Some(interrupted_seq) => RestoreMode::Resume { interrupted_seq },
                None => RestoreMode::Full,
            },
            audit: self.audit.clone(),
            events: self.events.clone(),
            cancel,
        };
        self.restore_thread = Some(std::thread::spawn(move || {
            let result = job.run();
            let _ = job
                .events
                .send(AppEvent::worker(WorkerEvent::RestoreFinished(Box::new(
                    result,
                ))));
        }));
    }
}

impl Effects for Session {
    fn perform(&mut self, action: &Action, app: &App) {
        let operator = app.operator.as_ref().map(audit_operator);
        match (action, operator) {
            (Action::VerifyImage(i), Some(op)) => self.verify(*i, op),
            (Action::LoadTargets(i), _) => self.load_targets(app, *i),
            (
                Action::StartRestore {
                    image,
                    targets,
                    intent,
                    resume,
                },
                Some(op),
            ) => self.start_restore(app, *image, targets, intent, *resume, op),
            (Action::CancelRestore, _) => {
                if let Some(cancel) = &self.cancel {
                    cancel.cancel();
                }
            }
            (Action::WriteCertificates { seqs }, _) => {
                let (dir, events) = (self.config.audit.clone(), self.events.clone());
                let seqs = seqs.clone();
                std::thread::spawn(move || {
                    let written = seqs
                        .iter()
                        .map(|&seq| {
                            reliquary_appliance::report::write_certificate(&dir, seq)
                                .map(|path| path.display().to_string())
                                .map_err(|e| error_chain(&e))
                        })
                        .collect::<Result<Vec<String>, String>>()
                        .map(|paths| paths.join(", "));
                    let _ = events.send(AppEvent::worker(WorkerEvent::CertificateWritten(written)));
                });
            }
            (Action::LoadAuditLog, _) => {
                let dir = self.config.audit.clone();
                let events = self.events.clone();
                std::thread::spawn(move || {
                    let (rows, banner) = audit_view::load(&dir);
                    let _ =
                        events.send(AppEvent::worker(WorkerEvent::AuditLoaded { rows, banner }));
                });
            }
            _ => {}
        }
    }
}

fn audit_operator(op: &SignedIn) -> Operator {
    Operator {
        id: op.id.clone(),
        name: op.name.clone(),
    }
}

/// Everything the restore thread needs.
struct RestoreJob {
    image: Arc<Image<File>>,
    image_path: PathBuf,
    image_name: String,
    /// Each target as confirmed, `None` for one that could not be read.
    targets: Vec<Option<TargetInfo>>,
    target_labels: Vec<String>,
    vault: PathBuf,
    audit_dir: PathBuf,
    operator: Operator,
    /// The meaning and the reason the operator gave (21 CFR Part 11).
    meaning: &'static str,
    reason: String,
    /// A full restore, or the resume of an interrupted one.
    mode: RestoreMode,
    audit: Result<Arc<Mutex<AuditLog>>, String>,
    events: Sender<AppEvent>,
    cancel: CancelToken,
}

impl RestoreJob {
    /// Runs the engine's one restore entry point and turns what it did,
    /// and what it recorded, into the result screen.
    fn run(&self) -> ResultView {
        let refused = |reason: String| self.result(ResultOutcome::Refused { reason }, None);
        let Some(confirmed) = self.targets.iter().cloned().collect::<Option<Vec<_>>>() else {
            return refused("a disk could not be identified; list the disks again".into());
        };
        if confirmed.is_empty() {
            return refused("no target was chosen".into());
        }
        let log = match &self.audit {
            Ok(log) => log,
            Err(e) => return refused(format!("the audit log is unavailable: {e}")),
        };
        let request = RestoreRequest {
            image: &self.image,
            image_path: &self.image_path,
            targets: &confirmed,
            vault: Some(&self.vault),
            // Files are targets only when named with --target-file.
            create_file: true,
            options: RestoreOptions {
                only_differences: self.mode != RestoreMode::Full,
                ..RestoreOptions::default()
            },
            meaning: Some(self.meaning),
            reason: Some(self.reason.as_str()).filter(|r| !r.trim().is_empty()),
            mode: self.mode,
        };
        let (progress_tx, progress_rx) = mpsc::channel::<Progress>();
        let events = self.events.clone();
        let forwarder = std::thread::spawn(move || forward_progress(progress_rx, &events));
        let tell_started = |seqs: &[u64]| {
            let _ = self
                .events
                .send(AppEvent::worker(WorkerEvent::RestoreStarted {
                    seqs: seqs.to_vec(),
                }));
        };
        let recording = AuditRecording {
            log,
            operator: &self.operator,
            on_started: &tell_started,
        };
        let run = restore::restore(&request, Some(recording), &progress_tx, &self.cancel);
        drop(progress_tx);
        let _ = forwarder.join();
        match run {
            RestoreRun::NotStarted(e) => refused(error_chain(&e)),
            RestoreRun::Ran(mut runs) if runs.len() == 1 => {
                let TargetRun {
                    report, finished, ..
                } = runs.remove(0);
                let mut view = self.result(outcome_of(&report), Some(&report));
                match finished {
                    Some(Ok(end)) => {
                        view.audit_seq = Some(end.seq);
                        view.checkpoint_short = Some(end.checkpoint);
                        view.checkpoint_note = self.checkpoint_note();
                    }
                    Some(Err(e)) => view.audit_problem = Some(error_chain(&e)),
                    None => {}
                }
                view
            }
            RestoreRun::Ran(runs) => self.several_results(runs),
        }
    }

    /// The result of a restore onto several targets: one row each, and
    /// overall the first failure (or success when every target succeeded).
    fn several_results(&self, runs: Vec<TargetRun>) -> ResultView {
        let overall = runs
            .iter()
            .map(|run| outcome_of(&run.report))
            .find(|outcome| *outcome != ResultOutcome::Success)
            .unwrap_or(ResultOutcome::Success);
        let mut view = self.result(overall, None);
        view.target_label = format!("{} disks", runs.len());
        view.bytes_written = runs.iter().map(|run| run.report.bytes_written).sum();
        view.warnings = runs
            .iter()
            .flat_map(|run| run.report.warnings.iter().cloned())
            .collect();
        view.checkpoint_short = runs
            .iter()
            .filter_map(|run| run.finished.as_ref()?.as_ref().ok())
            .map(|end| end.checkpoint.clone())
            .next_back();
        view.checkpoint_note = view
            .checkpoint_short
            .as_ref()
            .and_then(|_| self.checkpoint_note());
        view.per_target = runs
            .iter()
            .zip(&self.target_labels)
            .map(|(run, label)| TargetResult {
                target_label: label.clone(),
                outcome: outcome_of(&run.report),
                bytes_written: run.report.bytes_written,
                readback_digest: run.report.readback_digest.map(hex::encode),
                audit_seq: run
                    .finished
                    .as_ref()
                    .and_then(|f| f.as_ref().ok())
                    .map(|end| end.seq),
                audit_problem: run
                    .finished
                    .as_ref()
                    .and_then(|f| f.as_ref().err())
                    .map(|e| error_chain(e)),
            })
            .collect();
        view
    }

    /// The signed checkpoint note the last recorded end left, for the QR code.
    fn checkpoint_note(&self) -> Option<String> {
        std::fs::read_to_string(self.audit_dir.join(CHECKPOINT_FILE)).ok()
    }

    fn result(&self, outcome: ResultOutcome, report: Option<&RestoreReport>) -> ResultView {
        ResultView {
            outcome,
            image_name: self.image_name.clone(),
            target_label: self.target_labels.concat(),
            bytes_written: report.map_or(0, |r| r.bytes_written),
            bytes_skipped: report.map_or(0, |r| r.bytes_skipped),
            stage_seconds: report.map_or_else(Vec::new, |r| {
                r.stage_durations
                    .iter()
                    .map(|(s, d)| (s.to_string(), format!("{:.1}", d.as_secs_f64())))
                    .collect()
            }),
            readback_digest: report.and_then(|r| r.readback_digest).map(hex::encode),
            warnings: report.map_or_else(Vec::new, |r| r.warnings.clone()),
            audit_seq: None,
            checkpoint_short: None,
            checkpoint_note: None,
            audit_problem: None,
            per_target: Vec::new(),
        }
    }
}

fn outcome_of(report: &RestoreReport) -> ResultOutcome {
    match &report.outcome {
        Outcome::Success => ResultOutcome::Success,
        Outcome::Cancelled => ResultOutcome::Cancelled,
        Outcome::Failed {
            error,
            chunk,
            sectors,
        } => ResultOutcome::Failed {
            reason: error_chain(error),
            chunk: *chunk,
            sectors: *sectors,
        },
    }
}

/// Forwards the engine's progress to the UI: for each target, at most
/// one report per [`PROGRESS_INTERVAL`] except on a change of its stage.
fn forward_progress(rx: mpsc::Receiver<Progress>, events: &Sender<AppEvent>) {
    let mut last_sent: Option<Instant> = None;
    let mut last_stage: BTreeMap<usize, Stage> = BTreeMap::new();
    let mut pending: BTreeMap<usize, ProgressView> = BTreeMap::new();
    let send = |view: ProgressView| {
        events
            .send(AppEvent::worker(WorkerEvent::RestoreProgress(view)))
            .is_ok()
    };
    loop {
        match rx.recv_timeout(PROGRESS_INTERVAL) {
            Ok(p) => {
                pending.insert(p.target, progress_view(&p));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let stage_changed = pending
            .values()
            .any(|v| last_stage.get(&v.target) != Some(&v.stage));
        let due = last_sent.is_none_or(|at| at.elapsed() >= PROGRESS_INTERVAL) || stage_changed;
        if !due || pending.is_empty() {
            continue;
        }
        last_sent = Some(Instant::now());
        for (target, view) in std::mem::take(&mut pending) {
            last_stage.insert(target, view.stage);
            if !send(view) {
                return;
            }
        }
    }
    for view in pending.into_values() {
        send(view);
    }
}

fn progress_view(p: &Progress) -> ProgressView {
    ProgressView {
        target: p.target,
        stage: p.stage,
        bytes_done: p.bytes_done,
        bytes_total: p.bytes_total,
        chunks_done: p.chunks_done,
        chunks_total: p.chunks_total,
        bytes_per_second: p.bytes_per_second,
        eta_seconds: p.eta.map(|d| d.as_secs()),
    }
}
