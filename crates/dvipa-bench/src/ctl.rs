//! Pin rate and latency through the controller itself: the `dvipa` library's `Controller`
//! (its switch driver task, P4Runtime session, digest handling and the core behind `Shared`)
//! started in-process against an embedded switch, from a configuration written to a temporary
//! directory. Agents are not connected over gRPC: their Hello and SRVSTAT go straight into the
//! controller's core (`Shared::event`). The controller offers no hook at "entry written", so a
//! poller thread watches the switch's CRT (every ~100 µs) and stamps each connection's entry
//! when it appears; latencies are therefore up to one poll late.

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
    let injector = pin::spawn_injector(
        sw.server.clone(),
        n,
        pace,
        live.clone(),
        inject_ns.clone(),
        stop.clone(),
        injected.clone(),
    );
    let poller = {
        let (pipeline, live, stop, injected) = (
            sw.server.pipeline().clone(),
            live.clone(),
            stop.clone(),
            injected.clone(),
        );
        std::thread::spawn(move || {
            let mut next = 0usize;
            let mut last_progress = Instant::now();
            while live.live.load(Ordering::Relaxed) < u64::from(n) && !stop.load(Ordering::Relaxed)
            {
                let upto = injected.load(Ordering::Relaxed) as usize;
                let mut i = next;
                while i < upto {
                    let end = (i + 1024).min(upto);
                    let now = live.now_ns();
                    let t = pipeline.tables();
                    for j in i..end {
                        if live.live_ns[j].load(Ordering::Relaxed) != 0 {
                            continue;
                        }
                        let k = harness::conn(j as u32);
                        let key = CrtKey {
                            src: k.src,
                            dst: k.dst,
                            proto: k.proto,
                            sport: k.sport,
                            dport: k.dport,
                        };
                        if t.crt.get(&key).is_some() {
                            live.live_ns[j].store(now, Ordering::Relaxed);
                            live.live.fetch_add(1, Ordering::Relaxed);
                            last_progress = Instant::now();
                        }
                    }
                    drop(t);
                    i = end;
                }
                while next < upto && live.live_ns[next].load(Ordering::Relaxed) != 0 {
                    next += 1;
                }
                if last_progress.elapsed() > Duration::from_secs(10) {
                    return false;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            true
        })
    };
    let ok = tokio::task::spawn_blocking(move || poller.join().unwrap_or(false)).await?;
    stop.store(true, Ordering::Relaxed);
    let retransmits = injector.join().unwrap_or(0);
    anyhow::ensure!(
        ok,
        "no progress for 10 s: {} of {n} entries live",
        live.live.load(Ordering::Relaxed)
    );
    let mut r = pin::summarize(n, &live, &inject_ns);
    r.retransmits = retransmits;
    r.lists = sw.server.stats().digest_lists.load(Ordering::Relaxed);
    Ok(r)
}
