//! The admin API's reports: `netstat vdpt|vcrt|vipadcfg|vipadyn` and `counters`, each a
//! table built from the core's view (and the shell's, for the BGP and HA columns).

use crate::shared::Shared;
use dvipa_core::core::{Core, Origin, SwitchLiveness};
use dvipa_core::entries::{TCP, UDP};
use dvipa_proto::v1 as pb;
use std::collections::BTreeSet;

pub(super) fn table(
    title: impl Into<String>,
    columns: &[&str],
    rows: Vec<Vec<String>>,
) -> pb::AdminTable {
    pb::AdminTable {
        title: title.into(),
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows: rows
            .into_iter()
            .map(|cells| pb::AdminRow { cells })
            .collect(),
    }
}

fn proto_name(p: u8) -> String {
    match p {
        TCP => "TCP".into(),
        UDP => "UDP".into(),
        x => x.to_string(),
    }
}

fn port_text(p: Option<u16>) -> String {
    p.map(|p| p.to_string()).unwrap_or_else(|| "ALL".into())
}

/// `netstat vdpt`: one row per (service, target).
pub fn vdpt(core: &Core) -> pb::AdminTable {
    let mut rows = Vec::new();
    for s in core.services() {
        let targets: BTreeSet<u16> = s
            .candidates
            .iter()
            .map(|c| c.0)
            .chain(s.dpt.keys().copied())
            .collect();
        for t in targets {
            let name = core.stack_name(t).unwrap_or("?").to_string();
            let underlay = core
                .cluster()
                .stack(&name)
                .map(|x| x.underlay.to_string())
                .unwrap_or_default();
            let d = s.dpt.get(&t).copied().unwrap_or_default();
            let cfg_w = s.candidates.iter().find(|c| c.0 == t).map(|c| c.1);
            let weight = if d.reported_weight > 0 {
                d.reported_weight
            } else {
                cfg_w.unwrap_or(0)
            };
            let ready = core.target_ready(s.id, t);
            let health = if ready {
                "OK".to_string()
            } else if !d.listening {
                "NOLISTEN".into()
            } else if d.draining {
                "DRAINING".into()
            } else {
                d.not_ready
                    .map(|x| x.1.to_uppercase())
                    .unwrap_or_else(|| "NOTREADY".into())
            };
            let slots = s.fill.iter().filter(|x| **x == Some(t)).count();
            rows.push(vec![
                s.dvipa.to_string(),
                port_text(s.port),
                proto_name(s.proto),
                name,
                underlay,
                d.total_conns.to_string(),
                if ready { "Y" } else { "N" }.into(),
                weight.to_string(),
                health,
                d.active_conns.to_string(),
                slots.to_string(),
            ]);
        }
    }
    table(
        "Dynamic VIPA Destination Port Table",
        &[
            "DVIPA",
            "PORT",
            "PROTO",
            "TARGET",
            "XCF",
            "TOTALCONN",
            "RDY",
            "WEIGHT",
            "HEALTH",
            "ACTCONN",
            "SLOTS",
        ],
        rows,
    )
}

/// `netstat vcrt`: one row per pinned connection.
pub fn vcrt(core: &Core) -> pb::AdminTable {
    let mut v: Vec<_> = core.crt().iter().collect();
    v.sort_by_key(|(k, _)| **k);
    let rows = v
        .into_iter()
        .map(|(k, e)| {
            vec![
                k.dvipa().to_string(),
                { k.dport }.to_string(),
                proto_name(k.proto),
                k.client().to_string(),
                { k.sport }.to_string(),
                core.stack_name(e.target).unwrap_or("?").into(),
                match e.origin {
                    Origin::SynDigest => "SYN",
                    Origin::NewConn => "NEWCONN",
                    Origin::Takeover => "TAKEOVER",
                    Origin::SwitchRead => "SWITCHREAD",
                }
                .into(),
                if e.server_originated() { "Y" } else { "N" }.into(),
                {
                    let un = core.unpinned_on(k);
                    if un.is_empty() {
                        "Y".to_string()
                    } else {
                        // Not in the switch's CRT (table full): on the slot path there.
                        let sws: Vec<String> = un
                            .iter()
                            .map(|(sw, why)| match *why {
                                "RESOURCE_EXHAUSTED" => format!("FULL:{sw}"),
                                _ => format!("FAILED:{sw}"),
                            })
                            .collect();
                        sws.join(",")
                    }
                },
            ]
        })
        .collect();
    table(
        "Dynamic VIPA Connection Routing Table",
        &[
            "DVIPA",
            "PORT",
            "PROTO",
            "CLIENT",
            "CLIENTPORT",
            "TARGET",
            "ORIGIN",
            "SERVERORIG",
            "PINNED",
        ],
        rows,
    )
}

