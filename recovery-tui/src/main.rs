//! `recovery-tui`: parse the command line, set up the terminal, run.

use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::mpsc;

use anyhow::Context;
use clap::Parser;
use ratatui::backend::Backend;
use ratatui::Terminal;
use reliquary_appliance::audit::{AuditLog, Digest, Environment, Operator, OperatorRef, Payload};
use reliquary_image::TrustStore;

use recovery_tui::app::{Action, AfterQuit, App, Screen};
use recovery_tui::demo::{self, DemoPaths};
use recovery_tui::engine::{Session, SessionConfig};
use recovery_tui::model::{TrustStatus, VaultEntry};
use recovery_tui::operators::{self, Lockout, OperatorList};
use recovery_tui::readiness;
use recovery_tui::runner::{self, AppEvent, Effects};

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

    let console_font = needs_console_font();
    // try_init installs a panic hook that restores the terminal first.
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    take_over_the_console(&mut terminal)?;
    let (tx, rx) = mpsc::channel();
    // Keys are read on their own thread so the loop waits on one channel.
    let keys = tx.clone();
    std::thread::spawn(move || {
        while let Ok(event) = crossterm::event::read() {
            if keys.send(AppEvent::Input(event)).is_err() {
                break;
            }
        }
    });
    let front = FrontEnd {
        config: &config,
        demo: args.demo,
        console_font,
        events: &tx,
        input: &rx,
    };
    let ended = front.run(&mut terminal);
    ratatui::try_restore().context("cannot restore the terminal")?;
    let ended = ended?;
    if let Some(paths) = demo_paths {
        print_demo_paths(&paths);
    }
    if ended.cancelled {
        eprintln!(
            "recovery-tui: the restore was cancelled. The target disk was left wiped: \
             it will not boot until an image is restored onto it."
        );
    }
    if ended.after == AfterQuit::PowerOff {
        if args.demo {
            println!("Demo: a real stick would power the machine off now.");
        } else {
            let status = Command::new("poweroff")
                .status()
                .context("cannot run poweroff")?;
            anyhow::ensure!(status.success(), "poweroff failed: {status}");
        }
    }
    // 130, as for an interrupt: a script must not take a wiped disk for done.
    Ok(if ended.cancelled {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

/// How the front end ended.
struct Ended {
    after: AfterQuit,
    /// The operator cancelled a restore and quit: the disk is left wiped.
    cancelled: bool,
}

/// The three phases, repeated on sign-out: the stick's own checks, the
/// sign-in (which records refusals in the audit log), then the session.
struct FrontEnd<'a> {
    config: &'a SessionConfig,
    demo: bool,
    console_font: bool,
    events: &'a mpsc::Sender<AppEvent>,
    input: &'a mpsc::Receiver<AppEvent>,
}

impl FrontEnd<'_> {
    fn run<B: Backend>(&self, terminal: &mut Terminal<B>) -> anyhow::Result<Ended> {
        let mut lockout = Lockout::default();
        // Images found damaged stay damaged for the whole session.
        let mut damaged: Vec<VaultEntry> = Vec::new();
        loop {
            let problems = readiness::check(self.config);
            if !problems.is_empty() {
                let mut app = App::not_ready(problems, self.demo);
                app.console_font = self.console_font;
                self.run_app(terminal, &mut app, &mut NoEffects)?;
                match app.after_quit {
                    AfterQuit::Recheck => continue,
                    after => {
                        return Ok(Ended {
                            after,
                            cancelled: false,
                        })
                    }
                }
            }

            let trust =
                TrustStore::load(&self.config.trust).context("cannot load the trust store")?;
            let operators = OperatorList::from_trust(&trust, &self.config.trust)?;
            let mut app = App::new(Vec::new(), operators, self.demo);
            app.exit_after_sign_in = true;
            app.lockout = lockout;
            app.console_font = self.console_font;
            if self.demo {
                app.demo_pins = demo::demo_pins();
            }
            let mut recorder = SignInRecorder::open(self.config, &trust);
            // The log counts failed sign-ins across sessions and reboots.
            if let Some(counted) = recorder.lockout() {
                app.lockout = counted;
            }
            self.run_app(terminal, &mut app, &mut recorder)?;
            drop(recorder);
            lockout = app.lockout.clone();
            let Some(operator) = app.operator.clone() else {
                return Ok(Ended {
                    after: app.after_quit,
                    cancelled: false,
                });
            };

            let (mut session, mut app) =
                Session::start(self.config.clone(), self.events.clone(), self.demo)?;
            if let Some(problem) = session.audit_problem() {
                app.notice = Some(format!(
                    "Restores are refused until the audit log opens: {problem}"
                ));
            }
            app.operator = Some(operator);
            app.screen = Screen::Vault;
            app.lockout = lockout.clone();
            app.console_font = self.console_font;
            for entry in &mut app.vault {
                if let Some(known) = damaged.iter().find(|d| d.path == entry.path) {
                    entry.trust = known.trust;
                    entry.reason = known.reason.clone();
                }
            }
            let result = self.run_app(terminal, &mut app, &mut session);
            session.finish();
            result?;
            damaged.retain(|d| !app.vault.iter().any(|e| e.path == d.path));
            damaged.extend(
                app.vault
                    .iter()
                    .filter(|e| e.trust == TrustStatus::Damaged)
                    .cloned(),
            );
            match app.after_quit {
                AfterQuit::SignOut => continue,
                after => {
                    return Ok(Ended {
                        after,
                        cancelled: app.quit_after_restore && app.restore_cancelled(),
                    })
                }
            }
        }
    }

    fn run_app<B: Backend>(
        &self,
        terminal: &mut Terminal<B>,
        app: &mut App,
        effects: &mut dyn Effects,
    ) -> anyhow::Result<()> {
        runner::run(terminal, app, effects, self.input, &mut |_| {}).context("the terminal failed")
    }
}

