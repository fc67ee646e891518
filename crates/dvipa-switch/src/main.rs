//! `dvipa-switch`: the embedded dvipa switch as a drop-in for `simple_switch_grpc`.
//!
//! ```text
//! dvipa-switch [--no-p4] [--device-id N] -i 1@veth1 -i 2@veth2 [--log-level debug] \
//!     [--grpc-server-addr ADDR] [-- --grpc-server-addr 127.0.0.1:9559]
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use clap::Parser;
use dvipa_switch::Pipeline;
use dvipa_switch::io::{IoStats, Port};
use dvipa_switch::server::{Flavor, ServerOptions, SwitchServer};
use tracing::{info, warn};

/// The dvipa pipeline as a software switch, programmed over P4Runtime.
#[derive(Debug, Parser)]
#[command(name = "dvipa-switch", version)]
struct Cli {
    /// Start without a program and wait for SetForwardingPipelineConfig (always the case: the
    /// dvipa pipeline is built in and forwards once a P4Info for it is pushed).
    #[arg(long)]
    no_p4: bool,
    /// P4Runtime device id.
    #[arg(long, default_value_t = 0)]
    device_id: u64,
    /// A port: PORT@INTERFACE (repeatable), e.g. -i 1@veth1.
    #[arg(short = 'i', long = "interface", value_name = "PORT@IFACE")]
    interfaces: Vec<String>,
    /// Log level: trace, debug (per-packet trace), info, warn, error, off.
    #[arg(long, short = 'L', default_value = "info")]
    log_level: String,
    /// Accepted for simple_switch compatibility: log to the console (always on).
    #[arg(long)]
    log_console: bool,
    /// Accepted for simple_switch compatibility; there is no Thrift server.
    #[arg(long)]
    thrift_port: Option<u16>,
    /// Write the log to this file instead of stderr (simple_switch's --log-file).
    #[arg(long)]
    log_file: Option<PathBuf>,
    /// Accepted for simple_switch compatibility and ignored.
    #[arg(long, hide = true)]
    log_flush: bool,
    /// Accepted for simple_switch compatibility and ignored (no nanomsg event log).
    #[arg(long, hide = true, value_name = "ADDR")]
    nanolog: Option<String>,
    /// Accepted for simple_switch compatibility and ignored (no pcap dumps).
    #[arg(long, hide = true, num_args = 0..=1, value_name = "DIR")]
    pcap: Option<Option<String>>,
    /// Accepted for simple_switch compatibility and ignored.
    #[arg(long, hide = true, value_name = "ADDR")]
    notifications_addr: Option<String>,
    /// Accepted for simple_switch compatibility and ignored.
    #[arg(long, hide = true)]
    debugger: bool,
    /// Whose answers to give where P4Runtime servers differ: `standard` (the specification: a
    /// full table is RESOURCE_EXHAUSTED), `bmv2` (simple_switch_grpc: a full table is UNKNOWN,
    /// "Error when adding match entry to target") or `stratum-bfrt` (Stratum on a Tofino: takes a
    /// BfPipelineConfig and the TNA P4Info, acks digests itself, no idle notifications).
    #[arg(long, default_value = "standard", value_parser = Flavor::parse)]
    flavor: Flavor,
    /// Most updates accepted in one Write; a larger Write is refused whole (RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = dvipa_switch::server::flavor::DEFAULT_MAX_WRITE_UPDATES)]
    max_write_updates: usize,
    /// P4Runtime server address (also accepted after `--`).
    #[arg(long)]
    grpc_server_addr: Option<String>,
    /// HTTP/2 keep-alive of the P4Runtime server: a ping every this many ms on every
    /// connection; a connection whose ping stays unanswered for 3 intervals is closed (and its
    /// StreamChannel with it, so a half-open controller session does not keep its election id
    /// forever). `TCP_USER_TIMEOUT` is set to the same 3 intervals. 0 = off. The controller's
    /// side uses `[timers] keepalive_ms` (default `liveness_ms` / 3): give both the same value.
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    grpc_keepalive_ms: u64,
    /// bmv2 JSON (accepted for compatibility and ignored: the pipeline is built in).
    config: Option<PathBuf>,
    /// Target options after `--` (simple_switch_grpc form): --grpc-server-addr ADDR.
    #[arg(last = true)]
    target_args: Vec<String>,
}

