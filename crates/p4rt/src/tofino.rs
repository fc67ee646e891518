//! Tofino device configs: the Tofino compiler's output directory packed into the bytes of
//! P4Runtime's `ForwardingPipelineConfig.p4_device_config`, in the two formats Tofino P4Runtime
//! servers take, and back.
//!
//! - [`Format::BfPipelineConfig`]: Stratum's protobuf (`proto/tofino/bf_pipeline_config.proto`):
//!   `p4_name`, `bfruntime_info` (`bfrt.json`) and one profile per pipeline with its
//!   `context.json`, `tofino.bin` and pipe scope. stratum_bfrt takes only this one.
//! - [`Format::Pi`]: the older packing of PI (stratum_bf, the SDE's own P4Runtime server): three
//!   length-prefixed blobs, each length a little-endian `u32`: the program name, `tofino.bin`,
//!   `context.json`. One pipeline only; no `bfrt.json`.
//!
//! Compiler output layout read by [`Compiled::from_dir`]: `DIR/bfrt.json` (or `bf-rt.json`),
//! `DIR/manifest.json` (program name), and per pipeline `DIR/<pipe>/context.json` with
//! `DIR/<pipe>/tofino.bin` (or `tofino2.bin`). Every size is bounded ([`MAX_BLOB`]) and every
//! error names the file or field that is wrong.
use std::path::{Path, PathBuf};

use p4rt_proto::stratum::hal::barefoot::{BfPipelineConfig, bf_pipeline_config::Profile};
use prost::Message;

/// Largest accepted blob (one `context.json`, binary or `bfrt.json`): 256 MiB.
pub const MAX_BLOB: usize = 256 << 20;
/// Largest accepted number of profiles (Tofino has at most 4 pipes per device; 2x headroom).
pub const MAX_PROFILES: usize = 8;

/// The device config formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Stratum's `BfPipelineConfig` protobuf.
    BfPipelineConfig,
    /// PI's packed format (name, binary, context).
    Pi,
}

/// One compiled pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipe {
    /// Profile (pipeline) name, `pipe`.
    pub name: String,
    /// `context.json`.
    pub context: Vec<u8>,
    /// `tofino.bin` / `tofino2.bin`.
    pub binary: Vec<u8>,
    /// Hardware pipes; empty = all.
    pub scope: Vec<u32>,
}

/// A compiled Tofino program, as packed into a device config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// Program name.
    pub p4_name: String,
    /// `bfrt.json` (empty when unpacked from the PI format, which has none).
    pub bfrt: Vec<u8>,
    /// Pipelines.
    pub pipes: Vec<Pipe>,
}

/// What is wrong with a compiler directory or a device config.
#[derive(Debug, thiserror::Error)]
pub enum TofinoError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The content is not what it must be.
    #[error("{0}")]
    Invalid(String),
}

fn read(path: &Path) -> Result<Vec<u8>, TofinoError> {
    dvipa_file::read_capped(path, MAX_BLOB as u64).map_err(|source| TofinoError::Io {
        path: path.into(),
        source,
    })
}

fn first_existing(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    names.iter().map(|n| dir.join(n)).find(|p| p.is_file())
}

