//! `dvipa-agent`: run the server-stack agent, or talk to a running one (drain/undrain/status).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use dvipa_agent::{Agent, AgentConfig, control};

const DEFAULT_SOCKET: &str = "/run/dvipa-agent.sock";
/// `endpoint` label of the agent's TLS reload counters
/// (`dvipa_tls_reload_total`, `dvipa_tls_reload_failed_total`).
const TLS_ENDPOINT: &str = "agent";

#[derive(Parser, Debug)]
#[command(
    name = "dvipa-agent",
    version,
    about = "dvipa server-stack agent: DVIPAs on loopback, SRVSTAT/NEWCONN/TERMCONN to the controller",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Stack name (must match the certificate's name and a stack configured in the controller).
    #[arg(long, env = "DVIPA_STACK", required = true)]
    stack: Option<String>,
    /// This server's underlay IPv4 address.
    #[arg(long, required = true)]
    underlay: Option<Ipv4Addr>,
    /// Controller endpoint, e.g. https://controller:7443. Repeat it (or give a comma list) to
    /// attach to every controller replica (one session each, at most 16).
    #[arg(long, required = true, value_delimiter = ',')]
    controller: Vec<String>,
    /// CA certificate (PEM) that signs the controller's certificate.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// This agent's client certificate (PEM); its name must be the stack name.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long)]
    key: Option<PathBuf>,
    /// Name expected in the controller's certificate (default: the endpoint's host).
    #[arg(long)]
    server_name: Option<String>,
    /// Plaintext, unauthenticated connection to the controller (testing only).
    #[arg(long)]
    insecure: bool,
    /// sock_diag polling interval in milliseconds.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    poll_ms: u64,
    /// Weight reported in SRVSTAT and Heartbeat (0 = let the controller use its configured one).
    #[arg(long, default_value_t = 0)]
    weight: u32,
    /// Most items per Report message.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    max_batch: u64,
    /// Most VIPAs installed on lo; the VIPA list's entries beyond it are refused and counted
    /// (dvipa_agent_vipa_refused_total{reason="over_cap"}).
    #[arg(long, default_value_t = dvipa_agent::agent::DEFAULT_MAX_VIPAS, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_vipas: u64,
    /// Longest reconnect backoff in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    backoff_max_ms: u64,
    /// Local control socket (drain/undrain/status); "none" disables it.
    #[arg(long, default_value = DEFAULT_SOCKET)]
    control_socket: String,
    /// Do not add/remove DVIPAs on lo.
    #[arg(long)]
    no_loopback: bool,
    /// Do not set the arp_ignore/arp_announce sysctls.
    #[arg(long)]
    no_arp_sysctls: bool,
    /// Poll only; ignore the kernel's socket-destroy events.
    #[arg(long)]
    no_destroy_events: bool,
    /// Serve Prometheus metrics (the agent's counters) on this address, e.g. 127.0.0.1:9464.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Answer the controller's data-plane probes (`[liveness.dataplane] port`) on this UDP
    /// port: each probe that reached this server through a switch is sent back to its source.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    dataplane_echo: Option<u16>,
    /// Most data-plane echoes per second (the rest are dropped and counted).
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    dataplane_echo_max_pps: u32,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Stop new connections to a port (SRVSTAT draining=true); existing ones continue.
    Drain(DrainArgs),
    /// Undo a drain.
    Undrain(DrainArgs),
    /// Print the running agent's state (JSON).
    Status {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
}

#[derive(Args, Debug)]
struct DrainArgs {
    #[arg(long)]
    port: u16,
    /// Only this DVIPA (default: every DVIPA).
    #[arg(long)]
    dvipa: Option<Ipv4Addr>,
    #[arg(long, default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dvipa-agent: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(async {
        match cli.cmd {
            Some(Cmd::Drain(a)) => client(&a.socket, &drain_line("drain", &a)).await,
            Some(Cmd::Undrain(a)) => client(&a.socket, &drain_line("undrain", &a)).await,
            Some(Cmd::Status { socket }) => client(&socket, "status").await,
            None => run(cli.run).await,
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dvipa-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn drain_line(verb: &str, a: &DrainArgs) -> String {
    match a.dvipa {
        Some(d) => format!("{verb} {} {d}", a.port),
        None => format!("{verb} {}", a.port),
    }
}

async fn client(socket: &std::path::Path, line: &str) -> anyhow::Result<()> {
    let reply = control::request(socket, line).await?;
    println!("{reply}");
    Ok(())
}

fn valid_stack_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !s.starts_with('-')
}

fn config(a: RunArgs) -> anyhow::Result<(AgentConfig, Option<PathBuf>)> {
    let controllers: Vec<String> = a.controller.iter().map(|c| c.trim().to_string()).collect();
    let (Some(stack), Some(underlay), false) = (a.stack, a.underlay, controllers.is_empty()) else {
        bail!("--stack, --underlay and --controller are required");
    };
    if !valid_stack_name(&stack) {
        bail!(
            "--stack {stack:?}: use letters, digits, '-' and '.' (it must be a certificate DNS name)"
        );
    }
    if underlay.is_unspecified() {
        bail!("--underlay 0.0.0.0 is not an address");
    }
    if controllers.len() > dvipa_agent::link::MAX_CONTROLLERS {
        bail!(
            "--controller given {} times: at most {}",
            controllers.len(),
            dvipa_agent::link::MAX_CONTROLLERS
        );
    }
    if let Some(c) = controllers.iter().find(|c| c.is_empty()) {
        bail!("--controller {c:?}: empty endpoint in the list");
    }
    let mut cfg = AgentConfig::new(&stack, underlay, &controllers[0]);
    cfg.controllers = controllers;
    if a.insecure {
        tracing::warn!("**************************************************************");
        tracing::warn!("*  --insecure: NO TLS. The controller is not authenticated,  *");
        tracing::warn!("*  this agent is not authenticated, traffic is plaintext.    *");
        tracing::warn!("*  Never use this outside a test bed.                        *");
        tracing::warn!("**************************************************************");
        if a.ca.is_some() || a.cert.is_some() || a.key.is_some() {
            tracing::warn!("--insecure given: --ca/--cert/--key are ignored");
        }
    } else {
        let (Some(ca), Some(cert), Some(key)) = (a.ca, a.cert, a.key) else {
            bail!("--ca, --cert and --key are required (or --insecure for a plaintext test setup)");
        };
        let paths = dvipa_tls::PemPaths { ca, cert, key };
        let bundle = dvipa_tls::PemBundle::load(&paths).context("loading TLS files")?;
        let names = bundle.cert_names()?;
        if !names.iter().any(|n| n == &stack) {
            bail!(
                "the certificate is for {names:?}, not for stack {stack:?}: the controller would refuse it"
            );
        }
        // The files are watched (every 5 s and on SIGHUP, see `run`); a rotated certificate is
        // used for the next connection.
        cfg.tls_reload = Some(
            dvipa_tls::Reloader::client(
                TLS_ENDPOINT,
                paths,
                a.server_name.clone(),
                Some(stack.clone()),
            )
            .context("loading TLS files")?,
        );
    }
    cfg.poll_interval = Duration::from_millis(a.poll_ms);
    cfg.weight = a.weight;
    cfg.max_batch = a.max_batch as usize;
    cfg.max_vipas = a.max_vipas as usize;
    cfg.backoff_max = Duration::from_millis(a.backoff_max_ms.max(100));
    cfg.manage_loopback = !a.no_loopback;
    cfg.arp_sysctls = !a.no_arp_sysctls;
    cfg.destroy_events = !a.no_destroy_events;
    let socket = (a.control_socket != "none").then(|| PathBuf::from(&a.control_socket));
    Ok((cfg, socket))
}

async fn run(a: RunArgs) -> anyhow::Result<()> {
    if let Some(addr) = a.metrics_listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("metrics listener on {addr}"))?;
    }
    let echo = match a.dataplane_echo {
        Some(port) => Some(
            dvipa_agent::echo::serve(port, a.dataplane_echo_max_pps, Default::default())
                .await
                .with_context(|| format!("--dataplane-echo {port}: cannot bind UDP port"))?,
        ),
        None => None,
    };
    let (cfg, socket) = config(a)?;
    tracing::info!(stack = %cfg.stack, underlay = %cfg.underlay, controllers = ?cfg.controllers,
        poll_ms = cfg.poll_interval.as_millis() as u64, "starting");
    let _tls_watch = cfg
        .tls_reload
        .as_ref()
        .map(|r| r.spawn_watch(dvipa_tls::WatchOptions::default()));
    let agent = Agent::new(cfg).await?;
    let _control = match &socket {
        Some(p) => Some(control::serve(p, agent.control(), agent.stats())?),
        None => None,
    };
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
            _ = term.recv() => tracing::info!("SIGTERM"),
        }
    };
    agent.run(shutdown).await?;
    if let Some(e) = echo {
        e.abort();
    }
    if let Some(p) = socket {
        let _ = std::fs::remove_file(p);
    }
    Ok(())
}
