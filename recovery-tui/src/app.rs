//! The application state and its state machine.
//!
//! [`handle_key`] is pure: it changes [`App`] and returns the [`Action`] the
//! caller must perform (start a verification, a restore, ...). Work done
//! elsewhere comes back as [`WorkerEvent`]s through [`App::apply`]. Nothing
//! here touches a disk or the terminal, so every transition is unit-tested.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use reliquary_appliance::restore::Stage;

use crate::model::{
    AuditRow, ChainBanner, FullCheck, ProgressView, RestoreIntent, RestoreMeaning, RestoreView,
    ResultOutcome, ResultView, TargetCandidate, TargetList, TargetProgress, TrustStatus,
    VaultEntry,
};
use crate::operators::{
    is_id_char, is_valid_id, Lockout, OperatorList, MAX_FAILED_ATTEMPTS, MAX_ID_LEN, MAX_PIN_LEN,
};

/// Throughput samples kept for the sparkline.
pub const THROUGHPUT_SAMPLES: usize = 120;
const MAX_CODE_LEN: usize = 8;
const MAX_FILTER_LEN: usize = 40;
/// The longest work order or reason typed on the confirmation screen.
pub const MAX_REASON_LEN: usize = 120;

/// The screens, in the order a restore walks through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    /// The stick failed its own checks at start: nothing else is reachable.
    NotReady,
    SignIn,
    Vault,
    ImageDetails,
    Targets,
    Confirm,
    Restoring,
    Result,
    AuditLog,
    /// The checkpoint's QR code alone, so it fits an 80x25 console.
    CheckpointQr,
}

/// A dialog drawn over the current screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    Help,
    /// Esc during a restore: cancel it?
    CancelRestore {
        cancel_chosen: bool,
    },
    /// q during a restore: cancel it and quit?
    QuitDuringRestore {
        quit_chosen: bool,
    },
}

/// What the caller must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    None,
    Quit,
    /// Verify every chunk of vault image N.
    VerifyImage(usize),
    /// Discover the targets for vault image N.
    LoadTargets(usize),
    /// Restore vault image `image` onto `targets` of the target list (one,
    /// or several at once), with the operator's stated meaning and reason
    /// for the record.
    StartRestore {
        image: usize,
        targets: Vec<usize>,
        intent: RestoreIntent,
        /// The interrupted restore to resume (its `RestoreStarted`), when
        /// the operator chose to resume rather than start over.
        resume: Option<u64>,
    },
    /// A sign-in was refused: record it (the id, never the PIN).
    RecordSignInFailure {
        id: String,
        attempt: u32,
        locked: bool,
    },
    /// A sign-in succeeded after failed ones: record it, so the log's count
    /// of failures starts again.
    RecordSignIn {
        id: String,
    },
    CancelRestore,
    LoadAuditLog,
    /// Write the restore certificate of each audit record in `seqs` (a PDF
    /// per target) to the audit partition.
    WriteCertificates {
        seqs: Vec<u64>,
    },
}

/// Results of work done off the UI thread.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    VerifyProgress {
        image: usize,
        done: u64,
        total: u64,
    },
    VerifyFinished {
        image: usize,
        check: FullCheck,
        audit_problem: Option<String>,
    },
    TargetsLoaded(TargetList),
    /// The targets are open and their `RestoreStarted` records are logged
    /// with these numbers, in the order of the targets.
    RestoreStarted {
        seqs: Vec<u64>,
    },
    RestoreProgress(ProgressView),
    RestoreFinished(Box<ResultView>),
    AuditLoaded {
        rows: Vec<AuditRow>,
        banner: ChainBanner,
    },
    /// Where the restore certificate was written, or why it was not.
    CertificateWritten(Result<String, String>),
}

/// Who is signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub id: String,
    pub name: Option<String>,
}

/// Which sign-in field has the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SignInField {
    #[default]
    Id,
    Pin,
}

/// Which confirmation field has the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConfirmField {
    /// Resume the interrupted restore, or start over (offered only when
    /// the audit log shows one for this image and disk).
    Mode,
    #[default]
    Meaning,
    Reason,
    Code,
}

/// What the technician asks for once the session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterQuit {
    /// Leave the program (the stick's shell-less init then powers off).
    Exit,
    /// Power the machine off now.
    PowerOff,
    /// Sign out: the next operator signs in.
    SignOut,
    /// Run the stick's checks again (from the "not ready" screen).
    Recheck,
}

/// A line of typed text with the error its last submission produced.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TextField {
    pub text: String,
    pub error: Option<String>,
}

