//! Embedded switch forwarding on veth pairs between network namespaces: runs
//! `dvipa-switch`'s `fwd_bench` example (generator alone, kernel bridge as the ceiling, the
//! switch on a CRT hit, the switch on SYN selection + digest, one after the other in the same
//! run) and turns its lines into figures. Needs root; skipped (with a message) otherwise.
//! Goal: ≥ 20× bmv2's packet rate. When `simple_switch_grpc` is on PATH, fwd_bench measures bmv2
//! running `p4src/p4c-out/bmv2/dvipa.json` on the same veth path in the same run, and the ratio is
//! taken from that; otherwise the section says bmv2 was skipped and the ratio uses 17.5 kpps, a
//! rate measured elsewhere (labelled as not measured in this run).

use crate::Size;
use crate::report::{Better, Figure};
use anyhow::{Context, bail};
use std::path::PathBuf;
use std::process::Command;

const BMV2_PPS: f64 = 17_500.0;

/// Whether this process runs as root (effective uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The example binary next to this one (`target/<profile>/examples/fwd_bench`). Cargo is asked
/// to build it every time (a no-op when it is fresh), so a changed switch is never measured with a
/// stale binary; if cargo is unavailable an existing binary is used with a warning.
fn fwd_bench() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?;
    let p = dir.join("examples").join("fwd_bench");
    eprintln!("building dvipa-switch's fwd_bench example (no-op if fresh) ...");
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "-p",
            "dvipa-switch",
            "--example",
            "fwd_bench",
        ])
        .status();
    match st {
        Ok(st) if st.success() => {}
        Ok(_) if !p.exists() => bail!("building fwd_bench failed"),
        Err(e) if !p.exists() => return Err(e).context("running cargo to build fwd_bench"),
        _ => eprintln!(
            "WARNING: could not rebuild fwd_bench; measuring the existing {} (may be stale)",
            p.display()
        ),
    }
    if !p.exists() {
        bail!("{} not found after building", p.display());
    }
    Ok(p)
}

/// `(offered, delivered)` pps of the first line containing `label`.
fn parse(out: &str, label: &str) -> Option<(f64, f64)> {
    let line = out.lines().find(|l| l.contains(label))?;
    let num_after = |key: &str| -> Option<f64> {
        let rest = &line[line.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    let offered = num_after("offered")?;
    let delivered = num_after("delivered").or_else(|| num_after("arriving at a1"))?;
    Some((offered, delivered))
}

/// Runs the section.
pub fn run(size: Size) -> anyhow::Result<Vec<Figure>> {
    if !is_root() {
        eprintln!("forwarding: skipped (needs root for network namespaces and AF_PACKET)");
        return Ok(Vec::new());
    }
    let secs = match size {
        Size::Smoke => "1",
        Size::Default => "3",
        Size::Large => "5",
    };
    let bin = fwd_bench()?;
    let out = Command::new(&bin)
        .arg(secs)
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!(
            "fwd_bench failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    eprint!("{text}");
    let (gen_offered, _) = parse(&text, "generator alone").context("no generator line")?;
    let (_, kernel) = parse(&text, "kernel bridge").context("no kernel bridge line")?;
    let mut figs = Vec::new();
    if let Some(why) = text.lines().find(|l| l.starts_with("bmv2: skipped")) {
        eprintln!("forwarding: {why}; the bmv2 ratio uses 17.5 kpps measured elsewhere");
    }
    for (label, bmv2_label, name) in [
        (
            "dvipa-switch CRT hit",
            "bmv2 CRT hit",
            "embedded switch, CRT hit (forward_l2)",
        ),
        (
            "dvipa-switch SYN+digest",
            "bmv2 SYN+digest",
            "embedded switch, SYN: slot hash + dpt + digest",
        ),
    ] {
        let (offered, delivered) =
            parse(&text, label).with_context(|| format!("no `{label}` line"))?;
        let bmv2 = match parse(&text, bmv2_label) {
            Some((_, b)) if b > 0.0 => format!(
                "{:.1}x bmv2 ({b:.0} pps, simple_switch_grpc running dvipa.json, measured in this run)",
                delivered / b
            ),
            _ => format!(
                "{:.1}x bmv2's 17.5 kpps (NOT measured in this run: simple_switch_grpc not on PATH; \
                 figure measured elsewhere)",
                delivered / BMV2_PPS
            ),
        };
        let cpu = text
            .lines()
            .find(|l| l.contains(label))
            .and_then(|l| l.split("data-path CPU ").nth(1))
            .and_then(|r| r.split('%').next())
            .map(|c| format!("; switch data-path thread busy {c}% (below 100%: the switch had idle time, the offered load was the limit)"))
            .unwrap_or_default();
        figs.push(
            Figure::new("forwarding", name, delivered, "pps", Better::Higher)
                .baseline(kernel, "kernel bridge forwarding the same traffic, same run")
                .goal(20.0 * BMV2_PPS, "≥ 350k (20x bmv2)")
                .note(format!(
                    "{bmv2}; offered {offered:.0} pps (generator alone offers {gen_offered:.0}); 72-byte TCP frames, {secs} s per mode{cpu}"
                )),
        );
    }
    Ok(figs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_fwd_bench_lines() {
        let t = "generator alone        : offered    500000 pps, arriving at a1    480000 pps\n\
                 kernel bridge          : offered    400000 pps, delivered    250000 pps\n\
                 dvipa-switch CRT hit   : offered    450000 pps, delivered    300000 pps (data-path CPU 99%)\n";
        assert_eq!(
            super::parse(t, "generator alone"),
            Some((500000.0, 480000.0))
        );
        assert_eq!(super::parse(t, "kernel bridge"), Some((400000.0, 250000.0)));
        assert_eq!(super::parse(t, "CRT hit"), Some((450000.0, 300000.0)));
        assert_eq!(super::parse(t, "SYN+digest"), None);
        let b = "bmv2 CRT hit           : offered     20000 pps, delivered     17000 pps (simple_switch_grpc)\n";
        assert_eq!(super::parse(b, "bmv2 CRT hit"), Some((20000.0, 17000.0)));
    }
}
