//! `dvipa check-config`: validate the TOML configuration and every switch's profile together,
//! then print the effective VIPA list (z/OS-like table, or JSON with `-o json`) and the
//! effective settings (`admin.listen`, `agent.insecure`, `advertise.*`, timers …) after the
//! same command-line overrides `dvipa controller` takes (flag > TOML > default).
//!
//! Profile paths in the TOML are relative to `--profile-dir` (default: the TOML file's
//! directory). All errors are printed as `file:line:column: message` (profiles, TOML syntax) or
//! `file: field: message` (TOML values), and the command exits non-zero.
use dvipa::controller::{dvipa_table_size, load_p4info, read_config};
use dvipa_core::config::Cluster;
use dvipa_core::config::Overrides;
use std::path::{Path, PathBuf};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human table.
    Table,
    /// JSON for scripts.
    Json,
}

/// Arguments of `dvipa check-config` (the output format comes from the CLI's `-o`).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The controller's TOML configuration.
    #[arg(long, short = 'c', default_value = "dvipa.toml")]
    pub config: PathBuf,
    /// Directory the `profile` paths are relative to (default: the TOML file's directory).
    #[arg(long)]
    pub profile_dir: Option<PathBuf>,
    /// The `dvipa controller` flags, to see the values they produce.
    #[command(flatten)]
    pub flags: crate::cli::ConfigFlags,
}

