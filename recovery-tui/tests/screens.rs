//! Snapshots of every screen at 80x25 (the Linux console) and 120x40,
//! rendered from fixed states on ratatui's `TestBackend`. The fixtures use
//! fixed paths, times and ids, so no temporary path reaches a snapshot.
//!
//! Regenerate after a deliberate change with
//! `INSTA_UPDATE=always cargo test -p recovery-tui --test screens` and
//! review the diff.

mod fixtures;

use crossterm::event::KeyCode;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Color;
use ratatui::Terminal;

use fixtures::*;
use recovery_tui::app::{handle_key, App, Overlay, Screen};
use recovery_tui::model::{FullCheck, ResultOutcome};

const SIZES: [(u16, u16); 2] = [(80, 25), (120, 40)];

fn render(app: &App, width: u16, height: u16) -> Terminal<TestBackend> {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("terminal");
    terminal
        .draw(|frame| frame.render_widget(app, frame.area()))
        .expect("draws");
    terminal
}

fn snapshot(name: &str, app: &App) {
    for (width, height) in SIZES {
        let terminal = render(app, width, height);
        insta::assert_snapshot!(format!("{name}_{width}x{height}"), terminal.backend());
    }
}

/// The colour of the first cell of `text` on the screen.
fn colour_of(buffer: &Buffer, text: &str) -> Option<Color> {
    let width = buffer.area.width as usize;
    let cells = &buffer.content;
    for row in 0..buffer.area.height as usize {
        let line: String = cells[row * width..(row + 1) * width]
            .iter()
            .map(|c| c.symbol())
            .collect();
        if let Some(byte_at) = line.find(text) {
            let column = line[..byte_at].chars().count();
            return Some(cells[row * width + column].fg);
        }
    }
    None
}

#[test]
fn sign_in() {
    let app = App::new(fixtures::vault(), Some(operators()), false);
    snapshot("sign_in", &app);
    let mut refused = app.clone();
    for c in "op8".chars() {
        handle_key(&mut refused, key(KeyCode::Char(c)));
    }
    handle_key(&mut refused, key(KeyCode::Enter));
    snapshot("sign_in_refused", &refused);
    let mut demo = App::new(fixtures::vault(), Some(operators()), true);
    demo.sign_in.text = "tech".into();
    snapshot("sign_in_demo", &demo);
}

#[test]
fn vault() {
    let app = signed_in();
    snapshot("vault", &app);
    let mut refused = signed_in();
    refused.vault_cursor = 1;
    handle_key(&mut refused, key(KeyCode::Enter));
    snapshot("vault_untrusted_refused", &refused);
    let mut damaged = signed_in();
    damaged.vault_cursor = 3;
    snapshot("vault_damaged_selected", &damaged);
}

#[test]
fn vault_trust_words_have_their_colours_and_failing_images_are_greyed() {
    let terminal = render(&signed_in(), 80, 25);
    let buffer = terminal.backend().buffer();
    assert_eq!(colour_of(buffer, "trusted "), Some(Color::Green));
    assert_eq!(colour_of(buffer, "untrusted"), Some(Color::Yellow));
    assert_eq!(colour_of(buffer, "revoked"), Some(Color::Red));
    assert_eq!(colour_of(buffer, "damaged"), Some(Color::Red));
    assert_eq!(colour_of(buffer, "MRI console"), Some(Color::DarkGray));
}

#[test]
fn image_details() {
    let mut app = signed_in();
    app.screen = Screen::ImageDetails;
    snapshot("image_details", &app);
    app.vault[0].check = FullCheck::Running {
        done: 4_000_000_000,
        total: 9_663_676_416,
    };
    snapshot("image_details_verifying", &app);
    app.vault[0].check = FullCheck::Passed { seconds: 31.4 };
    snapshot("image_details_verified", &app);
    app.vault[0].check = FullCheck::Failed {
        reason: "chunk 812 (sectors 1662976..1671168, file offset 3405774848) fails its SHA-256 check: the data was altered".into(),
    };
    snapshot("image_details_damaged", &app);
}

#[test]
fn targets() {
    let mut app = signed_in();
    app.screen = Screen::Targets;
    app.targets = fixtures::targets();
    snapshot("targets", &app);
    let terminal = render(&app, 80, 25);
    assert_eq!(
        colour_of(terminal.backend().buffer(), "/dev/sda"),
        Some(Color::DarkGray),
        "unsafe disks are greyed"
    );
    app.targets.loading = true;
    app.targets.items.clear();
    snapshot("targets_loading", &app);
}