/// Which pane of the audit viewer has the keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditPane {
    Records,
    Details,
}

/// The audit viewer's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditView {
    pub loading: bool,
    pub rows: Vec<AuditRow>,
    pub banner: Option<ChainBanner>,
    /// Index into the filtered rows, newest first.
    pub cursor: usize,
    pub filter: String,
    pub editing_filter: bool,
    pub pane: AuditPane,
    pub details_scroll: u16,
    /// Where Esc returns to.
    pub return_to: Screen,
}

impl Default for AuditView {
    fn default() -> Self {
        Self {
            loading: false,
            rows: Vec::new(),
            banner: None,
            cursor: 0,
            filter: String::new(),
            editing_filter: false,
            pane: AuditPane::Records,
            details_scroll: 0,
            return_to: Screen::Vault,
        }
    }
}

impl AuditView {
    /// The rows that pass the filter, newest first.
    pub fn visible(&self) -> Vec<&AuditRow> {
        let mut rows: Vec<&AuditRow> = self
            .rows
            .iter()
            .filter(|r| r.matches(&self.filter))
            .collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.seq));
        rows
    }

    pub fn selected(&self) -> Option<&AuditRow> {
        self.visible().get(self.cursor).copied()
    }
}

/// Everything the screens show.
#[derive(Debug, Clone, PartialEq)]
pub struct App {
    pub screen: Screen,
    pub overlay: Option<Overlay>,
    /// `--demo`: the trust store holds a throwaway key.
    pub demo: bool,
    /// The trust store's `operators` list, when it has one.
    pub operators: Option<OperatorList>,
    pub operator: Option<SignedIn>,
    /// The operator id being typed.
    pub sign_in: TextField,
    /// The PIN being typed; drawn as `*` only, cleared after each try.
    pub pin: String,
    pub sign_in_field: SignInField,
    /// Failed sign-ins per id in this session.
    pub lockout: Lockout,
    /// Ends the loop after a good sign-in (the sign-in runs on its own,
    /// before the session opens the vault and the audit log).
    pub exit_after_sign_in: bool,
    /// Demo only: the operators and PINs to show on the sign-in screen.
    pub demo_pins: Vec<(String, String)>,
    /// Every problem the stick found in itself at start.
    pub problems: Vec<crate::model::StickProblem>,
    /// Draw only characters of the Linux console font (CP437).
    pub console_font: bool,
    pub vault: Vec<VaultEntry>,
    pub vault_cursor: usize,
    /// Why the vault could not be read, if it could not.
    pub vault_error: Option<String>,
    pub targets: TargetList,
    pub target_cursor: usize,
    /// Targets marked with Space to be restored at once, in list order.
    pub marked: Vec<usize>,
    pub confirm: TextField,
    pub confirm_field: ConfirmField,
    pub meaning: RestoreMeaning,
    /// The work order or reason, as typed.
    pub reason: String,
    /// Resume the interrupted restore the chosen target offers, rather
    /// than start over.
    pub resume_chosen: bool,
    pub restore: Option<RestoreView>,
    /// The restore the result screen reports on (its image, version, intent).
    pub finished: Option<RestoreView>,
    pub result: Option<ResultView>,
    /// The restore certificate written from the result screen (`p`): its
    /// path, or why it could not be written.
    pub certificate: Option<Result<String, String>>,
    pub audit: AuditView,
    /// A one-line message about the last refused key, shown above the footer.
    pub notice: Option<String>,
    /// Quit as soon as the running restore has finished and been logged.
    pub quit_after_restore: bool,
    pub should_quit: bool,
    /// The terminal is smaller than the screens: only the size notice is
    /// drawn, so no key but quit may act on what cannot be seen.
    pub too_small: bool,
    /// What to do once the loop ends.
    pub after_quit: AfterQuit,
}

impl App {
    pub fn new(vault: Vec<VaultEntry>, operators: Option<OperatorList>, demo: bool) -> Self {
        Self {
            screen: Screen::SignIn,
            overlay: None,
            demo,
            operators,
            operator: None,
            sign_in: TextField::default(),
            pin: String::new(),
            sign_in_field: SignInField::Id,
            lockout: Lockout::default(),
            exit_after_sign_in: false,
            demo_pins: Vec::new(),
            problems: Vec::new(),
            console_font: false,
            vault,
            vault_cursor: 0,
            vault_error: None,
            targets: TargetList::default(),
            target_cursor: 0,
            marked: Vec::new(),
            confirm: TextField::default(),
            confirm_field: ConfirmField::Meaning,
            meaning: RestoreMeaning::default(),
            reason: String::new(),
            resume_chosen: true,
            restore: None,
            finished: None,
            certificate: None,
            result: None,
            audit: AuditView::default(),
            notice: None,
            quit_after_restore: false,
            should_quit: false,
            too_small: false,
            after_quit: AfterQuit::Exit,
        }
    }

