//! Pin rate and latency: SYN frames injected into the embedded switch (in-process pipeline) →
//! `learn_t` digest lists over P4Runtime → dvipa-core (the controller's sans-IO core) →
//! batched CRT writes through `p4rt::Session` → entry live in the switch's CRT.
//!
//! Driven two ways: by this crate's driver (`embedded::Driver`, the same loop as the
//! controller's switch driver, instrumented per write), and by the controller's own library
//! (`dvipa::controller::Controller`, see `ctl.rs`). Latency of a connection = from its first SYN injected to the Write that inserted
//! its CRT entry answered OK. A SYN whose digest was lost is re-sent after 1 s, as TCP would
//! (counted as retransmits; latency still from the first SYN).
//!
//! Runs: (1) unpaced (SYNs as fast as the injector goes, at most `WINDOW` unpinned
//! connections outstanding): pin rate; (2) paced at the goal rate of 100k connections/s:
//! latency. Baseline in the same run: the same pipeline with the core writing one update per
//! Write request (`max_batch = 1`).

use crate::Size;
use crate::embedded::{self, Driver, Embedded, LiveLog};
use crate::harness;
use crate::memory::count;
use crate::report::{Better, Figure};
use dvipa_core::core::Time;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Most connections injected and not yet live (keeps digest queues bounded).
const WINDOW: u64 = 20_000;
/// Goal rate.
const GOAL_RATE: f64 = 100_000.0;

/// A SYN of connection `i` (Ethernet + IPv4 + TCP, 54 bytes).
pub fn syn_frame(i: u32) -> Vec<u8> {
    let k = harness::conn(i);
    let (src, dst, sport, dport) = (k.src, k.dst, k.sport, k.dport);
    let mut f = Vec::with_capacity(54);
    f.extend_from_slice(&[2, 0, 0, 0, 0xfe, 1]); // switch
    f.extend_from_slice(&[2, 0, 0, 0, 0xc1, 1]); // client router
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_start = f.len();
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&src.to_be_bytes());
    f.extend_from_slice(&dst.to_be_bytes());
    dvipa_switch::packet::fix_ipv4_checksum(&mut f[ip_start..ip_start + 20]);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&i.to_be_bytes()); // seq
    f.extend_from_slice(&[0, 0, 0, 0]); // ack
    f.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]); // SYN
    f
}

/// The handshake's ACK of connection `i` (what pins it: `pin_on = "handshake"`, the default).
pub fn ack_frame(i: u32) -> Vec<u8> {
    let mut f = syn_frame(i);
    f[34 + 8..34 + 12].copy_from_slice(&1u32.to_be_bytes()); // ack number
    f[34 + 13] = 0x10; // ACK
    f
}