/// Validate and render; `Err` carries every error found.
pub fn check(args: &Args, output: Format) -> anyhow::Result<String> {
    let toml_name = args.config.display().to_string();
    let ov: Overrides = args.flags.overrides();
    let toml_dir = args.config.parent().unwrap_or(Path::new("."));
    let base = args
        .profile_dir
        .clone()
        .unwrap_or_else(|| toml_dir.to_path_buf());
    // The same reads and checks as `dvipa controller` (size caps, regular files, UTF-8).
    let (config, profiles, src) = read_config(&args.config, &base, &ov)?;
    let p4info = toml_dir.join(&config.p4info);
    let schema = if p4info.exists() {
        Some(load_p4info(&toml_name, &src, &p4info)?)
    } else {
        None
    };
    let cluster =
        Cluster::from_config(&toml_name, config, &profiles).map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(size) = schema.as_ref().and_then(dvipa_table_size) {
        cluster
            .check_dvipa_table(
                size,
                &format!("size of IngressImpl.dvipa in {}", p4info.display()),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if let Some(d) = &cluster.config.liveness.dataplane {
        let dvipas: Vec<_> = cluster.vipas.iter().map(|v| v.addr).collect();
        dvipa::dataplane_probe::check_dvipa(d, &dvipas, &toml_name, &src)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let mut warnings = Vec::new();
    let cfg = &cluster.config;
    let mut files = vec![
        ("p4info", &cfg.p4info),
        ("device_config", &cfg.device_config),
    ];
    if let Some(t) = &cfg.tls {
        files.extend([
            ("tls.ca", &t.ca),
            ("tls.cert", &t.cert),
            ("tls.key", &t.key),
        ]);
    }
    if let Some(t) = &cfg.admin.tls {
        files.extend([
            ("admin.tls.ca", &t.ca),
            ("admin.tls.cert", &t.cert),
            ("admin.tls.key", &t.key),
        ]);
    }
    let mut bad = Vec::new();
    for (field, p) in files {
        match std::fs::metadata(toml_dir.join(p)) {
            Err(_) => warnings.push(format!(
                "warning: {toml_name}: {field}: {} does not exist (yet)",
                p.display()
            )),
            // The controller reads only regular files (and caps their size).
            Ok(md) if !md.is_file() => bad.push(format!(
                "{toml_name}: {field}: {}: not a regular file ({})",
                p.display(),
                dvipa_core::validate::file_kind(&md)
            )),
            Ok(_) => {}
        }
    }
    if !bad.is_empty() {
        anyhow::bail!("{}", bad.join("\n"));
    }
    if cfg.agent.insecure {
        warnings.push(format!(
            "warning: {toml_name}: {}: the agent endpoint runs WITHOUT TLS: any client can claim \
             any stack (tests only)",
            if ov.agent_insecure.is_some() {
                "agent.insecure (--insecure)"
            } else {
                "agent.insecure"
            }
        ));
    } else if cfg.tls.is_none() {
        warnings.push(format!(
            "warning: {toml_name}: tls: no [tls] section: the controller refuses to start unless \
             agent.insecure = true (or --insecure)"
        ));
    }
    if cfg.admin.tls.is_none()
        && let Some(a) = cfg.admin.tcp_listen()
    {
        if a.ip().is_loopback() {
            warnings.push(format!(
                "warning: {toml_name}: admin.insecure_tcp: the admin API on {a} runs WITHOUT \
                 TLS: every local user can change routing"
            ));
        } else {
            warnings.push(format!(
                "warning: {toml_name}: admin.allow_insecure_remote: the admin API on {a} runs \
                 WITHOUT TLS"
            ));
        }
    }
    let mut settings = cfg.settings();
    // Issue 16: each switch's target and capabilities; a Tofino switch's pipeline is packed
    // and checked as the controller would.
    for (i, sw) in cfg.switches.iter().enumerate() {
        let mut line = dvipa::target::describe(sw);
        if let Some(p) =
            dvipa::target::load(toml_dir, sw, i).map_err(|e| anyhow::anyhow!("{toml_name}: {e}"))?
        {
            line.push_str(&format!("; {}", p.summary));
        }
        settings.push((format!("switch.{}", sw.name), line));
    }
    Ok(match output {
        Format::Table => {
            let mut s = cluster.render_table();
            s.push_str("\nEFFECTIVE SETTINGS\n");
            let w = settings.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in &settings {
                s.push_str(&format!("{k:<w$}  {v}\n"));
            }
            for w in warnings {
                s.push_str(&w);
                s.push('\n');
            }
            s
        }
        Format::Json => {
            let ranges: Vec<_> = cluster
                .ranges
                .iter()
                .map(|(sw, r)| {
                    serde_json::json!({
                        "switch": sw,
                        "network": r.network.to_string(),
                        "prefix_len": r.prefix_len,
                    })
                })
                .collect();
            let v = serde_json::json!({
                "vipas": cluster.vipas,
                "ranges": ranges,
                "settings": settings.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect::<serde_json::Map<_, _>>(),
                "warnings": warnings,
            });
            serde_json::to_string_pretty(&v)? + "\n"
        }
    })
}

/// Run the subcommand (prints the result; errors make the process exit non-zero).
pub fn run(args: Args, output: Format) -> anyhow::Result<()> {
    print!("{}", check(&args, output)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/figure4/dvipa.toml")
    }

    #[test]
    fn figure4_example_prints_the_vipa_list() {
        let out = check(
            &Args {
                config: example(),
                profile_dir: None,
                flags: Default::default(),
            },
            Format::Table,
        )
        .unwrap();
        let rows: Vec<&str> = out
            .lines()
            .filter(|l| l.starts_with("203.0.113."))
            .collect();
        assert_eq!(rows.len(), 3, "{out}");
        assert!(
            rows[0].contains("MVS1") && rows[0].contains("MVS5(10)"),
            "{out}"
        );
        assert!(
            rows[1].contains("MVS5(own)") && rows[1].contains("MVS3=10.0.0.3"),
            "{out}"
        );
        assert!(
            rows[2].starts_with("203.0.113.20/24") && rows[2].contains("ALL ("),
            "{out}"
        );
        let json = check(
            &Args {
                config: example(),
                profile_dir: None,
                flags: Default::default(),
            },
            Format::Json,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["vipas"][0]["owner"], "MVS1");
        assert_eq!(v["vipas"][0]["backups"][0]["rank"], 10);
        assert_eq!(v["vipas"][1]["dist"][0]["all_stacks"], true);
    }

    #[test]
    fn figure4_example_commented_admin_and_advertise_settings_are_valid() {
        // Uncomment [admin.tls] and the hooks: the documented settings parse and show up.
        let src = std::fs::read_to_string(example()).unwrap();
        let mut out = String::new();
        let mut on = false;
        for l in src.lines() {
            on = (on
                && l.starts_with("# ")
                && !l.starts_with("# The")
                && !l.starts_with("# Routing"))
                || l == "# [admin.tls]";
            let l = if on || l.starts_with("# advertise_cmd") || l.starts_with("# withdraw_cmd") {
                &l[2..]
            } else {
                l
            };
            out.push_str(l);
            out.push('\n');
        }
        let dir = tempfile::tempdir().unwrap();
        let ex = example().parent().unwrap().to_path_buf();
        for f in ["mvs1.profile", "mvs5.profile"] {
            std::fs::copy(ex.join(f), dir.path().join(f)).unwrap();
        }
        std::fs::write(dir.path().join("dvipa.toml"), &out).unwrap();
        let json = check(
            &Args {
                config: dir.path().join("dvipa.toml"),
                profile_dir: None,
                flags: Default::default(),
            },
            Format::Json,
        )
        .unwrap_or_else(|e| panic!("{e}\n{out}"));
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(
            v["settings"]["admin.tls.allow"], "ops-alice,ops-bob",
            "{out}"
        );
        assert_eq!(
            v["settings"]["advertise.withdraw_cmd"],
            "/etc/dvipa/hooks/withdraw.sh"
        );
    }

    #[test]
    fn malformed_profile_gives_file_line_column() {
        let dir = std::env::temp_dir().join(format!("dvipa-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let src = std::fs::read_to_string(example()).unwrap();
        std::fs::write(dir.join("dvipa.toml"), src).unwrap();
        let ex = example().parent().unwrap().to_path_buf();
        std::fs::copy(ex.join("mvs1.profile"), dir.join("mvs1.profile")).unwrap();
        let bad = std::fs::read_to_string(ex.join("mvs5.profile"))
            .unwrap()
            .replace("DestIp All", "DestIp Everyone");
        std::fs::write(dir.join("mvs5.profile"), bad).unwrap();
        let e = check(
            &Args {
                config: dir.join("dvipa.toml"),
                profile_dir: None,
                flags: Default::default(),
            },
            Format::Table,
        )
        .unwrap_err()
        .to_string();
        std::fs::remove_dir_all(&dir).ok();
        assert!(
            e.ends_with("mvs5.profile:5:40: expected a DESTIP underlay (XCF) address or ALL, found `Everyone`"),
            "{e}"
        );
    }

    /// Issue 16: a `target = "tofino"` switch: its pipeline is packed and checked, and its
    /// capabilities are shown; a missing or wrong pipeline_dir is refused naming the field.
    #[test]
    fn a_tofino_switch_shows_its_target_capabilities_and_packed_pipeline() {
        let tmp = tempfile::tempdir().unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/figure4");
        for f in ["mvs1.profile", "mvs5.profile"] {
            std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
        }
        let tna = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../p4src/tna/dvipa.p4info.txtpb"),
        )
        .unwrap();
        p4rt::tofino::write_stand_in_output(&tmp.path().join("tofino-out"), &tna, "dvipa").unwrap();
        let toml = std::fs::read_to_string(src.join("dvipa.toml"))
            .unwrap()
            .replace(
                "../../../p4src",
                &format!("{}/../p4src", env!("CARGO_MANIFEST_DIR")),
            );
        let with = |extra: &str| {
            let t = toml.replacen("name = \"MVS5\"\n", &format!("name = \"MVS5\"\n{extra}"), 1);
            let path = tmp.path().join("dvipa.toml");
            std::fs::write(&path, t).unwrap();
            check(
                &Args {
                    config: path,
                    profile_dir: None,
                    flags: Default::default(),
                },
                Format::Table,
            )
        };
        let out = with("target = \"tofino\"\npipeline_dir = \"tofino-out\"\n").unwrap();
        let line = out.lines().find(|l| l.starts_with("switch.MVS5")).unwrap();
        assert!(line.contains("target tofino; digest acks none (server acks itself); idle notifications no (CRT ageing by direct-counter reads)"), "{line}");
        assert!(line.contains("BfPipelineConfig"), "{line}");
        let l1 = out.lines().find(|l| l.starts_with("switch.MVS1")).unwrap();
        assert!(
            l1.contains("target bmv2; digest acks re-sent until acked; idle notifications yes"),
            "{l1}"
        );
        let out = with(
            "target = \"tofino\"\npipeline_dir = \"tofino-out\"\n\
             device_config_format = \"pi\"\ncapabilities = { idle_notifications = true }\n",
        )
        .unwrap();
        let line = out.lines().find(|l| l.starts_with("switch.MVS5")).unwrap();
        assert!(
            line.contains("idle notifications yes") && line.contains("Pi,"),
            "{line}"
        );
        let err = with("target = \"tofino\"\n").unwrap_err().to_string();
        assert!(
            err.contains("switch[1].pipeline_dir")
                && err.contains("needs the Tofino compiler's output directory"),
            "{err}"
        );
        std::fs::remove_file(tmp.path().join("tofino-out/pipe/tofino.bin")).unwrap();
        let err = with("target = \"tofino\"\npipeline_dir = \"tofino-out\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("switch[1].pipeline_dir")
                && err.contains("context.json without tofino.bin"),
            "{err}"
        );
    }
}