    /// An app that shows only the "Stick not ready" screen.
    pub fn not_ready(problems: Vec<crate::model::StickProblem>, demo: bool) -> Self {
        let mut app = Self::new(Vec::new(), None, demo);
        app.problems = problems;
        app.screen = Screen::NotReady;
        app
    }

    /// Whether the last restore was cancelled (the disk is left wiped).
    pub fn restore_cancelled(&self) -> bool {
        self.result
            .as_ref()
            .is_some_and(|r| r.outcome == ResultOutcome::Cancelled)
    }

    pub fn selected_image(&self) -> Option<&VaultEntry> {
        self.vault.get(self.vault_cursor)
    }

    pub fn selected_target(&self) -> Option<&TargetCandidate> {
        self.targets.items.get(self.target_cursor)
    }

    /// Whether the confirmation is for several marked targets at once.
    pub fn confirming_several(&self) -> bool {
        self.marked.len() > 1
    }

    /// The targets the confirmation is for: the marked ones, or the one
    /// under the cursor.
    pub fn confirmed_targets(&self) -> Vec<&TargetCandidate> {
        if self.confirming_several() {
            self.marked
                .iter()
                .filter_map(|i| self.targets.items.get(*i))
                .collect()
        } else {
            self.selected_target().into_iter().collect()
        }
    }

    pub fn restore_running(&self) -> bool {
        self.screen == Screen::Restoring
    }

    /// Folds a worker's report into the state; returns an action when the
    /// report completes one the user asked for (quit after a restore).
    pub fn apply(&mut self, event: WorkerEvent) -> Action {
        match event {
            WorkerEvent::VerifyProgress { image, done, total } => {
                if let Some(entry) = self.vault.get_mut(image) {
                    entry.check = FullCheck::Running { done, total };
                }
            }
            WorkerEvent::VerifyFinished {
                image,
                check,
                audit_problem,
            } => {
                if let Some(entry) = self.vault.get_mut(image) {
                    entry.check = check;
                    entry.audit_problem = audit_problem;
                }
            }
            WorkerEvent::TargetsLoaded(list) => {
                self.targets = list;
                self.marked.clear();
                self.target_cursor = first_selectable(&self.targets.items).unwrap_or(0);
            }
            WorkerEvent::RestoreStarted { seqs } => {
                if let Some(view) = &mut self.restore {
                    view.started_seqs = seqs;
                }
            }
            WorkerEvent::RestoreProgress(progress) => {
                if let Some(view) = &mut self.restore {
                    if let Some(row) = view.rows.get_mut(progress.target) {
                        row.progress = Some(progress.clone());
                    }
                    if progress.target != 0 {
                        return Action::None;
                    }
                    if progress.stage != Stage::Writing
                        && view
                            .progress
                            .as_ref()
                            .is_some_and(|p| p.stage == Stage::Writing)
                    {
                        view.written = true;
                    }
                    if matches!(progress.stage, Stage::Writing | Stage::ReadingBack) {
                        view.throughput
                            .push((progress.bytes_per_second / 1e6).round() as u64);
                        if view.throughput.len() > THROUGHPUT_SAMPLES {
                            view.throughput.remove(0);
                        }
                    }
                    view.progress = Some(progress);
                }
            }
            WorkerEvent::RestoreFinished(result) => {
                if let (ResultOutcome::Failed { chunk: Some(_), .. }, Some(view)) =
                    (&result.outcome, &self.restore)
                {
                    mark_damaged(&mut self.vault, view.image_index, &result.outcome);
                }
                self.finished = self.restore.take();
                self.overlay = None;
                self.result = Some(*result);
                self.screen = Screen::Result;
                if self.quit_after_restore {
                    self.should_quit = true;
                    return Action::Quit;
                }
            }
            WorkerEvent::CertificateWritten(written) => self.certificate = Some(written),
            WorkerEvent::AuditLoaded { rows, banner } => {
                self.audit.rows = rows;
                self.audit.banner = Some(banner);
                self.audit.loading = false;
                self.audit.cursor = 0;
            }
        }
        Action::None
    }
}

