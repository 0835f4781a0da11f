//! One function per screen. Each draws into the body area between the
//! header and the footer.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span, Text};
use ratatui::widgets::{
    Block, Borders, Gauge, List, ListItem, ListState, Paragraph, Sparkline, StatefulWidget, Widget,
    Wrap,
};

use super::format::{bytes, clip, date, date_time, disk_size, duration};
use super::{centered, half_block_lines, ACCENT, BAD, GOOD, MUTED, WARN};
use crate::app::{App, AuditPane, ConfirmField, SignInField};
use crate::model::{
    FullCheck, ImageSummary, ResultOutcome, TargetCandidate, TargetKind, TrustStatus, VaultEntry,
};
use reliquary_appliance::restore::Stage;

fn trust_style(status: TrustStatus) -> Style {
    match status {
        TrustStatus::Trusted => Style::new().fg(GOOD).add_modifier(Modifier::BOLD),
        TrustStatus::Untrusted => Style::new().fg(WARN).add_modifier(Modifier::BOLD),
        TrustStatus::Revoked | TrustStatus::Damaged => {
            Style::new().fg(BAD).add_modifier(Modifier::BOLD)
        }
    }
}

fn label(text: &str) -> Span<'static> {
    Span::styled(format!("{text:<13}"), Style::new().fg(ACCENT))
}

fn titled(title: &str) -> Block<'static> {
    Block::default()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(MUTED))
        .title(Span::styled(
            format!(" {title} "),
            Style::new().fg(Color::White).add_modifier(Modifier::BOLD),
        ))
}

pub fn sign_in(app: &App, area: Rect, buf: &mut Buffer) {
    let rect = centered(area, 70, 17);
    let block = titled("Operator sign-in");
    let inner = block.inner(rect);
    block.render(rect, buf);
    let field = |focused: bool| {
        if focused {
            Style::new().fg(Color::Black).bg(Color::White)
        } else {
            Style::new().fg(Color::Black).bg(Color::Gray)
        }
    };
    let cursor = |focused: bool| if focused { "_" } else { "" };
    let id_focused = app.sign_in_field == SignInField::Id;
    let mut lines = vec![
        Line::from(" Type your operator id and PIN. Every record in the audit"),
        Line::from(" log names the operator; signing in is your signature."),
        Line::from(""),
        Line::from(vec![
            Span::raw(" Operator id  "),
            Span::styled(
                format!(
                    " {:<20}",
                    format!("{}{}", app.sign_in.text, cursor(id_focused))
                ),
                field(id_focused),
            ),
        ]),
    ];
    if app.operators.is_some() {
        lines.push(Line::from(""));
        lines.push(Line::from(vec![
            Span::raw(" PIN          "),
            Span::styled(
                format!(
                    " {:<20}",
                    format!("{}{}", "*".repeat(app.pin.len()), cursor(!id_focused))
                ),
                field(!id_focused),
            ),
        ]));
    }
    lines.push(Line::from(""));
    match &app.sign_in.error {
        Some(error) => lines.push(Line::styled(
            format!(" {error}"),
            Style::new().fg(BAD).add_modifier(Modifier::BOLD),
        )),
        None => lines.push(Line::from("")),
    }
    lines.push(Line::from(""));
    let list_note = match &app.operators {
        Some(list) => format!(
            " Only listed operators ({}) may sign in; 5 wrong PINs lock an id.",
            list.entries.len()
        ),
        None => " This stick has no operators list: any id is accepted.".to_string(),
    };
    lines.push(Line::styled(list_note, Style::new().fg(MUTED)));
    if app.demo {
        lines.push(Line::styled(
            " Demo: the image is signed with a throwaway key.",
            Style::new().fg(WARN),
        ));
        if !app.demo_pins.is_empty() {
            let pairs: Vec<String> = app
                .demo_pins
                .iter()
                .map(|(id, pin)| format!("{id} PIN {pin}"))
                .collect();
            lines.push(Line::styled(
                format!(" Demo operators: {}", pairs.join(", ")),
                Style::new().fg(WARN),
            ));
        }
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(inner, buf);
}

pub fn not_ready(app: &App, area: Rect, buf: &mut Buffer) {
    let block = Block::default()
        .borders(Borders::ALL)
        .border_style(Style::new().fg(BAD))
        .title(Span::styled(
            " Stick not ready: no restore can start ",
            Style::new().fg(BAD).add_modifier(Modifier::BOLD),
        ));
    let inner = block.inner(area);
    block.render(area, buf);
    let mut lines = vec![
        Line::from(format!(
            "This stick found {} problem(s) in itself. Nothing has been written.",
            app.problems.len()
        )),
        Line::from(""),
    ];
    for p in &app.problems {
        lines.push(Line::from(vec![
            Span::styled(
                format!("{}: ", p.part),
                Style::new().fg(BAD).add_modifier(Modifier::BOLD),
            ),
            Span::raw(p.problem.clone()),
        ]));
        lines.push(Line::from(vec![
            Span::styled("  What to do: ", Style::new().fg(ACCENT)),
            Span::raw(p.remedy.clone()),
        ]));
        lines.push(Line::from(""));
    }
    lines.push(Line::styled(
        "Press r to check again once the problem is fixed, o to power off.",
        Style::new().fg(MUTED),
    ));
    Paragraph::new(lines)
        .wrap(Wrap { trim: true })
        .render(inner, buf);
}

/// The checkpoint's QR code on a screen of its own, so it fits 80x25,
/// with its short form as the caption.
pub fn checkpoint_qr(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(r) = &app.result else { return };
    let [code_area, caption_area] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(1)]).areas(area);
    let fits = |lines: &Vec<String>| {
        lines.len() as u16 <= code_area.height
            && lines.first().map_or(0, |l| l.chars().count()) as u16 <= code_area.width
    };
    // The whole signed note when it fits; else its body (origin, size and
    // root: the tree head itself), which fits 80x25. The signed note stays
    // in the audit partition and on the text screen.
    let note = r.checkpoint_note.as_deref();
    let body = note
        .and_then(|n| n.split_once("\n\n"))
        .map(|(body, _)| format!("{body}\n"));
    let signed = note.and_then(half_block_lines).filter(fits);
    let (lines, what) = match signed {
        Some(lines) => (Some(lines), ""),
        None => (
            body.as_deref().and_then(half_block_lines).filter(fits),
            " (note body, unsigned)",
        ),
    };
    let caption = format!(
        "checkpoint: {}{what}   Esc: back",
        r.checkpoint_short.as_deref().unwrap_or("none")
    );
    Paragraph::new(Line::styled(
        caption,
        Style::new().add_modifier(Modifier::BOLD),
    ))
    .alignment(ratatui::layout::Alignment::Center)
    .render(caption_area, buf);
    match lines {
        Some(lines) => {
            let width = lines.first().map_or(0, |l| l.chars().count()) as u16;
            let rect = centered(code_area, width, lines.len() as u16);
            let lines: Vec<Line> = lines
                .into_iter()
                .map(|l| Line::styled(l, Style::new().fg(Color::White).bg(Color::Black)))
                .collect();
            Paragraph::new(lines).render(rect, buf);
        }
        None => {
            let text = match note {
                Some(note) => {
                    format!("The QR code does not fit this screen. The checkpoint note:\n\n{note}")
                }
                None => "No checkpoint was written for this restore.".to_string(),
            };
            Paragraph::new(text)
                .wrap(Wrap { trim: false })
                .render(code_area, buf);
        }
    }
}

