//! Shared pieces: the benchmark cluster (one DVIPA service, N stacks, one or two switches),
//! driving the core against a "null" switch (every write succeeds at once), agent attach,
//! RSS, and an embedded switch (`dvipa-switch`) served over P4Runtime on loopback in-process
//! with a small driver that carries the core's actions out through `p4rt::Session`.

use anyhow::{Context, anyhow};
use dvipa_core::config::Cluster;
use dvipa_core::core::{
    Action, Core, CoreOptions, DigestItem, Event, Report, SrvStat, Time, WriteOutcome,
};
use dvipa_core::entries::{ConnKey, TCP};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The DVIPA every benchmark distributes.
pub const DVIPA: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// Its port.
pub const PORT: u16 = 80;
/// Stacks (targets) in the benchmark cluster.
pub const STACKS: u16 = 4;

/// Stack name of target id `t` (1-based).
pub fn stack(t: u16) -> String {
    format!("S{t}")
}

/// The benchmark configuration: `SW1` owns the DVIPA; with `two_switches`, `SW2` backs it up
/// with its own `VIPADISTRIBUTE ... DESTIP ALL`; `hot_standby` keeps the backup programmed.
/// `p4rt` = P4Runtime address per switch. Returns the TOML text and `(switch, profile text)`.
pub fn config_text(
    two_switches: bool,
    hot_standby: bool,
    p4rt: &[String],
) -> (String, Vec<(String, String)>) {
    let mut toml = format!(
        r#"controller_id = "dvipa-bench"
p4info = "dvipa.p4info.txtpb"
device_config = "device.json"
hot_standby = {hot_standby}

[agent]
listen = "127.0.0.1:0"

[timers]
heartbeat_ms = 1000
lease_ms = 86400000
idle_timeout_ms = 300000
liveness_ms = 500
"#
    );
    let switches: &[&str] = if two_switches {
        &["SW1", "SW2"]
    } else {
        &["SW1"]
    };
    for (i, sw) in switches.iter().enumerate() {
        toml += &format!(
            r#"
[[switch]]
name = "{sw}"
p4runtime = "{addr}"
device_id = {id}
profile = "{sw}.profile"
routes = [{{ prefix = "0.0.0.0/0", port = 1, dmac = "02:00:00:00:fe:0{id}", smac = "02:00:00:00:0{id}:01" }}]
"#,
            id = i + 1,
            addr = p4rt.get(i).map(String::as_str).unwrap_or("127.0.0.1:1"),
        );
    }
    for t in 1..=STACKS {
        let ports: Vec<String> = switches
            .iter()
            .map(|s| format!("{s} = {}", t + 1))
            .collect();
        toml += &format!(
            r#"
[[stack]]
name = "{}"
underlay = "10.0.0.{t}"
mac = "02:00:00:00:00:{t:02x}"
ports = {{ {} }}
"#,
            stack(t),
            ports.join(", ")
        );
    }
    let mut profiles = vec![(
        "SW1".to_string(),
        format!(
            "VIPADYNAMIC\n  VIPADEFINE MOVEABLE IMMEDIATE 255.255.255.0 {DVIPA}\n  VIPADISTRIBUTE {DVIPA} PORT {PORT} DESTIP ALL\nENDVIPADYNAMIC\n"
        ),
    )];
    if two_switches {
        profiles.push((
            "SW2".to_string(),
            format!(
                "VIPADYNAMIC\n  VIPABACKUP 10 {DVIPA}\n  VIPADISTRIBUTE {DVIPA} PORT {PORT} DESTIP ALL\nENDVIPADYNAMIC\n"
            ),
        ));
    }
    (toml, profiles)
}

/// The cluster of [`config_text`].
pub fn cluster(two_switches: bool, hot_standby: bool) -> anyhow::Result<Cluster> {
    let (toml, profiles) = config_text(two_switches, hot_standby, &[]);
    let profiles: BTreeMap<String, (String, String)> = profiles
        .into_iter()
        .map(|(sw, text)| (sw.clone(), (format!("{sw}.profile"), text)))
        .collect();
    Cluster::build("bench.toml", &toml, &profiles).map_err(|e| anyhow!("bench config: {e}"))
}

