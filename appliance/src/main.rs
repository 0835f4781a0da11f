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
                // The first paragraph, whose further lines name what is
                // missing or wrong ("the following required arguments ...").
                let detail = e.to_string();
                let first: Vec<&str> = detail
                    .lines()
                    .take_while(|l| !l.trim().is_empty())
                    .map(str::trim)
                    .collect();
                let message = first.join(" ");
                let message = message.strip_prefix("error: ").unwrap_or(&message);
                println!("{}", cli::output::usage_json(message));
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