impl Compiled {
    /// Reads the Tofino compiler's output directory. `name` overrides the program name (else
    /// `manifest.json`'s `programs[0].program_name` without `.p4`).
    pub fn from_dir(dir: &Path, name: Option<&str>) -> Result<Self, TofinoError> {
        let bfrt_path = first_existing(dir, &["bfrt.json", "bf-rt.json"]).ok_or_else(|| {
            TofinoError::Invalid(format!(
                "{}: no bfrt.json (or bf-rt.json): not a Tofino compiler output directory",
                dir.display()
            ))
        })?;
        let bfrt = read(&bfrt_path)?;
        json_object(&bfrt, &bfrt_path.display().to_string())?;
        let p4_name = match name {
            Some(n) => n.to_string(),
            None => {
                let path = dir.join("manifest.json");
                let text = read(&path)?;
                let v = json_object(&text, &path.display().to_string())?;
                v.pointer("/programs/0/program_name")
                    .and_then(|x| x.as_str())
                    .map(|s| s.trim_end_matches(".p4").to_string())
                    .ok_or_else(|| {
                        TofinoError::Invalid(format!(
                            "{}: no programs[0].program_name (give the name with --name)",
                            path.display()
                        ))
                    })?
            }
        };
        let mut pipes = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|source| TofinoError::Io {
            path: dir.into(),
            source,
        })?;
        let mut subdirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir() && p.join("context.json").is_file())
            .collect();
        subdirs.sort();
        for sub in subdirs {
            let ctx_path = sub.join("context.json");
            let context = read(&ctx_path)?;
            json_object(&context, &ctx_path.display().to_string())?;
            let bin = first_existing(&sub, &["tofino.bin", "tofino2.bin", "tofino3.bin"])
                .ok_or_else(|| {
                    TofinoError::Invalid(format!(
                        "{}: context.json without tofino.bin (or tofino2.bin)",
                        sub.display()
                    ))
                })?;
            let binary = read(&bin)?;
            let pipe_name = sub
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            pipes.push(Pipe {
                name: pipe_name,
                context,
                binary,
                scope: Vec::new(),
            });
        }
        let c = Compiled {
            p4_name,
            bfrt,
            pipes,
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks the invariants every format needs.
    pub fn validate(&self) -> Result<(), TofinoError> {
        let bad = |m: String| Err(TofinoError::Invalid(m));
        if self.p4_name.is_empty() {
            return bad("p4_name is empty".into());
        }
        if self.pipes.is_empty() {
            return bad("no pipeline (profiles): no <pipe>/context.json with its binary".into());
        }
        if self.pipes.len() > MAX_PROFILES {
            return bad(format!(
                "{} profiles, at most {MAX_PROFILES}",
                self.pipes.len()
            ));
        }
        for (i, p) in self.pipes.iter().enumerate() {
            if p.name.is_empty() {
                return bad(format!("profiles[{i}].profile_name is empty"));
            }
            if p.context.is_empty() {
                return bad(format!("profiles[{i}] ({}): context is empty", p.name));
            }
            if p.binary.is_empty() {
                return bad(format!("profiles[{i}] ({}): binary is empty", p.name));
            }
            if let Some(s) = p.scope.iter().find(|s| **s > 3) {
                return bad(format!(
                    "profiles[{i}] ({}): pipe_scope {s} (pipes are 0..3)",
                    p.name
                ));
            }
        }
        Ok(())
    }

    /// Packs in `format`.
    pub fn pack(&self, format: Format) -> Result<Vec<u8>, TofinoError> {
        self.validate()?;
        match format {
            Format::BfPipelineConfig => Ok(BfPipelineConfig {
                p4_name: self.p4_name.clone(),
                bfruntime_info: self.bfrt.clone(),
                profiles: self
                    .pipes
                    .iter()
                    .map(|p| Profile {
                        profile_name: p.name.clone(),
                        context: p.context.clone(),
                        binary: p.binary.clone(),
                        pipe_scope: p.scope.clone(),
                    })
                    .collect(),
            }
            .encode_to_vec()),
            Format::Pi => {
                let [p] = self.pipes.as_slice() else {
                    return Err(TofinoError::Invalid(format!(
                        "the PI format holds one pipeline, this program has {}",
                        self.pipes.len()
                    )));
                };
                let mut out = Vec::new();
                for blob in [self.p4_name.as_bytes(), &p.binary, &p.context] {
                    out.extend_from_slice(&(blob.len() as u32).to_le_bytes());
                    out.extend_from_slice(blob);
                }
                Ok(out)
            }
        }
    }

    /// Unpacks a device config of either format (PI first: its three lengths must add up to
    /// the size exactly; otherwise a `BfPipelineConfig`).
    pub fn unpack(bytes: &[u8]) -> Result<(Format, Self), TofinoError> {
        if let Some(c) = unpack_pi(bytes) {
            c.validate()?;
            return Ok((Format::Pi, c));
        }
        let m = BfPipelineConfig::decode(bytes).map_err(|e| {
            TofinoError::Invalid(format!(
                "device config ({} bytes) is neither PI-packed nor a BfPipelineConfig: {e}",
                bytes.len()
            ))
        })?;
        let c = Compiled {
            p4_name: m.p4_name,
            bfrt: m.bfruntime_info,
            pipes: m
                .profiles
                .into_iter()
                .map(|p| Pipe {
                    name: p.profile_name,
                    context: p.context,
                    binary: p.binary,
                    scope: p.pipe_scope,
                })
                .collect(),
        };
        c.validate()
            .map_err(|e| TofinoError::Invalid(format!("BfPipelineConfig: {e}")))?;
        Ok((Format::BfPipelineConfig, c))
    }

    /// Writes the compiler layout into `dir` (created): `bfrt.json` (when present), a minimal
    /// `manifest.json` with the program name, `<pipe>/context.json`, `<pipe>/tofino.bin`.
    /// [`Compiled::from_dir`] on the result gives back `self` (scopes aside).
    pub fn write_dir(&self, dir: &Path) -> Result<Vec<PathBuf>, TofinoError> {
        let w = |path: PathBuf, data: &[u8]| -> Result<PathBuf, TofinoError> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|source| TofinoError::Io {
                    path: parent.into(),
                    source,
                })?;
            }
            std::fs::write(&path, data).map_err(|source| TofinoError::Io {
                path: path.clone(),
                source,
            })?;
            Ok(path)
        };
        let mut written = Vec::new();
        if !self.bfrt.is_empty() {
            written.push(w(dir.join("bfrt.json"), &self.bfrt)?);
        }
        let manifest = serde_json::json!({
            "written_by": "dvipa pipeline unpack",
            "programs": [{ "program_name": format!("{}.p4", self.p4_name) }],
        });
        written.push(w(
            dir.join("manifest.json"),
            serde_json::to_string_pretty(&manifest)
                .unwrap_or_default()
                .as_bytes(),
        )?);
        for p in &self.pipes {
            if p.name.contains(['/', '\\']) || p.name == ".." || p.name == "." {
                return Err(TofinoError::Invalid(format!(
                    "profile name {:?} is not a plain directory name",
                    p.name
                )));
            }
            written.push(w(dir.join(&p.name).join("context.json"), &p.context)?);
            written.push(w(dir.join(&p.name).join("tofino.bin"), &p.binary)?);
        }
        Ok(written)
    }

    /// Table names of `bfrt.json` (`pipe.IngressImpl.crt`, ...).
    pub fn bfrt_tables(&self) -> Result<Vec<String>, TofinoError> {
        let v = json_object(&self.bfrt, "bfruntime_info")?;
        Ok(v.get("tables")
            .and_then(|t| t.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.get("name").and_then(|n| n.as_str()).map(String::from))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The P4Info tables (full names) that `bfrt.json` does not describe: a device config
    /// compiled from another program. Compared without the pipeline prefix, so a P4Info with
    /// or without `pipe.` matches.
    pub fn missing_tables<'a>(
        &self,
        p4info_tables: impl IntoIterator<Item = &'a str>,
    ) -> Result<Vec<String>, TofinoError> {
        let strip = |s: &str| {
            s.split_once('.')
                .map(|x| x.1.to_string())
                .unwrap_or_default()
        };
        let have: std::collections::HashSet<String> = self
            .bfrt_tables()?
            .iter()
            .flat_map(|n| [n.clone(), strip(n)])
            .collect();
        Ok(p4info_tables
            .into_iter()
            .filter(|t| !have.contains(*t) && !have.contains(&strip(t)))
            .map(String::from)
            .collect())
    }
}

