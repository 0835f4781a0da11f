//! Every transition of the state machine, and every refusal, without a
//! terminal.

mod fixtures;

use std::sync::mpsc;

use crossterm::event::{Event, KeyCode, KeyEventKind};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use fixtures::*;
use recovery_tui::app::{
    handle_key, Action, App, AuditPane, ConfirmField, Overlay, Screen, SignInField, WorkerEvent,
};
use recovery_tui::model::{
    ChainBanner, FullCheck, ProgressView, RestoreIntent, RestoreMeaning, ResultOutcome, TargetList,
};
use recovery_tui::runner::{run, AppEvent, Effects};
use reliquary_appliance::restore::Stage;

fn press(app: &mut App, code: KeyCode) -> Action {
    handle_key(app, key(code))
}

fn type_text(app: &mut App, text: &str) {
    for c in text.chars() {
        assert_eq!(press(app, KeyCode::Char(c)), Action::None);
    }
}

fn wo_4711() -> RestoreIntent {
    RestoreIntent {
        meaning: RestoreMeaning::DiskReplacement,
        reason: "WO-4711".into(),
    }
}

fn sign_in_as(app: &mut App, id: &str, pin: &str) -> Action {
    type_text(app, id);
    assert_eq!(
        press(app, KeyCode::Enter),
        Action::None,
        "Enter moves to the PIN"
    );
    assert_eq!(app.sign_in_field, SignInField::Pin);
    type_text(app, pin);
    press(app, KeyCode::Enter)
}

#[test]
fn sign_in_refuses_an_empty_id_and_a_wrong_id_or_pin_alike() {
    let mut app = App::new(vault(), Some(operators()), false);
    assert_eq!(app.screen, Screen::SignIn);
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.screen, Screen::SignIn);
    assert!(app
        .sign_in
        .error
        .as_deref()
        .unwrap_or("")
        .contains("Type your operator id"));

    let unknown = sign_in_as(&mut app, "op8", "471100");
    assert_eq!(
        unknown,
        Action::RecordSignInFailure {
            id: "op8".into(),
            attempt: 1,
            locked: false
        }
    );
    let unknown_error = app.sign_in.error.clone().unwrap_or_default();
    assert!(
        unknown_error.contains("id or PIN is wrong"),
        "{unknown_error}"
    );
    assert_eq!(app.pin, "", "a refused PIN is cleared");
    assert_eq!(app.operator, None);

    press(&mut app, KeyCode::Esc);
    let wrong_pin = sign_in_as(&mut app, "op7", "471200");
    assert!(matches!(
        wrong_pin,
        Action::RecordSignInFailure { attempt: 1, .. }
    ));
    assert_eq!(app.screen, Screen::SignIn);
    // The same words for an unknown id and a wrong PIN: no id is revealed.
    let wrong_error = app.sign_in.error.clone().unwrap_or_default();
    assert_eq!(
        wrong_error.split(". Attempt").next(),
        unknown_error.split(". Attempt").next()
    );
}

#[test]
fn five_wrong_pins_lock_the_id_even_for_the_right_pin() {
    let mut app = App::new(vault(), Some(operators()), false);
    for attempt in 1..=5 {
        press(&mut app, KeyCode::Esc);
        let action = sign_in_as(&mut app, "op7", "000000");
        assert_eq!(
            action,
            Action::RecordSignInFailure {
                id: "op7".into(),
                attempt,
                locked: attempt == 5
            }
        );
    }
    assert!(app
        .sign_in
        .error
        .clone()
        .unwrap_or_default()
        .contains("locked"));
    press(&mut app, KeyCode::Esc);
    let action = sign_in_as(&mut app, "op7", "471100");
    // Refused, and not recorded again: the lock shows once in the log.
    assert_eq!(action, Action::None);
    assert!(app
        .sign_in
        .error
        .clone()
        .unwrap_or_default()
        .contains("a supervisor must unlock"));
    assert_eq!(app.operator, None, "a locked id cannot sign in");
    // Another operator still can.
    press(&mut app, KeyCode::Esc);
    assert_eq!(sign_in_as(&mut app, "svc12", "123456"), Action::None);
    assert_eq!(app.screen, Screen::Vault);
}