/// Handles one key press. Releases and repeats of other kinds are ignored.
pub fn handle_key(app: &mut App, key: KeyEvent) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::None;
    }
    let ctrl_c = key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
    if app.too_small {
        // A restore is never left behind a notice that hides its question.
        let quit = (ctrl_c || key.code == KeyCode::Char('q')) && !app.restore_running();
        return if quit {
            request_quit(app)
        } else {
            Action::None
        };
    }
    if let Some(overlay) = app.overlay {
        return overlay_key(app, overlay, key.code, ctrl_c);
    }
    if ctrl_c {
        return request_quit(app);
    }
    let typing = matches!(app.screen, Screen::SignIn | Screen::Confirm)
        || (app.screen == Screen::AuditLog && app.audit.editing_filter);
    if key.code == KeyCode::Char('?')
        && !(app.screen == Screen::AuditLog && app.audit.editing_filter)
    {
        app.overlay = Some(Overlay::Help);
        return Action::None;
    }
    if key.code == KeyCode::Char('q') && !typing {
        return request_quit(app);
    }
    app.notice = None;
    match app.screen {
        Screen::NotReady => not_ready_key(app, key.code),
        Screen::CheckpointQr => {
            if matches!(key.code, KeyCode::Esc | KeyCode::Enter | KeyCode::Char('c')) {
                app.screen = Screen::Result;
            }
            Action::None
        }
        Screen::SignIn => sign_in_key(app, key.code),
        Screen::Vault => vault_key(app, key.code),
        Screen::ImageDetails => details_key(app, key.code),
        Screen::Targets => targets_key(app, key.code),
        Screen::Confirm => confirm_key(app, key.code),
        Screen::Restoring => restoring_key(app, key.code),
        Screen::Result => result_key(app, key.code),
        Screen::AuditLog => audit_key(app, key.code),
    }
}

/// An image whose chunk failed its check during a restore is damaged for
/// the rest of the session: it cannot be chosen again.
fn mark_damaged(vault: &mut [VaultEntry], index: usize, outcome: &ResultOutcome) {
    let (ResultOutcome::Failed { reason, chunk, .. }, Some(entry)) =
        (outcome, vault.get_mut(index))
    else {
        return;
    };
    entry.trust = TrustStatus::Damaged;
    entry.reason = Some(match chunk {
        Some(n) => format!("chunk {n} failed its check during a restore: {reason}"),
        None => format!("failed during a restore: {reason}"),
    });
}

fn request_quit(app: &mut App) -> Action {
    if app.restore_running() {
        app.overlay = Some(Overlay::QuitDuringRestore { quit_chosen: false });
        Action::None
    } else {
        app.should_quit = true;
        Action::Quit
    }
}

fn overlay_key(app: &mut App, overlay: Overlay, code: KeyCode, ctrl_c: bool) -> Action {
    let toggles = matches!(
        code,
        KeyCode::Left
            | KeyCode::Right
            | KeyCode::Up
            | KeyCode::Down
            | KeyCode::Tab
            | KeyCode::Char('h' | 'j' | 'k' | 'l')
    );
    match overlay {
        Overlay::Help => {
            if matches!(
                code,
                KeyCode::Esc | KeyCode::Enter | KeyCode::Char('?' | 'q')
            ) {
                app.overlay = None;
            } else if ctrl_c {
                app.overlay = None;
                return request_quit(app);
            }
            Action::None
        }
        Overlay::CancelRestore { cancel_chosen } => match code {
            _ if toggles => {
                app.overlay = Some(Overlay::CancelRestore {
                    cancel_chosen: !cancel_chosen,
                });
                Action::None
            }
            KeyCode::Enter if cancel_chosen => {
                app.overlay = None;
                if let Some(view) = &mut app.restore {
                    view.cancel_requested = true;
                }
                Action::CancelRestore
            }
            KeyCode::Enter | KeyCode::Esc => {
                app.overlay = None;
                Action::None
            }
            _ => Action::None,
        },
        Overlay::QuitDuringRestore { quit_chosen } => match code {
            _ if toggles => {
                app.overlay = Some(Overlay::QuitDuringRestore {
                    quit_chosen: !quit_chosen,
                });
                Action::None
            }
            KeyCode::Enter if quit_chosen => {
                app.overlay = None;
                app.quit_after_restore = true;
                if let Some(view) = &mut app.restore {
                    view.cancel_requested = true;
                }
                Action::CancelRestore
            }
            KeyCode::Enter | KeyCode::Esc => {
                app.overlay = None;
                Action::None
            }
            _ => Action::None,
        },
    }
}