pub fn vault(app: &App, area: Rect, buf: &mut Buffer) {
    let row_lines: usize = (0..app.vault.len())
        .map(|i| {
            1 + wrap_parts(
                &vault_row_parts(&app.vault, i),
                usize::from(area.width).saturating_sub(6),
            )
            .len()
        })
        .sum();
    let list_height = (row_lines as u16 + 3).clamp(5, area.height.saturating_sub(8).max(5));
    let [list_area, detail_area] =
        Layout::vertical([Constraint::Length(list_height), Constraint::Min(0)]).areas(area);
    let block = titled(&format!("Vault: {} image file(s)", app.vault.len()));
    let inner = block.inner(list_area);
    block.render(list_area, buf);
    if let Some(error) = &app.vault_error {
        Paragraph::new(Line::styled(
            format!("The vault cannot be read: {error}"),
            Style::new().fg(BAD),
        ))
        .wrap(Wrap { trim: true })
        .render(inner, buf);
        return;
    }
    if app.vault.is_empty() {
        Paragraph::new("The vault holds no .rimg image files.").render(inner, buf);
        return;
    }
    let name_width = usize::from(inner.width).saturating_sub(36).max(12);
    let header = Line::styled(
        format!(
            "  {:<10} {:<name_width$} {:>10}  {:<10}",
            "STATUS", "NAME", "DISK", "CREATED"
        ),
        Style::new().fg(MUTED),
    );
    let row_width = usize::from(inner.width).saturating_sub(4);
    let items: Vec<ListItem> = app
        .vault
        .iter()
        .enumerate()
        .map(|(index, entry)| {
            let selectable = entry.refusal().is_none();
            let text_style = if selectable {
                Style::new()
            } else {
                Style::new().fg(MUTED)
            };
            let status = match entry.check {
                FullCheck::Failed { .. } => TrustStatus::Damaged,
                _ => entry.trust,
            };
            let (size, created) = match &entry.summary {
                Some(s) => (bytes(s.disk_bytes), date(s.created_unix)),
                None => ("-".into(), "-".into()),
            };
            let mut lines = vec![Line::from(vec![
                Span::styled(format!("{:<10} ", status.word()), trust_style(status)),
                Span::styled(
                    format!(
                        "{:<name_width$} {:>10}  {:<10}",
                        clip(&entry.display_name(), name_width),
                        size,
                        created
                    ),
                    text_style,
                ),
            ])];
            for text in wrap_parts(&vault_row_parts(&app.vault, index), row_width) {
                lines.push(Line::styled(format!("  {text}"), Style::new().fg(MUTED)));
            }
            ListItem::new(lines)
        })
        .collect();
    let [header_area, rows_area] =
        Layout::vertical([Constraint::Length(1), Constraint::Min(0)]).areas(inner);
    Paragraph::new(header).render(header_area, buf);
    let mut state = ListState::default().with_selected(Some(app.vault_cursor));
    StatefulWidget::render(
        List::new(items)
            .highlight_symbol("▸ ")
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        rows_area,
        buf,
        &mut state,
    );
    if let Some(entry) = app.selected_image() {
        vault_entry_details(entry, detail_area, buf);
    }
}

/// What tells vault rows apart: the full version, the file name, the
/// image id's first 8 hex digits, and other files holding the same image.
fn vault_row_parts(vault: &[VaultEntry], index: usize) -> Vec<String> {
    let Some(entry) = vault.get(index) else {
        return Vec::new();
    };
    let mut parts = Vec::new();
    if let Some(s) = &entry.summary {
        parts.push(format!("version {}", s.version));
    }
    parts.push(format!("file {}", entry.file_name));
    if let Some(s) = &entry.summary {
        let id: String = s
            .uuid
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(8)
            .collect();
        parts.push(format!("id {id}"));
        let twins: Vec<&str> = vault
            .iter()
            .enumerate()
            .filter(|(i, other)| {
                *i != index
                    && other
                        .summary
                        .as_ref()
                        .is_some_and(|o| o.manifest_sha256 == s.manifest_sha256)
            })
            .map(|(_, other)| other.file_name.as_str())
            .collect();
        if !twins.is_empty() {
            parts.push(format!("SAME IMAGE as {}", twins.join(", ")));
        }
    }
    parts
}

