//! Progress on stderr: a redrawn line on a terminal, plain lines otherwise,
//! nothing under `--quiet`.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Silences every meter (the global `--quiet`).
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Thread-safe progress meter for byte counts.
pub struct Meter {
    label: &'static str,
    total: u64,
    done: AtomicU64,
    started: Instant,
    state: Mutex<DrawState>,
    terminal: bool,
    plain_lines: bool,
}

struct DrawState {
    last_draw: Instant,
    last_decile: u64,
    /// Width of the line last drawn, to blank it out when finishing.
    drawn_width: usize,
}

impl Meter {
    /// A meter that draws only on a terminal.
    pub fn terminal_only(label: &'static str, total: u64) -> Self {
        Self::new(label, total, false)
    }

    /// A meter that draws on a terminal and prints a line per 10 % otherwise.
    pub fn with_plain_lines(label: &'static str, total: u64) -> Self {
        Self::new(label, total, true)
    }

    fn new(label: &'static str, total: u64, plain_lines: bool) -> Self {
        let now = Instant::now();
        Self {
            label,
            total,
            done: AtomicU64::new(0),
            started: now,
            state: Mutex::new(DrawState {
                last_draw: now - Duration::from_secs(1),
                last_decile: 0,
                drawn_width: 0,
            }),
            terminal: std::io::stderr().is_terminal(),
            plain_lines: plain_lines && !QUIET.load(Ordering::Relaxed),
        }
    }

    pub fn add(&self, bytes: u64) {
        let done = self.done.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.draw(done);
    }

    pub fn set(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.draw(done);
    }

    fn draw(&self, done: u64) {
        // A stage without a byte count (wiping, finalising) has no meter.
        if self.total == 0 || QUIET.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = done as f64 / elapsed / 1e6;
        let percent = (done.min(self.total) * 100)
            .checked_div(self.total)
            .unwrap_or(100);
        if self.terminal {
            if state.last_draw.elapsed() < Duration::from_millis(100) && done < self.total {
                return;
            }
            state.last_draw = Instant::now();
            let line = format!(
                "{}: {percent:3}%  {} / {}  {rate:.0} MB/s  {}",
                self.label,
                human_bytes(done),
                human_bytes(self.total),
                eta_text(done, self.total, elapsed)
            );
            // Pad over the rest of a longer previous line.
            let width = line.chars().count();
            let pad = state.drawn_width.saturating_sub(width);
            state.drawn_width = width;
            eprint!("\r{line}{}", " ".repeat(pad));
            let _ = std::io::stderr().flush();
        } else if self.plain_lines && percent / 10 > state.last_decile {
            state.last_decile = percent / 10;
            eprintln!(
                "{}: {percent}% {rate:.0} MB/s {}",
                self.label,
                eta_text(done, self.total, elapsed)
            );
        }
    }

    /// Clears the redrawn line, so no stale progress is left above the result.
    pub fn finish(&self) {
        let Ok(state) = self.state.lock() else {
            return;
        };
        if self.terminal && state.drawn_width > 0 {
            eprint!("\r{}\r", " ".repeat(state.drawn_width));
            let _ = std::io::stderr().flush();
        }
    }
}

/// "ETA 1m05s" from the average rate so far; "ETA --" until there is one.
fn eta_text(done: u64, total: u64, elapsed_seconds: f64) -> String {
    if done == 0 || done >= total {
        return if done >= total {
            "done".into()
        } else {
            "ETA --".into()
        };
    }
    let remaining = (total - done) as f64 * elapsed_seconds / done as f64;
    format!("ETA {}", format_duration(remaining.round() as u64))
}

/// 59s, 1m05s, 2h03m.
fn format_duration(seconds: u64) -> String {
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// Formats a byte count with a binary unit.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_eta_comes_from_the_average_rate() {
        // A quarter done in 10 s: 30 s to go.
        assert_eq!(eta_text(25, 100, 10.0), "ETA 30s");
        assert_eq!(eta_text(1, 100, 65.0), "ETA 1h47m");
        assert_eq!(eta_text(0, 100, 1.0), "ETA --");
        assert_eq!(eta_text(100, 100, 1.0), "done");
        assert_eq!(format_duration(65), "1m05s");
    }
}
