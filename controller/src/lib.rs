//! `dvipa`: the controller's I/O shell around the sans-IO `dvipa-core`, and the operator CLI.
//!
//! Layout:
//! - P4 names, shapes and encodings: the [`dvipa_contract`] crate (checked against the P4Info at
//!   start-up with [`dvipa_contract::check`]); [`translate`] re-exports its encodings and adds
//!   write outcomes (full tables) and the admin text of entries.
//! - [`shared`]: the core behind a mutex; every input is an event whose actions are dispatched
//!   at once to switch drivers, agent sessions and the advertiser; the lease timer.
//! - [`switch`]: one driver task per switch (P4Runtime session, pipeline, digest config,
//!   reads, batched writes with per-update outcomes, digest acks after the write, idle
//!   timeouts, liveness → switch up/down, periodic re-read).
//! - [`agent`]: the `ServerStack.Attach` endpoint (mTLS, certificate name = stack).
//! - [`admin`]: the admin gRPC API (`proto/dvipa/v1/admin.proto`): NETSTAT reports, table dump,
//!   diff, reconcile, maintenance, move, counters; its TCP endpoint (mutual TLS with an
//!   allow-list of admin certificate names, `[admin.tls]`, or plaintext with the explicit
//!   `admin.insecure_tcp` opt-in).
//! - [`admin_local`]: the admin Unix socket (mode 0600/0660, peer uid logged) and the audit
//!   line + counter of every mutating admin command.
//! - [`dataplane_probe`]: the optional data-plane liveness probe (`[liveness.dataplane]`);
//!   [`dataplane_gate`]: the gate that combines its mark with the drivers' switch up/down.
//! - [`advertise`]: the [`advertise::Advertiser`] hook (command-running implementation).
//! - [`bgp`]: `[advertise] mode = "bgp"`: DVIPAs announced through GoBGP's gRPC API, reconciled.
//!   [`bgp_status`]: the BGP view it keeps for the admin API and metrics.
//! - [`ha`]: `[ha]`: controller HA on etcd (election, gate, stored owners); [`ha_state`]: the
//!   election state and handle the shell holds.
//! - [`target`]: per-switch targets (Tofino pipelines) and [`target::load_p4info`].
//! - Imports between these modules are acyclic (`scripts/module-cycles.sh`, run by CI): the
//!   state types [`shared`] holds for a subsystem that uses it live in leaf modules
//!   ([`bgp_status`], [`dataplane_gate`], [`ha_state`], [`cmd`], [`stats`]).
//! - [`metrics_export`]: Prometheus endpoint and gauges.
//! - [`controller`]: loading the configuration and starting/stopping everything.
//! - [`cli`]: the operator subcommands (plaintext or mTLS client) and table/JSON rendering; the
//!   controller flags that override the TOML ([`cli::ConfigFlags`]).
//! - `demo` (cargo feature `demo`, on by default): `dvipa demo` and the end-to-end failover
//!   scenario in network namespaces; `--no-default-features` builds the controller without it
//!   (and without the testbed crate).
//! - [`killable`]: agent connections the controller can cut (a peer that does not read).
//! - [`error`]: error enums per layer and their mapping to `tonic::Status`.
pub mod admin;
pub mod admin_local;
pub mod advertise;
pub mod agent;
pub mod agent_pb;
pub mod audit;
pub mod bgp;
pub mod bgp_status;
pub mod cli;
pub mod cmd;
pub mod controller;
pub mod dataplane_gate;
pub mod dataplane_probe;
#[cfg(feature = "demo")]
pub mod demo;
pub mod error;
pub mod ha;
pub mod ha_state;
pub mod killable;
pub mod metrics_export;
pub mod owners;
pub mod pipeline_cmd;
pub mod shared;
pub mod stats;
pub mod switch;
pub mod target;
pub mod translate;
pub mod transport_errors;