fn parse_port(s: &str) -> anyhow::Result<(u16, String)> {
    let (n, iface) = s
        .split_once('@')
        .with_context(|| format!("interface {s:?} is not PORT@IFACE"))?;
    let n: u16 = n
        .parse()
        .with_context(|| format!("port number {n:?} in {s:?} is not a number"))?;
    if n >= 511 {
        bail!("port number {n} in {s:?} must be below 511 (511 is the drop port)");
    }
    if iface.is_empty() {
        bail!("interface name missing in {s:?}");
    }
    Ok((n, iface.to_string()))
}

/// The P4Runtime server's TLS settings, from simple_switch_grpc's target options
/// (`--grpc-server-ssl`, `--grpc-server-cacert`, `--grpc-server-cert`, `--grpc-server-key`,
/// `--grpc-server-with-client-auth`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct TlsOpts {
    ssl: bool,
    cacert: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_auth: bool,
}

/// The target options after `--` (simple_switch_grpc form): the P4Runtime address and TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TargetOpts {
    addr: SocketAddr,
    tls: TlsOpts,
}

fn target_opts(cli: &Cli) -> anyhow::Result<TargetOpts> {
    let mut addr = cli.grpc_server_addr.clone();
    let mut tls = TlsOpts::default();
    let mut it = cli.target_args.iter();
    while let Some(a) = it.next() {
        let (name, inline) = match a.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut value = |name: &str| -> anyhow::Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{name} needs a value")),
            }
        };
        match name {
            "--grpc-server-addr" => addr = Some(value(name)?),
            "--grpc-server-ssl" => tls.ssl = true,
            "--grpc-server-with-client-auth" => tls.client_auth = true,
            "--grpc-server-cacert" => tls.cacert = Some(value(name)?.into()),
            "--grpc-server-cert" => tls.cert = Some(value(name)?.into()),
            "--grpc-server-key" => tls.key = Some(value(name)?.into()),
            _ => warn!(option = %a, "ignoring unsupported target option"),
        }
    }
    let addr = addr.unwrap_or_else(|| "127.0.0.1:9559".into());
    let addr = addr
        .parse()
        .with_context(|| format!("invalid --grpc-server-addr {addr:?}"))?;
    if !tls.ssl
        && (tls.cacert.is_some() || tls.cert.is_some() || tls.key.is_some() || tls.client_auth)
    {
        bail!("TLS options were given without --grpc-server-ssl");
    }
    if tls.ssl && (tls.cert.is_none() || tls.key.is_none()) {
        bail!("--grpc-server-ssl needs --grpc-server-cert and --grpc-server-key");
    }
    if tls.client_auth && tls.cacert.is_none() {
        bail!("--grpc-server-with-client-auth needs --grpc-server-cacert (the clients' CA)");
    }
    Ok(TargetOpts { addr, tls })
}

/// Largest PEM file read for the P4Runtime server's TLS.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// A PEM file for the P4Runtime server's TLS: a regular file of at most [`MAX_PEM_BYTES`].
fn read_pem(what: &str, p: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    dvipa_file::read_capped_as(p, MAX_PEM_BYTES, "PEM")
        .map_err(|e| anyhow::anyhow!("reading {what} {}: {e}", p.display()))
}

