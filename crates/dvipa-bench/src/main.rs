//! `dvipa-bench`: the figures that say whether dvipa meets its goals.
//!
//! ```text
//! cargo run --release -p dvipa-bench -- all [--size smoke|default|large] [--json out.json]
//! cargo run --release -p dvipa-bench -- slots|memory|write|pin|failover|fwd|detect|flood|bgp [--size ...]
//! ```
//!
//! Every section prints rows of: value, baseline measured in the same run, ratio (improvement
//! factor over the baseline, > 1 = better) and, where the project set one, the goal and whether
//! it is met. See the crate README for what each section measures.

mod bgp;
mod ctl;
mod detect;
mod embedded;
mod failover;
mod flood;
mod fwd;
mod ha;
mod harness;
mod memory;
mod pin;
mod report;
mod slots;
mod write;

use clap::{Parser, Subcommand, ValueEnum};
use report::Figure;
use std::time::{Duration, Instant};

/// Problem sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Size {
    /// Tiny: the whole `all` run in well under a minute (CI).
    Smoke,
    /// The issue's sizes (10k/100k pins, 1M/10M memory, ...).
    Default,
    /// Adds the 1M pin run.
    Large,
}

impl Size {
    fn name(self) -> &'static str {
        match self {
            Size::Smoke => "smoke",
            Size::Default => "default",
            Size::Large => "large",
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "dvipa-bench", about = "dvipa benchmarks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
    /// Problem size.
    #[arg(long, value_enum, default_value = "default", global = true)]
    size: Size,
    /// Also write the figures as JSON to this file.
    #[arg(long, global = true)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
enum Cmd {
    /// Every section below, in order.
    All,
    /// Slot fill: recompute time and moved slots on join/leave (10/100/1000 targets).
    Slots,
    /// Controller memory per pinned connection; CRT rebuild rate from agent re-reports.
    Memory,
    /// P4Runtime CRT insert rate into the embedded switch, batch 1/100/1000.
    Write,
    /// SYN → digest → controller core → batched CRT writes → entry live: rate and latency.
    Pin,
    /// Takeover/takeback time with pinned connections, cold backup vs hot standby.
    Failover,
    /// Embedded switch forwarding on veth pairs (runs dvipa-switch's fwd_bench example).
    Fwd,
    /// Failure detection time: kill, freeze, path loss of a real dvipa-switch (issue 13).
    Detect,
    /// SYN flood against the demo cluster: handshake pinning vs pinning at the SYN.
    Flood,
    /// Takeover/takeback event → router FIB over BGP (gobgpd + BIRD) vs the hooks (issue 18).
    Bgp,
    /// Controller HA: leader failover time over 10 kills (3 replicas, real etcd; issue 17).
    Ha,
}

type Section = fn(Size) -> anyhow::Result<Vec<Figure>>;

const SECTIONS: [(Cmd, &str, Section); 10] = [
    (Cmd::Slots, "slot_fill", slots::run),
    (Cmd::Memory, "memory", memory::run),
    (Cmd::Write, "p4rt_write", write::run),
    (Cmd::Pin, "pin", pin::run),
    (Cmd::Failover, "failover", failover::run),
    (Cmd::Fwd, "forwarding", fwd::run),
    (Cmd::Detect, "detection", detect::run),
    (Cmd::Flood, "flood", flood::run),
    (Cmd::Bgp, "bgp", bgp::run),
    (Cmd::Ha, "ha", ha::run),
];

/// Median wall time of one call of `f` over `iters` calls.
pub fn median_time<T>(iters: usize, mut f: impl FnMut() -> T) -> Duration {
    let mut v: Vec<Duration> = (0..iters.max(1))
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    if let Ok(spec) = std::env::var("DVIPA_BENCH_PROBE") {
        return memory::probe(&spec);
    }
    let cli = Cli::parse();
    let load0 = report::loadavg();
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!(
        "dvipa-bench: size {}, {cpus} CPUs, load average {:.2} {:.2} {:.2}",
        cli.size.name(),
        load0[0],
        load0[1],
        load0[2]
    );
    let mut figs: Vec<Figure> = Vec::new();
    let mut errors: Vec<(String, String)> = Vec::new();
    let t0 = Instant::now();
    for (cmd, name, run) in SECTIONS {
        if cli.cmd != Cmd::All && cli.cmd != cmd {
            continue;
        }
        let t = Instant::now();
        eprintln!("== {name} ...");
        match run(cli.size) {
            Ok(f) => {
                eprintln!(
                    "== {name}: {} figures in {:.1} s",
                    f.len(),
                    t.elapsed().as_secs_f64()
                );
                figs.extend(f);
            }
            Err(e) => {
                eprintln!("== {name}: FAILED: {e:#}");
                errors.push((name.to_string(), format!("{e:#}")));
            }
        }
    }
    let load1 = report::loadavg();
    println!();
    print!("{}", report::table(&figs));
    println!(
        "total {:.1} s; load average at end {:.2} {:.2} {:.2}",
        t0.elapsed().as_secs_f64(),
        load1[0],
        load1[1],
        load1[2]
    );
    for (n, e) in &errors {
        println!("section {n} FAILED: {e}");
    }
    if let Some(path) = &cli.json {
        let doc = report::Document {
            size: cli.size.name(),
            loadavg_start: load0,
            loadavg_end: load1,
            cpus,
            figures: &figs,
            errors: &errors,
        };
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)?;
        println!("JSON written to {}", path.display());
    }
    if !errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