#[test]
fn confirm() {
    let mut app = confirming(0);
    app.confirm.text = "34".into();
    snapshot("confirm_disk", &app);
    let mut wrong = confirming(2);
    for c in "K7QZ".chars() {
        handle_key(&mut wrong, key(KeyCode::Char(c)));
    }
    handle_key(&mut wrong, key(KeyCode::Enter));
    snapshot("confirm_file_wrong_code", &wrong);
}

#[test]
fn an_interrupted_restore_is_offered_on_the_targets_and_the_confirmation() {
    let mut app = signed_in();
    app.screen = Screen::Targets;
    app.targets = fixtures::targets();
    offer_resume(&mut app);
    snapshot("targets_resume", &app);
    let mut app = confirming(0);
    offer_resume(&mut app);
    app.confirm_field = recovery_tui::app::ConfirmField::Mode;
    snapshot("confirm_resume", &app);
    let mut resuming = fixtures::restoring();
    if let Some(view) = &mut resuming.restore {
        view.resumes = Some(3);
    }
    snapshot("restoring_resume", &resuming);
    let mut result = fixtures::result(ResultOutcome::Success);
    result.finished = resuming.restore.clone();
    if let Some(r) = &mut result.result {
        r.bytes_written = 3_221_225_472;
        r.bytes_skipped = 6_442_450_944;
    }
    snapshot("result_resumed", &result);
}

#[test]
fn several_targets_are_marked_confirmed_with_one_code_and_shown_row_by_row() {
    let mut app = signed_in();
    app.screen = Screen::Targets;
    app.targets = fixtures::targets();
    app.marked = vec![0, 2];
    snapshot("targets_marked", &app);
    snapshot("confirm_several", &confirming_several());
    snapshot("restoring_several", &fixtures::restoring_several());
    snapshot("result_several", &fixtures::result_several());
}

#[test]
fn restoring() {
    let app = fixtures::restoring();
    snapshot("restoring", &app);
    let mut cancel = app.clone();
    cancel.overlay = Some(Overlay::CancelRestore {
        cancel_chosen: true,
    });
    snapshot("restoring_cancel_prompt", &cancel);
    let mut quit = app.clone();
    quit.overlay = Some(Overlay::QuitDuringRestore { quit_chosen: false });
    snapshot("restoring_quit_prompt", &quit);
    let mut readback = app.clone();
    if let Some(view) = &mut readback.restore {
        view.written = true;
        if let Some(p) = &mut view.progress {
            p.stage = reliquary_appliance::restore::Stage::ReadingBack;
            p.bytes_done = p.bytes_total / 4;
        }
        view.cancel_requested = true;
    }
    snapshot("restoring_readback_cancelling", &readback);
}

#[test]
fn result() {
    snapshot("result_success", &fixtures::result(ResultOutcome::Success));
    snapshot(
        "result_failed",
        &fixtures::result(ResultOutcome::Failed {
            reason:
                "chunk 812 (sectors 1662976..1671168) fails its SHA-256 check: the data was altered"
                    .into(),
            chunk: Some(812),
            sectors: Some((1_662_976, 1_671_168)),
        }),
    );
    snapshot(
        "result_cancelled",
        &fixtures::result(ResultOutcome::Cancelled),
    );
    snapshot(
        "result_refused",
        &fixtures::result(ResultOutcome::Refused {
            reason: "refusing to write /dev/sdb: /dev/sdb1 is mounted on /mnt; unmount it first"
                .into(),
        }),
    );
}

#[test]
fn the_checkpoint_qr_code_has_its_own_captioned_screen() {
    let mut app = fixtures::result(ResultOutcome::Success);
    handle_key(&mut app, key(KeyCode::Char('c')));
    assert_eq!(app.screen, Screen::CheckpointQr);
    // At 120x40 the whole signed note; at 80x25 a signed note needs more
    // rows than there are, so the code holds its body (the tree head).
    let large = format!("{}", render(&app, 120, 40).backend());
    let small = format!("{}", render(&app, 80, 25).backend());
    for screen in [&small, &large] {
        assert!(screen.contains('▀') || screen.contains('▄'), "{screen}");
        assert!(screen.contains("checkpoint: size 7 root"), "{screen}");
    }
    assert!(!large.contains("unsigned"), "{large}");
    assert!(small.contains("(note body, unsigned)"), "{small}");
    snapshot("checkpoint_qr", &app);
    handle_key(&mut app, key(KeyCode::Esc));
    assert_eq!(app.screen, Screen::Result);
}