/// tonic's server TLS config from the options (`None` without `--grpc-server-ssl`).
fn server_tls(t: &TlsOpts) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    if !t.ssl {
        return Ok(None);
    }
    let (Some(cert), Some(key)) = (&t.cert, &t.key) else {
        bail!("--grpc-server-ssl needs --grpc-server-cert and --grpc-server-key");
    };
    let mut c =
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            read_pem("--grpc-server-cert", cert)?,
            read_pem("--grpc-server-key", key)?,
        ));
    if let Some(ca) = &t.cacert {
        c = c
            .client_ca_root(tonic::transport::Certificate::from_pem(read_pem(
                "--grpc-server-cacert",
                ca,
            )?))
            .client_auth_optional(!t.client_auth);
    }
    Ok(Some(c))
}

#[cfg(test)]
fn grpc_addr(cli: &Cli) -> anyhow::Result<SocketAddr> {
    Ok(target_opts(cli)?.addr)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&cli.log_level))
        .with_context(|| format!("invalid --log-level {:?}", cli.log_level))?;
    match &cli.log_file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening --log-file {}", path.display()))?;
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::sync::Mutex::new(f))
                .with_ansi(false)
                .init();
        }
        None => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let target = target_opts(&cli)?;
    let addr = target.addr;
    let tls = server_tls(&target.tls)?;
    if cli.config.is_some() {
        info!("ignoring the JSON config argument: the dvipa pipeline is built in");
    }
    let mut ports = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for s in &cli.interfaces {
        let (n, iface) = parse_port(s)?;
        if !seen.insert(n) {
            bail!("port {n} given twice");
        }
        ports.push(Port::open(n, &iface).with_context(|| format!("opening port {s}"))?);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let pipeline = Arc::new(Pipeline::new());
        let opts = ServerOptions {
            flavor: cli.flavor,
            max_write_updates: cli.max_write_updates.max(1),
        };
        let server = SwitchServer::with_options(cli.device_id, pipeline.clone(), opts);
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(IoStats::default());
        let dp = {
            let (p, d, e, s, st) = (
                pipeline.clone(),
                server.digest_sink(),
                server.enabled_flag(),
                stop.clone(),
                stats.clone(),
            );
            std::thread::Builder::new()
                .name("datapath".into())
                .spawn(move || dvipa_switch::io::run(p, ports, Some(d), e, s, st))?
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the P4Runtime server to {addr}"))?;
        let keepalive = (cli.grpc_keepalive_ms > 0)
            .then(|| std::time::Duration::from_millis(cli.grpc_keepalive_ms));
        info!(
            %addr,
            device_id = cli.device_id,
            flavor = cli.flavor.name(),
            keepalive_ms = cli.grpc_keepalive_ms,
            tls = if tls.is_none() {
                "off"
            } else if target.tls.client_auth {
                "mutual"
            } else {
                "server"
            },
            "P4Runtime server listening"
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let serve = tokio::spawn(server.clone().serve(listener, keepalive, tls, async {
            let _ = stop_rx.await;
        }));
        {
            use tokio::signal::unix::{SignalKind, signal};
            let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
            let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
            tokio::select! {
                _ = term.recv() => info!("SIGTERM: shutting down"),
                _ = int.recv() => info!("SIGINT: shutting down"),
            }
        }
        let _ = stop_tx.send(());
        // Controllers may keep their StreamChannel open: give the server a moment, then go on.
        match tokio::time::timeout(std::time::Duration::from_secs(1), serve).await {
            Ok(Ok(r)) => r.context("P4Runtime server")?,
            Ok(Err(e)) => warn!(error = %e, "P4Runtime server task"),
            Err(_) => info!("closing the controller streams still open"),
        }
        stop.store(true, Ordering::Relaxed);
        let _ = dp.join();
        let s = &pipeline.stats;
        info!(
            rx = stats.rx.load(Ordering::Relaxed),
            tx = stats.tx.load(Ordering::Relaxed),
            rx_ring_drops = stats.rx_ring_drops.load(Ordering::Relaxed),
            tx_errors = stats.tx_errors.load(Ordering::Relaxed),
            parser_drops = s.drop_parser.load(Ordering::Relaxed),
            forwarded = s.forwarded.load(Ordering::Relaxed),
            digests = s.digests.load(Ordering::Relaxed),
            "shut down"
        );
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("dvipa-switch").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn simple_switch_grpc_argument_shape() {
        let c = cli(&[
            "--no-p4",
            "--device-id",
            "3",
            "-i",
            "1@veth1",
            "-i",
            "2@veth2",
            "--log-level",
            "debug",
            "--",
            "--grpc-server-addr",
            "127.0.0.1:50051",
        ]);
        assert_eq!(c.device_id, 3);
        assert_eq!(c.interfaces, vec!["1@veth1", "2@veth2"]);
        assert_eq!(grpc_addr(&c).unwrap(), "127.0.0.1:50051".parse().unwrap());
        let c = cli(&["--grpc-server-addr", "0.0.0.0:9560", "-i", "5@eth0"]);
        assert_eq!(grpc_addr(&c).unwrap(), "0.0.0.0:9560".parse().unwrap());
        // Options Mininet's P4Switch passes to simple_switch_grpc are accepted.
        let c = cli(&[
            "--thrift-port",
            "9090",
            "--nanolog",
            "ipc:///tmp/bm-0-log.ipc",
            "--pcap",
            "--log-console",
            "--device-id",
            "1",
            "-i",
            "1@s1-eth1",
            "--",
            "--grpc-server-addr=127.0.0.2:1",
            "--cpu-port",
            "255",
        ]);
        assert_eq!(c.interfaces, vec!["1@s1-eth1"]);
        assert_eq!(grpc_addr(&c).unwrap(), "127.0.0.2:1".parse().unwrap());
        let c = cli(&["--", "--grpc-server-addr=127.0.0.2:1"]);
        assert_eq!(grpc_addr(&c).unwrap(), "127.0.0.2:1".parse().unwrap());
        assert_eq!(
            grpc_addr(&cli(&[])).unwrap(),
            "127.0.0.1:9559".parse().unwrap()
        );
        assert!(grpc_addr(&cli(&["--", "--grpc-server-addr"])).is_err());
        assert!(grpc_addr(&cli(&["--grpc-server-addr", "nonsense"])).is_err());
    }

    #[test]
    fn simple_switch_grpc_tls_options() {
        let c = cli(&[
            "--",
            "--grpc-server-addr",
            "127.0.0.1:1",
            "--grpc-server-ssl",
            "--grpc-server-cacert",
            "/ca.pem",
            "--grpc-server-cert=/c.pem",
            "--grpc-server-key",
            "/k.pem",
            "--grpc-server-with-client-auth",
        ]);
        let t = target_opts(&c).unwrap().tls;
        assert!(t.ssl && t.client_auth);
        assert_eq!(t.cacert.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(t.cert.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(t.key.as_deref(), Some(std::path::Path::new("/k.pem")));
        for bad in [
            &["--", "--grpc-server-cert", "/c.pem"][..],
            &["--", "--grpc-server-ssl"][..],
            &[
                "--",
                "--grpc-server-ssl",
                "--grpc-server-cert",
                "c",
                "--grpc-server-key",
                "k",
                "--grpc-server-with-client-auth",
            ][..],
        ] {
            assert!(target_opts(&cli(bad)).is_err(), "{bad:?}");
        }
        let e = server_tls(&TlsOpts {
            ssl: true,
            cert: Some("/dev/zero".into()),
            key: Some("/dev/zero".into()),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }

    #[test]
    fn port_specs_are_checked() {
        assert_eq!(parse_port("1@veth1").unwrap(), (1, "veth1".to_string()));
        for bad in ["veth1", "x@veth1", "511@veth1", "1@", "-1@veth1"] {
            let e = parse_port(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{bad}: {e}");
        }
    }
}