fn not_ready_key(app: &mut App, code: KeyCode) -> Action {
    let after = match code {
        KeyCode::Char('r') | KeyCode::Enter => AfterQuit::Recheck,
        KeyCode::Char('o') => AfterQuit::PowerOff,
        _ => return Action::None,
    };
    app.after_quit = after;
    app.should_quit = true;
    Action::Quit
}

fn sign_in_key(app: &mut App, code: KeyCode) -> Action {
    match (code, app.sign_in_field) {
        (KeyCode::Char(c), SignInField::Id)
            if is_id_char(c) && app.sign_in.text.len() < MAX_ID_LEN =>
        {
            app.sign_in.text.push(c);
            app.sign_in.error = None;
        }
        (KeyCode::Char(c), SignInField::Pin)
            if c.is_ascii_graphic() && app.pin.len() < MAX_PIN_LEN =>
        {
            app.pin.push(c);
        }
        (KeyCode::Backspace, SignInField::Id) => {
            app.sign_in.text.pop();
        }
        (KeyCode::Backspace, SignInField::Pin) => {
            app.pin.pop();
        }
        (KeyCode::Tab | KeyCode::BackTab | KeyCode::Up | KeyCode::Down, _)
            if app.operators.is_some() =>
        {
            app.sign_in_field = match app.sign_in_field {
                SignInField::Id => SignInField::Pin,
                SignInField::Pin => SignInField::Id,
            };
        }
        (KeyCode::Esc, _) => {
            app.sign_in = TextField::default();
            app.pin.clear();
            app.sign_in_field = SignInField::Id;
        }
        (KeyCode::Enter, SignInField::Id) => {
            let id = app.sign_in.text.clone();
            if !is_valid_id(&id) {
                app.sign_in.error = Some("Type your operator id, then press Enter.".into());
                return Action::None;
            }
            if app.operators.is_some() {
                app.sign_in_field = SignInField::Pin;
                return Action::None;
            }
            return signed_in(app, SignedIn { id, name: None });
        }
        (KeyCode::Enter, SignInField::Pin) => return submit_sign_in(app),
        _ => {}
    }
    Action::None
}

/// Checks the id and PIN against the operators list; counts failures.
fn submit_sign_in(app: &mut App) -> Action {
    let id = app.sign_in.text.clone();
    let pin = std::mem::take(&mut app.pin);
    let Some(list) = &app.operators else {
        return Action::None;
    };
    if !is_valid_id(&id) {
        app.sign_in.error = Some("Type your operator id first.".into());
        app.sign_in_field = SignInField::Id;
        return Action::None;
    }
    if app.lockout.is_locked(&id) {
        // Refused without looking at the PIN, and not recorded again: the
        // lock shows once in the log, in the failure that set it.
        app.sign_in.error = Some(locked_message(&id));
        app.sign_in_field = SignInField::Pin;
        return Action::None;
    }
    let checked = list.verify(&id, &pin).map(|entry| entry.name.clone());
    drop(pin);
    match checked {
        Ok(name) => {
            let had_failures = app.lockout.failures(&id) > 0;
            app.lockout.clear(&id);
            let action = signed_in(
                app,
                SignedIn {
                    id: id.clone(),
                    name: Some(name),
                },
            );
            if had_failures {
                Action::RecordSignIn { id }
            } else {
                action
            }
        }
        Err(refusal) => {
            let attempt = app.lockout.record_failure(&id);
            let locked = app.lockout.is_locked(&id);
            app.sign_in.error = Some(if locked {
                locked_message(&id)
            } else {
                format!(
                    "{}. Attempt {attempt} of {MAX_FAILED_ATTEMPTS}: the id locks after {MAX_FAILED_ATTEMPTS}.",
                    capitalised(&refusal.to_string())
                )
            });
            app.sign_in_field = SignInField::Pin;
            Action::RecordSignInFailure {
                id,
                attempt,
                locked,
            }
        }
    }
}

fn locked_message(id: &str) -> String {
    format!(
        "Operator id \"{id}\" is locked after {MAX_FAILED_ATTEMPTS} failed sign-ins. \
         Another operator may sign in; a supervisor must unlock this id."
    )
}

