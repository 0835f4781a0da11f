//! The trust store's `operators` list and the sign-in check, shared with
//! the CLI through the appliance library so both enforce the same list.

pub use reliquary_appliance::operators::*;
