//! Throttled progress events, one meter per target and stage.

use std::sync::mpsc::Sender;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::restore::{Progress, Stage};

/// Sends throttled progress events for one stage.
pub(super) struct Meter<'a> {
    tx: &'a Sender<Progress>,
    target: usize,
    stage: Stage,
    total: u64,
    chunks_total: u64,
    state: Mutex<MeterState>,
}

impl<'a> Meter<'a> {
    pub(super) fn new(
        tx: &'a Sender<Progress>,
        target: usize,
        stage: Stage,
        total: u64,
        chunks_total: u64,
    ) -> Self {
        Self {
            tx,
            target,
            stage,
            total,
            chunks_total,
            state: Mutex::new(MeterState {
                done: 0,
                chunks: 0,
                last_sent: None,
                started: None,
            }),
        }
    }

    pub(super) fn add(&self, bytes: u64, chunks: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.done += bytes;
            s.chunks += chunks;
        }
        self.send(false);
    }

    /// Sends an event; unforced ones at most every 50 ms.
    pub(super) fn send(&self, force: bool) {
        let Ok(mut s) = self.state.lock() else { return };
        if !force
            && s.last_sent
                .is_some_and(|t| t.elapsed() < Duration::from_millis(50))
        {
            return;
        }
        s.last_sent = Some(Instant::now());
        let elapsed = s
            .started
            .get_or_insert_with(Instant::now)
            .elapsed()
            .as_secs_f64();
        let rate = if elapsed > 0.0 {
            s.done as f64 / elapsed
        } else {
            0.0
        };
        let eta = (rate > 0.0 && s.done <= self.total)
            .then(|| Duration::from_secs_f64((self.total - s.done) as f64 / rate));
        let _ = self.tx.send(Progress {
            target: self.target,
            stage: self.stage,
            bytes_done: s.done,
            bytes_total: self.total,
            chunks_done: s.chunks,
            chunks_total: self.chunks_total,
            bytes_per_second: rate,
            eta,
        });
    }
}

struct MeterState {
    done: u64,
    chunks: u64,
    last_sent: Option<Instant>,
    /// The first event: the rate counts from the stage's start, not from
    /// when the meter was made.
    started: Option<Instant>,
}
