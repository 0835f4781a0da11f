//! Drawing. `impl Widget for &App` renders the whole screen from the state
//! alone, so rendering cannot change anything and tests can snapshot it.
//!
//! Only the 16 basic colours are used, and every meaning colour carries is
//! also said in words, for the Linux console and for colour-blind eyes.

pub mod console;
mod format;
mod qr;
mod screens;

use ratatui::buffer::Buffer;
use ratatui::layout::{Alignment, Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Widget, Wrap};

use crate::app::{App, ConfirmField, Overlay, Screen};

pub use format::{bytes, date_time, disk_size};
pub use qr::half_block_lines;

/// The smallest terminal every screen is designed for (the Linux console
/// is 80x25; one line of slack for consoles that lose one).
pub const MIN_WIDTH: u16 = 80;
pub const MIN_HEIGHT: u16 = 24;

pub(crate) const ACCENT: Color = Color::Cyan;
pub(crate) const GOOD: Color = Color::Green;
pub(crate) const WARN: Color = Color::Yellow;
pub(crate) const BAD: Color = Color::Red;
pub(crate) const MUTED: Color = Color::DarkGray;

impl Widget for &App {
    fn render(self, area: Rect, buf: &mut Buffer) {
        if area.width < MIN_WIDTH || area.height < MIN_HEIGHT {
            render_too_small(self, area, buf);
        } else if self.screen == Screen::CheckpointQr {
            screens::checkpoint_qr(self, area, buf);
        } else {
            render_screen(self, area, buf);
        }
        if self.console_font {
            console::fix_buffer(area, buf);
        }
    }
}

fn render_screen(app: &App, area: Rect, buf: &mut Buffer) {
    let notice_height = u16::from(app.notice.is_some());
    let [header, body, notice, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(notice_height),
        Constraint::Length(1),
    ])
    .areas(area);
    render_header(app, header, buf);
    match app.screen {
        Screen::SignIn => screens::sign_in(app, body, buf),
        Screen::Vault => screens::vault(app, body, buf),
        Screen::ImageDetails => screens::image_details(app, body, buf),
        Screen::Targets => screens::targets(app, body, buf),
        Screen::Confirm => screens::confirm(app, body, buf),
        Screen::Restoring => screens::restoring(app, body, buf),
        Screen::Result => screens::result(app, body, buf),
        Screen::AuditLog => screens::audit_log(app, body, buf),
        Screen::NotReady => screens::not_ready(app, body, buf),
        Screen::CheckpointQr => {}
    }
    if let Some(text) = &app.notice {
        Paragraph::new(Line::from(vec![
            Span::styled(" ! ", Style::new().fg(Color::Black).bg(WARN)),
            Span::styled(format!(" {text}"), Style::new().fg(WARN)),
        ]))
        .render(notice, buf);
    }
    render_footer(app, footer, buf);
    if let Some(overlay) = app.overlay {
        render_overlay(app, overlay, body, buf);
    }
}

fn render_too_small(app: &App, area: Rect, buf: &mut Buffer) {
    let text = format!(
        "This terminal is {}x{}. Reliquary needs at least {MIN_WIDTH}x{MIN_HEIGHT}: \
         enlarge the window or use the text console. {}",
        area.width,
        area.height,
        if app.restore_running() {
            "A restore is running: enlarge the window to follow it."
        } else {
            "Press q to quit; no other key acts until the screen fits."
        }
    );
    Paragraph::new(text)
        .style(Style::new().fg(WARN))
        .wrap(Wrap { trim: true })
        .render(area, buf);
}

fn screen_title(screen: Screen) -> &'static str {
    match screen {
        Screen::NotReady => "Stick not ready",
        Screen::CheckpointQr => "Checkpoint",
        Screen::SignIn => "Operator sign-in",
        Screen::Vault => "Images in the vault",
        Screen::ImageDetails => "Image details",
        Screen::Targets => "Choose the target disk",
        Screen::Confirm => "Confirm the restore",
        Screen::Restoring => "Restoring",
        Screen::Result => "Result",
        Screen::AuditLog => "Audit log",
    }
}

