//! The `reliquary` command line.

use std::process::ExitCode;

use clap::Parser;

use reliquary_appliance::exit::ExitClass;

mod cli;

fn main() -> ExitCode {
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let usage = e.use_stderr();
            let _ = e.print();
            return ExitCode::from(if usage { ExitClass::Usage.code() } else { 0 });
        }
    };
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            if err.downcast_ref::<cli::AlreadyReported>().is_none() {
                eprintln!("error: {err:#}");
            }
            ExitCode::from(cli::exit_class(&err).code())
        }
    }
}