fn signed_in(app: &mut App, who: SignedIn) -> Action {
    app.operator = Some(who);
    app.sign_in = TextField::default();
    app.pin.clear();
    app.sign_in_field = SignInField::Id;
    app.screen = Screen::Vault;
    if app.exit_after_sign_in {
        app.should_quit = true;
        return Action::Quit;
    }
    Action::None
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn vault_key(app: &mut App, code: KeyCode) -> Action {
    match code {
        KeyCode::Up | KeyCode::Char('k') => app.vault_cursor = app.vault_cursor.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => {
            app.vault_cursor = (app.vault_cursor + 1).min(app.vault.len().saturating_sub(1));
        }
        KeyCode::Enter => {
            let Some(entry) = app.selected_image() else {
                return Action::None;
            };
            if let Some(why) = entry.refusal() {
                app.notice = Some(format!("{} cannot be chosen: {why}", entry.display_name()));
                return Action::None;
            }
            app.screen = Screen::ImageDetails;
        }
        KeyCode::Char('v') => return start_verify(app, true),
        KeyCode::Char('l') => return open_audit(app),
        KeyCode::Esc => {
            app.operator = None;
            app.screen = Screen::SignIn;
            app.after_quit = AfterQuit::SignOut;
            app.should_quit = true;
            return Action::Quit;
        }
        _ => {}
    }
    Action::None
}

/// Starts the full verification of the selected image, if it may run.
fn start_verify(app: &mut App, show_details: bool) -> Action {
    let index = app.vault_cursor;
    let Some(entry) = app.vault.get_mut(index) else {
        return Action::None;
    };
    if entry.summary.is_none() || entry.trust != crate::model::TrustStatus::Trusted {
        let why = entry.refusal().unwrap_or_default();
        app.notice = Some(format!(
            "{} cannot be verified: {why}",
            entry.display_name()
        ));
        return Action::None;
    }
    if matches!(entry.check, FullCheck::Running { .. }) {
        return Action::None;
    }
    let total = entry.summary.as_ref().map_or(0, |s| s.stored_bytes);
    entry.check = FullCheck::Running { done: 0, total };
    if show_details {
        app.screen = Screen::ImageDetails;
    }
    Action::VerifyImage(index)
}

fn open_audit(app: &mut App) -> Action {
    app.audit = AuditView {
        loading: true,
        return_to: app.screen,
        ..AuditView::default()
    };
    app.screen = Screen::AuditLog;
    Action::LoadAuditLog
}

fn details_key(app: &mut App, code: KeyCode) -> Action {
    match code {
        KeyCode::Char('v') => return start_verify(app, false),
        KeyCode::Esc => app.screen = Screen::Vault,
        KeyCode::Enter => {
            let Some(entry) = app.selected_image() else {
                return Action::None;
            };
            if let Some(why) = entry.refusal() {
                app.notice = Some(format!("{} cannot be chosen: {why}", entry.display_name()));
                return Action::None;
            }
            app.targets = TargetList {
                loading: true,
                ..TargetList::default()
            };
            app.target_cursor = 0;
            app.marked.clear();
            app.screen = Screen::Targets;
            return Action::LoadTargets(app.vault_cursor);
        }
        _ => {}
    }
    Action::None
}

fn targets_key(app: &mut App, code: KeyCode) -> Action {
    match code {
        KeyCode::Up | KeyCode::Char('k') => app.target_cursor = app.target_cursor.saturating_sub(1),
        KeyCode::Down | KeyCode::Char('j') => {
            app.target_cursor =
                (app.target_cursor + 1).min(app.targets.items.len().saturating_sub(1));
        }
        KeyCode::Esc => app.screen = Screen::ImageDetails,
        KeyCode::Char(' ') => {
            let Some(target) = app.selected_target() else {
                return Action::None;
            };
            if let Some(why) = target.refusals.first() {
                app.notice = Some(format!("This target cannot be marked: {why}"));
                return Action::None;
            }
            match app.marked.binary_search(&app.target_cursor) {
                Ok(at) => {
                    app.marked.remove(at);
                }
                Err(at) => app.marked.insert(at, app.target_cursor),
            }
        }
        KeyCode::Enter => {
            // One marked target is the same as choosing it.
            if let [only] = app.marked[..] {
                app.target_cursor = only;
                app.marked.clear();
            }
            let Some(target) = app.selected_target() else {
                return Action::None;
            };
            if !app.confirming_several() {
                if let Some(why) = target.refusals.first() {
                    app.notice = Some(format!("This target cannot be chosen: {why}"));
                    return Action::None;
                }
            }
            // Only a single target is resumed.
            let offers_resume = !app.confirming_several() && target.resume.is_some();
            app.confirm = TextField::default();
            app.resume_chosen = offers_resume;
            app.confirm_field = if offers_resume {
                ConfirmField::Mode
            } else {
                ConfirmField::Meaning
            };
            app.screen = Screen::Confirm;
        }
        _ => {}
    }
    Action::None
}

/// The confirmation fields in Tab order; the choice to resume only when
/// the chosen target offers one.
fn confirm_fields(app: &App) -> &'static [ConfirmField] {
    const ALL: [ConfirmField; 4] = [
        ConfirmField::Mode,
        ConfirmField::Meaning,
        ConfirmField::Reason,
        ConfirmField::Code,
    ];
    if !app.confirming_several() && app.selected_target().is_some_and(|t| t.resume.is_some()) {
        &ALL
    } else {
        &ALL[1..]
    }
}