#[test]
fn sign_in_with_a_listed_id_and_its_pin_records_the_name() {
    let mut app = App::new(vault(), Some(operators()), false);
    // `q` and `?`-free text is typed, not a command, on this screen.
    type_text(&mut app, "sq");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.sign_in.text, "", "Esc clears");
    type_text(&mut app, "op7/");
    assert_eq!(
        app.sign_in.text, "op7",
        "characters that cannot be in an id are ignored"
    );
    press(&mut app, KeyCode::Enter);
    type_text(&mut app, "471100");
    assert_eq!(app.pin, "471100");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.screen, Screen::Vault);
    assert_eq!(app.pin, "", "the PIN is not kept");
    let op = app.operator.expect("signed in");
    assert_eq!(
        (op.id.as_str(), op.name.as_deref()),
        ("op7", Some("Alice Jones"))
    );
}

#[test]
fn without_an_operators_list_any_id_is_accepted_without_a_name() {
    let mut app = App::new(vault(), None, false);
    type_text(&mut app, "field-tech");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.screen, Screen::Vault);
    assert_eq!(app.operator.as_ref().map(|o| o.name.clone()), Some(None));
}

#[test]
fn vault_moves_within_bounds() {
    let mut app = signed_in();
    press(&mut app, KeyCode::Up);
    assert_eq!(app.vault_cursor, 0);
    for _ in 0..10 {
        press(&mut app, KeyCode::Char('j'));
    }
    assert_eq!(app.vault_cursor, 3);
    press(&mut app, KeyCode::Char('k'));
    press(&mut app, KeyCode::Down);
    assert_eq!(app.vault_cursor, 3);
}

#[test]
fn untrusted_revoked_and_damaged_images_cannot_be_chosen_or_verified() {
    for (index, word) in [(1, "untrusted"), (2, "revoked"), (3, "damaged")] {
        let mut app = signed_in();
        app.vault_cursor = index;
        assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
        assert_eq!(app.screen, Screen::Vault, "{word}");
        let notice = app.notice.clone().unwrap_or_default();
        assert!(
            notice.contains("cannot be chosen") && notice.contains(word),
            "{notice}"
        );
        assert_eq!(press(&mut app, KeyCode::Char('v')), Action::None);
        assert!(app
            .notice
            .clone()
            .unwrap_or_default()
            .contains("cannot be verified"));
    }
}

#[test]
fn a_trusted_image_opens_its_details_and_verifies() {
    let mut app = signed_in();
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    assert_eq!(app.screen, Screen::ImageDetails);
    assert_eq!(press(&mut app, KeyCode::Char('v')), Action::VerifyImage(0));
    assert!(matches!(
        app.vault[0].check,
        FullCheck::Running { done: 0, .. }
    ));
    // A second `v` while running starts nothing.
    assert_eq!(press(&mut app, KeyCode::Char('v')), Action::None);
    app.apply(WorkerEvent::VerifyProgress {
        image: 0,
        done: 10,
        total: 20,
    });
    assert_eq!(
        app.vault[0].check,
        FullCheck::Running {
            done: 10,
            total: 20
        }
    );
    app.apply(WorkerEvent::VerifyFinished {
        image: 0,
        check: FullCheck::Passed { seconds: 1.5 },
        audit_problem: None,
    });
    assert_eq!(app.vault[0].check, FullCheck::Passed { seconds: 1.5 });
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.screen, Screen::Vault);
    // `v` on the vault screen verifies and shows the details.
    assert_eq!(press(&mut app, KeyCode::Char('v')), Action::VerifyImage(0));
    assert_eq!(app.screen, Screen::ImageDetails);
}

#[test]
fn an_image_that_fails_full_verification_cannot_be_restored() {
    let mut app = signed_in();
    press(&mut app, KeyCode::Enter);
    app.apply(WorkerEvent::VerifyFinished {
        image: 0,
        check: FullCheck::Failed {
            reason: "chunk 3 fails its SHA-256 check".into(),
        },
        audit_problem: None,
    });
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    assert_eq!(app.screen, Screen::ImageDetails);
    assert!(app
        .notice
        .clone()
        .unwrap_or_default()
        .contains("damaged: chunk 3"));
}

#[test]
fn details_lead_to_targets_and_the_first_safe_target_is_preselected() {
    let mut app = signed_in();
    press(&mut app, KeyCode::Enter);
    assert_eq!(press(&mut app, KeyCode::Enter), Action::LoadTargets(0));
    assert_eq!(app.screen, Screen::Targets);
    assert!(app.targets.loading);
    let mut list = targets();
    list.items.swap(0, 1); // the unsafe disk first
    app.apply(WorkerEvent::TargetsLoaded(list));
    assert_eq!(app.target_cursor, 1, "the unsafe disk is skipped");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.screen, Screen::ImageDetails);
}

