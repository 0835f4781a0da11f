//! Reliquary's engine: capture, verify, restore, disk discovery and the
//! audit log. The `reliquary` binary is a thin front end over this crate.

pub mod audit;
pub mod capture;
pub mod discover;
pub mod exit;
pub mod fsmap;
pub mod fuzzing;
pub mod io;
pub mod operators;
pub mod ops;
pub mod partition;
pub mod report;
pub mod restore;
pub mod safety;
pub mod stick;
pub mod sys;
pub mod verify;

/// An error with its causes, as one sentence; a cause whose text the
/// message already holds is not repeated.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text += &format!(": {cause_text}");
        }
        source = cause.source();
    }
    text
}
