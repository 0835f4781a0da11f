//! The event loop, generic over the ratatui backend so tests drive the
//! real app on `TestBackend`.
//!
//! Keys and worker reports arrive on one channel. A key is drawn at once,
//! so the technician sees every press; worker reports are coalesced and
//! drawn at most every [`REDRAW_INTERVAL`], so a fast restore cannot flood
//! the console.

use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crossterm::event::Event;
use ratatui::backend::Backend;
use ratatui::Terminal;

use crate::app::{handle_key, Action, App, WorkerEvent};

/// The least time between two redraws caused by progress alone.
pub const REDRAW_INTERVAL: Duration = Duration::from_millis(100);
/// How long to wait for an event when nothing needs drawing.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Everything the loop reacts to.
#[derive(Debug, Clone, PartialEq)]
pub enum AppEvent {
    Input(Event),
    /// Boxed: reports are rare and large, keys frequent and small.
    Worker(Box<WorkerEvent>),
}

impl AppEvent {
    pub fn worker(event: WorkerEvent) -> Self {
        AppEvent::Worker(Box::new(event))
    }
}

/// Performs the actions the state machine asks for.
pub trait Effects {
    fn perform(&mut self, action: &Action, app: &App);
}

/// Called after each frame with the time it was drawn; the latency
/// benchmark uses it, the binary passes a no-op.
pub type FrameHook<'a> = &'a mut dyn FnMut(Instant);

/// Runs until the app quits or the event channel closes.
pub fn run<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    effects: &mut dyn Effects,
    events: &Receiver<AppEvent>,
    on_frame: FrameHook<'_>,
) -> std::io::Result<()> {
    app.too_small = too_small(terminal.size()?);
    terminal.draw(|frame| frame.render_widget(&*app, frame.area()))?;
    on_frame(Instant::now());
    let mut last_draw = Instant::now();
    let mut dirty = false;
    while !app.should_quit {
        let wait = if dirty {
            REDRAW_INTERVAL.saturating_sub(last_draw.elapsed())
        } else {
            IDLE_WAIT
        };
        let first = match events.recv_timeout(wait) {
            Ok(event) => Some(event),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        let mut draw_now = false;
        let mut next = first;
        while let Some(event) = next.take() {
            match event {
                AppEvent::Input(Event::Key(key)) => {
                    let action = handle_key(app, key);
                    effects.perform(&action, app);
                    draw_now = true;
                }
                AppEvent::Input(Event::Resize(..)) => {
                    app.too_small = too_small(terminal.size()?);
                    draw_now = true;
                }
                AppEvent::Input(_) => {}
                AppEvent::Worker(report) => {
                    let action = app.apply(*report);
                    effects.perform(&action, app);
                    dirty = true;
                }
            }
            if app.should_quit {
                break;
            }
            next = events.try_recv().ok();
        }
        if draw_now || (dirty && last_draw.elapsed() >= REDRAW_INTERVAL) {
            terminal.draw(|frame| frame.render_widget(&*app, frame.area()))?;
            on_frame(Instant::now());
            last_draw = Instant::now();
            dirty = false;
        }
    }
    Ok(())
}

/// Whether `size` is below what the screens need.
fn too_small(size: ratatui::layout::Size) -> bool {
    size.width < crate::ui::MIN_WIDTH || size.height < crate::ui::MIN_HEIGHT
}
