//! Benchmark (not a test): key-to-screen latency while a restore runs at
//! full speed, and restore throughput through the TUI against the CLI on
//! the same image and target.
//!
//! `cargo run --release -p recovery-tui --example tui_bench -- [DISK_MIB] [RUNS]`
//! (needs the release `reliquary` binary: `cargo build --release -p reliquary-appliance`).
//!
//! The TUI side is the real session and event loop drawing an 80x25 frame
//! through crossterm's backend into a sink, so escape-sequence generation
//! is measured but no terminal emulator is. Keys (`?`, toggling help) are
//! injected every 20 ms; the latency of a key is the time from its
//! injection to the end of the first frame drawn after it was handled.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::CrosstermBackend;
use ratatui::layout::Rect;
use ratatui::{Terminal, TerminalOptions, Viewport};

use recovery_tui::app::{Screen, SignedIn};
use recovery_tui::demo;
use recovery_tui::engine::targets::{load_targets, TargetQuery};
use recovery_tui::engine::Session;
use recovery_tui::runner::{run, AppEvent};

const KEY_INTERVAL: Duration = Duration::from_millis(20);

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let disk_mib: u64 = args.next().map_or(Ok(1024), |a| a.parse())?;
    let runs: usize = args.next().map_or(Ok(3), |a| a.parse())?;
    let root = tempfile::Builder::new()
        .prefix("reliquary-tui-bench-")
        .tempdir()?;
    let paths = demo::prepare(&root.path().join("demo"), disk_mib)?;
    let reliquary = release_bin("reliquary")?;
    println!(
        "image {} ({disk_mib} MiB disk), target {}",
        paths.image.display(),
        paths.target.display()
    );

    let mut tui_seconds = Vec::new();
    let mut cli_seconds = Vec::new();
    let mut latencies = Vec::new();
    for run_number in 0..runs {
        let _ = std::fs::remove_file(&paths.target);
        let (seconds, mut lat) = restore_through_tui(&paths)?;
        println!("run {run_number}: TUI {seconds:.2} s, {} keys", lat.len());
        tui_seconds.push(seconds);
        latencies.append(&mut lat);

        let _ = std::fs::remove_file(&paths.target);
        let started = Instant::now();
        let status = Command::new(&reliquary)
            .arg("restore")
            .arg(&paths.image)
            .arg(&paths.target)
            .arg("--trust")
            .arg(&paths.trust)
            .arg("--vault")
            .arg(&paths.vault)
            .arg("--audit")
            .arg(&paths.audit)
            .args(["--operator", "tech1", "--yes"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "reliquary restore failed: {status}");
        let seconds = started.elapsed().as_secs_f64();
        println!("run {run_number}: CLI {seconds:.2} s");
        cli_seconds.push(seconds);
    }
    let disk_mb = (disk_mib << 20) as f64 / 1e6;
    let tui = median(&mut tui_seconds);
    let cli = median(&mut cli_seconds);
    // The engine's own stage times, as both front ends logged them: the
    // RestoreFinished records alternate TUI, CLI.
    let (mut tui_engine, mut cli_engine) = (Vec::new(), Vec::new());
    for (i, seconds) in engine_seconds(&paths.audit)?.into_iter().enumerate() {
        if i % 2 == 0 {
            tui_engine.push(seconds)
        } else {
            cli_engine.push(seconds)
        }
    }
    let (tui_engine, cli_engine) = (median(&mut tui_engine), median(&mut cli_engine));
    println!(
        "engine stages (audit log) median: TUI {tui_engine:.3} s ({:.0} MB/s), CLI {cli_engine:.3} s ({:.0} MB/s), TUI/CLI {:.3}",
        disk_mb / tui_engine,
        disk_mb / cli_engine,
        tui_engine / cli_engine
    );
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "restore median: TUI {tui:.2} s ({:.0} MB/s), CLI {cli:.2} s ({:.0} MB/s), TUI/CLI {:.3}",
        disk_mb / tui,
        disk_mb / cli,
        tui / cli
    );
    println!(
        "key-to-frame latency over {} keys: median {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        ms(p(0.5)),
        ms(p(0.99)),
        ms(p(1.0))
    );
    Ok(())
}

