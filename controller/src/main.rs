//! `dvipa`: the controller and operator CLI.
use clap::{Parser, Subcommand};
use dvipa::cli::{self, Common, OpCmd};
use dvipa::controller::{self, Controller, Options};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod check_config;

#[derive(Parser)]
#[command(
    name = "dvipa",
    version,
    about = "Sysplex-Distributor-style DVIPA on programmable switches"
)]
struct Cli {
    /// Log level when RUST_LOG is not set (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the controller.
    Controller(ControllerArgs),
    /// Run the demo cluster on the embedded switch.
    Demo(dvipa::demo::Args),
    /// Validate the TOML configuration and the switches' profiles; print the effective VIPA list.
    CheckConfig(check_config::Args),
    #[command(flatten)]
    Op(OpCmd),
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// The TOML configuration.
    #[arg(long, short = 'c', default_value = "dvipa.toml")]
    config: PathBuf,
    /// Admin API listen address (used by the operator subcommands).
    #[arg(long, default_value = "127.0.0.1:7071")]
    admin_listen: std::net::SocketAddr,
    /// Run the agent endpoint without TLS; refused unless the configuration has no [tls].
    #[arg(long)]
    insecure: bool,
    /// Command run (sh -c) when a switch must advertise a DVIPA; DVIPA_ACTION, DVIPA_SWITCH,
    /// DVIPA_ADDR, DVIPA_PREFIX_LEN are set.
    #[arg(long)]
    advertise_cmd: Option<String>,
    /// Command run when a switch must withdraw a DVIPA.
    #[arg(long)]
    withdraw_cmd: Option<String>,
    /// Re-read every switch this often (seconds) and repair differences.
    #[arg(long, default_value_t = 30)]
    resync_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.cmd {
        Cmd::Demo(a) => dvipa::demo::run(a),
        Cmd::CheckConfig(args) => {
            let format = match cli.common.output {
                cli::Output::Json => check_config::Format::Json,
                cli::Output::Table => check_config::Format::Table,
            };
            check_config::run(args, format)
        }
        Cmd::Controller(a) => tokio::runtime::Runtime::new()?.block_on(run_controller(a)),
        Cmd::Op(op) => {
            match tokio::runtime::Runtime::new()?.block_on(cli::run(&cli.common, &op)) {
                Ok(r) => cli::print(&r, cli.common.output),
                Err(e) => {
                    eprintln!("dvipa: {e}");
                    std::process::exit(1);
                }
            }
            Ok(())
        }
    }
}

async fn run_controller(a: ControllerArgs) -> anyhow::Result<()> {
    let loaded = controller::load(&a.config)?;
    println!("{}", loaded.cluster.render_table());
    let agent = controller::bind(loaded.cluster.config.agent.listen).await?;
    let admin = controller::bind(a.admin_listen).await?;
    let opts = Options {
        insecure: a.insecure,
        advertise_cmd: a.advertise_cmd.clone(),
        withdraw_cmd: a.withdraw_cmd.clone(),
        resync: Duration::from_secs(a.resync_secs.max(1)),
        metrics: true,
    };
    let adv = Arc::new(dvipa::advertise::CommandAdvertiser {
        advertise: a.advertise_cmd,
        withdraw: a.withdraw_cmd,
    });
    let ctl = Controller::start(loaded, opts, agent, admin, adv).await?;
    shutdown_signal().await;
    tracing::info!("shutting down");
    ctl.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
