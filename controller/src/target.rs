//! Per-switch targets (issue 16): a `target = "tofino"` switch gets its own P4Info (the TNA
//! program's, `pipe.`-prefixed names) and a device config packed from the Tofino compiler's
//! output directory, and the capabilities of its P4Runtime server. docs/tofino.md.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use dvipa_core::config::{Capabilities, DeviceConfigFormat, SwitchCfg, SwitchTarget};
use p4rt::Schema;
use p4rt::tofino::{Compiled, Format};

use crate::error::StartError;

/// P4Info file names looked for in a `pipeline_dir`, in order.
pub const P4INFO_NAMES: [&str; 4] = [
    "p4info.txtpb",
    "p4info.txt",
    "p4info.pb.txt",
    "dvipa.p4info.txtpb",
];

/// Loads the P4Info at `path` (the TOML's `p4info`, at `file`:line:col of `src`) and checks
/// every P4 name the controller uses; a file that is not a P4Info is refused here, naming
/// the TOML field.
pub fn load_p4info(file: &str, src: &str, path: &Path) -> Result<Schema, StartError> {
    let at = match dvipa_core::validate::field_pos(src, "p4info") {
        Some((l, c)) => format!("{file}:{l}:{c}: "),
        None => format!("{file}: "),
    };
    let schema = Schema::from_file(path).map_err(|e| StartError::P4Info {
        at: at.clone(),
        path: path.to_owned(),
        msg: e.to_string(),
    })?;
    dvipa_contract::check(&schema).map_err(|e| StartError::P4Info {
        at,
        path: path.to_owned(),
        msg: format!("not dvipa's P4Info: {e}"),
    })?;
    Ok(schema)
}

/// A switch's own pipeline (Tofino).
#[derive(Debug, Clone)]
pub struct SwitchPipeline {
    /// Its P4Info, checked against the contract.
    pub schema: Arc<Schema>,
    /// The packed device config.
    pub device_config: Vec<u8>,
    /// Where it came from and what it is, for check-config and logs.
    pub summary: String,
}

/// Loads the pipeline of a `tofino` switch (`None` for `bmv2`: the top-level one applies).
pub fn load(
    base: &Path,
    s: &SwitchCfg,
    index: usize,
) -> Result<Option<SwitchPipeline>, StartError> {
    if s.target != SwitchTarget::Tofino {
        return Ok(None);
    }
    let at = format!("switch[{index}].pipeline_dir");
    let dir = match &s.pipeline_dir {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => base.join(d),
        None => return Err(StartError::Text(format!("{at}: missing"))),
    };
    let p4info: PathBuf = P4INFO_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            StartError::Text(format!(
                "{at}: {}: no P4Info ({}; compile with --p4runtime-files and \
                 --p4runtime-force-std-externs)",
                dir.display(),
                P4INFO_NAMES.join(", ")
            ))
        })?;
    let schema = load_p4info(&at, "", &p4info)?;
    let compiled =
        Compiled::from_dir(&dir, None).map_err(|e| StartError::Text(format!("{at}: {e}")))?;
    let tables = p4rt::schema::Schema::names_of(&schema, p4rt::error::ObjectKind::Table);
    let missing = compiled
        .missing_tables(tables.iter().map(String::as_str))
        .map_err(|e| StartError::Text(format!("{at}: {e}")))?;
    if !missing.is_empty() {
        return Err(StartError::Text(format!(
            "{at}: bfrt.json does not describe the P4Info's tables {} (compiled from another \
             program?)",
            missing.join(", ")
        )));
    }
    let format = match s.device_config_format {
        DeviceConfigFormat::Bfrt => Format::BfPipelineConfig,
        DeviceConfigFormat::Pi => Format::Pi,
    };
    let device_config = compiled
        .pack(format)
        .map_err(|e| StartError::Text(format!("{at}: {e}")))?;
    let summary = format!(
        "tofino: {} from {} ({format:?}, {} bytes; P4Info {})",
        compiled.p4_name,
        dir.display(),
        device_config.len(),
        p4info.display()
    );
    Ok(Some(SwitchPipeline {
        schema: Arc::new(schema),
        device_config,
        summary,
    }))
}

/// One line for check-config / netstat: target and capabilities.
pub fn describe(s: &SwitchCfg) -> String {
    let Capabilities {
        digest_acks,
        idle_notifications,
    } = s.capabilities();
    let target = match s.target {
        SwitchTarget::Bmv2 => "bmv2",
        SwitchTarget::Tofino => "tofino",
    };
    format!(
        "target {target}; digest acks {}; idle notifications {}",
        if digest_acks {
            "re-sent until acked"
        } else {
            "none (server acks itself)"
        },
        if idle_notifications {
            "yes"
        } else {
            "no (CRT ageing by direct-counter reads)"
        }
    )
}