#[test]
fn an_unsafe_disk_cannot_be_chosen() {
    let mut app = signed_in();
    app.screen = Screen::Targets;
    app.targets = targets();
    press(&mut app, KeyCode::Down);
    assert_eq!(app.target_cursor, 1);
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    assert_eq!(app.screen, Screen::Targets);
    assert!(app
        .notice
        .clone()
        .unwrap_or_default()
        .contains("running system"));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.screen, Screen::Confirm, "the file target may be chosen");
}

#[test]
fn a_wrong_confirmation_code_starts_nothing() {
    let mut app = confirming(0);
    type_text(&mut app, "345B");
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    assert_eq!(app.screen, Screen::Confirm);
    assert!(app
        .confirm
        .error
        .clone()
        .unwrap_or_default()
        .contains("does not match the last 4 characters of the serial"));
    assert_eq!(app.confirm.text, "");
    // Enter alone, or any other key, never starts a restore.
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    type_text(&mut app, "q");
    assert_eq!(app.screen, Screen::Confirm, "q is typed, not quit");
    press(&mut app, KeyCode::Backspace);
    assert_eq!(app.confirm.text, "");
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.screen, Screen::Targets);
}

#[test]
fn the_right_code_then_enter_starts_the_restore() {
    let mut app = confirming(0);
    type_text(&mut app, "345a");
    assert_eq!(press(&mut app, KeyCode::Enter), starts(&[0], None));
    assert_eq!(app.screen, Screen::Restoring);
    let view = app.restore.as_ref().expect("restore view");
    assert!(view.target_label.contains("S6PTNM0T812345A"));

    let mut app = confirming(2);
    type_text(&mut app, "K7QX");
    assert_eq!(press(&mut app, KeyCode::Enter), starts(&[2], None));
}

#[test]
fn a_target_that_became_unsafe_is_refused_at_confirmation() {
    let mut app = confirming(0);
    app.targets.items[0].refusals.push("mounted".into());
    type_text(&mut app, "345A");
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    assert_eq!(app.screen, Screen::Confirm);
}

#[test]
fn esc_during_a_restore_asks_and_only_a_second_confirmation_cancels() {
    let mut app = restoring();
    assert_eq!(press(&mut app, KeyCode::Esc), Action::None);
    assert_eq!(
        app.overlay,
        Some(Overlay::CancelRestore {
            cancel_chosen: false
        })
    );
    // Enter on the default choice keeps restoring.
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    assert_eq!(app.overlay, None);
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.overlay, None, "Esc in the dialog keeps restoring");
    press(&mut app, KeyCode::Esc);
    press(&mut app, KeyCode::Right);
    assert_eq!(
        app.overlay,
        Some(Overlay::CancelRestore {
            cancel_chosen: true
        })
    );
    assert_eq!(press(&mut app, KeyCode::Enter), Action::CancelRestore);
    assert!(app.restore.as_ref().is_some_and(|r| r.cancel_requested));
    assert_eq!(
        app.screen,
        Screen::Restoring,
        "the screen waits for the engine"
    );
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.overlay, None, "no second dialog once cancelling");
    app.apply(WorkerEvent::RestoreFinished(Box::new(
        result(ResultOutcome::Cancelled).result.expect("result"),
    )));
    assert_eq!(app.screen, Screen::Result);
    assert!(!app.should_quit);
}

#[test]
fn quitting_during_a_restore_asks_then_waits_for_the_end_to_be_logged() {
    let mut app = restoring();
    assert_eq!(handle_key(&mut app, ctrl_c()), Action::None);
    assert_eq!(
        app.overlay,
        Some(Overlay::QuitDuringRestore { quit_chosen: false })
    );
    press(&mut app, KeyCode::Enter);
    assert!(!app.should_quit);
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::None);
    press(&mut app, KeyCode::Tab);
    assert_eq!(press(&mut app, KeyCode::Enter), Action::CancelRestore);
    assert!(app.quit_after_restore && !app.should_quit);
    let finished = app.apply(WorkerEvent::RestoreFinished(Box::new(
        result(ResultOutcome::Cancelled).result.expect("result"),
    )));
    assert_eq!(finished, Action::Quit);
    assert!(app.should_quit);
}