/// `netstat vipadcfg`: the configured VIPA list (per switch's profile).
pub fn vipadcfg(core: &Core) -> pb::AdminTable {
    let c = core.cluster();
    let mut rows = Vec::new();
    for v in &c.vipas {
        let backups: Vec<String> = v
            .backups
            .iter()
            .map(|b| format!("{}:{}", b.switch, b.rank))
            .collect();
        let mut dists: Vec<(String, &dvipa_core::config::Distribution)> =
            v.dist.iter().map(|d| (v.owner.clone(), d)).collect();
        for b in &v.backups {
            dists.extend(b.own.iter().map(|d| (b.switch.clone(), d)));
        }
        if dists.is_empty() {
            rows.push(vec![
                format!("{}/{}", v.addr, v.prefix_len),
                v.owner.clone(),
                backups.join(","),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
            ]);
        }
        for (sw, d) in dists {
            let ports = if d.ports.is_empty() {
                "ALL".to_string()
            } else {
                d.ports
                    .iter()
                    .map(|p| p.to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let dest = if d.all_stacks {
                "ALL".to_string()
            } else {
                d.candidates
                    .iter()
                    .map(|c| c.stack.clone())
                    .collect::<Vec<_>>()
                    .join(",")
            };
            rows.push(vec![
                format!("{}/{}", v.addr, v.prefix_len),
                v.owner.clone(),
                backups.join(","),
                sw,
                ports,
                dest,
                d.method.as_str().into(),
            ]);
        }
    }
    table(
        "Dynamic VIPA Configuration",
        &[
            "DVIPA",
            "DEFINEDBY",
            "BACKUPS",
            "DISTBY",
            "PORTS",
            "DESTIP",
            "DISTMETHOD",
        ],
        rows,
    )
}

/// `netstat vipadyn`: which switch routes / backs up each DVIPA, and its state.
pub fn vipadyn(core: &Core, shared: &Shared) -> pb::AdminTable {
    let c = core.cluster();
    let bgp = shared.bgp.lock().clone();
    let mut rows = Vec::new();
    for v in &c.vipas {
        let owner = core.owner(v.addr).unwrap_or("?").to_string();
        let adv = core.advertised(v.addr).map(str::to_string);
        let chain = std::iter::once((v.owner.clone(), None))
            .chain(v.backups.iter().map(|b| (b.switch.clone(), Some(b.rank))));
        for (sw, rank) in chain {
            // A follower (HA) holding a backup session: the switch answers its reads, the
            // leader writes.
            let backup =
                !shared.may_write() && shared.stats.get(&crate::switch::held_key(&sw)) == 1;
            let live = match core.liveness(&sw) {
                _ if backup => "BACKUP-SESSION",
                Some(SwitchLiveness::Up) => "UP",
                Some(SwitchLiveness::Syncing) => "SYNCING",
                Some(SwitchLiveness::Down) => "DOWN",
                Some(SwitchLiveness::Unknown) | None => "UNKNOWN",
            };
            let status = if sw == owner { "ACTIVE" } else { "BACKUP" };
            rows.push(vec![
                format!("{}/{}", v.addr, v.prefix_len),
                sw.clone(),
                status.into(),
                rank.map(|r| r.to_string())
                    .unwrap_or_else(|| "PRIMARY".into()),
                live.into(),
                if adv.as_deref() == Some(sw.as_str()) {
                    "Y"
                } else {
                    "N"
                }
                .into(),
                if core.in_maintenance(&sw) { "Y" } else { "N" }.into(),
                core.transitions(v.addr)
                    .last()
                    .map(|t| t.what.clone())
                    .unwrap_or_default(),
                core.unpinned_count(&sw).to_string(),
                c.config
                    .switches
                    .iter()
                    .find(|x| x.name == sw)
                    .map(target_cell)
                    .unwrap_or_default(),
            ]);
            if let Some(b) = &bgp {
                let r = rows.last_mut().expect("just pushed");
                r.push(b.state_of((v.addr, v.prefix_len), &sw));
            }
        }
    }
    let mut cols = vec![
        "DVIPA",
        "SWITCH",
        "STATUS",
        "RANK",
        "SWITCHSTATE",
        "ADVERTISED",
        "MAINT",
        "LASTCHANGE",
        "UNPINNED",
        "TARGET",
    ];
    let mut title = "Dynamic VIPA Information".to_string();
    if let Some(b) = &bgp {
        // BGP: what GoBGP holds/sent (SENT, RIB med=N, -), not the controller's intent.
        cols.push("BGP");
        title.push_str(&crate::bgp::title_suffix(&b.view()));
    }
    table(&title, &cols, rows)
}

/// The TARGET cell of vipadyn (issue 16): `bmv2`, or `tofino` with the capabilities the
/// controller works around (`-acks`: the server acks digests itself; `-idle`: no idle
/// notifications, CRT aged by counter reads).
fn target_cell(s: &dvipa_core::config::SwitchCfg) -> String {
    let caps = s.capabilities();
    let mut t = match s.target {
        dvipa_core::config::SwitchTarget::Bmv2 => "bmv2".to_string(),
        dvipa_core::config::SwitchTarget::Tofino => "tofino".to_string(),
    };
    if !caps.digest_acks {
        t.push_str(" -acks");
    }
    if !caps.idle_notifications {
        t.push_str(" -idle");
    }
    t
}

/// Counters of the core, the shell and the TLS endpoint.
pub fn counters(core: &Core, shared: &Shared) -> pb::AdminTable {
    let mut rows: Vec<Vec<String>> = core
        .counters()
        .iter()
        .map(|(k, v)| vec!["core".into(), k.to_string(), v.to_string()])
        .collect();
    rows.extend(
        shared
            .stats
            .snapshot()
            .into_iter()
            .map(|(k, v)| vec!["shell".into(), k, v.to_string()]),
    );
    let t = shared.tls.snapshot();
    for (k, v) in [
        ("handshakes_accepted", t.accepted),
        ("refused_no_cert", t.refused_no_cert),
        ("refused_bad_cert", t.refused_bad_cert),
        ("refused_other", t.refused_other),
    ] {
        rows.push(vec!["tls".into(), k.into(), v.to_string()]);
    }
    if let Some(b) = shared.bgp.lock().clone() {
        for (k, v) in b.counters() {
            rows.push(vec!["bgp".into(), k, v.to_string()]);
        }
    }
    table("Counters", &["LAYER", "NAME", "VALUE"], rows)
}
