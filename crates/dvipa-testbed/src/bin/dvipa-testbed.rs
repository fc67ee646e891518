//! dvipa-testbed: bring the namespace cluster up or down by hand.
//!
//! `dvipa-testbed up [--servers 3] [--switches 2] [--prefix P] [--keep]` prints the topology as
//! JSON and, without `--keep`, holds it until SIGINT/SIGTERM, then removes it (exit status 130).
//! `dvipa-testbed down --prefix P` removes a kept one; `dvipa-testbed cleanup-stale` removes every
//! testbed whose owner process is gone.

use clap::{Parser, Subcommand};
use dvipa_testbed::topo::{self, Testbed, TestbedConfig};

#[derive(Parser, Debug)]
#[command(name = "dvipa-testbed", about = "dvipa network-namespace testbed")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Build the cluster and print it as JSON.
    Up {
        /// Server namespaces.
        #[arg(long, default_value_t = 3)]
        servers: usize,
        /// Switch port sets.
        #[arg(long, default_value_t = 2)]
        switches: usize,
        /// DVIPAs to describe.
        #[arg(long, default_value_t = 1)]
        dvipas: usize,
        /// Name prefix (2..=9 chars of [a-z0-9]).
        #[arg(long)]
        prefix: Option<String>,
        /// Put the first DVIPA on srv1's loopback and route it from R straight to srv1.
        #[arg(long)]
        direct: bool,
        /// Leave it in place and exit (remove it later with `down`).
        #[arg(long)]
        keep: bool,
    },
    /// Remove the testbed with this prefix.
    Down {
        /// Its prefix.
        #[arg(long)]
        prefix: String,
    },
    /// Remove testbeds whose owner process is gone.
    CleanupStale,
}

fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Up {
            servers,
            switches,
            dvipas,
            prefix,
            direct,
            keep,
        } => {
            let mut tb = Testbed::build(&TestbedConfig {
                prefix,
                servers,
                switches,
                dvipas,
                lan_index: None,
            })?;
            if direct {
                tb.add_dvipa_on_server(1, tb.dvipa())?;
                tb.route_dvipa_to_server(tb.dvipa(), 1)?;
            }
            println!("{}", serde_json::to_string_pretty(&tb)?);
            if keep {
                tb.keep();
                eprintln!(
                    "kept; remove with: dvipa-testbed down --prefix {}",
                    tb.prefix
                );
                return Ok(());
            }
            // the signal handler tears it down and exits 130
            dvipa_testbed::cleanup_on_signals()?;
            eprintln!("up; Ctrl-C (or SIGTERM) tears it down");
            loop {
                std::thread::park();
            }
        }
        Cmd::Down { prefix } => topo::cleanup(&prefix)?,
        Cmd::CleanupStale => {
            for p in topo::cleanup_stale() {
                println!("removed {p}");
            }
        }
    }
    Ok(())
}