/// The field `step` places after (1) or before (-1) the current one, wrapping.
fn confirm_field_after(app: &App, step: isize) -> ConfirmField {
    let fields = confirm_fields(app);
    let here = fields
        .iter()
        .position(|f| *f == app.confirm_field)
        .unwrap_or(0);
    let count = fields.len() as isize;
    fields[(here as isize + step).rem_euclid(count) as usize]
}

fn confirm_key(app: &mut App, code: KeyCode) -> Action {
    match (code, app.confirm_field) {
        (KeyCode::Tab | KeyCode::Down, _) => app.confirm_field = confirm_field_after(app, 1),
        (KeyCode::BackTab | KeyCode::Up, _) => app.confirm_field = confirm_field_after(app, -1),
        (KeyCode::Left | KeyCode::Right | KeyCode::Char(' '), ConfirmField::Mode) => {
            app.resume_chosen = !app.resume_chosen;
        }
        (KeyCode::Enter, ConfirmField::Mode) => app.confirm_field = ConfirmField::Meaning,
        (KeyCode::Left, ConfirmField::Meaning) => app.meaning = app.meaning.previous(),
        (KeyCode::Right | KeyCode::Char(' '), ConfirmField::Meaning) => {
            app.meaning = app.meaning.next();
        }
        (KeyCode::Enter, ConfirmField::Meaning) => app.confirm_field = ConfirmField::Reason,
        (KeyCode::Char(c), ConfirmField::Reason)
            if (c.is_ascii_graphic() || c == ' ') && app.reason.len() < MAX_REASON_LEN =>
        {
            app.reason.push(c);
            app.confirm.error = None;
        }
        (KeyCode::Backspace, ConfirmField::Reason) => {
            app.reason.pop();
        }
        (KeyCode::Enter, ConfirmField::Reason) => app.confirm_field = ConfirmField::Code,
        (KeyCode::Char(c), ConfirmField::Code)
            if c.is_ascii_alphanumeric() && app.confirm.text.len() < MAX_CODE_LEN =>
        {
            app.confirm.text.push(c);
            app.confirm.error = None;
        }
        (KeyCode::Backspace, ConfirmField::Code) => {
            app.confirm.text.pop();
        }
        (KeyCode::Esc, _) => {
            app.confirm = TextField::default();
            app.screen = Screen::Targets;
        }
        (KeyCode::Enter, ConfirmField::Code) => return submit_confirm(app),
        _ => {}
    }
    Action::None
}

fn submit_confirm(app: &mut App) -> Action {
    let (Some(image), targets) = (app.selected_image(), app.confirmed_targets()) else {
        return Action::None;
    };
    // The refusals are checked again: a refresh may have changed them.
    if image.refusal().is_some() || targets.is_empty() || !targets.iter().all(|t| t.is_selectable())
    {
        app.confirm.error = Some("This image or target can no longer be chosen; go back.".into());
        return Action::None;
    }
    let reason = app.reason.trim().to_string();
    if reason.is_empty() {
        app.confirm.error =
            Some("Type the work order or reason first (Tab moves between fields).".into());
        app.confirm_field = ConfirmField::Reason;
        return Action::None;
    }
    let several = app.confirming_several();
    let (code, what) = match targets[..] {
        [only] if !several => (
            only.confirm_code.as_str(),
            if only.code_is_serial {
                "the last 4 characters of the serial"
            } else {
                "the code shown"
            },
        ),
        _ => (app.targets.group_code.as_str(), "the code shown"),
    };
    if code.is_empty() || !app.confirm.text.eq_ignore_ascii_case(code) {
        app.confirm.error = Some(format!(
            "\"{}\" does not match {what}. Nothing was written.",
            app.confirm.text
        ));
        app.confirm.text.clear();
        return Action::None;
    }
    let image_name = image.display_name();
    let image_version = image.summary.as_ref().map(|s| s.version.clone());
    let labels: Vec<String> = targets.iter().map(|t| t.label()).collect();
    let resume = targets[0]
        .resume
        .as_ref()
        .filter(|_| app.resume_chosen && !several)
        .map(|offer| offer.interrupted_seq);
    let indices = if several {
        app.marked.clone()
    } else {
        vec![app.target_cursor]
    };
    let intent = RestoreIntent {
        meaning: app.meaning,
        reason,
    };
    app.restore = Some(RestoreView {
        image_name,
        image_version,
        image_index: app.vault_cursor,
        target_label: if several {
            format!("{} disks", labels.len())
        } else {
            labels.concat()
        },
        intent: intent.clone(),
        resumes: resume,
        started_seqs: Vec::new(),
        progress: None,
        written: false,
        throughput: Vec::new(),
        cancel_requested: false,
        rows: if several {
            labels
                .into_iter()
                .map(|target_label| TargetProgress {
                    target_label,
                    progress: None,
                })
                .collect()
        } else {
            Vec::new()
        },
    });
    app.result = None;
    app.confirm = TextField::default();
    app.reason.clear();
    app.marked.clear();
    app.screen = Screen::Restoring;
    Action::StartRestore {
        image: app.vault_cursor,
        targets: indices,
        intent,
        resume,
    }
}

