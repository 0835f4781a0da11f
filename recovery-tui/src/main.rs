//! `recovery-tui`: parse the command line, set up the terminal, run.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;

use anyhow::Context;
use clap::Parser;

use recovery_tui::demo::{self, DemoPaths};
use recovery_tui::engine::{Session, SessionConfig};
use recovery_tui::runner::{self, AppEvent};

/// The technician's terminal UI: choose a signed image, choose the disk,
/// confirm, restore, and keep the proof.
#[derive(Debug, Parser)]
#[command(name = "recovery-tui", version)]
struct Args {
    /// The directory holding the .rimg images.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "demo",
        conflicts_with = "demo"
    )]
    vault: Option<PathBuf>,
    /// The trust store: NAME.pub keys, an optional `policy` and `operators`.
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "demo",
        conflicts_with = "demo"
    )]
    trust: Option<PathBuf>,
    /// The audit log directory (made by `reliquary audit init`).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "demo",
        conflicts_with = "demo"
    )]
    audit: Option<PathBuf>,
    /// Offer loop devices as targets.
    #[arg(long)]
    include_loop: bool,
    /// Offer a regular file as a target (repeatable).
    #[arg(long = "target-file", value_name = "PATH")]
    target_files: Vec<PathBuf>,
    /// Try everything on a generated disk, signed with a throwaway key.
    #[arg(long)]
    demo: bool,
    /// Where --demo puts its files (an empty or new directory); default: a
    /// new temporary directory.
    #[arg(long, value_name = "DIR", requires = "demo")]
    demo_dir: Option<PathBuf>,
    /// The size of the demo disk in MiB.
    #[arg(long, value_name = "MIB", requires = "demo", default_value_t = demo::DEFAULT_SIZE_MIB)]
    demo_size_mib: u64,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("recovery-tui: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (config, demo_paths) = if args.demo {
        let root = match &args.demo_dir {
            Some(dir) => dir.clone(),
            None => tempfile::Builder::new()
                .prefix("reliquary-demo-")
                .tempdir()
                .context("cannot create a temporary directory for the demo")?
                .keep(),
        };
        eprintln!("recovery-tui: preparing the demo in {} …", root.display());
        let paths = demo::prepare(&root, args.demo_size_mib)?;
        let mut config = paths.session_config();
        config.include_loop = args.include_loop;
        config.target_files.extend(args.target_files);
        (config, Some(paths))
    } else {
        let config = SessionConfig {
            vault: args.vault.context("--vault is required")?,
            trust: args.trust.context("--trust is required")?,
            audit: args.audit.context("--audit is required")?,
            include_loop: args.include_loop,
            target_files: args.target_files,
        };
        (config, None)
    };

    let (tx, rx) = mpsc::channel();
    let (mut session, mut app) = Session::start(config, tx.clone(), args.demo)?;
    if let Some(problem) = session.audit_problem() {
        app.notice = Some(format!(
            "Restores are refused until the audit log opens: {problem}"
        ));
    }
    // Keys are read on their own thread so the loop waits on one channel.
    std::thread::spawn(move || {
        while let Ok(event) = crossterm::event::read() {
            if tx.send(AppEvent::Input(event)).is_err() {
                break;
            }
        }
    });
    // try_init installs a panic hook that restores the terminal first.
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let result = runner::run(&mut terminal, &mut app, &mut session, &rx, &mut |_| {});
    session.finish();
    ratatui::try_restore().context("cannot restore the terminal")?;
    result.context("the terminal failed")?;
    if let Some(paths) = demo_paths {
        print_demo_paths(&paths);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_demo_paths(paths: &DemoPaths) {
    println!("The demo's files are kept in {}:", paths.root.display());
    println!("  vault        {}", paths.vault.display());
    println!(
        "  trust store  {} (holds only the throwaway demo key)",
        paths.trust.display()
    );
    println!("  audit log    {}", paths.audit.display());
    println!("  target file  {}", paths.target.display());
    println!("  source disk  {}", paths.source_disk.display());
    println!("Delete the directory when done; never copy its key into a real trust store.");
}
