//! The offline guessing rate of a PIN hash from the operators file: how
//! many PINs one core tries per second against one line, with the
//! project's Argon2id constants, and what that means for the whole space
//! of 6-digit PINs. STICK.md quotes the figures.
//!
//! Run: `cargo bench -p reliquary-appliance --bench pin_guessing`
//! (`PIN_BENCH_TRIES=N` changes the number of tries, default 40).

use std::path::Path;
use std::time::Instant;

use reliquary_appliance::operators::{OperatorList, Role, PIN_HASH_PARAMS};

fn main() {
    let tries: u32 = std::env::var("PIN_BENCH_TRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let mut list = OperatorList::default();
    list.add("op7", "Bench", Role::Technician, "999999", 6)
        .expect("add");
    // Parsed back, as an attacker reads it from the file.
    let list = OperatorList::parse(&list.to_text(), Path::new("operators")).expect("parses");
    let started = Instant::now();
    for guess in 0..tries {
        let found = list.verify("op7", &format!("{guess:06}")).is_ok();
        assert!(!found, "the bench PIN is 999999");
    }
    let per_second = f64::from(tries) / started.elapsed().as_secs_f64();
    let space = 1e6;
    println!(
        "Argon2id {}: {per_second:.1} guesses/s on one core; all 10^6 6-digit PINs in \
         {:.1} core-hours (half of them, on average, in {:.1})",
        PIN_HASH_PARAMS.phc(),
        space / per_second / 3600.0,
        space / per_second / 7200.0
    );
}