fn unpack_pi(bytes: &[u8]) -> Option<Compiled> {
    let mut rest = bytes;
    let mut parts = Vec::with_capacity(3);
    for _ in 0..3 {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        if len > MAX_BLOB {
            return None;
        }
        let blob = rest.get(4..4 + len)?;
        parts.push(blob.to_vec());
        rest = &rest[4 + len..];
    }
    if !rest.is_empty() {
        return None;
    }
    let name = String::from_utf8(parts[0].clone()).ok()?;
    Some(Compiled {
        p4_name: name,
        bfrt: Vec::new(),
        pipes: vec![Pipe {
            name: "pipe".into(),
            binary: parts[1].clone(),
            context: parts[2].clone(),
            scope: Vec::new(),
        }],
    })
}

fn json_object(bytes: &[u8], what: &str) -> Result<serde_json::Value, TofinoError> {
    let v: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        TofinoError::Invalid(format!(
            "{what}: not JSON (line {} column {}): {e}",
            e.line(),
            e.column()
        ))
    })?;
    if !v.is_object() {
        return Err(TofinoError::Invalid(format!(
            "{what}: a JSON object expected"
        )));
    }
    Ok(v)
}

/// Writes a **stand-in** Tofino compiler output into `dir` for tests and for the embedded
/// switch's `stratum-bfrt` flavour: `p4info.txtpb` (the given text), a `bfrt.json` listing the
/// P4Info's tables, `manifest.json` naming `program`, `pipe/context.json` and a `pipe/tofino.bin`
/// that is a marker, not a loadable binary. Real devices need the real compiler's output.
pub fn write_stand_in_output(
    dir: &Path,
    p4info_text: &str,
    program: &str,
) -> Result<(), TofinoError> {
    let schema = crate::Schema::from_text(p4info_text)
        .map_err(|e| TofinoError::Invalid(format!("stand-in P4Info: {e}")))?;
    let tables: Vec<serde_json::Value> = schema
        .names_of(crate::error::ObjectKind::Table)
        .into_iter()
        .map(|n| serde_json::json!({ "name": n }))
        .collect();
    let bfrt = serde_json::json!({ "schema_version": "1.0.0", "tables": tables });
    let context = serde_json::json!({ "program_name": program, "stand_in": true, "tables": [] });
    let manifest = serde_json::json!({ "programs": [{ "program_name": format!("{program}.p4") }] });
    let files: [(&str, Vec<u8>); 5] = [
        ("p4info.txtpb", p4info_text.as_bytes().to_vec()),
        (
            "bfrt.json",
            serde_json::to_vec_pretty(&bfrt).unwrap_or_default(),
        ),
        (
            "manifest.json",
            serde_json::to_vec_pretty(&manifest).unwrap_or_default(),
        ),
        (
            "pipe/context.json",
            serde_json::to_vec_pretty(&context).unwrap_or_default(),
        ),
        (
            "pipe/tofino.bin",
            b"dvipa stand-in tofino.bin: not a Tofino binary\n".to_vec(),
        ),
    ];
    for (name, data) in files {
        let path = dir.join(name);
        if let Some(p) = path.parent() {
            std::fs::create_dir_all(p).map_err(|source| TofinoError::Io {
                path: p.into(),
                source,
            })?;
        }
        std::fs::write(&path, data).map_err(|source| TofinoError::Io { path, source })?;
    }
    Ok(())
}