fn restoring_key(app: &mut App, code: KeyCode) -> Action {
    if code == KeyCode::Esc && app.restore.as_ref().is_some_and(|r| !r.cancel_requested) {
        app.overlay = Some(Overlay::CancelRestore {
            cancel_chosen: false,
        });
    }
    Action::None
}

fn result_key(app: &mut App, code: KeyCode) -> Action {
    match code {
        KeyCode::Char('p') => {
            // One certificate per target: each has its own records.
            let seqs: Vec<u64> = match &app.result {
                Some(r) if !r.per_target.is_empty() => {
                    r.per_target.iter().filter_map(|t| t.audit_seq).collect()
                }
                Some(r) => r.audit_seq.into_iter().collect(),
                None => Vec::new(),
            };
            if !seqs.is_empty() {
                app.certificate = None;
                return Action::WriteCertificates { seqs };
            }
        }
        KeyCode::Enter | KeyCode::Esc => {
            app.certificate = None;
            app.result = None;
            app.screen = Screen::Vault;
        }
        KeyCode::Char('l') => return open_audit(app),
        KeyCode::Char('c')
            if app
                .result
                .as_ref()
                .is_some_and(|r| r.checkpoint_note.is_some()) =>
        {
            app.screen = Screen::CheckpointQr;
        }
        KeyCode::Char('o') => {
            app.after_quit = AfterQuit::PowerOff;
            app.should_quit = true;
            return Action::Quit;
        }
        _ => {}
    }
    Action::None
}

fn audit_key(app: &mut App, code: KeyCode) -> Action {
    let view = &mut app.audit;
    if view.editing_filter {
        match code {
            KeyCode::Char(c) if view.filter.len() < MAX_FILTER_LEN => view.filter.push(c),
            KeyCode::Backspace => {
                view.filter.pop();
            }
            KeyCode::Enter => view.editing_filter = false,
            KeyCode::Esc => {
                view.filter.clear();
                view.editing_filter = false;
            }
            _ => {}
        }
        view.cursor = 0;
        view.details_scroll = 0;
        return Action::None;
    }
    let count = view.visible().len();
    match (code, view.pane) {
        (KeyCode::Char('/'), _) => {
            view.editing_filter = true;
            view.pane = AuditPane::Records;
        }
        (KeyCode::Tab, AuditPane::Records) => view.pane = AuditPane::Details,
        (KeyCode::Tab, AuditPane::Details) => view.pane = AuditPane::Records,
        (KeyCode::Up | KeyCode::Char('k'), AuditPane::Records) => {
            view.cursor = view.cursor.saturating_sub(1);
            view.details_scroll = 0;
        }
        (KeyCode::Down | KeyCode::Char('j'), AuditPane::Records) => {
            view.cursor = (view.cursor + 1).min(count.saturating_sub(1));
            view.details_scroll = 0;
        }
        (KeyCode::Up | KeyCode::Char('k'), AuditPane::Details) => {
            view.details_scroll = view.details_scroll.saturating_sub(1);
        }
        (KeyCode::Down | KeyCode::Char('j'), AuditPane::Details) => {
            view.details_scroll = view.details_scroll.saturating_add(1);
        }
        (KeyCode::Esc, _) => app.screen = view.return_to,
        _ => {}
    }
    Action::None
}

fn first_selectable(items: &[TargetCandidate]) -> Option<usize> {
    items.iter().position(TargetCandidate::is_selectable)
}
