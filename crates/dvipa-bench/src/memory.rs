//! Controller memory per pinned connection (RSS delta / count at 1M and 10M connections, core
//! fed handshakes: SYN and ACK digests, null switch) and the time to rebuild the CRT from agent re-reports
//! (entries/s through the core's agent-report path, writes answered by a null switch).
//!
//! Each measurement runs in a child process of this binary (`DVIPA_BENCH_PROBE=kind:n`) so
//! RSS starts clean. Baselines in the same run: a bare `HashMap<ConnKey, u16>` (5-tuple →
//! target, the least any CRT needs) measured the same way.

use crate::Size;
use crate::harness::{self, DVIPA, PORT, STACKS};
use crate::report::{Better, Figure};
use anyhow::{Context, bail};
use dvipa_core::core::{ConnReport, Event, Report, Time};
use dvipa_core::entries::ConnKey;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Instant;

/// What a probe child prints (one JSON line).
#[derive(Debug, Serialize, Deserialize)]
struct Probe {
    n: u64,
    rss_before: u64,
    rss_after: u64,
    secs: f64,
    crt_len: u64,
    updates_written: u64,
}

/// Entry point of a probe child: `kind:n`.
pub fn probe(spec: &str) -> anyhow::Result<()> {
    let (kind, n) = spec.split_once(':').context("probe spec kind:n")?;
    let n: u32 = n.parse()?;
    let p = match kind {
        "core" => probe_core(n)?,
        "map" => probe_map(n),
        "rebuild" => probe_rebuild(n)?,
        _ => bail!("unknown probe {kind}"),
    };
    println!("{}", serde_json::to_string(&p)?);
    Ok(())
}

fn probe_core(n: u32) -> anyhow::Result<Probe> {
    let now = Time(0);
    let mut core = harness::core(false, false, 2000)?;
    core.handle(
        now,
        Event::SwitchUp {
            switch: "SW1".into(),
        },
    );
    harness::drain_null(&mut core, now);
    harness::attach_agents(&mut core, now);
    harness::drain_null(&mut core, now);
    let svc = harness::service(&core)?;
    let rss_before = harness::rss_bytes();
    let t = Instant::now();
    let mut written = 0;
    let mut i = 0;
    while i < n {
        let j = (i + 1000).min(n);
        core.handle(
            now,
            Event::Digest {
                switch: "SW1".into(),
                list_id: u64::from(i),
                items: harness::digest_items(svc, i..j),
            },
        );
        written += harness::drain_null(&mut core, now);
        i = j;
    }
    let secs = t.elapsed().as_secs_f64();
    let rss_after = harness::rss_bytes();
    Ok(Probe {
        n: n.into(),
        rss_before,
        rss_after,
        secs,
        crt_len: core.crt().len() as u64,
        updates_written: written as u64,
    })
}

fn probe_map(n: u32) -> Probe {
    let rss_before = harness::rss_bytes();
    let t = Instant::now();
    let mut m: HashMap<ConnKey, u16> = HashMap::new();
    for i in 0..n {
        m.insert(harness::conn(i), 1 + (i % u32::from(STACKS)) as u16);
    }
    let secs = t.elapsed().as_secs_f64();
    let rss_after = harness::rss_bytes();
    Probe {
        n: n.into(),
        rss_before,
        rss_after,
        secs,
        crt_len: std::hint::black_box(&m).len() as u64,
        updates_written: 0,
    }
}

