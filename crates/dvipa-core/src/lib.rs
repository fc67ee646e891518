//! dvipa-core: the controller's brain, with no I/O.
//!
//! Nothing in this crate opens a file, a socket or reads a clock: inputs are strings and
//! values, time is passed in ([`core::Time`], milliseconds). That makes every decision testable
//! on simulated time (quinn-proto style). Layout:
//!
//! - [`profile`]: parser for the z/OS profile statements (`VIPADYNAMIC` block: VIPADEFINE,
//!   VIPABACKUP, VIPADISTRIBUTE, VIPARANGE) of one routing switch, with `file:line:column`
//!   errors and the usual minimum abbreviations.
//! - [`config`]: the TOML configuration (switches, stacks, timers, TLS, metrics …) and the
//!   **effective VIPA list** ([`config::Cluster`]): per DVIPA its routing switch (the profile
//!   that VIPADEFINEs it), ranked backups (VIPABACKUP, highest rank first) with their own
//!   VIPADISTRIBUTE if any, ports, method and candidate stacks (DESTIP list or ALL). One job
//!   a file under `config/`: `schema.rs` (TOML structs), `validate.rs`, `overrides.rs`,
//!   `render.rs`, `advertise.rs`, `ha.rs`, `owners.rs`, `cluster.rs`.
//! - [`slots`]: Maglev-style weighted fill of a service's 256 DPT slots (each target within one
//!   slot of its exact share; minimal slot movement on join/leave/weight change).
//! - [`entries`]: typed entries of the five switch tables (independent of P4Runtime encoding)
//!   and the reconciler (desired vs actual → minimal updates in a safe phase order).
//! - [`core`]: the state machine ([`core::Core`]), one job a file under `core/`: `api.rs`
//!   (events, actions, reports, [`core::MoveError`]), `timers.rs` (one timer table: start-up
//!   holds, leases), `services.rs` (services, DPT, slot fill), `crt.rs` (pins, digests, idle),
//!   `switch_sync.rs` (per-switch installed view and write batches, digest acks),
//!   `ownership.rs` (takeover, takeback, admin move, maintenance, hot standby, restart
//!   adoption; [`core::Action::OwnersChanged`]), `agents.rs` (sessions, leases, reports, VIPA
//!   lists), `idx.rs` (typed indexes: `TargetId`, `SwitchIdx`, `VipaIdx`). P4 names are not
//!   the core's: they live in the `dvipa-contract` crate.
//! - [`sim`]: in-memory switches around a `Core` for tests (no I/O either).
//!
//! # Driving the core
//!
//! ```
//! use dvipa_core::config::Cluster;
//! use dvipa_core::core::{Action, Core, CoreOptions, Event, Time, WriteOutcome};
//! use std::collections::BTreeMap;
//!
//! let toml = r#"
//! p4info = "dvipa.p4info.txtpb"
//! device_config = "dvipa.json"
//! agent = { listen = "0.0.0.0:7070" }
//! [[switch]]
//! name = "SW1"
//! p4runtime = "127.0.0.1:9559"
//! device_id = 1
//! profile = "sw1.profile"
//! [[stack]]
//! name = "S1"
//! underlay = "10.0.0.1"
//! mac = "02:00:00:00:00:01"
//! ports = { SW1 = 1 }
//! "#;
//! let profile = "VIPADYNAMIC
//!   VIPADEFINE 255.255.255.0 192.0.2.10
//!   VIPADISTRIBUTE 192.0.2.10 PORT 80 DESTIP 10.0.0.1
//! ENDVIPADYNAMIC";
//! let profiles = BTreeMap::from([("SW1".to_string(), ("sw1.profile".to_string(), profile.to_string()))]);
//! let cluster = Cluster::build("dvipa.toml", toml, &profiles).unwrap();
//! let mut core = Core::new(cluster, CoreOptions::default()).unwrap();
//!
//! // The shell's loop: feed events with the current time, then carry out every action.
//! let now = Time(0);
//! core.handle(now, Event::SwitchUp { switch: "SW1".into() });
//! let mut pending = vec![];
//! while let Some(a) = core.poll_action() {
//!     match a {
//!         // P4Runtime Read of the five tables → Event::SwitchRead
//!         Action::ReadSwitch { switch } => pending.push(Event::SwitchRead { switch, entries: vec![] }),
//!         // P4Runtime Write → Event::WriteResult (one outcome per update)
//!         Action::Write { switch, batch, updates } => pending.push(Event::WriteResult {
//!             switch, batch, results: vec![WriteOutcome::Ok; updates.len()],
//!         }),
//!         _ => {} // digest acks, VIPA lists, agent acks, advertise/withdraw hooks …
//!     }
//!     if let Some(ev) = pending.pop() {
//!         core.handle(now, ev);
//!     }
//! }
//! assert_eq!(core.advertised("192.0.2.10".parse().unwrap()), Some("SW1"));
//! // Lease timers: call handle_timeout when poll_timeout says so.
//! if let Some(t) = core.poll_timeout() {
//!     core.handle_timeout(t);
//! }
//! ```
pub mod config;
pub mod core;
pub mod dataplane_cfg;
pub mod entries;
pub mod profile;
pub mod sim;
pub mod slots;
pub mod syn_seen;
pub mod validate;
