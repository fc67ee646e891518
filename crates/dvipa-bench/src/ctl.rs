//! Pin rate and latency through the controller itself: the `dvipa` library's `Controller`
//! (its switch driver task, P4Runtime session, digest handling and the core behind `Shared`)
//! started in-process against an embedded switch, from a configuration written to a temporary
//! directory. Agents are not connected over gRPC: their Hello and SRVSTAT go straight into the
//! controller's core (`Shared::event`). The controller offers no hook at "entry written", so a
//! poller thread watches the switch's CRT (about every 200 µs): the run ends when the CRT holds
//! every connection, and one connection in [`SAMPLE`] is timed from its first SYN to the poll
//! that saw its entry (latencies are up to one poll late).

use crate::embedded::{self, Embedded, LiveLog};
use crate::harness::{self, DVIPA, PORT, STACKS};
use crate::pin::{self, PinRun};
use anyhow::Context;
use dvipa::advertise::RecordingAdvertiser;
use dvipa::controller::{self, Controller, Options};
use dvipa_core::core::{Event, Report, SrvStat};
use dvipa_switch::tables::CrtKey;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Connections whose entry is timed (1 in SAMPLE), keeping the poller light.
const SAMPLE: usize = 8;

/// One pin run through the controller: `n` connections, SYNs paced at `pace`/s (None = as
/// fast as possible).
pub async fn pin_run(n: u32, pace: Option<f64>) -> anyhow::Result<PinRun> {
    let sw = Embedded::start(1, n as usize + 1024).await?;
    let dir = std::env::temp_dir().join(format!("dvipa-bench-ctl-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (toml, profiles) = harness::config_text(false, false, &[sw.addr.to_string()]);
    std::fs::write(dir.join("bench.toml"), toml)?;
    for (name, text) in profiles {
        std::fs::write(dir.join(format!("{name}.profile")), text)?;
    }
    std::fs::write(dir.join("dvipa.p4info.txtpb"), embedded::P4INFO)?;
    std::fs::write(dir.join("device.json"), b"{}")?;
    let loaded = controller::load(&dir.join("bench.toml")).context("controller config")?;
    let opts = Options {
        insecure: true,
        metrics: false,
        ..Options::default()
    };
    let agent_l = controller::bind("127.0.0.1:0".parse()?).await?;
    let admin_l = controller::bind("127.0.0.1:0".parse()?).await?;
    let ctl = Controller::start(
        loaded,
        opts,
        agent_l,
        admin_l,
        Arc::new(RecordingAdvertiser::default()),
    )
    .await
    .context("starting the controller")?;
    let res = run_with(&ctl, &sw, n, pace).await;
    ctl.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    res
}

async fn run_with(
    ctl: &Controller,
    sw: &Embedded,
    n: u32,
    pace: Option<f64>,
) -> anyhow::Result<PinRun> {
    let sh = ctl.shared().clone();
    for t in 1..=STACKS {
        sh.event(Event::AgentHello {
            stack: harness::stack(t),
            underlay: Ipv4Addr::new(10, 0, 0, t as u8),
            epoch: 1,
        });
        sh.event(Event::AgentReport {
            stack: harness::stack(t),
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
        });
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        {
            let t = sw.server.pipeline().tables();
            if t.dvipa.len() == 1 && t.dpt.len() == 256 {
                break;
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the controller did not program the switch within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let live = Arc::new(LiveLog::new(Instant::now(), n as usize));
    let inject_ns: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let injected = Arc::new(AtomicU64::new(0));
    let crt_key = |j: usize| {
        let k = harness::conn(j as u32);
        CrtKey {
            src: k.src,
            dst: k.dst,
            proto: k.proto,
            sport: k.sport,
            dport: k.dport,
        }
    };
    let injector = pin::spawn_injector(
        sw.server.clone(),
        n,
        pace,
        live.clone(),
        inject_ns.clone(),
        stop.clone(),
        injected.clone(),
        {
            let p = sw.server.pipeline().clone();
            Box::new(move |i| p.tables().crt.get(&crt_key(i)).is_none())
        },
    );
    // Every SAMPLE-th connection's entry is timed; completion = the CRT holds all n.
    let poller = {
        let (pipeline, live, stop, injected) = (
            sw.server.pipeline().clone(),
            live.clone(),
            stop.clone(),
            injected.clone(),
        );
        std::thread::spawn(move || -> Option<u64> {
            let mut next = 0usize;
            let mut last = (0usize, Instant::now());
            loop {
                if stop.load(Ordering::Relaxed) {
                    return None;
                }
                let upto = injected.load(Ordering::Relaxed) as usize;
                let now = live.now_ns();
                let len = {
                    let t = pipeline.tables();
                    for j in (next..upto).step_by(SAMPLE) {
                        if live.live_ns[j].load(Ordering::Relaxed) == 0
                            && t.crt.get(&crt_key(j)).is_some()
                        {
                            live.live_ns[j].store(now, Ordering::Relaxed);
                        }
                    }
                    t.crt.len()
                };
                live.live.store(len as u64, Ordering::Relaxed);
                while next < upto && live.live_ns[next].load(Ordering::Relaxed) != 0 {
                    next += SAMPLE;
                }
                if len >= n as usize {
                    return Some(now);
                }
                if len != last.0 {
                    last = (len, Instant::now());
                } else if last.1.elapsed() > Duration::from_secs(10) {
                    return None;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let done = tokio::task::spawn_blocking(move || poller.join().ok().flatten()).await?;
    stop.store(true, Ordering::Relaxed);
    let retransmits = injector.join().unwrap_or(0);
    let Some(done_ns) = done else {
        anyhow::bail!(
            "no progress for 10 s: {} of {n} entries live",
            live.live.load(Ordering::Relaxed)
        );
    };
    let mut lat: Vec<f64> = (0..n as usize)
        .step_by(SAMPLE)
        .map(|i| {
            (live.live_ns[i].load(Ordering::Relaxed) as f64
                - inject_ns[i].load(Ordering::Relaxed) as f64)
                / 1e6
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let first = inject_ns
        .iter()
        .map(|x| x.load(Ordering::Relaxed))
        .min()
        .unwrap_or(0);
    let wall = done_ns.saturating_sub(first) as f64 / 1e9;
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    Ok(PinRun {
        n,
        rate: f64::from(n) / wall,
        p50: pct(0.5),
        p99: pct(0.99),
        max: pct(1.0),
        batches: 0,
        lists: sw.server.stats().digest_lists.load(Ordering::Relaxed),
        retransmits,
        wall,
        core: 0.0,
        rpc: 0.0,
    })
}