/// Restores through the session and event loop; returns the wall time from
/// the confirming Enter to the end, and the latency of each injected key.
fn restore_through_tui(paths: &demo::DemoPaths) -> anyhow::Result<(f64, Vec<Duration>)> {
    let (tx, rx) = mpsc::channel();
    let (mut session, mut app) = Session::start(paths.session_config(), tx.clone(), true)?;
    app.operator = Some(SignedIn {
        id: "tech1".into(),
        name: Some("Demo Technician".into()),
    });
    let entry = app
        .vault
        .first()
        .ok_or_else(|| anyhow::anyhow!("the demo vault is empty"))?;
    let summary = entry
        .summary
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no manifest"))?;
    let image_path = entry.path.clone();
    app.targets = load_targets(&TargetQuery {
        requirement: reliquary_appliance::safety::TargetRequirement {
            min_size_bytes: summary.disk_bytes,
            logical_sector_size: summary.logical_sector_size,
        },
        image_path: &image_path,
        vault: &paths.vault,
        include_loop: false,
        target_files: std::slice::from_ref(&paths.target),
    });
    app.target_cursor = app
        .targets
        .items
        .iter()
        .position(|t| t.path == paths.target)
        .ok_or_else(|| anyhow::anyhow!("the file target is missing"))?;
    app.confirm.text = app.targets.items[app.target_cursor].confirm_code.clone();
    app.screen = Screen::Confirm;
    // The loop ends once the restore has finished and been logged.
    app.quit_after_restore = true;

    let sent: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    tx.send(AppEvent::Input(Event::Key(KeyEvent::new(
        KeyCode::Enter,
        KeyModifiers::NONE,
    ))))?;
    let feeder = {
        let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(KEY_INTERVAL);
                let key = KeyEvent::new(KeyCode::Char('?'), KeyModifiers::NONE);
                if let Ok(mut sent) = sent.lock() {
                    sent.push(Instant::now());
                }
                if tx.send(AppEvent::Input(Event::Key(key))).is_err() {
                    break;
                }
            }
        })
    };
    let backend = CrosstermBackend::new(std::io::sink());
    let mut terminal = Terminal::with_options(
        backend,
        TerminalOptions {
            viewport: Viewport::Fixed(Rect::new(0, 0, 80, 25)),
        },
    )?;
    let mut frames = Vec::new();
    run(&mut terminal, &mut app, &mut session, &rx, &mut |at| {
        frames.push(at)
    })?;
    let seconds = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = feeder.join();
    session.finish();
    anyhow::ensure!(
        matches!(
            app.result.as_ref().map(|r| &r.outcome),
            Some(recovery_tui::model::ResultOutcome::Success)
        ),
        "the restore did not succeed: {:?}",
        app.result
    );
    let sent = sent
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    let latencies = sent
        .iter()
        .filter_map(|&at| frames.iter().find(|&&f| f >= at).map(|&f| f - at))
        .collect();
    Ok((seconds, latencies))
}

/// The summed stage durations of every RestoreFinished record, in order.
fn engine_seconds(audit: &std::path::Path) -> anyhow::Result<Vec<f64>> {
    use reliquary_appliance::audit::{verify_dir, Payload, PUBLIC_KEY_FILE};
    let (key, _) = reliquary_image::keys::PublicKey::load(&audit.join(PUBLIC_KEY_FILE))?;
    let report = verify_dir(audit, &key, None)?;
    Ok(report
        .records
        .iter()
        .filter_map(|r| match &r.record.as_ref()?.payload {
            Payload::RestoreFinished(f) => {
                Some(f.stage_millis.iter().map(|(_, ms)| *ms).sum::<u64>() as f64 / 1e3)
            }
            _ => None,
        })
        .collect())
}

fn release_bin(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    exe.ancestors()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            anyhow::anyhow!("build {name} first: cargo build --release -p reliquary-appliance")
        })
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
