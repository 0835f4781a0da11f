//! Progress on stderr: a redrawn line on a terminal, plain lines otherwise.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
            }),
            terminal: std::io::stderr().is_terminal(),
            plain_lines,
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
        if self.total == 0 {
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
            eprint!(
                "\r{}: {percent:3}%  {} / {}  {rate:.0} MB/s   ",
                self.label,
                human_bytes(done),
                human_bytes(self.total)
            );
            let _ = std::io::stderr().flush();
        } else if self.plain_lines && percent / 10 > state.last_decile {
            state.last_decile = percent / 10;
            eprintln!("{}: {percent}% {rate:.0} MB/s", self.label);
        }
    }

    /// Ends the redrawn line.
    pub fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
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
