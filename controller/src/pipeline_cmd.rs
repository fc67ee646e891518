//! `dvipa pipeline pack|unpack`: the Tofino compiler's output to a P4Runtime device config and
//! back (formats: [`p4rt::tofino`], operator guide: docs/tofino.md).
use std::path::PathBuf;

use p4rt::tofino::{Compiled, Format};

/// `dvipa pipeline …` (parsed on its own: `-o` is the output file here, the output format
/// elsewhere).
#[derive(Debug, clap::Parser)]
#[command(
    name = "dvipa pipeline",
    about = "Tofino device configs (docs/tofino.md)"
)]
pub struct PipelineCli {
    /// Pack or unpack.
    #[command(subcommand)]
    pub cmd: PipelineCmd,
}

/// The subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum PipelineCmd {
    /// Pack a compiler output directory into `p4_device_config` bytes.
    Pack {
        /// The device's target.
        #[arg(long, value_enum, default_value_t = PackTarget::Tofino)]
        target: PackTarget,
        /// Device config format: `bfrt` (Stratum's BfPipelineConfig; stratum_bfrt, stratum_bf)
        /// or `pi` (PI's packing; stratum_bf, the SDE's P4Runtime server).
        #[arg(long, value_enum, default_value_t = PackFormat::Bfrt)]
        format: PackFormat,
        /// Program name (default: manifest.json's).
        #[arg(long)]
        name: Option<String>,
        /// The Tofino compiler's output directory (bfrt.json, manifest.json, pipe/...).
        dir: PathBuf,
        /// Output file.
        #[arg(short = 'o', long = "output")]
        out: PathBuf,
    },
    /// Write a stand-in compiler output for a P4Info (bfrt.json listing its tables, a marker
    /// binary): for the embedded switch's `--flavor stratum-bfrt` only, never for hardware.
    StandIn {
        /// The P4Info (text format), e.g. p4src/tna/dvipa.p4info.txtpb.
        #[arg(long)]
        p4info: PathBuf,
        /// Output directory (created).
        #[arg(short = 'o', long = "output")]
        out: PathBuf,
    },
    /// Unpack a device config (either format) into the compiler layout.
    Unpack {
        /// The device config file.
        file: PathBuf,
        /// Output directory (created).
        #[arg(short = 'o', long = "output")]
        out: PathBuf,
    },
}

/// Targets that take a packed device config.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PackTarget {
    /// Tofino 1 / 2 (TNA, T2NA).
    Tofino,
}

/// Device config formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum PackFormat {
    /// Stratum's BfPipelineConfig protobuf.
    Bfrt,
    /// PI's packed format.
    Pi,
}

/// Runs the command; prints what was written.
pub fn run(cmd: PipelineCmd) -> anyhow::Result<()> {
    match cmd {
        PipelineCmd::Pack {
            target: PackTarget::Tofino,
            format,
            name,
            dir,
            out: output,
        } => {
            let c = Compiled::from_dir(&dir, name.as_deref())?;
            let fmt = match format {
                PackFormat::Bfrt => Format::BfPipelineConfig,
                PackFormat::Pi => Format::Pi,
            };
            let bytes = c.pack(fmt)?;
            std::fs::write(&output, &bytes)
                .map_err(|e| anyhow::anyhow!("{}: {e}", output.display()))?;
            println!(
                "{}: {fmt:?} of {} ({} bytes; profiles: {})",
                output.display(),
                c.p4_name,
                bytes.len(),
                c.pipes
                    .iter()
                    .map(|p| format!(
                        "{} context {} B binary {} B",
                        p.name,
                        p.context.len(),
                        p.binary.len()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(())
        }
        PipelineCmd::StandIn { p4info, out } => {
            let bytes = dvipa_core::validate::read_capped(&p4info, p4rt::P4INFO_CAP)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p4info.display()))?;
            let text = dvipa_core::validate::utf8(&p4info.display().to_string(), bytes)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            p4rt::tofino::write_stand_in_output(&out, &text, "dvipa")?;
            println!(
                "{}: stand-in Tofino output for {}",
                out.display(),
                p4info.display()
            );
            Ok(())
        }
        PipelineCmd::Unpack { file, out: output } => {
            let limit = (p4rt::tofino::MAX_BLOB * 4) as u64;
            let bytes = dvipa_core::validate::read_capped(&file, limit)
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let (fmt, c) =
                Compiled::unpack(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
            let written = c.write_dir(&output)?;
            println!("{}: {fmt:?} of {}", file.display(), c.p4_name);
            for w in written {
                println!("  {}", w.display());
            }
            Ok(())
        }
    }
}
