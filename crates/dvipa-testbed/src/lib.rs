//! dvipa-testbed: a network-namespace cluster for end-to-end tests and the demo, and the TCP
//! traffic tools that run across it.
//!
//! - [`topo`]: build (and always tear down) the client / router / switch ports / LAN / servers
//!   topology; [`topo::Testbed`] describes every name, address and MAC, and gives the
//!   advertise/withdraw hook commands.
//! - [`netns`]: run or spawn commands in a namespace, run Rust code on a thread inside one, wait
//!   for TCP ports.
//! - [`echo`]: the `dvipa-echo` server (greeting with its name, echo, graceful stop).
//! - [`conns`]: the `dvipa-conns` client (N long-lived streaming connections, figures).
//! - [`bgp`]: BIRD 2 in the router namespace peering with a GoBGP speaker (`Testbed::start_bgp`).
//! - [`signals`]: tear everything down on Ctrl-C / SIGTERM (for the demo).
//! - [`skip`]: tests that lack a prerequisite skip, or fail under `DVIPA_TESTS_NO_SKIP=1` (CI).

pub mod bgp;
pub mod conns;
pub mod echo;
pub mod netns;
pub mod signals;
pub mod skip;
pub mod topo;

pub use conns::{ConnsConfig, ConnsRun, Report, Snapshot};
pub use echo::{EchoConfig, EchoServer};
pub use netns::{NsChild, exec_in, is_root, sh_in, spawn_in, spawn_in_logged};
pub use signals::cleanup_on_signals;
pub use topo::{Testbed, TestbedConfig, cleanup, cleanup_stale, leftovers};