/// Joins `parts` with `, ` into lines of at most `width` characters,
/// breaking only between parts, or inside a part at its spaces when one
/// part alone is too long: text is wrapped, never cut.
pub(crate) fn wrap_parts(parts: &[String], width: usize) -> Vec<String> {
    let width = width.max(16);
    let mut lines: Vec<String> = Vec::new();
    let mut line = String::new();
    for part in parts {
        let sep = if line.is_empty() { "" } else { ", " };
        if line.chars().count() + sep.len() + part.chars().count() <= width {
            line.push_str(sep);
            line.push_str(part);
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        for word in part.split(' ') {
            let mut word = word.to_string();
            while word.chars().count() > width {
                let head: String = word.chars().take(width).collect();
                word = word.chars().skip(width).collect();
                if !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                lines.push(head);
            }
            let sep = if line.is_empty() { "" } else { " " };
            if line.chars().count() + sep.len() + word.chars().count() > width {
                lines.push(std::mem::take(&mut line));
                line = word;
            } else {
                line.push_str(sep);
                line.push_str(&word);
            }
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn vault_entry_details(entry: &VaultEntry, area: Rect, buf: &mut Buffer) {
    let block = titled(&entry.file_name);
    let inner = block.inner(area);
    block.render(area, buf);
    let mut lines = Vec::new();
    match entry.refusal() {
        None => lines.push(Line::from(vec![
            label("Trust"),
            Span::styled("trusted", trust_style(TrustStatus::Trusted)),
            Span::raw(": the signature policy of this stick's trust store is met"),
        ])),
        Some(why) => lines.push(Line::from(vec![
            label("Cannot use"),
            Span::styled(why, Style::new().fg(BAD)),
        ])),
    }
    if let Some(s) = &entry.summary {
        lines.extend(description_lines(s));
        lines.push(Line::from(vec![
            label("Disk"),
            Span::raw(format!(
                "{} in {} B sectors, {} partitions ({}), {} stored",
                bytes(s.disk_bytes),
                s.logical_sector_size,
                s.partitions.len(),
                s.scheme,
                bytes(s.stored_bytes)
            )),
        ]));
        lines.extend(signer_lines(s));
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(inner, buf);
}

/// The description (when there is one) and the compatible models.
fn description_lines(s: &ImageSummary) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    if !s.description.is_empty() {
        lines.push(Line::from(vec![
            label("Description"),
            Span::raw(s.description.clone()),
        ]));
    }
    let compatible = if s.compatible.is_empty() {
        "(any)".to_string()
    } else {
        s.compatible.join(", ")
    };
    lines.push(Line::from(vec![label("Compatible"), Span::raw(compatible)]));
    lines
}

fn signer_lines(s: &ImageSummary) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for (i, signer) in s.signers.iter().enumerate() {
        let status_style = match signer.status.as_str() {
            "trusted" => Style::new().fg(GOOD),
            "untrusted" | "unchecked" => Style::new().fg(WARN),
            _ => Style::new().fg(BAD),
        };
        lines.push(Line::from(vec![
            label(if i == 0 { "Signed by" } else { "" }),
            Span::raw(signer.name.clone()),
        ]));
        lines.push(Line::from(vec![
            label(""),
            Span::styled(
                signer.meaning.clone(),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(" {}, ", date_time(signer.signed_unix))),
            Span::styled(signer.status.clone(), status_style),
            Span::styled(format!(", key {}", signer.key_id), Style::new().fg(MUTED)),
        ]));
    }
    if s.signers.is_empty() {
        lines.push(Line::from(vec![
            label("Signed by"),
            Span::styled("nobody", Style::new().fg(BAD)),
        ]));
    }
    lines
}

pub fn image_details(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(entry) = app.selected_image() else {
        return;
    };
    let Some(s) = &entry.summary else { return };
    let [manifest_area, check_area] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(5)]).areas(area);
    let block = titled(&format!("{} version {}", s.name, s.version));
    let inner = block.inner(manifest_area);
    block.render(manifest_area, buf);
    let mut lines = vec![
        Line::from(vec![label("Image id"), Span::raw(s.uuid.clone())]),
        Line::from(vec![
            label("Created"),
            Span::raw(format!("{} by {}", date_time(s.created_unix), s.creator)),
        ]),
    ];
    lines.extend(description_lines(s));
    lines.push(Line::from(vec![
        label("Disk"),
        Span::raw(format!(
            "{} ({} B logical, {} B physical sectors); {} stored{}",
            bytes(s.disk_bytes),
            s.logical_sector_size,
            s.physical_sector_size,
            bytes(s.stored_bytes),
            s.chunks
                .map_or(String::new(), |c| format!(" in {c} chunks"))
        )),
    ]));
    lines.push(Line::from(vec![
        label("Manifest"),
        Span::raw(format!(
            "sha256 {}",
            clip(
                &s.manifest_sha256,
                usize::from(inner.width).saturating_sub(20)
            )
        )),
    ]));
    lines.push(Line::from(vec![
        label("Partitions"),
        Span::raw(s.scheme.clone()),
    ]));
    for p in &s.partitions {
        lines.push(Line::from(format!(
            "{:13}{:>2}  start {:>10}  {:>10}  type {:<6} {}{}",
            "",
            p.number,
            p.start_sector,
            bytes(p.size_bytes),
            clip(&p.type_code, 38),
            if p.bootable { "active " } else { "" },
            p.name.as_deref().unwrap_or("")
        )));
        if let Some(capture) = &p.capture {
            lines.push(Line::from(format!("{:17}{capture}", "")));
        }
    }
    lines.extend(signer_lines(s));
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(inner, buf);

    let block = titled("Full verification (every chunk, offline)");
    let inner = block.inner(check_area);
    block.render(check_area, buf);
    let [status_area, gauge_area] =
        Layout::vertical([Constraint::Length(2), Constraint::Length(1)]).areas(inner);
    let status = match &entry.check {
        FullCheck::NotRun => Line::from(vec![
            Span::raw("Not run yet. Press "),
            Span::styled("v", Style::new().fg(ACCENT).add_modifier(Modifier::BOLD)),
            Span::raw(" to verify now; the restore also checks every chunk before writing it."),
        ]),
        FullCheck::Running { done, total } => Line::from(format!(
            "Verifying: {} of {} checked",
            bytes(*done),
            bytes(*total)
        )),
        FullCheck::Passed { seconds } => Line::from(vec![
            Span::styled(
                "VERIFIED",
                Style::new().fg(GOOD).add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                ": all {} chunks match their signed digests ({seconds:.1} s).",
                s.chunks.unwrap_or_default()
            )),
        ]),
        FullCheck::Failed { reason } => Line::from(vec![
            Span::styled("DAMAGED", Style::new().fg(BAD).add_modifier(Modifier::BOLD)),
            Span::raw(format!(": {reason}")),
        ]),
    };
    let mut status_lines = vec![status];
    if let Some(problem) = &entry.audit_problem {
        status_lines.push(Line::styled(
            format!("Not recorded in the audit log: {problem}"),
            Style::new().fg(BAD),
        ));
    }
    Paragraph::new(status_lines)
        .wrap(Wrap { trim: true })
        .render(status_area, buf);
    if let FullCheck::Running { done, total } = entry.check {
        Gauge::default()
            .gauge_style(Style::new().fg(ACCENT).bg(Color::Black))
            .ratio(ratio(done, total))
            .render(gauge_area, buf);
    }
}

