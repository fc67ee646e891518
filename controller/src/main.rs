//! `dvipa`: the controller and operator CLI.
use clap::{Parser, Subcommand};

mod check_config;

#[derive(Parser)]
#[command(name = "dvipa", version, about = "Sysplex-Distributor-style DVIPA on programmable switches")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the demo cluster on the embedded switch.
    Demo,
    /// Validate the TOML configuration and the switches' profiles; print the effective VIPA list.
    CheckConfig {
        #[command(flatten)]
        args: check_config::Args,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = check_config::Format::Table)]
        output: check_config::Format,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    match Cli::parse().cmd {
        Cmd::Demo => {
            println!("dvipa demo: the namespace cluster is not built yet (see issue 7)");
            Ok(())
        }
        Cmd::CheckConfig { args, output } => check_config::run(args, output),
    }
}