/// A core for [`cluster`]. `max_batch = 1` (the baselines) also means one Write at a time;
/// otherwise the core's default window of CRT batches in flight.
pub fn core(two_switches: bool, hot_standby: bool, max_batch: usize) -> anyhow::Result<Core> {
    let max_in_flight = if max_batch == 1 {
        1
    } else {
        CoreOptions::default().max_in_flight
    };
    Core::new(
        cluster(two_switches, hot_standby)?,
        CoreOptions {
            max_batch,
            max_in_flight,
        },
    )
    .map_err(|e| anyhow!("core: {e}"))
}

/// The service id of the benchmark DVIPA.
pub fn service(core: &Core) -> anyhow::Result<u16> {
    core.service_of(DVIPA, PORT, TCP)
        .context("benchmark service missing")
}

/// Connection `i` of a benchmark: client 10.64.0.0/10 + port, so `i` is recoverable.
pub fn conn(i: u32) -> ConnKey {
    let src = 0x0A40_0000 | (i >> 14);
    let sport = 1024 + (i & 0x3fff) as u16;
    ConnKey::new(Ipv4Addr::from(src), sport, DVIPA, PORT, TCP)
}

/// Inverse of [`conn`].
pub fn conn_index(k: &ConnKey) -> Option<u32> {
    let src = k.src;
    let sport = k.sport;
    if src & 0xFFC0_0000 != 0x0A40_0000 || sport < 1024 {
        return None;
    }
    Some(((src & 0x003F_FFFF) << 14) | u32::from(sport - 1024))
}

/// Null switch: answers every write with OK and every read with an empty table set. Returns
/// the number of updates written.
pub fn drain_null(core: &mut Core, now: Time) -> usize {
    let mut n = 0;
    while let Some(a) = core.poll_action() {
        match a {
            Action::Write {
                switch,
                batch,
                updates,
            } => {
                n += updates.len();
                let results = vec![WriteOutcome::Ok; updates.len()];
                drop(updates);
                core.handle(
                    now,
                    Event::WriteResult {
                        switch,
                        batch,
                        results,
                    },
                );
            }
            Action::ReadSwitch { switch } => core.handle(
                now,
                Event::SwitchRead {
                    switch,
                    entries: Vec::new(),
                },
            ),
            _ => {}
        }
    }
    n
}

/// Hello + SRVSTAT (listening on the DVIPA port) from every stack.
pub fn attach_agents(core: &mut Core, now: Time) {
    for t in 1..=STACKS {
        core.handle(
            now,
            Event::AgentHello {
                stack: stack(t),
                underlay: Ipv4Addr::new(10, 0, 0, t as u8),
                epoch: 1,
            },
        );
        core.handle(
            now,
            Event::AgentReport {
                stack: stack(t),
                report: Report {
                    seq: 1,
                    srvstat: vec![SrvStat {
                        dvipa: DVIPA,
                        port: u32::from(PORT),
                        protocol: 6,
                        listening: true,
                        weight: 0,
                        draining: false,
                    }],
                    ..Default::default()
                },
            },
        );
    }
}

/// Digest items for connections `range`, targets round robin over the stacks: per connection its
/// SYN and its handshake ACK (`NOT_SYN`), which pins it (`pin_on = "handshake"`, the default).
pub fn digest_items(svc: u16, range: std::ops::Range<u32>) -> Vec<DigestItem> {
    range
        .flat_map(|i| {
            let syn = DigestItem {
                conn: conn(i),
                service: svc,
                target: 1 + (i % u32::from(STACKS)) as u16,
                not_syn: false,
            };
            [
                syn,
                DigestItem {
                    not_syn: true,
                    ..syn
                },
            ]
        })
        .collect()
}

/// Resident set size of this process in bytes (`/proc/self/statm`).
pub fn rss_bytes() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = s
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    pages * 4096
}
