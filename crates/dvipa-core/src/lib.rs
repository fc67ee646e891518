//! dvipa-core: the controller's brain, with no I/O.
//!
//! Nothing in this crate opens a file, a socket or reads a clock: inputs are strings and
//! values, time is passed in. Layout:
//!
//! - [`profile`]: parser for the z/OS profile statements (`VIPADYNAMIC` block) of one routing
//!   switch, with `file:line:column` errors.
//! - [`config`]: the TOML configuration (switches, stacks, timers, …) and the effective VIPA
//!   list ([`config::Cluster`]) derived from it and the profiles.
pub mod config;
pub mod core;
pub mod entries;
pub mod profile;
pub mod sim;
pub mod slots;