fn ratio(done: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    }
}

pub fn targets(app: &App, area: Rect, buf: &mut Buffer) {
    let image = app.selected_image().and_then(|e| e.summary.as_ref());
    let need = image.map_or(String::new(), |s| {
        format!(
            " for {} (needs {} with {} B sectors)",
            s.name,
            disk_size(s.disk_bytes),
            s.logical_sector_size
        )
    });
    let block = titled(&format!("Targets{need}"));
    let inner = block.inner(area);
    block.render(area, buf);
    let mut head = Vec::new();
    if app.targets.loading {
        head.push(Line::from("Looking for disks…"));
    }
    if let Some(error) = &app.targets.discovery_error {
        head.push(Line::styled(
            format!("Disks could not be listed: {error}"),
            Style::new().fg(BAD),
        ));
    }
    if !app.targets.loading && app.targets.items.is_empty() {
        head.push(Line::from(
            "No disk or target file was found. Connect the disk and press Esc, then Enter.",
        ));
    }
    let [head_area, list_area] =
        Layout::vertical([Constraint::Length(head.len() as u16), Constraint::Min(0)]).areas(inner);
    Paragraph::new(head)
        .wrap(Wrap { trim: true })
        .render(head_area, buf);
    let width = usize::from(inner.width).saturating_sub(6);
    // Marks are shown once the first target is marked with Space.
    let marking = !app.marked.is_empty();
    let items: Vec<ListItem> = app
        .targets
        .items
        .iter()
        .enumerate()
        .map(|(index, t)| {
            let ok = t.is_selectable();
            let main = if ok {
                Style::new().add_modifier(Modifier::BOLD)
            } else {
                Style::new().fg(MUTED)
            };
            let sub = if ok {
                Style::new()
            } else {
                Style::new().fg(MUTED)
            };
            let first = match t.kind {
                TargetKind::Disk => format!(
                    "{}  {}  serial {}  {}",
                    t.path.display(),
                    t.model.as_deref().unwrap_or("unknown model"),
                    t.serial.as_deref().unwrap_or("(none)"),
                    disk_size(t.size_bytes)
                ),
                TargetKind::File => format!(
                    "{}  regular file  {}",
                    t.path.display(),
                    disk_size(t.size_bytes)
                ),
            };
            let contents = match (t.kind, t.partitions.is_empty()) {
                (TargetKind::File, _) => "created or extended to the image's size".to_string(),
                (TargetKind::Disk, true) => "no partitions".to_string(),
                (TargetKind::Disk, false) => t.partitions.join(", "),
            };
            let second = format!(
                "{} B logical / {} B physical sectors, {}; {contents}",
                t.logical_sector_size, t.physical_sector_size, t.transport,
            );
            let first = match (marking, app.marked.binary_search(&index).is_ok()) {
                (false, _) => first,
                (true, true) => format!("[x] {first}"),
                (true, false) => format!("[ ] {first}"),
            };
            let mut lines = vec![
                Line::styled(clip(&first, width), main),
                Line::styled(format!("  {}", clip(&second, width.saturating_sub(2))), sub),
            ];
            for refusal in &t.refusals {
                lines.push(Line::styled(
                    format!("  not allowed: {}", clip(refusal, width.saturating_sub(15))),
                    Style::new().fg(WARN),
                ));
            }
            if let Some(offer) = &t.resume {
                let interrupted = format!(
                    "interrupted restore (audit record {}): {}",
                    offer.interrupted_seq,
                    offer.written()
                );
                lines.push(Line::styled(
                    format!("  {}", clip(&interrupted, width.saturating_sub(2))),
                    Style::new().fg(ACCENT),
                ));
            }
            ListItem::new(Text::from(lines))
        })
        .collect();
    let mut state = ListState::default().with_selected(Some(app.target_cursor));
    StatefulWidget::render(
        List::new(items)
            .highlight_symbol("▸ ")
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        list_area,
        buf,
        &mut state,
    );
}

