//! Takeover and takeback with pinned connections, cold backup vs hot standby, on two embedded
//! switches (in-process, P4Runtime on loopback) driven by dvipa-core's failover logic through
//! this crate's driver.
//!
//! Setup: `SW1` owns the DVIPA, `SW2` backs it up (its own `VIPADISTRIBUTE ... DESTIP ALL`); N
//! connections are pinned by SYN digests from SW1 (fed to the core directly). Takeover: the
//! driver reports SW1 down (`SwitchDown`, as the controller does after `liveness_ms` without a
//! primary stream: that detection time is *not* included) and the clock runs until SW2's CRT
//! holds every connection with its original target and the core has advertised the DVIPA on
//! SW2. Takeback: SW1 comes back with empty tables; until SW1 holds every connection and the
//! DVIPA is advertised there. Connections lost = connections whose entry is missing or points
//! elsewhere on the new owner at the end (must be 0).
//! Baseline in the same run: hot standby is compared with the cold backup; the cold backup
//! with the same takeover done one update per Write (`max_batch = 1`, up to 10k connections).

use crate::Size;
use crate::embedded::{self, Driver, Embedded};
use crate::harness;
use crate::memory::count;
use crate::report::{Better, Figure};
use dvipa_core::core::{Event, Time};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One run's result.
#[derive(Debug, Clone, Copy)]
struct FoRun {
    takeover_ms: f64,
    takeover_adv_ms: f64,
    takeover_lost: usize,
    takeback_ms: f64,
    takeback_lost: usize,
    takeover_updates: u64,
    takeback_updates: u64,
}

fn target(i: u32) -> u16 {
    1 + (i % u32::from(harness::STACKS)) as u16
}

fn missing(sw: &Embedded, n: u32) -> usize {
    (0..n)
        .filter(|&i| !sw.crt_has(&harness::conn(i), target(i)))
        .count()
}

async fn run_one(n: u32, hot: bool, max_batch: usize) -> anyhow::Result<FoRun> {
    let schema = Arc::new(embedded::schema()?);
    let sw1 = Embedded::start(1, n as usize + 1024).await?;
    let sw2 = Embedded::start(2, n as usize + 1024).await?;
    let (s1, q1) = embedded::connect(&sw1, &schema).await?;
    let (s2, q2) = embedded::connect(&sw2, &schema).await?;
    let epoch = Instant::now();
    let mut d = Driver::new(harness::core(true, hot, max_batch)?, schema, epoch);
    d.attach("SW1", s1, q1);
    d.attach("SW2", s2, q2);
    harness::attach_agents(&mut d.core, Time(epoch.elapsed().as_millis() as u64));
    d.settle(Duration::from_millis(100)).await?;
    let svc = harness::service(&d.core)?;
    let mut i = 0;
    while i < n {
        let j = (i + 1000).min(n);
        d.event(Event::Digest {
            switch: "SW1".into(),
            list_id: u64::from(i) + 1,
            items: harness::digest_items(svc, i..j),
        });
        i = j;
    }
    let nn = n as usize;
    d.run_until(
        |_| sw1.crt_len() == nn && (!hot || sw2.crt_len() == nn),
        Duration::from_secs(20),
    )
    .await?;
    anyhow::ensure!(
        d.advertised.iter().any(|(s, _)| s == "SW1"),
        "DVIPA never advertised on SW1"
    );

    // Takeover.
    let (b0, u0) = (d.batches, d.updates);
    let t0 = Instant::now();
    d.switch_down("SW1");
    let adv = |d: &Driver, sw: &str, since: Instant| {
        d.advertised
            .iter()
            .find(|(s, t)| s == sw && *t >= since)
            .map(|x| x.1)
    };
    d.run_until(
        |d| sw2.crt_len() >= nn && adv(d, "SW2", t0).is_some(),
        Duration::from_secs(20),
    )
    .await?;
    let takeover = t0.elapsed();
    let takeover_adv = adv(&d, "SW2", t0).map(|t| t - t0).unwrap_or(takeover);
    let takeover_lost = missing(&sw2, n);
    let takeover_updates = d.updates - u0;
    let _ = b0;

    // Takeback: SW1 restarts with empty tables.
    sw1.server.pipeline().reset();
    let u1 = d.updates;
    let t1 = Instant::now();
    d.switch_up("SW1", true);
    d.run_until(
        |d| sw1.crt_len() >= nn && adv(d, "SW1", t1).is_some(),
        Duration::from_secs(20),
    )
    .await?;
    let takeback = t1.elapsed();
    let takeback_lost = missing(&sw1, n);
    let takeback_updates = d.updates - u1;
    // Let the old owner's cleanup finish so nothing is torn down mid-write.
    d.settle(Duration::from_millis(50)).await?;
    Ok(FoRun {
        takeover_ms: takeover.as_secs_f64() * 1e3,
        takeover_adv_ms: takeover_adv.as_secs_f64() * 1e3,
        takeover_lost,
        takeback_ms: takeback.as_secs_f64() * 1e3,
        takeback_lost,
        takeover_updates,
        takeback_updates,
    })
}