#[test]
fn progress_feeds_the_gauges_and_the_sparkline() {
    let mut app = restoring();
    app.apply(WorkerEvent::RestoreStarted { seqs: vec![9] });
    let progress = |stage: Stage| ProgressView {
        target: 0,
        stage,
        bytes_done: 1,
        bytes_total: 2,
        chunks_done: 1,
        chunks_total: 2,
        bytes_per_second: 250e6,
        eta_seconds: Some(3),
    };
    let before = app.restore.as_ref().map_or(0, |r| r.throughput.len());
    app.apply(WorkerEvent::RestoreProgress(progress(Stage::Writing)));
    let view = app.restore.as_ref().expect("view");
    assert_eq!(view.started_seqs, [9]);
    assert_eq!(view.throughput.len(), before + 1);
    assert_eq!(view.throughput.last(), Some(&250));
    assert!(!view.written);
    app.apply(WorkerEvent::RestoreProgress(progress(Stage::ReadingBack)));
    assert!(app.restore.as_ref().is_some_and(|r| r.written));
}

#[test]
fn the_result_leads_back_to_the_vault_or_to_the_audit_log() {
    let mut app = result(ResultOutcome::Success);
    assert_eq!(press(&mut app, KeyCode::Char('l')), Action::LoadAuditLog);
    assert_eq!(app.screen, Screen::AuditLog);
    press(&mut app, KeyCode::Esc);
    assert_eq!(
        app.screen,
        Screen::Result,
        "Esc returns where the log was opened"
    );
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.screen, Screen::Vault);
    assert_eq!(app.result, None);
}

#[test]
fn the_audit_log_filters_moves_and_switches_panes() {
    let mut app = signed_in();
    assert_eq!(press(&mut app, KeyCode::Char('l')), Action::LoadAuditLog);
    assert!(app.audit.loading);
    app.apply(WorkerEvent::AuditLoaded {
        rows: audit_rows(),
        banner: ChainBanner {
            ok: true,
            text: "ok".into(),
        },
    });
    assert!(!app.audit.loading);
    assert_eq!(app.audit.selected().map(|r| r.seq), Some(6), "newest first");
    press(&mut app, KeyCode::Down);
    assert_eq!(app.audit.selected().map(|r| r.seq), Some(5));
    press(&mut app, KeyCode::Char('/'));
    assert!(app.audit.editing_filter);
    type_text(&mut app, "failed");
    assert_eq!(
        app.audit
            .visible()
            .iter()
            .map(|r| r.seq)
            .collect::<Vec<_>>(),
        vec![4, 3]
    );
    press(&mut app, KeyCode::Enter);
    assert!(!app.audit.editing_filter);
    assert_eq!(app.audit.filter, "failed", "Enter keeps the filter");
    press(&mut app, KeyCode::Tab);
    assert_eq!(app.audit.pane, AuditPane::Details);
    press(&mut app, KeyCode::Down);
    assert_eq!(
        (app.audit.cursor, app.audit.details_scroll),
        (0, 1),
        "keys scroll the focused pane"
    );
    press(&mut app, KeyCode::Tab);
    press(&mut app, KeyCode::Char('/'));
    press(&mut app, KeyCode::Esc);
    assert_eq!(
        app.audit.filter, "",
        "Esc while filtering clears the filter"
    );
    press(&mut app, KeyCode::Esc);
    assert_eq!(app.screen, Screen::Vault);
}

#[test]
fn help_opens_everywhere_and_closes() {
    for mut app in [
        App::new(vault(), None, false),
        signed_in(),
        confirming(0),
        restoring(),
        audit_view(),
    ] {
        let screen = app.screen;
        press(&mut app, KeyCode::Char('?'));
        assert_eq!(app.overlay, Some(Overlay::Help), "{screen:?}");
        press(&mut app, KeyCode::Char('j'));
        assert_eq!(app.overlay, Some(Overlay::Help));
        press(&mut app, KeyCode::Esc);
        assert_eq!((app.overlay, app.screen), (None, screen));
    }
}

#[test]
fn q_quits_when_no_restore_runs_and_esc_signs_out() {
    let mut app = signed_in();
    press(&mut app, KeyCode::Esc);
    assert_eq!((app.screen, app.operator.clone()), (Screen::SignIn, None));
    let mut app = signed_in();
    assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
    assert!(app.should_quit);
}