pub fn confirm(app: &App, area: Rect, buf: &mut Buffer) {
    let targets = app.confirmed_targets();
    let (Some(entry), Some(target)) = (app.selected_image(), targets.first().copied()) else {
        return;
    };
    let several = app.confirming_several();
    let block = titled("Check before anything is written");
    let inner = block.inner(area);
    block.render(area, buf);
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let code_style = Style::new()
        .fg(Color::Black)
        .bg(WARN)
        .add_modifier(Modifier::BOLD);
    let mut lines = vec![Line::from("You are about to restore")];
    if let Some(s) = &entry.summary {
        lines.push(Line::from(vec![
            label("  image"),
            Span::styled(format!("{} version {}", s.name, s.version), bold),
            Span::raw(format!(" ({})", bytes(s.disk_bytes))),
        ]));
        let signers: Vec<String> = s
            .signers
            .iter()
            .map(|g| format!("{} ({})", g.name, g.meaning))
            .collect();
        lines.push(Line::from(vec![
            label("  signed by"),
            Span::raw(signers.join(", ")),
        ]));
    }
    if several {
        several_targets_lines(&targets, &mut lines);
    } else {
        single_target_lines(target, code_style, &mut lines);
    }
    lines.push(Line::from(""));
    let focus = |field: ConfirmField| {
        if app.confirm_field == field {
            Style::new().fg(Color::Black).bg(Color::White)
        } else {
            Style::new().fg(Color::Black).bg(Color::Gray)
        }
    };
    let mark = |field: ConfirmField| {
        if app.confirm_field == field {
            "▸ "
        } else {
            "  "
        }
    };
    if let Some(offer) = target.resume.as_ref().filter(|_| !several) {
        let choice = |chosen: bool, text: String| {
            if chosen {
                Span::styled(format!("< {text} >"), focus(ConfirmField::Mode))
            } else {
                Span::styled(format!("  {text}  "), Style::new().fg(MUTED))
            }
        };
        lines.push(Line::from(vec![
            Span::raw(mark(ConfirmField::Mode)),
            Span::raw("restore "),
            choice(app.resume_chosen, offer.label()),
            Span::raw(" "),
            choice(!app.resume_chosen, "Start over".into()),
        ]));
        if let Err(why) = &offer.percent_written {
            lines.push(Line::styled(
                format!("  the disk could not be sampled: {why}"),
                Style::new().fg(WARN),
            ));
        }
    }
    lines.push(Line::from(vec![
        Span::raw(mark(ConfirmField::Meaning)),
        Span::raw("meaning "),
        Span::styled(
            format!("< {} >", app.meaning.words()),
            focus(ConfirmField::Meaning),
        ),
    ]));
    lines.push(Line::from(vec![
        Span::raw(mark(ConfirmField::Reason)),
        Span::raw("work order "),
        Span::styled(
            format!(
                " {:<30}",
                format!(
                    "{}{}",
                    app.reason,
                    if app.confirm_field == ConfirmField::Reason {
                        "_"
                    } else {
                        ""
                    }
                )
            ),
            focus(ConfirmField::Reason),
        ),
    ]));
    let (ask, shown_code) = if several {
        (
            format!("To confirm all {} targets, type this code:", targets.len()),
            Some(&app.targets.group_code),
        )
    } else if target.code_is_serial {
        (
            "To confirm, type the last 4 characters of the disk's serial (highlighted):".into(),
            None,
        )
    } else {
        (
            "To confirm, type this code:".into(),
            Some(&target.confirm_code),
        )
    };
    let mut ask_line = vec![Span::raw(ask)];
    if let Some(code) = shown_code {
        ask_line.push(Span::raw(" "));
        ask_line.push(Span::styled(format!(" {code} "), code_style));
    }
    lines.push(Line::from(ask_line));
    lines.push(Line::from(vec![
        Span::raw(mark(ConfirmField::Code)),
        Span::raw("code  "),
        Span::styled(
            format!(
                " {:<9}",
                format!(
                    "{}{}",
                    app.confirm.text,
                    if app.confirm_field == ConfirmField::Code {
                        "_"
                    } else {
                        ""
                    }
                )
            ),
            focus(ConfirmField::Code),
        ),
        Span::raw("  then Enter starts the restore"),
    ]));
    if let Some(error) = &app.confirm.error {
        lines.push(Line::styled(
            error.clone(),
            Style::new().fg(BAD).add_modifier(Modifier::BOLD),
        ));
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(inner, buf);
}

/// The one disk or file about to be overwritten; the serial's last four
/// characters are highlighted when they are the code.
fn single_target_lines(target: &TargetCandidate, code_style: Style, lines: &mut Vec<Line>) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    lines.push(Line::from("onto"));
    match target.kind {
        TargetKind::Disk => {
            lines.push(Line::from(vec![
                label("  disk"),
                Span::styled(
                    target
                        .model
                        .clone()
                        .unwrap_or_else(|| "unknown model".into()),
                    bold,
                ),
                Span::raw(format!(
                    "  {}  {}",
                    disk_size(target.size_bytes),
                    target.path.display()
                )),
            ]));
            let serial = target.serial.clone().unwrap_or_default();
            let split = serial.len().saturating_sub(4);
            let (head, tail) = if target.code_is_serial && serial.is_char_boundary(split) {
                serial.split_at(split)
            } else {
                (serial.as_str(), "")
            };
            lines.push(Line::from(vec![
                label("  serial"),
                Span::raw(head.to_string()),
                Span::styled(tail.to_string(), code_style),
            ]));
        }
        TargetKind::File => lines.push(Line::from(vec![
            label("  file"),
            Span::styled(target.path.display().to_string(), bold),
            Span::raw(format!("  {}", disk_size(target.size_bytes))),
        ])),
    }
    lines.push(Line::from(""));
    let destroyed = if target.partitions.is_empty() {
        "Everything on it will be destroyed.".to_string()
    } else {
        format!(
            "Everything on it will be destroyed, including {}.",
            target.partitions.join(", ")
        )
    };
    lines.push(Line::styled(
        destroyed,
        Style::new().fg(BAD).add_modifier(Modifier::BOLD),
    ));
}

/// Every marked disk or file, one line each with its model, serial and size.
fn several_targets_lines(targets: &[&TargetCandidate], lines: &mut Vec<Line>) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    lines.push(Line::from(format!(
        "onto {} targets at once",
        targets.len()
    )));
    for t in targets {
        let (what, rest) = match t.kind {
            TargetKind::Disk => (
                t.model.clone().unwrap_or_else(|| "unknown model".into()),
                format!(
                    "  serial {}  {}  {}",
                    t.serial.as_deref().unwrap_or("(none)"),
                    disk_size(t.size_bytes),
                    t.path.display()
                ),
            ),
            TargetKind::File => (
                format!("file {}", t.path.display()),
                format!("  {}", disk_size(t.size_bytes)),
            ),
        };
        lines.push(Line::from(vec![
            Span::raw("  "),
            Span::styled(what, bold),
            Span::raw(rest),
        ]));
    }
    lines.push(Line::from(""));
    lines.push(Line::styled(
        "Everything on every one of them will be destroyed.",
        Style::new().fg(BAD).add_modifier(Modifier::BOLD),
    ));
}