/// Runs the section.
pub fn run(size: Size) -> anyhow::Result<Vec<Figure>> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_async(size))
}

async fn run_async(size: Size) -> anyhow::Result<Vec<Figure>> {
    let sizes: &[u32] = match size {
        Size::Smoke => &[1_000],
        _ => &[1_000, 10_000, 100_000],
    };
    let mut out = Vec::new();
    for &n in sizes {
        let c = count(n);
        let cold = run_one(n, false, 2000).await?;
        let hot = run_one(n, true, 2000).await?;
        let slow = if n <= 10_000 {
            Some(run_one(n, false, 1).await?)
        } else {
            None
        };
        let lost_total =
            cold.takeover_lost + cold.takeback_lost + hot.takeover_lost + hot.takeback_lost;
        let note = |r: &FoRun| {
            format!(
                "advertised after {:.1} ms; takeover wrote {} updates, takeback {}; lost {} / {}",
                r.takeover_adv_ms,
                r.takeover_updates,
                r.takeback_updates,
                r.takeover_lost,
                r.takeback_lost
            )
        };
        let mut f = Figure::new(
            "failover",
            format!("takeover, cold backup, {c} conns"),
            cold.takeover_ms,
            "ms",
            Better::Lower,
        )
        .goal_met(
            cold.takeover_ms <= 1000.0 && cold.takeover_lost == 0,
            "≤ 1 s, 0 lost",
        )
        .note(note(&cold));
        if let Some(s) = &slow {
            f = f.baseline(
                s.takeover_ms,
                format!("cold backup, one update per Write ({})", note(s)),
            );
        }
        out.push(f);
        out.push(
            Figure::new(
                "failover",
                format!("takeover, hot standby, {c} conns"),
                hot.takeover_ms,
                "ms",
                Better::Lower,
            )
            .baseline(cold.takeover_ms, "cold backup, same run")
            .goal_met(
                hot.takeover_ms <= 1000.0 && hot.takeover_lost == 0,
                "≤ 1 s, 0 lost",
            )
            .note(note(&hot)),
        );
        let mut f = Figure::new(
            "failover",
            format!("takeback, cold backup, {c} conns"),
            cold.takeback_ms,
            "ms",
            Better::Lower,
        )
        .note("primary back with empty tables; until it holds every CRT entry and advertises");
        if let Some(s) = &slow {
            f = f.baseline(s.takeback_ms, "cold backup, one update per Write");
        }
        out.push(f);
        out.push(
            Figure::new(
                "failover",
                format!("takeback, hot standby, {c} conns"),
                hot.takeback_ms,
                "ms",
                Better::Lower,
            )
            .baseline(cold.takeback_ms, "cold backup, same run"),
        );
        out.push(
            Figure::new(
                "failover",
                format!("connections lost, {c} conns (4 moves)"),
                lost_total as f64,
                "conns",
                Better::Lower,
            )
            .goal(0.0, "= 0")
            .note("cold and hot, takeover and takeback: entries missing or wrong on the new owner"),
        );
    }
    Ok(out)
}