#[test]
fn key_releases_are_ignored() {
    let mut app = signed_in();
    let mut release = key(KeyCode::Char('q'));
    release.kind = KeyEventKind::Release;
    assert_eq!(handle_key(&mut app, release), Action::None);
    assert!(!app.should_quit);
}

/// Records the actions `run` asks for.
#[derive(Default)]
struct Recorder(Vec<Action>);

impl Effects for Recorder {
    fn perform(&mut self, action: &Action, _app: &App) {
        if *action != Action::None {
            self.0.push(action.clone());
        }
    }
}

#[test]
fn run_drives_the_app_from_keys_and_worker_reports_on_a_test_backend() {
    let (tx, rx) = mpsc::channel();
    let mut app = App::new(vault(), Some(operators()), false);
    let typed = "op7".chars().map(KeyCode::Char);
    let pin = "471100".chars().map(KeyCode::Char);
    for code in typed.chain([KeyCode::Enter]).chain(pin).chain([
        KeyCode::Enter,
        KeyCode::Enter,
        KeyCode::Enter,
    ]) {
        tx.send(AppEvent::Input(Event::Key(key(code))))
            .expect("send");
    }
    tx.send(AppEvent::worker(WorkerEvent::TargetsLoaded(TargetList {
        loading: false,
        ..targets()
    })))
    .expect("send");
    tx.send(AppEvent::Input(Event::Key(key(KeyCode::Char('q')))))
        .expect("send");
    let mut terminal = Terminal::new(TestBackend::new(80, 25)).expect("terminal");
    let mut recorder = Recorder::default();
    let mut frames = 0;
    run(&mut terminal, &mut app, &mut recorder, &rx, &mut |_| {
        frames += 1
    })
    .expect("runs");
    assert_eq!(recorder.0, vec![Action::LoadTargets(0), Action::Quit]);
    assert!(frames >= 2, "the first frame and at least one after keys");
    let screen = format!("{}", terminal.backend());
    assert!(screen.contains("Samsung SSD 870 EVO"), "{screen}");
}

#[test]
fn an_interrupted_restore_is_offered_as_resume_first_and_can_start_over() {
    let mut app = signed_in();
    app.screen = Screen::Targets;
    app.targets = targets();
    offer_resume(&mut app);
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.screen, Screen::Confirm);
    assert_eq!(app.confirm_field, ConfirmField::Mode);
    assert!(app.resume_chosen, "resume is the first choice");
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.confirm_field, ConfirmField::Meaning);
    press(&mut app, KeyCode::Enter);
    type_text(&mut app, "WO-4711");
    press(&mut app, KeyCode::Enter);
    type_text(&mut app, "345A");
    assert_eq!(press(&mut app, KeyCode::Enter), starts(&[0], Some(3)));
    assert_eq!(app.restore.as_ref().and_then(|r| r.resumes), Some(3));

    // Start over: the same flow with the other choice.
    let mut app = confirming(0);
    offer_resume(&mut app);
    app.confirm_field = ConfirmField::Mode;
    press(&mut app, KeyCode::Right);
    assert!(!app.resume_chosen);
    press(&mut app, KeyCode::BackTab);
    assert_eq!(app.confirm_field, ConfirmField::Code, "Tab order wraps");
    type_text(&mut app, "345A");
    assert_eq!(press(&mut app, KeyCode::Enter), starts(&[0], None));
}

#[test]
fn without_an_interrupted_restore_tab_never_reaches_the_resume_choice() {
    let mut app = confirming(0);
    app.confirm_field = ConfirmField::Meaning;
    for _ in 0..6 {
        press(&mut app, KeyCode::Tab);
        assert_ne!(app.confirm_field, ConfirmField::Mode);
    }
    press(&mut app, KeyCode::BackTab);
    assert_ne!(app.confirm_field, ConfirmField::Mode);
}

