//! Reliquary's engine: capture, verify, restore, disk discovery and the
//! audit log. The `reliquary` binary is a thin front end over this crate.

pub mod audit;
pub mod exit;
pub mod sys;
pub mod capture;
pub mod partition;
pub mod verify;
pub mod discover;
pub mod safety;
pub mod restore;
