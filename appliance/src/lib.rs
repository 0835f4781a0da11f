//! Reliquary's engine: capture, verify, restore, disk discovery and the
//! audit log. The `reliquary` binary is a thin front end over this crate.

pub mod audit;
pub mod capture;
pub mod discover;
pub mod exit;
pub mod fuzzing;
pub mod operators;
pub mod partition;
pub mod restore;
pub mod safety;
pub mod sys;
pub mod verify;
