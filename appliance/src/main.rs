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
            // The flags did not parse, so look for --json by hand.
            if usage && std::env::args_os().any(|a| a == "--json") {
                let text = e.kind().to_string();
                let detail = e.to_string();
                let first = detail.lines().next().unwrap_or(&text);
                let first = first.strip_prefix("error: ").unwrap_or(first);
                println!("{}", cli::output::usage_json(first));
            } else {
                let _ = e.print();
            }
            return ExitCode::from(if usage { ExitClass::Usage.code() } else { 0 });
        }
    };
    let json = args.json;
    match cli::run(args) {
        Ok(code) => code,
        Err(err) => {
            let class = cli::exit_class(&err);
            // A restore's outcome is printed before its exit; nothing is left to say.
            if err.downcast_ref::<cli::AlreadyReported>().is_none() {
                cli::output::print_error(&err, class, json);
            }
            ExitCode::from(class.code())
        }
    }
}
