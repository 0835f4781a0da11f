//! recovery-tui: the technician's terminal UI for Reliquary.
//!
//! The [`app`] state machine is pure; [`ui`] draws it; [`engine`] does the
//! work (vault scan, verification, discovery, restore, audit log) on
//! threads that report back over a channel; [`runner`] ties them together
//! on any ratatui backend; [`demo`] builds a throwaway vault for `--demo`.

pub mod app;
pub mod demo;
pub mod engine;
pub mod model;
pub mod operators;
pub mod readiness;
pub mod runner;
pub mod ui;