/// The "not ready" screen asks for nothing to be done.
struct NoEffects;

impl Effects for NoEffects {
    fn perform(&mut self, _: &Action, _: &App) {}
}

/// Records refused sign-ins while nobody is signed in. The session opens
/// the log only after a good sign-in, so the two never hold it at once.
struct SignInRecorder {
    log: Option<AuditLog>,
}

impl SignInRecorder {
    fn open(config: &SessionConfig, trust: &TrustStore) -> Self {
        let env = Environment::system(Some(Digest(trust.digest())));
        Self {
            log: AuditLog::open(&config.audit, env).ok(),
        }
    }

    /// The failed sign-ins the log holds, when it opened and verified.
    fn lockout(&self) -> Option<Lockout> {
        Lockout::from_log(self.log.as_ref()?).ok()
    }
}

impl Effects for SignInRecorder {
    fn perform(&mut self, action: &Action, _: &App) {
        let Some(log) = &mut self.log else {
            return;
        };
        let (id, payload) = match action {
            Action::RecordSignInFailure { id, attempt, .. } => {
                (id, operators::sign_in_failed(id, *attempt))
            }
            Action::RecordSignIn { id } => (
                id,
                Payload::SignedIn(OperatorRef {
                    operator_id: id.clone(),
                }),
            ),
            _ => return,
        };
        let operator = Operator {
            id: id.clone(),
            name: None,
        };
        let _ = log.append(&operator, payload);
    }
}

/// The Linux console's default font holds only the CP437 characters.
/// Makes the screen the UI's alone: keys typed while the machine booted
/// are discarded (they would land in the sign-in's operator id), and the
/// whole screen is cleared, because ratatui only draws cells that differ
/// from a blank screen and would leave boot messages showing through.
fn take_over_the_console<B: Backend>(terminal: &mut Terminal<B>) -> anyhow::Result<()> {
    // Not a terminal (a pipe in a test harness): there is nothing to flush.
    match nix::sys::termios::tcflush(std::io::stdin(), nix::sys::termios::FlushArg::TCIFLUSH) {
        Ok(()) | Err(nix::errno::Errno::ENOTTY) => {}
        Err(e) => return Err(e).context("cannot discard the keys typed during boot"),
    }
    terminal.clear().context("cannot clear the screen")?;
    Ok(())
}

fn needs_console_font() -> bool {
    std::env::var("TERM").is_ok_and(|term| term == "linux")
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
