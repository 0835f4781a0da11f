//! The operator's terminal, `/dev/tty`: a PIN read with echo off after a
//! prompt, and a question asked there when standard input carries
//! something else (the PIN).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};

use nix::sys::termios::{self, LocalFlags, SetArg};

/// The controlling terminal of this process.
const TTY: &str = "/dev/tty";

/// Prints `prompt` on the terminal and reads one line with echo off; the
/// line end the operator typed is echoed so the next output starts on a
/// line of its own.
pub fn read_secret(prompt: &str) -> std::io::Result<String> {
    let tty = open()?;
    let saved = termios::tcgetattr(&tty)?;
    let mut silent = saved.clone();
    silent.local_flags.remove(LocalFlags::ECHO);
    silent.local_flags.insert(LocalFlags::ECHONL);
    termios::tcsetattr(&tty, SetArg::TCSAFLUSH, &silent)?;
    let answer = ask_on(&tty, prompt);
    // Echo comes back whatever the read did.
    let restored = termios::tcsetattr(&tty, SetArg::TCSAFLUSH, &saved);
    let answer = answer?;
    restored?;
    Ok(answer)
}

/// Prints `prompt` on the terminal and reads one line there.
pub fn ask(prompt: &str) -> std::io::Result<String> {
    ask_on(&open()?, prompt)
}

/// Whether this process has a terminal to ask on.
pub fn available() -> bool {
    open().is_ok()
}

fn open() -> std::io::Result<File> {
    OpenOptions::new().read(true).write(true).open(TTY)
}

fn ask_on(tty: &File, prompt: &str) -> std::io::Result<String> {
    let mut writer = tty;
    writer.write_all(prompt.as_bytes())?;
    writer.flush()?;
    let mut line = String::new();
    BufReader::new(tty).read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