/// Outcome of one run.
#[derive(Debug, Clone)]
pub struct PinRun {
    /// Connections.
    pub n: u32,
    /// Connections/s from the first SYN to the last entry live.
    pub rate: f64,
    /// Latency percentiles (ms).
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Max.
    pub max: f64,
    /// Write batches.
    pub batches: u64,
    /// Digest lists.
    pub lists: u64,
    /// Re-sent SYNs.
    pub retransmits: u64,
    /// Wall time of the run (first SYN to last entry live), s.
    pub wall: f64,
    /// Time in the core (digests, write results, flushes), s.
    pub core: f64,
    /// Time in write RPCs (sum), s.
    pub rpc: f64,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One pin run: `n` connections, core batches of at most `max_batch` updates, SYNs paced at
/// `pace` per second (None = as fast as possible).
pub async fn pin_run(n: u32, max_batch: usize, pace: Option<f64>) -> anyhow::Result<PinRun> {
    let schema = Arc::new(embedded::schema()?);
    let sw = Embedded::start(1, n as usize + 1024).await?;
    let (session, queues) = embedded::connect(&sw, &schema).await?;
    let epoch = Instant::now();
    let mut d = Driver::new(harness::core(false, false, max_batch)?, schema, epoch);
    d.attach("SW1", session, queues);
    harness::attach_agents(&mut d.core, Time(epoch.elapsed().as_millis() as u64));
    d.settle(Duration::from_millis(100)).await?;
    {
        let t = sw.server.pipeline().tables();
        anyhow::ensure!(
            t.dvipa.len() == 1 && t.dpt.len() == 256,
            "switch not programmed: {} dvipa, {} dpt entries",
            t.dvipa.len(),
            t.dpt.len()
        );
    }
    let live = Arc::new(LiveLog::new(epoch, n as usize));
    d.live = Some(live.clone());
    let inject_ns: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let injector = spawn_injector(
        sw.server.clone(),
        n,
        pace,
        live.clone(),
        inject_ns.clone(),
        stop.clone(),
        Arc::new(AtomicU64::new(0)),
        {
            let live = live.clone();
            Box::new(move |i| live.live_ns[i].load(Ordering::Relaxed) == 0)
        },
    );
    let lv = live.clone();
    let res = d
        .run_until(
            move |_| lv.live.load(Ordering::Relaxed) >= u64::from(n),
            Duration::from_secs(10),
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    let retransmits = injector.join().unwrap_or(0);
    res?;
    anyhow::ensure!(
        sw.crt_len() == n as usize,
        "switch CRT holds {} of {n}",
        sw.crt_len()
    );
    if let Ok(path) = std::env::var("DVIPA_BENCH_LAT_DUMP") {
        let text: String = (0..n as usize)
            .map(|i| {
                format!(
                    "{} {}\n",
                    inject_ns[i].load(Ordering::Relaxed),
                    live.live_ns[i].load(Ordering::Relaxed)
                )
            })
            .collect();
        let _ = std::fs::write(format!("{path}-{n}-{}-{max_batch}", pace.is_some()), text);
    }
    let mut r = summarize(n, &live, &inject_ns);
    r.batches = d.batches;
    r.lists = d.digest_lists;
    r.retransmits = retransmits;
    r.core = d.core_busy.as_secs_f64();
    r.rpc = d.rpc_busy.as_secs_f64();
    Ok(r)
}

/// Injects the SYNs of connections `0..n` into `server` (port 1) from a thread: paced at
/// `pace`/s (in bursts of what is due, about every 0.1–0.2 ms) or as fast as possible, never more than [`WINDOW`] connections not yet live;
/// records each first SYN's time in `inject_ns` and counts them in `injected`; then re-sends
/// the SYN of any connection not live 1 s after (TCP's retransmission). Returns the re-sends.
#[allow(clippy::too_many_arguments)]
pub fn spawn_injector(
    server: dvipa_switch::server::SwitchServer,
    n: u32,
    pace: Option<f64>,
    live: Arc<LiveLog>,
    inject_ns: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
    injected: Arc<AtomicU64>,
    pending: Box<dyn Fn(usize) -> bool + Send>,
) -> std::thread::JoinHandle<u64> {
    // A connection = its SYN and its handshake ACK, back to back (the controller pins a
    // connection when its handshake completes).
    let frames: Vec<[Vec<u8>; 2]> = (0..n).map(|i| [syn_frame(i), ack_frame(i)]).collect();
    std::thread::spawn(move || -> u64 {
        let t0 = Instant::now();
        for (i, f) in frames.iter().enumerate() {
            if let Some(r) = pace {
                // Sleep until due, then inject everything due at once: no busy-waiting (at
                // 100k/s a spinning injector would take one of the machine's CPUs from the
                // system under test). Each SYN's time is taken when it is injected.
                let due = Duration::from_secs_f64(i as f64 / r);
                while t0.elapsed() < due {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            while i as u64 - live.live.load(Ordering::Relaxed) >= WINDOW {
                if stop.load(Ordering::Relaxed) {
                    return 0;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
            inject_ns[i].store(live.now_ns(), Ordering::Relaxed);
            server.inject(1, &f[0]);
            server.inject(1, &f[1]);
            injected.fetch_add(1, Ordering::Relaxed);
        }
        // Per connection: re-send 1, 3, 7, 15 ... s after the first SYN (TCP's backoff).
        let mut tries = vec![0u32; frames.len()];
        let mut resent = 0;
        while !stop.load(Ordering::Relaxed) && live.live.load(Ordering::Relaxed) < u64::from(n) {
            std::thread::sleep(Duration::from_millis(100));
            let now = live.now_ns();
            for (i, f) in frames.iter().enumerate() {
                let first = inject_ns[i].load(Ordering::Relaxed);
                let due = 1_000_000_000u64 * ((2u64 << tries[i].min(20)) - 1);
                if now.saturating_sub(first) > due && pending(i) {
                    server.inject(1, &f[0]);
                    server.inject(1, &f[1]);
                    tries[i] += 1;
                    resent += 1;
                }
            }
        }
        resent
    })
}

/// Rate and latency percentiles of a finished run.
pub fn summarize(n: u32, live: &LiveLog, inject_ns: &[AtomicU64]) -> PinRun {
    let mut lat: Vec<f64> = (0..n as usize)
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
    let last = live
        .live_ns
        .iter()
        .map(|x| x.load(Ordering::Relaxed))
        .max()
        .unwrap_or(0);
    let wall = last.saturating_sub(first) as f64 / 1e9;
    PinRun {
        n,
        rate: f64::from(n) / wall,
        p50: pct(&lat, 0.5),
        p99: pct(&lat, 0.99),
        max: lat.last().copied().unwrap_or(f64::NAN),
        batches: 0,
        lists: 0,
        retransmits: 0,
        wall,
        core: 0.0,
        rpc: 0.0,
    }
}

fn detail(r: &PinRun) -> String {
    format!(
        "{} conns at {:.0}/s; p50 {:.2} / p99 {:.2} / max {:.2} ms; {} digest lists, {} write batches, {} SYNs re-sent; of {:.3} s: core {:.3} s, write RPCs {:.3} s",
        r.n, r.rate, r.p50, r.p99, r.max, r.lists, r.batches, r.retransmits, r.wall, r.core, r.rpc
    )
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
    let (sizes, n_base): (&[u32], u32) = match size {
        Size::Smoke => (&[10_000], 2_000),
        Size::Default => (&[10_000, 100_000], 10_000),
        Size::Large => (&[10_000, 100_000, 1_000_000], 10_000),
    };
    let base_fast = pin_run(n_base, 1, None).await?;
    let base_paced = pin_run(n_base, 1, Some(GOAL_RATE)).await?;
    let mut out = Vec::new();
    for &n in sizes {
        let fast = pin_run(n, 2000, None).await?;
        let paced = pin_run(n, 2000, Some(GOAL_RATE)).await?;
        let c = count(n);
        out.push(
            Figure::new(
                "pin",
                format!("pin rate, {c} SYNs unpaced"),
                fast.rate,
                "conn/s",
                Better::Higher,
            )
            .baseline(
                base_fast.rate,
                format!(
                    "one update per Write (core max_batch = 1), {} conns unpaced",
                    count(n_base)
                ),
            )
            .goal(GOAL_RATE, "≥ 100k/s")
            .note(detail(&fast)),
        );
        for (what, v, b) in [
            ("p50", paced.p50, base_paced.p50),
            ("p99", paced.p99, base_paced.p99),
            ("max", paced.max, base_paced.max),
        ] {
            let mut f = Figure::new(
                "pin",
                format!("{what} SYN-to-entry latency, {c} at 100k/s offered"),
                v,
                "ms",
                Better::Lower,
            )
            .baseline(
                b,
                format!(
                    "one update per Write, {} conns offered at 100k/s",
                    count(n_base)
                ),
            );
            if what == "p99" {
                f = f
                    .goal_met(
                        paced.p99 <= 5.0 && paced.rate >= 0.95 * GOAL_RATE,
                        "≤ 5 ms at ≥ 100k/s",
                    )
                    .note(format!(
                        "{}; baseline: {}",
                        detail(&paced),
                        detail(&base_paced)
                    ));
            }
            out.push(f);
        }
        // The same through the controller's own library (switch driver + core).
        let cf = crate::ctl::pin_run(n, None).await?;
        let cp = crate::ctl::pin_run(n, Some(GOAL_RATE)).await?;
        out.push(
            Figure::new(
                "pin",
                format!("pin rate via the dvipa controller, {c} SYNs unpaced"),
                cf.rate,
                "conn/s",
                Better::Higher,
            )
            .baseline(
                base_fast.rate,
                "one update per Write (bench driver, core max_batch = 1)",
            )
            .goal(GOAL_RATE, "≥ 100k/s")
            .note(format!(
                "dvipa::controller::Controller in-process, entries seen by polling the switch; {}",
                detail_ctl(&cf)
            )),
        );
        out.push(
            Figure::new(
                "pin",
                format!("p99 SYN-to-entry latency via the dvipa controller, {c} at 100k/s offered"),
                cp.p99,
                "ms",
                Better::Lower,
            )
            .baseline(base_paced.p99, "one update per Write (bench driver)")
            .goal_met(
                cp.p99 <= 5.0 && cp.rate >= 0.95 * GOAL_RATE,
                "≤ 5 ms at ≥ 100k/s",
            )
            .note(detail_ctl(&cp)),
        );
    }
    Ok(out)
}

fn detail_ctl(r: &PinRun) -> String {
    format!(
        "{} conns at {:.0}/s; p50 {:.2} / p99 {:.2} / max {:.2} ms; {} digest lists; {} SYNs re-sent",
        r.n, r.rate, r.p50, r.p99, r.max, r.lists, r.retransmits
    )
}
