//! `dvipa`: the controller and operator CLI.
use clap::{Parser, Subcommand};
use dvipa::cli::{self, Common, OpCmd};
use dvipa::controller::{self, Controller, Options};
use dvipa::error::StartError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod check_config;

#[derive(Parser)]
#[command(
    name = "dvipa",
    version,
    about = "Sysplex-Distributor-style DVIPA on programmable switches",
    after_help = "Tofino device configs: dvipa pipeline pack|unpack (dvipa pipeline --help)."
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
    /// Run the controller. Everything is in the TOML; the flags override it (flag > TOML >
    /// default), `dvipa check-config` with the same flags prints the effective values.
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
    /// Values that override the TOML's (flag > TOML > default).
    #[command(flatten)]
    flags: cli::ConfigFlags,
}

fn main() -> anyhow::Result<()> {
    // `dvipa pipeline …` has its own parser: its `-o FILE` is not the global `-o FORMAT`.
    if std::env::args().nth(1).as_deref() == Some("pipeline") {
        let p = dvipa::pipeline_cmd::PipelineCli::parse_from(std::env::args().skip(1));
        return dvipa::pipeline_cmd::run(p.cmd);
    }
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
    let loaded = controller::load_with(&a.config, &a.flags.overrides())?;
    println!("{}", loaded.cluster.render_table());
    let cfg = loaded.cluster.config.clone();
    for (k, v) in cfg.settings() {
        tracing::debug!("effective {k} = {v}");
    }
    let agent = controller::bind(cfg.agent.listen).await?;
    let base = a
        .config
        .parent()
        .unwrap_or(std::path::Path::new("."))
        .to_owned();
    let admin = controller::bind_admin(&cfg.admin, &base).await?;
    let opts = Options {
        insecure: cfg.agent.insecure,
        advertise_cmd: cfg.advertise.advertise_cmd.clone(),
        withdraw_cmd: cfg.advertise.withdraw_cmd.clone(),
        resync: Duration::from_millis(cfg.timers.resync_ms.max(1)),
        metrics: true,
    };
    let adv = Arc::new(dvipa::advertise::CommandAdvertiser::from_config(
        &cfg.advertise,
    ));
    let ctl = Controller::start(loaded, opts, agent, admin, adv)
        .await
        .map_err(|e| match e {
            StartError::InsecureNotAllowed => {
                anyhow::anyhow!("{e}, or set agent.insecure = true in the TOML")
            }
            e => e.into(),
        })?;
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