pub fn restoring(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(view) = &app.restore else { return };
    if !view.rows.is_empty() {
        return restoring_several(view, area, buf);
    }
    let block = titled(&match view.resumes {
        Some(seq) => format!(
            "Resuming {} (interrupted at audit record {seq})",
            view.image_name
        ),
        None => format!("Restoring {}", view.image_name),
    });
    let inner = block.inner(area);
    block.render(area, buf);
    let [info, write_label, write_gauge, read_label, read_gauge, rates, _, spark_area, status] =
        Layout::vertical([
            Constraint::Length(2),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(1),
            Constraint::Length(2),
            Constraint::Length(1),
            Constraint::Min(3),
            Constraint::Length(2),
        ])
        .areas(inner);
    let stage = view
        .progress
        .as_ref()
        .map_or_else(|| "starting".to_string(), |p| p.stage.to_string());
    Paragraph::new(vec![
        Line::from(vec![label("Onto"), Span::raw(view.target_label.clone())]),
        Line::from(vec![
            label("Stage"),
            Span::styled(stage, Style::new().fg(ACCENT).add_modifier(Modifier::BOLD)),
        ]),
    ])
    .render(info, buf);

    let (write_ratio, read_ratio) = match &view.progress {
        Some(p) if matches!(p.stage, Stage::Comparing | Stage::Writing) => {
            (ratio(p.bytes_done, p.bytes_total), 0.0)
        }
        Some(p) if p.stage == Stage::ReadingBack => (1.0, ratio(p.bytes_done, p.bytes_total)),
        Some(p) if p.stage == Stage::Finalising => (1.0, if view.written { 1.0 } else { 0.0 }),
        _ => (0.0, 0.0),
    };
    Paragraph::new("Writing (every chunk checked before it is written)").render(write_label, buf);
    Gauge::default()
        .gauge_style(Style::new().fg(ACCENT).bg(Color::Black))
        .ratio(write_ratio)
        .render(write_gauge, buf);
    Paragraph::new("Read-back (the disk is read again and compared)").render(read_label, buf);
    Gauge::default()
        .gauge_style(Style::new().fg(GOOD).bg(Color::Black))
        .ratio(read_ratio)
        .render(read_gauge, buf);

    let rate_lines = match &view.progress {
        Some(p) => vec![
            Line::from(format!(
                "{} of {}   {:.0} MB/s   ETA {}",
                bytes(p.bytes_done),
                bytes(p.bytes_total),
                p.bytes_per_second / 1e6,
                p.eta_seconds.map_or("--:--".to_string(), duration)
            )),
            Line::from(format!("Chunks {} of {}", p.chunks_done, p.chunks_total)),
        ],
        None => vec![Line::from(
            "Opening the target and logging the start of the restore…",
        )],
    };
    Paragraph::new(rate_lines).render(rates, buf);

    let spark_block = Block::default()
        .borders(Borders::TOP)
        .border_style(Style::new().fg(MUTED))
        .title(" MB/s ");
    let spark_inner = spark_block.inner(spark_area);
    spark_block.render(spark_area, buf);
    let visible = usize::from(spark_inner.width);
    let samples = &view.throughput[view.throughput.len().saturating_sub(visible)..];
    let mut sparkline = Sparkline::default()
        .data(samples)
        .style(Style::new().fg(ACCENT));
    if app.console_font {
        // The console font has no eighth blocks: whole `#` bars only.
        sparkline = sparkline.bar_set(ratatui::symbols::bar::Set {
            full: "#",
            seven_eighths: "#",
            three_quarters: "#",
            five_eighths: "#",
            half: "#",
            three_eighths: " ",
            one_quarter: " ",
            one_eighth: " ",
            empty: " ",
        });
    }
    sparkline.render(spark_inner, buf);

    Paragraph::new(restore_status(view))
        .wrap(Wrap { trim: true })
        .render(status, buf);
}

