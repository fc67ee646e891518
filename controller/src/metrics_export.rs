//! Prometheus metrics: the exporter ([`install`]) and the gauges refreshed from the core's
//! state once a second ([`update`]).
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `dvipa_connections_pinned` | gauge | — (CRT size) |
//! | `dvipa_target_connections` | gauge | `dvipa`, `port`, `target` (active conns) |
//! | `dvipa_table_entries` | gauge | `switch`, `table` (what the controller has installed) |
//! | `dvipa_core_events` | gauge | `name` (every core counter: digests, pins, refusals …) |
//! | `dvipa_digests_received_total` / `dvipa_digest_items_total` | counter | `switch` |
//! | `dvipa_write_latency_seconds` | histogram | `switch` |
//! | `dvipa_rejected_messages_total` | counter | `reason` |
//! | `dvipa_table_full_total` | counter | `switch` (RESOURCE_EXHAUSTED updates) |
//! | `dvipa_crt_idle_after_takeover_total` | counter | `switch` (CRT entries found idle by a new session's read, docs/ha.md) |
//! | `dvipa_switch_up` | gauge | `switch` |
//! | `dvipa_tls_handshakes_total` | counter | `result` (agent endpoint, from dvipa-tls) |
//! | `dvipa_agent_insecure` | gauge | — (1 = the agent endpoint runs WITHOUT TLS: `agent.insecure`) |
//! | `dvipa_admin_tls` | gauge | — (1 = the admin API requires mutual TLS) |
//! | `dvipa_admin_tls_handshakes_total` | counter | `result` (admin endpoint) |
//! | `dvipa_admin_refused_total` | counter | `reason` (`no_cert`, `bad_cert`, `other`, `not_allowed`) |
//! | `dvipa_admin_commands_total` | counter | `command` (`maintenance`, `move`, `reconcile`), `result` (`ok`, `refused`): audited admin commands |
//! | `dvipa_agent_slow_disconnects_total` | counter | — (agents cut for not reading their stream) |
//! | `dvipa_dataplane_probes_total` | counter | `switch`, `result` (`sent`, `answered`, `lost`, `marked_down`, `marked_up`: the data-plane probe) |
//! | `dvipa_dataplane_down` | gauge | `switch` (1 = marked down by the data-plane probe) |

use crate::error::StartError;
use crate::shared::Shared;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Installs the global recorder with an HTTP listener on `addr`.
pub fn install(addr: SocketAddr) -> Result<(), StartError> {
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Full("dvipa_write_latency_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ],
        )
        .map_err(|e| StartError::Metrics(e.to_string()))?
        .install()
        .map_err(|e| StartError::Metrics(format!("{addr}: {e}")))
}

/// Sets the security gauges: `dvipa_agent_insecure` (1 = plaintext agent endpoint) and
/// `dvipa_admin_tls` (1 = mutual TLS on the admin API).
pub fn security(agent_insecure: bool, admin_tls: bool) {
    let b = |v: bool| if v { 1.0 } else { 0.0 };
    metrics::gauge!("dvipa_agent_insecure").set(b(agent_insecure));
    metrics::gauge!("dvipa_admin_tls").set(b(admin_tls));
}

/// Refreshes the gauges from the core (`tables`: also the per-table occupancy).
pub fn update(shared: &Shared, tables: bool) {
    shared.with_core(|core| {
        metrics::gauge!("dvipa_connections_pinned").set(core.crt().len() as f64);
        for s in core.services() {
            for (t, d) in &s.dpt {
                metrics::gauge!("dvipa_target_connections",
                    "dvipa" => s.dvipa.to_string(),
                    "port" => s.port.map(|p| p.to_string()).unwrap_or_else(|| "all".into()),
                    "target" => core.stack_name(*t).unwrap_or("?").to_string())
                .set(f64::from(d.active_conns));
            }
        }
        for (name, v) in core.counters() {
            metrics::gauge!("dvipa_core_events", "name" => *name).set(*v as f64);
        }
        if !tables {
            return;
        }
        for sw in &core.cluster().config.switches {
            let mut per: BTreeMap<&'static str, usize> = BTreeMap::new();
            for t in dvipa_contract::TABLE_NAMES {
                per.insert(t, 0);
            }
            if let Some(tables) = core.installed(&sw.name) {
                for k in tables.keys() {
                    *per.entry(dvipa_contract::table_name(k)).or_default() += 1;
                }
            }
            for (t, n) in per {
                metrics::gauge!("dvipa_table_entries", "switch" => sw.name.clone(), "table" => t)
                    .set(n as f64);
            }
        }
    });
}