#[test]
fn a_stick_that_is_not_ready_lists_every_problem() {
    let app = fixtures::not_ready();
    snapshot("not_ready", &app);
}

#[test]
fn two_files_holding_the_same_image_are_marked() {
    let mut app = signed_in();
    if let Some(s) = &mut app.vault[0].summary {
        s.version =
            "2026.03 validated build 4471 for line 3, rev B with the long version text".into();
    }
    let mut copy = app.vault[0].clone();
    copy.file_name = "dmg5000-win7 (copy).rimg".into();
    copy.path = "/vault/dmg5000-win7 (copy).rimg".into();
    app.vault.push(copy);
    app.vault_cursor = 4;
    let screen = format!("{}", render(&app, 80, 25).backend());
    assert!(
        screen.contains("SAME IMAGE as dmg5000-win7.rimg"),
        "{screen}"
    );
    assert!(
        screen.contains("rev B with the long"),
        "the version is never cut:\n{screen}"
    );
    snapshot("vault_same_image_twice", &app);
}

/// Under `TERM=linux` every screen draws only CP437 characters.
#[test]
fn linux_console_screens_use_only_cp437() {
    let mut qr = fixtures::result(ResultOutcome::Success);
    qr.screen = Screen::CheckpointQr;
    let mut help = signed_in();
    handle_key(&mut help, key(KeyCode::Char('?')));
    let mut demo_sign_in = App::new(fixtures::vault(), Some(operators()), true);
    demo_sign_in.demo_pins = vec![("tech1".into(), "111111".into())];
    let screens: Vec<(&str, App)> = vec![
        ("sign_in", demo_sign_in),
        ("not_ready", fixtures::not_ready()),
        ("vault", signed_in()),
        ("confirm", confirming(0)),
        ("restoring", fixtures::restoring()),
        ("result", fixtures::result(ResultOutcome::Success)),
        (
            "result_cancelled",
            fixtures::result(ResultOutcome::Cancelled),
        ),
        ("checkpoint_qr", qr),
        ("audit_log", audit_view()),
        ("help", help),
    ];
    for (name, mut app) in screens {
        app.console_font = true;
        let terminal = render(&app, 80, 25);
        let buffer = terminal.backend().buffer();
        for cell in &buffer.content {
            assert!(
                cell.symbol()
                    .chars()
                    .all(recovery_tui::ui::console::is_cp437),
                "{name}: {:?} is not in CP437:\n{}",
                cell.symbol(),
                terminal.backend()
            );
        }
        insta::assert_snapshot!(format!("linux_{name}_80x25"), terminal.backend());
    }
}

#[test]
fn audit_log() {
    let app = audit_view();
    snapshot("audit_log", &app);
    let terminal = render(&app, 80, 25);
    assert_eq!(
        colour_of(terminal.backend().buffer(), "2 2026-03-02 10:01:00"),
        Some(Color::Red),
        "INTERRUPTED records stand out"
    );
    let mut filtered = app.clone();
    handle_key(&mut filtered, key(KeyCode::Char('/')));
    for c in "fail".chars() {
        handle_key(&mut filtered, key(KeyCode::Char(c)));
    }
    snapshot("audit_log_filtering", &filtered);
    let mut broken = app.clone();
    broken.audit.banner = Some(recovery_tui::model::ChainBanner {
        ok: false,
        text: "CHAIN VERIFICATION FAILED: record 3 at offset 16384: the signature does not verify"
            .into(),
    });
    broken.audit.rows[3].invalid = Some("the signature does not verify".into());
    broken.audit.cursor = 3;
    snapshot("audit_log_broken_chain", &broken);
}

#[test]
fn help() {
    let mut app = signed_in();
    handle_key(&mut app, key(KeyCode::Char('?')));
    snapshot("help", &app);
}

#[test]
fn a_small_terminal_is_told_so() {
    let terminal = render(&signed_in(), 70, 20);
    insta::assert_snapshot!("too_small_70x20", terminal.backend());
}
