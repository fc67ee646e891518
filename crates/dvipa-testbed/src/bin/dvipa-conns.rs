//! dvipa-conns: N long-lived streaming TCP connections to DVIPA:PORT, with figures.
//!
//! stdout: JSON lines, `{"event":"tick",...}` every report interval and `{"event":"summary",...}`
//! at the end; stderr: a human line per tick and a human summary. Stops by itself after
//! `--duration-secs` (or on SIGINT/SIGTERM).

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use dvipa_testbed::conns::{self, ConnsConfig};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    name = "dvipa-conns",
    about = "Many long-lived streaming TCP connections, with figures"
)]
struct Args {
    /// DVIPA:PORT to connect to.
    #[arg(long, short)]
    target: SocketAddr,
    /// Number of long-lived connections.
    #[arg(long, short = 'n', default_value_t = 100)]
    conns: usize,
    /// Stop after this many seconds.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration_secs: f64,
    /// Bytes per send per connection.
    #[arg(long, default_value_t = 100)]
    chunk: usize,
    /// Milliseconds between sends per connection.
    #[arg(long, default_value_t = 100)]
    interval_ms: u64,
    /// New connections per second during ramp-up.
    #[arg(long, default_value_t = 2000)]
    connect_rate: u32,
    /// Connect + greeting timeout in milliseconds.
    #[arg(long, default_value_t = 3000)]
    connect_timeout_ms: u64,
    /// Short probe connections per second (0 = none).
    #[arg(long, default_value_t = 0.0)]
    probe_rate: f64,
    /// Seconds between tick lines.
    #[arg(long, default_value_t = 1.0)]
    report_secs: f64,
    /// Include every connection (port, server, state, bytes, stall) in the summary line.
    #[arg(long)]
    per_conn: bool,
    /// No per-tick human lines on stderr.
    #[arg(long, short)]
    quiet: bool,
    /// Exit 1 unless every connection was established and none was reset, failed or broken.
    #[arg(long)]
    strict: bool,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let nofile = dvipa_testbed::netns::raise_nofile(args.conns as u64 * 2 + 1024);
    if nofile < args.conns as u64 + 64 {
        eprintln!(
            "dvipa-conns: warning: RLIMIT_NOFILE is {nofile}, too low for {} connections",
            args.conns
        );
    }
    let cfg = ConnsConfig {
        target: args.target,
        conns: args.conns,
        duration: Duration::from_secs_f64(args.duration_secs.max(0.0)),
        chunk: args.chunk.max(1),
        interval: Duration::from_millis(args.interval_ms.max(1)),
        connect_rate: args.connect_rate.max(1),
        connect_timeout: Duration::from_millis(args.connect_timeout_ms.max(1)),
        probe_rate: args.probe_rate.max(0.0),
        ..ConnsConfig::default()
    };
    let shared = conns::shared(cfg.conns);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop_tx.send(true);
    });
    let ticker = {
        let sh = shared.clone();
        let quiet = args.quiet;
        let every = Duration::from_secs_f64(args.report_secs.max(0.05));
        tokio::spawn(async move {
            let mut t = tokio::time::interval(every);
            t.tick().await;
            loop {
                t.tick().await;
                let s = sh.snapshot(true);
                let mut v = serde_json::to_value(&s).unwrap_or_default();
                v["event"] = "tick".into();
                println!("{v}");
                if !quiet {
                    eprintln!(
                        "t={:>6.1}s alive {} connecting {} resets {} failed {} closed {} \
                         errors {} stall(window) {} ms probes {}/{}",
                        s.t_ms as f64 / 1000.0,
                        s.alive,
                        s.connecting,
                        s.resets,
                        s.failed_connects,
                        s.closed,
                        s.errors,
                        s.window_stall_ms,
                        s.probes_ok,
                        s.probes_ok + s.probes_failed
                    );
                }
            }
        })
    };
    let report = conns::run(cfg, shared, stop_rx).await;
    ticker.abort();
    let mut v = serde_json::to_value(&report.summary)?;
    v["event"] = "summary".into();
    if args.per_conn {
        v["per_conn"] = serde_json::to_value(&report.per_conn)?;
    }
    println!("{v}");
    eprintln!("{}", conns::human(args.target, &report));
    let s = &report.summary;
    if args.strict
        && (s.established < s.conns as u64
            || s.resets + s.failed_connects + s.errors + s.closed + s.corrupt > 0)
    {
        std::process::exit(1);
    }
    Ok(())
}