/// A restarted controller whose switch lost its tables: every stack re-reports its
/// connections (full sync, NEWCONN batches of 1000, then sync_done); the core pins them and
/// writes them to the (null) switch.
fn probe_rebuild(n: u32) -> anyhow::Result<Probe> {
    let now = Time(0);
    let mut core = harness::core(false, false, 2000)?;
    core.handle(
        now,
        Event::SwitchUp {
            switch: "SW1".into(),
        },
    );
    harness::drain_null(&mut core, now);
    harness::attach_agents(&mut core, now);
    harness::drain_null(&mut core, now);
    // Per stack, the connections it holds.
    let mut per: Vec<Vec<u32>> = vec![Vec::new(); STACKS as usize];
    for i in 0..n {
        per[(i % u32::from(STACKS)) as usize].push(i);
    }
    let rss_before = harness::rss_bytes();
    let t = Instant::now();
    let mut written = 0;
    for (si, conns) in per.iter().enumerate() {
        let st = harness::stack(si as u16 + 1);
        let chunks: Vec<&[u32]> = conns.chunks(1000).collect();
        for (ci, ch) in chunks.iter().enumerate() {
            let newconn = ch
                .iter()
                .map(|&i| {
                    let k = harness::conn(i);
                    ConnReport {
                        client: k.client(),
                        client_port: u32::from(k.sport),
                        dvipa: DVIPA,
                        dvipa_port: u32::from(PORT),
                        protocol: 6,
                        server_originated: false,
                    }
                })
                .collect();
            core.handle(
                now,
                Event::AgentReport {
                    stack: st.clone(),
                    report: Report {
                        seq: 100 + ci as u64,
                        newconn,
                        full_sync: true,
                        sync_done: ci + 1 == chunks.len(),
                        ..Default::default()
                    },
                },
            );
            written += harness::drain_null(&mut core, now);
        }
    }
    let secs = t.elapsed().as_secs_f64();
    Ok(Probe {
        n: n.into(),
        rss_before,
        rss_after: harness::rss_bytes(),
        secs,
        crt_len: core.crt().len() as u64,
        updates_written: written as u64,
    })
}

fn run_probe(kind: &str, n: u32) -> anyhow::Result<Probe> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .env("DVIPA_BENCH_PROBE", format!("{kind}:{n}"))
        .output()
        .with_context(|| format!("probe {kind}:{n}"))?;
    if !out.status.success() {
        bail!(
            "probe {kind}:{n} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let p: Probe = serde_json::from_str(line.trim())
        .with_context(|| format!("probe {kind}:{n} output {line:?}"))?;
    Ok(p)
}

fn per_conn(p: &Probe) -> f64 {
    p.rss_after.saturating_sub(p.rss_before) as f64 / p.n as f64
}

/// Runs the section.
pub fn run(size: Size) -> anyhow::Result<Vec<Figure>> {
    let (mem_sizes, rebuild_sizes): (&[u32], &[u32]) = match size {
        Size::Smoke => (&[100_000], &[20_000]),
        _ => (&[1_000_000, 10_000_000], &[100_000, 1_000_000]),
    };
    let mut out = Vec::new();
    for &n in mem_sizes {
        let c = run_probe("core", n)?;
        let m = run_probe("map", n)?;
        anyhow::ensure!(
            c.crt_len == u64::from(n),
            "core holds {} of {n} connections",
            c.crt_len
        );
        out.push(
            Figure::new(
                "memory",
                format!("controller RSS per pinned connection, {}", count(n)),
                per_conn(&c),
                "B/conn",
                Better::Lower,
            )
            .baseline(per_conn(&m), "bare HashMap<ConnKey, u16> (5-tuple → target), same count")
            .goal(100.0, "≤ 100 B")
            .note(format!(
                "core fed {} handshakes (SYN + ACK digests) in lists of 1000, null switch (every write OK, {} CRT inserts written); RSS {:.0} → {:.0} MiB; pinning took {:.2} s ({:.0} pins/s in the core alone)",
                count(n),
                c.updates_written,
                c.rss_before as f64 / 1048576.0,
                c.rss_after as f64 / 1048576.0,
                c.secs,
                n as f64 / c.secs
            )),
        );
    }
    for &n in rebuild_sizes {
        let r = run_probe("rebuild", n)?;
        let m = run_probe("map", n)?;
        anyhow::ensure!(
            r.crt_len == u64::from(n),
            "rebuild holds {} of {n} connections",
            r.crt_len
        );
        out.push(
            Figure::new(
                "memory",
                format!("CRT rebuild from agent re-reports, {}", count(n)),
                n as f64 / r.secs,
                "entries/s",
                Better::Higher,
            )
            .baseline(n as f64 / m.secs, "bare HashMap<ConnKey, u16> inserts, same count")
            .note(format!(
                "{STACKS} stacks re-report (full sync, NEWCONN batches of 1000, sync_done) to a restarted core whose switch is empty; includes the core's {} updates to a null switch; {:.3} s",
                r.updates_written, r.secs
            )),
        );
    }
    Ok(out)
}

/// `1M`, `100k`, ...
pub fn count(n: u32) -> String {
    if n >= 1_000_000 && n.is_multiple_of(1_000_000) {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}