/// The line under a running restore: a cancel under way, or its record.
fn restore_status(view: &crate::model::RestoreView) -> Line<'static> {
    if view.cancel_requested {
        Line::styled(
            "Cancelling at the next chunk boundary; the disk will be wiped and left unusable.",
            Style::new().fg(BAD).add_modifier(Modifier::BOLD),
        )
    } else {
        let text = match view.started_seqs.as_slice() {
            [] => String::new(),
            [seq] => format!("The start of this restore is audit record {seq}."),
            [first @ .., last] => format!(
                "The starts of these restores are audit records {} and {last}.",
                first
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        Line::styled(text, Style::new().fg(MUTED))
    }
}

/// A restore onto several targets: one row each with its stage, bytes,
/// rate and time left, since the targets may run at different speeds.
fn restoring_several(view: &crate::model::RestoreView, area: Rect, buf: &mut Buffer) {
    let block = titled(&format!(
        "Restoring {} onto {} targets",
        view.image_name,
        view.rows.len()
    ));
    let inner = block.inner(area);
    block.render(area, buf);
    let [rows_area, status] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(2)]).areas(inner);
    let width = usize::from(inner.width);
    let mut lines = Vec::new();
    for row in &view.rows {
        lines.push(Line::styled(
            clip(&row.target_label, width),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        let detail = match &row.progress {
            Some(p) => {
                let done = ratio(p.bytes_done, p.bytes_total);
                let filled = (done * 10.0).round() as usize;
                format!(
                    "  {:<13} [{}{}] {:>3}%  {} of {}  {:.0} MB/s  ETA {}",
                    p.stage.to_string(),
                    "#".repeat(filled),
                    ".".repeat(10 - filled),
                    (done * 100.0).round(),
                    bytes(p.bytes_done),
                    bytes(p.bytes_total),
                    p.bytes_per_second / 1e6,
                    p.eta_seconds.map_or("--:--".to_string(), duration)
                )
            }
            None => "  starting".to_string(),
        };
        lines.push(Line::styled(clip(&detail, width), Style::new().fg(ACCENT)));
    }
    Paragraph::new(lines).render(rows_area, buf);
    Paragraph::new(restore_status(view))
        .wrap(Wrap { trim: true })
        .render(status, buf);
}

pub fn result(app: &App, area: Rect, buf: &mut Buffer) {
    let Some(r) = &app.result else { return };
    let several = !r.per_target.is_empty();
    let (headline, colour) = match &r.outcome {
        ResultOutcome::Success if several => (
            format!("RESTORE SUCCEEDED on all {} targets", r.per_target.len()),
            GOOD,
        ),
        ResultOutcome::Success => ("RESTORE SUCCEEDED".into(), GOOD),
        ResultOutcome::Failed { .. } if several => {
            let failed = r
                .per_target
                .iter()
                .filter(|t| t.outcome != ResultOutcome::Success)
                .count();
            (
                format!(
                    "RESTORE FAILED on {failed} of {} targets",
                    r.per_target.len()
                ),
                BAD,
            )
        }
        ResultOutcome::Failed { .. } => (
            "RESTORE FAILED: the disk is wiped and will not boot".into(),
            BAD,
        ),
        ResultOutcome::Cancelled if several => (
            "RESTORE CANCELLED: the disks are wiped and will not boot".into(),
            WARN,
        ),
        ResultOutcome::Cancelled => (
            "RESTORE CANCELLED: the disk is wiped and will not boot".into(),
            WARN,
        ),
        ResultOutcome::Refused { .. } => ("RESTORE REFUSED: nothing was written".into(), WARN),
    };
    let block = titled("Result");
    let inner = block.inner(area);
    block.render(area, buf);
    let [text_area, next_area] =
        Layout::vertical([Constraint::Min(0), Constraint::Length(3)]).areas(inner);
    let finished = app.finished.as_ref();
    let image = match finished.and_then(|f| f.image_version.as_deref()) {
        Some(version) => format!("{} version {version}", r.image_name),
        None => r.image_name.clone(),
    };
    let mut lines = vec![
        Line::styled(
            format!(" {headline} "),
            Style::new()
                .fg(Color::Black)
                .bg(colour)
                .add_modifier(Modifier::BOLD),
        ),
        Line::from(vec![label("Image"), Span::raw(image)]),
    ];
    if !several {
        lines.push(Line::from(vec![
            label("Target"),
            Span::raw(r.target_label.clone()),
        ]));
    }
    if let Some(f) = finished {
        lines.push(Line::from(vec![
            label("Meaning"),
            Span::raw(f.intent.meaning.words()),
        ]));
        lines.push(Line::from(vec![
            label("Work order"),
            Span::raw(f.intent.reason.clone()),
        ]));
    }
    for t in &r.per_target {
        target_result_lines(t, &mut lines);
    }
    match &r.outcome {
        ResultOutcome::Failed {
            reason,
            chunk,
            sectors,
        } => {
            if !several {
                lines.push(Line::from(vec![
                    label("Failure"),
                    Span::styled(reason.clone(), Style::new().fg(BAD)),
                ]));
            }
            if let Some(chunk) = chunk {
                let at = sectors.map_or(String::new(), |(a, b)| format!(", sectors {a}..{b}"));
                lines.push(Line::from(vec![
                    label("Chunk"),
                    Span::raw(format!("{chunk}{at}: the image is marked damaged")),
                ]));
            }
        }
        ResultOutcome::Refused { reason } => {
            lines.push(Line::from(vec![
                label("Refused"),
                Span::styled(reason.clone(), Style::new().fg(WARN)),
            ]));
        }
        ResultOutcome::Success | ResultOutcome::Cancelled => {}
    }
    if !several && !matches!(r.outcome, ResultOutcome::Refused { .. }) {
        let stages: Vec<String> = r
            .stage_seconds
            .iter()
            .map(|(s, t)| format!("{s} {t} s"))
            .collect();
        lines.push(Line::from(vec![
            label("Written"),
            Span::raw(if stages.is_empty() {
                bytes(r.bytes_written)
            } else {
                format!("{} ({})", bytes(r.bytes_written), stages.join(", "))
            }),
        ]));
    }
    if let Some(seq) = finished.and_then(|f| f.resumes) {
        lines.push(Line::from(vec![
            label("Resumed"),
            Span::raw(format!("the restore interrupted at audit record {seq}")),
        ]));
        lines.push(Line::from(vec![
            label("Skipped"),
            Span::raw(format!(
                "{} already correct, not rewritten",
                bytes(r.bytes_skipped)
            )),
        ]));
    }
    if let Some(digest) = r.readback_digest.as_ref().filter(|_| !several) {
        lines.push(Line::from(vec![
            label("Read-back"),
            Span::raw(format!("sha256 {digest}")),
        ]));
    }
    for warning in &r.warnings {
        lines.push(Line::from(vec![
            label("Note"),
            Span::styled(warning.clone(), Style::new().fg(WARN)),
        ]));
    }
    if let Some(seq) = r.audit_seq {
        lines.push(Line::from(vec![
            label("Audit record"),
            Span::styled(seq.to_string(), Style::new().add_modifier(Modifier::BOLD)),
        ]));
    }
    if let Some(short) = &r.checkpoint_short {
        lines.push(Line::from(vec![
            label("Checkpoint"),
            Span::styled(
                short.clone(),
                Style::new()
                    .fg(Color::Black)
                    .bg(Color::White)
                    .add_modifier(Modifier::BOLD),
            ),
            Span::styled(
                if several {
                    "  (c: QR code, p: certificates)"
                } else {
                    "  (c: QR code, p: certificate)"
                },
                Style::new().fg(MUTED),
            ),
        ]));
    }
    match &app.certificate {
        Some(Ok(path)) => lines.push(Line::from(vec![
            label("Certificate"),
            Span::styled(format!("written to {path}"), Style::new().fg(GOOD)),
        ])),
        Some(Err(problem)) => lines.push(Line::from(vec![
            label("Certificate"),
            Span::styled(format!("not written: {problem}"), Style::new().fg(BAD)),
        ])),
        None => {}
    }
    if let Some(problem) = &r.audit_problem {
        lines.push(Line::styled(
            format!("AUDIT LOG PROBLEM: {problem}"),
            Style::new().fg(BAD).add_modifier(Modifier::BOLD),
        ));
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .render(text_area, buf);
    Paragraph::new(Line::from(vec![
        Span::styled(
            "Next: ",
            Style::new().fg(ACCENT).add_modifier(Modifier::BOLD),
        ),
        Span::raw(next_step(&r.outcome)),
    ]))
    .wrap(Wrap { trim: true })
    .block(
        Block::default()
            .borders(Borders::TOP)
            .border_style(Style::new().fg(MUTED)),
    )
    .render(next_area, buf);
}

/// One target's line on the result of a restore onto several: how it
/// went, then what was written and recorded, or why it failed.
fn target_result_lines(t: &crate::model::TargetResult, lines: &mut Vec<Line>) {
    let (word, colour) = match &t.outcome {
        ResultOutcome::Success => ("OK", GOOD),
        ResultOutcome::Failed { .. } => ("FAILED", BAD),
        ResultOutcome::Cancelled => ("CANCELLED", WARN),
        ResultOutcome::Refused { .. } => ("REFUSED", WARN),
    };
    lines.push(Line::from(vec![
        Span::styled(
            format!("{word:<13}"),
            Style::new().fg(colour).add_modifier(Modifier::BOLD),
        ),
        Span::raw(t.target_label.clone()),
    ]));
    let recorded = t
        .audit_seq
        .map_or(String::new(), |seq| format!(", audit record {seq}"));
    let detail = match &t.outcome {
        ResultOutcome::Success => Span::raw(format!(
            "{} written, read back and matching{recorded}",
            bytes(t.bytes_written)
        )),
        ResultOutcome::Failed { reason, .. } => Span::styled(
            format!("left wiped: {reason}{recorded}"),
            Style::new().fg(BAD),
        ),
        ResultOutcome::Cancelled => Span::raw(format!("left wiped{recorded}")),
        ResultOutcome::Refused { reason } => Span::raw(reason.clone()),
    };
    lines.push(Line::from(vec![Span::raw(" ".repeat(13)), detail]));
    if let Some(problem) = &t.audit_problem {
        lines.push(Line::styled(
            format!("{}AUDIT LOG PROBLEM: {problem}", " ".repeat(13)),
            Style::new().fg(BAD).add_modifier(Modifier::BOLD),
        ));
    }
}

/// What the technician does after each outcome; every one offers to power off.
pub fn next_step(outcome: &ResultOutcome) -> &'static str {
    match outcome {
        ResultOutcome::Success => {
            "copy the audit record and checkpoint onto the work order, press o to power off, \
             remove the Reliquary stick, and start the machine from its disk."
        }
        ResultOutcome::Failed { chunk: Some(_), .. } => {
            "this copy of the image is damaged. Press Enter to restore another copy, or o to \
             power off and report the image to the engineer."
        }
        ResultOutcome::Failed { .. } => {
            "the disk will not boot. Press Enter to try again or choose another image; if the \
             disk is failing, press o to power off and replace it."
        }
        ResultOutcome::Cancelled => {
            "the disk is wiped and will not boot. Press Enter to restore an image onto \
             it, or o to power off."
        }
        ResultOutcome::Refused { .. } => {
            "nothing was written. Press Enter to choose another target or image, or o to \
             power off."
        }
    }
}

pub fn audit_log(app: &App, area: Rect, buf: &mut Buffer) {
    let view = &app.audit;
    let [banner_area, filter_area, main_area] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(area);
    let banner = match (&view.banner, view.loading) {
        (_, true) => Line::from(" Reading and verifying the audit log…"),
        (Some(b), false) if b.ok => Line::styled(
            format!(" {} ", b.text),
            Style::new().fg(Color::Black).bg(GOOD),
        ),
        (Some(b), false) => Line::styled(
            format!(" {} ", b.text),
            Style::new()
                .fg(Color::White)
                .bg(BAD)
                .add_modifier(Modifier::BOLD),
        ),
        (None, false) => Line::from(""),
    };
    Paragraph::new(banner).render(banner_area, buf);
    let rows = view.visible();
    let filter_line = if view.editing_filter || !view.filter.is_empty() {
        Line::from(vec![
            Span::styled("Filter /", Style::new().fg(ACCENT)),
            Span::raw(view.filter.clone()),
            Span::raw(if view.editing_filter { "_" } else { "" }),
            Span::styled(
                format!("   {} of {} records", rows.len(), view.rows.len()),
                Style::new().fg(MUTED),
            ),
        ])
    } else {
        Line::styled(
            format!("{} records, newest first. / filters.", view.rows.len()),
            Style::new().fg(MUTED),
        )
    };
    Paragraph::new(filter_line).render(filter_area, buf);

    let [list_area, detail_area] = if main_area.width >= 120 {
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)])
            .areas(main_area)
    } else {
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(main_area)
    };
    let focused = |pane| {
        if view.pane == pane {
            Style::new().fg(ACCENT)
        } else {
            Style::new().fg(MUTED)
        }
    };
    let list_block = titled("Records").border_style(focused(AuditPane::Records));
    let list_inner = list_block.inner(list_area);
    list_block.render(list_area, buf);
    let width = usize::from(list_inner.width).saturating_sub(2);
    let items: Vec<ListItem> = rows
        .iter()
        .map(|r| {
            let result = r.result.clone().unwrap_or_default();
            let result = if result == "failed" {
                "FAILED".to_string()
            } else {
                result
            };
            // The result is never cut; the summary gets what room is left.
            let prefix = format!(
                "{:>4} {:<19} {:<15} {:<8} {:<11}",
                r.seq,
                r.time,
                r.kind,
                clip(&r.operator, 8),
                result,
            );
            let room = width.saturating_sub(prefix.chars().count() + 1);
            let line = if room >= 8 {
                format!("{prefix} {}", clip(&r.summary, room))
            } else {
                prefix.trim_end().to_string()
            };
            let style = if r.is_alarming() {
                Style::new().fg(BAD).add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            };
            ListItem::new(Line::styled(clip(&line, width), style))
        })
        .collect();
    let mut state = ListState::default().with_selected(if rows.is_empty() {
        None
    } else {
        Some(view.cursor)
    });
    StatefulWidget::render(
        List::new(items)
            .highlight_symbol("▸ ")
            .highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        list_inner,
        buf,
        &mut state,
    );

    let detail_block = titled("Details").border_style(focused(AuditPane::Details));
    let detail_inner = detail_block.inner(detail_area);
    detail_block.render(detail_area, buf);
    let Some(row) = rows.get(view.cursor) else {
        return;
    };
    let mut lines = vec![Line::from(vec![
        Span::styled(
            format!("Record {} ", row.seq),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!("{} at {}", row.kind, row.time)),
    ])];
    match &row.invalid {
        Some(reason) => lines.push(Line::styled(
            format!("INVALID: {reason}"),
            Style::new().fg(BAD).add_modifier(Modifier::BOLD),
        )),
        None => lines.push(Line::styled(
            "signature and chain verified",
            Style::new().fg(GOOD),
        )),
    }
    if let Some(result) = &row.result {
        let style = if row.is_alarming() {
            Style::new().fg(BAD).add_modifier(Modifier::BOLD)
        } else {
            Style::new()
        };
        lines.push(Line::from(vec![
            label("Result"),
            Span::styled(result.clone(), style),
        ]));
    }
    for (key, value) in &row.details {
        lines.push(Line::from(vec![label(key), Span::raw(value.clone())]));
    }
    Paragraph::new(lines)
        .wrap(Wrap { trim: false })
        .scroll((view.details_scroll, 0))
        .render(detail_inner, buf);
}
