//! The operations layer: the door a front end (the `reliquary` CLI, the
//! TUI) goes through for an operation, so that each is written once and
//! both front ends get the same answer. Front ends parse, confirm, draw and
//! call these; the engine modules below them do the work. See
//! `ARCHITECTURE.md`.
//!
//! Moved here so far: the list of disks an image may go to, with every
//! refusal, capture's source probing, verify-and-record and
//! check-and-record. Restore's one entry is still `restore::restore`.

mod capture;
mod check;
mod targets;
mod verify;

pub use capture::{probe_source, CaptureSource, SourceError};
pub use check::{check_and_record, DiskCheck, DiskToCheck};
pub use targets::{targets, TargetChoice, TargetQuery};
pub use verify::{verify_and_record, Recording, Verification};
