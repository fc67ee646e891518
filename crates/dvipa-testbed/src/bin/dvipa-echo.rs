//! dvipa-echo: TCP echo server with a greeting naming it (`DVIPA-ECHO <name>`).
//!
//! SIGTERM/SIGINT: graceful stop (listener closed, existing connections drained for
//! `--drain-secs`, then closed with FIN); a second signal aborts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use dvipa_testbed::echo::{self, EchoConfig, EchoCounters, Stop};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(
    name = "dvipa-echo",
    about = "TCP echo server that tells its name in a greeting line"
)]
struct Args {
    /// Address to listen on: DVIPA:PORT or 0.0.0.0:PORT.
    #[arg(long, short)]
    listen: SocketAddr,
    /// Name sent in the greeting (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// After SIGTERM keep serving existing connections this many seconds before closing them.
    #[arg(long, default_value_t = 0.0)]
    drain_secs: f64,
    /// Do not set IP_FREEBIND (then the address must already be on an interface).
    #[arg(long)]
    no_freebind: bool,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "echo".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    dvipa_testbed::netns::raise_nofile(1 << 20);
    let cfg = EchoConfig {
        listen: args.listen,
        name: args.name.unwrap_or_else(hostname),
        drain: Duration::from_secs_f64(args.drain_secs.max(0.0)),
        freebind: !args.no_freebind,
    };
    let listener = echo::bind(&cfg)?;
    println!(
        "{}",
        serde_json::json!({"event": "listening", "addr": listener.local_addr()?.to_string(), "name": cfg.name})
    );
    let counters = Arc::new(EchoCounters::default());
    let (tx, rx) = watch::channel(Stop::Run);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let server = tokio::spawn(echo::serve(listener, cfg, counters.clone(), rx));
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            n += 1;
            let _ = tx.send(if n == 1 { Stop::Graceful } else { Stop::Abort });
        }
    });
    server.await??;
    println!(
        "{}",
        serde_json::json!({"event": "stopped", "stats": counters.snapshot()})
    );
    Ok(())
}