#[test]
fn space_marks_several_targets_and_one_code_confirms_them_all() {
    let mut app = signed_in();
    app.screen = Screen::Targets;
    app.targets = targets();
    press(&mut app, KeyCode::Char(' '));
    press(&mut app, KeyCode::Down);
    // The disk that holds the running system cannot be marked.
    press(&mut app, KeyCode::Char(' '));
    assert!(app
        .notice
        .as_deref()
        .unwrap_or_default()
        .contains("cannot be marked"));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Char(' '));
    assert_eq!(app.marked, vec![0, 2]);
    // Space again unmarks, and marks again.
    press(&mut app, KeyCode::Char(' '));
    assert_eq!(app.marked, vec![0]);
    press(&mut app, KeyCode::Char(' '));
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.screen, Screen::Confirm);
    assert!(app.confirming_several());
    assert_eq!(app.confirm_field, ConfirmField::Meaning, "no resume choice");
    press(&mut app, KeyCode::Enter);
    type_text(&mut app, "WO-4711");
    press(&mut app, KeyCode::Enter);
    // One disk's own code does not confirm them all.
    type_text(&mut app, "345A");
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    assert!(app.confirm.error.is_some());
    type_text(&mut app, "m4rk");
    assert_eq!(press(&mut app, KeyCode::Enter), starts(&[0, 2], None));
    let view = app.restore.as_ref().expect("restore view");
    assert_eq!(view.rows.len(), 2);
    assert!(app.marked.is_empty());
}

#[test]
fn one_marked_target_is_the_single_flow_and_may_resume() {
    let mut app = signed_in();
    app.screen = Screen::Targets;
    app.targets = targets();
    offer_resume(&mut app);
    press(&mut app, KeyCode::Char(' '));
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Down);
    press(&mut app, KeyCode::Enter);
    assert_eq!(app.target_cursor, 0, "the marked target is the one chosen");
    assert!(!app.confirming_several());
    assert_eq!(app.confirm_field, ConfirmField::Mode);
}

#[test]
fn progress_of_several_targets_goes_to_their_rows() {
    let mut app = confirming_several();
    type_text(&mut app, "M4RK");
    press(&mut app, KeyCode::Enter);
    let progress = |target: usize, stage: Stage| ProgressView {
        target,
        stage,
        bytes_done: 5,
        bytes_total: 10,
        chunks_done: 1,
        chunks_total: 2,
        bytes_per_second: 1e6,
        eta_seconds: Some(1),
    };
    app.apply(WorkerEvent::RestoreProgress(progress(
        1,
        Stage::ReadingBack,
    )));
    app.apply(WorkerEvent::RestoreProgress(progress(0, Stage::Writing)));
    let view = app.restore.as_ref().expect("restore view");
    let stages: Vec<Option<Stage>> = view
        .rows
        .iter()
        .map(|r| r.progress.as_ref().map(|p| p.stage))
        .collect();
    assert_eq!(stages, vec![Some(Stage::Writing), Some(Stage::ReadingBack)]);
}

/// The restore of the trusted image onto `targets` with WO-4711.
fn starts(targets: &[usize], resume: Option<u64>) -> Action {
    Action::StartRestore {
        image: 0,
        targets: targets.to_vec(),
        intent: wo_4711(),
        resume,
    }
}

#[test]
fn several_targets_without_a_group_code_are_never_confirmed() {
    let mut app = confirming_several();
    app.targets.group_code.clear();
    assert_eq!(press(&mut app, KeyCode::Enter), Action::None);
    assert_eq!(app.screen, Screen::Confirm);
}

#[test]
fn behind_the_terminal_too_small_notice_only_quit_acts() {
    // The confirmation screen with the right code typed: at a readable size
    // Enter would start a restore.
    let (tx, rx) = mpsc::channel();
    let mut app = confirming(0);
    for code in "345A".chars().map(KeyCode::Char).chain([KeyCode::Enter]) {
        tx.send(AppEvent::Input(Event::Key(key(code))))
            .expect("send");
    }
    tx.send(AppEvent::Input(Event::Key(key(KeyCode::Char('q')))))
        .expect("send");
    let mut terminal = Terminal::new(TestBackend::new(60, 20)).expect("terminal");
    let mut recorder = Recorder::default();
    run(&mut terminal, &mut app, &mut recorder, &rx, &mut |_| {}).expect("runs");
    assert_eq!(recorder.0, vec![Action::Quit], "only q acted");
    assert!(app.restore.is_none(), "no restore started");
    assert_eq!(app.screen, Screen::Confirm);
    let screen = format!("{}", terminal.backend());
    assert!(
        screen.contains("Reliquary needs at least 80x24"),
        "{screen}"
    );
}

#[test]
fn p_after_a_restore_onto_several_targets_writes_a_certificate_for_each() {
    let mut app = result_several();
    assert_eq!(
        press(&mut app, KeyCode::Char('p')),
        Action::WriteCertificates { seqs: vec![7, 8] }
    );
}