fn render_header(app: &App, area: Rect, buf: &mut Buffer) {
    let bar = Style::new().fg(Color::Black).bg(ACCENT);
    buf.set_style(area, bar);
    let mut left = vec![Span::styled(
        " Reliquary ",
        bar.add_modifier(Modifier::BOLD),
    )];
    left.push(Span::styled(format!("│ {}", screen_title(app.screen)), bar));
    Paragraph::new(Line::from(left)).render(area, buf);
    let mut right = Vec::new();
    if app.demo {
        right.push(Span::styled(
            " DEMO KEY ",
            Style::new()
                .fg(Color::White)
                .bg(BAD)
                .add_modifier(Modifier::BOLD),
        ));
        right.push(Span::styled(" ", bar));
    }
    if let Some(op) = &app.operator {
        let who = match &op.name {
            Some(name) => format!("{} ({}) ", op.id, name),
            None => format!("{} ", op.id),
        };
        right.push(Span::styled(format!("operator {who}"), bar));
    }
    Paragraph::new(Line::from(right))
        .alignment(Alignment::Right)
        .render(area, buf);
}

/// The keys of each screen, always shown.
pub fn footer_keys(app: &App) -> Vec<(&'static str, &'static str)> {
    if let Some(overlay) = app.overlay {
        return match overlay {
            Overlay::Help => vec![("Esc", "close help")],
            Overlay::CancelRestore { .. } | Overlay::QuitDuringRestore { .. } => {
                vec![
                    ("←/→", "choose"),
                    ("Enter", "confirm choice"),
                    ("Esc", "keep restoring"),
                ]
            }
        };
    }
    match app.screen {
        Screen::NotReady => vec![("r", "check again"), ("o", "power off"), ("q", "quit")],
        Screen::CheckpointQr => vec![("Esc", "back to the result")],
        Screen::SignIn => vec![
            ("Enter", "next / sign in"),
            ("Tab", "switch field"),
            ("Esc", "clear"),
            ("?", "help"),
            ("Ctrl-C", "quit"),
        ],
        Screen::Vault => vec![
            ("↑↓", "move"),
            ("Enter", "choose"),
            ("v", "verify"),
            ("l", "audit log"),
            ("Esc", "sign out"),
            ("?", "help"),
            ("q", "quit"),
        ],
        Screen::ImageDetails => vec![
            ("Enter", "choose target"),
            ("v", "verify"),
            ("Esc", "back"),
            ("?", "help"),
            ("q", "quit"),
        ],
        Screen::Targets => vec![
            ("↑↓", "move"),
            ("Space", "mark several"),
            ("Enter", "choose"),
            ("Esc", "back"),
            ("?", "help"),
            ("q", "quit"),
        ],
        Screen::Confirm => vec![
            ("Tab", "next field"),
            (
                "<- ->",
                if app.confirm_field == ConfirmField::Mode {
                    "resume / start over"
                } else {
                    "meaning"
                },
            ),
            ("Enter", "next / start"),
            ("Esc", "back"),
            ("?", "help"),
            ("Ctrl-C", "quit"),
        ],
        Screen::Restoring => vec![("Esc", "cancel restore…"), ("?", "help"), ("q", "quit…")],
        Screen::Result => {
            // A certificate is per restore record: one per target.
            let several = app
                .result
                .as_ref()
                .is_some_and(|r| !r.per_target.is_empty());
            vec![
                ("Enter", "vault"),
                ("o", "power off"),
                ("c", "QR code"),
                (
                    "p",
                    if several {
                        "certificates"
                    } else {
                        "certificate"
                    },
                ),
                ("l", "audit log"),
                ("?", "help"),
                ("q", "quit"),
            ]
        }
        Screen::AuditLog if app.audit.editing_filter => {
            vec![
                ("type", "filter"),
                ("Enter", "keep filter"),
                ("Esc", "clear filter"),
            ]
        }
        Screen::AuditLog => vec![
            ("↑↓", "move"),
            ("Tab", "switch pane"),
            ("/", "filter"),
            ("Esc", "back"),
            ("?", "help"),
            ("q", "quit"),
        ],
    }
}

fn render_footer(app: &App, area: Rect, buf: &mut Buffer) {
    let key = Style::new().fg(Color::Black).bg(Color::Gray);
    let mut spans = Vec::new();
    for (k, what) in footer_keys(app) {
        let (k, what) = if app.console_font {
            (console::key_name(k), console::text(what))
        } else {
            (k.to_string(), what.to_string())
        };
        spans.push(Span::styled(k, key));
        if !what.is_empty() {
            spans.push(Span::raw(format!(" {what}")));
        }
        spans.push(Span::raw("  "));
    }
    Paragraph::new(Line::from(spans)).render(area, buf);
}

/// A rectangle of `width` x `height` centred in `area` (clamped to it).
pub(crate) fn centered(area: Rect, width: u16, height: u16) -> Rect {
    let width = width.min(area.width);
    let height = height.min(area.height);
    Rect {
        x: area.x + (area.width - width) / 2,
        y: area.y + (area.height - height) / 2,
        width,
        height,
    }
}

fn render_overlay(app: &App, overlay: Overlay, area: Rect, buf: &mut Buffer) {
    match overlay {
        Overlay::Help => render_help(app, area, buf),
        Overlay::CancelRestore { cancel_chosen } => render_choice(
            area,
            buf,
            "Cancel the restore?",
            &[
                "Cancel the restore? The disk will be left unusable:",
                "its partition tables are wiped and it will not boot",
                "until a restore completes.",
            ],
            ("Keep restoring", "Cancel restore"),
            cancel_chosen,
        ),
        Overlay::QuitDuringRestore { quit_chosen } => render_choice(
            area,
            buf,
            "Quit during a restore?",
            &[
                "A restore is running. Quitting cancels it, and",
                "the disk will be left unusable. The end of the",
                "restore is logged before Reliquary exits.",
            ],
            ("Keep restoring", "Cancel and quit"),
            quit_chosen,
        ),
    }
}

fn render_choice(
    area: Rect,
    buf: &mut Buffer,
    title: &str,
    text: &[&str],
    (keep, act): (&str, &str),
    act_chosen: bool,
) {
    let rect = centered(area, 58, text.len() as u16 + 6);
    Clear.render(rect, buf);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(BAD))
        .title(Span::styled(
            format!(" {title} "),
            Style::new().fg(BAD).add_modifier(Modifier::BOLD),
        ));
    let inner = block.inner(rect);
    block.render(rect, buf);
    let chosen = Style::new()
        .fg(Color::Black)
        .bg(Color::White)
        .add_modifier(Modifier::BOLD);
    let plain = Style::new().fg(Color::White);
    let (keep_style, act_style) = if act_chosen {
        (plain, chosen.bg(BAD))
    } else {
        (chosen, plain)
    };
    let mut lines: Vec<Line> = text.iter().map(|t| Line::from(format!(" {t}"))).collect();
    lines.push(Line::from(""));
    lines.push(Line::from(vec![
        Span::raw("   "),
        Span::styled(format!(" {keep} "), keep_style),
        Span::raw("     "),
        Span::styled(format!(" {act} "), act_style),
    ]));
    lines.push(Line::from(""));
    lines.push(Line::styled(
        " ←/→ choose · Enter confirms the highlighted choice",
        Style::new().fg(MUTED),
    ));
    Paragraph::new(lines).render(inner, buf);
}

fn render_help(app: &App, area: Rect, buf: &mut Buffer) {
    let rows = [
        ("↑ ↓  or  j k", "move"),
        ("Enter", "choose or advance"),
        ("Space", "mark several targets to restore at once"),
        ("Esc", "go back (during a restore: cancel, asks first)"),
        ("Tab", "switch panes (audit log)"),
        ("/", "filter (audit log)"),
        ("l", "open the audit log (vault screen)"),
        ("v", "verify every chunk of the selected image"),
        ("c / p / o", "result: QR code / certificate PDF / power off"),
        ("?", "this help"),
        ("q", "quit (asks first while a restore runs)"),
        ("Ctrl-C", "quit, also while typing"),
    ];
    let rect = centered(area, 66, rows.len() as u16 + 8);
    Clear.render(rect, buf);
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(ACCENT))
        .title(" Help ");
    let inner = block.inner(rect);
    block.render(rect, buf);
    let mut lines: Vec<Line> = rows
        .iter()
        .map(|(k, what)| {
            Line::from(vec![
                Span::styled(
                    format!(" {k:<14}"),
                    Style::new().fg(ACCENT).add_modifier(Modifier::BOLD),
                ),
                Span::raw(*what),
            ])
        })
        .collect();
    lines.push(Line::from(""));
    lines.push(Line::from(format!(
        " On this screen: {}",
        screen_title(app.screen)
    )));
    lines.push(Line::from(
        " A restore starts only after the confirmation code is",
    ));
    lines.push(Line::from(
        " typed and Enter is pressed. Nothing else starts one.",
    ));
    lines.push(Line::styled(
        " Esc, Enter or ? closes this help.",
        Style::new().fg(MUTED),
    ));
    Paragraph::new(lines).render(inner, buf);
}
