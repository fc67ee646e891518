//! Takeover and takeback over BGP vs the hook path (issue 18): `dvipa demo` (real dvipa-switch,
//! controller, agents and TCP in network namespaces) run N times with `--advertise bgp`
//! (gobgpd driven by the controller, BIRD 2 in the router namespace installing the route) and N
//! times with `--advertise hooks` (`ip route replace` in the router namespace), interleaved so
//! both see the same load. Figure: event (primary killed / restarted) → the router's kernel
//! route points at the new switch, median and max; resets over all runs (must be 0).
//! Needs root, gobgpd and bird; uses the binaries beside this one (built with cargo in the same
//! profile, a no-op when fresh).

use crate::Size;
use crate::report::{Better, Figure};
use anyhow::{Context, bail};
use std::process::Command;

/// One demo run: (takeover ms, takeback ms, resets).
fn parse(out: &str) -> Option<(f64, f64, f64)> {
    let ms = |key: &str| {
        out.lines().find(|l| l.contains(key)).and_then(|l| {
            let rest = &l[l.find(" after ")? + 7..];
            rest.split_whitespace().next()?.parse::<f64>().ok()
        })
    };
    let resets = out
        .lines()
        .filter(|l| l.contains("] step ") && l.contains(": alive"))
        .map(|l| {
            let r = &l[l.find("resets ")? + 7..];
            r.split(',').next()?.trim().parse::<f64>().ok()
        })
        .sum::<Option<f64>>()?;
    Some((
        ms("takeover: the DVIPA is advertised by")?,
        ms("takeback: the DVIPA is advertised by")?,
        resets,
    ))
}

fn demo(dir: &std::path::Path, mode: &str) -> anyhow::Result<(f64, f64, f64)> {
    let out = Command::new(dir.join("dvipa"))
        .args(["demo", "--no-build", "--conns", "50", "--advertise", mode])
        .arg("--bin-dir")
        .arg(dir)
        .output()
        .context("running dvipa demo")?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        eprint!("{text}");
        bail!("dvipa demo --advertise {mode} failed ({})", out.status);
    }
    parse(&text).with_context(|| format!("no takeover/takeback figures in: {text}"))
}

fn median_max(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[v.len() - 1])
}

/// Runs the section.
pub fn run(size: Size) -> anyhow::Result<Vec<Figure>> {
    if !crate::fwd::is_root() {
        eprintln!("bgp: skipped (needs root for network namespaces)");
        return Ok(Vec::new());
    }
    if !dvipa_testbed::bgp::available() {
        eprintln!("bgp: skipped (gobgpd and bird not installed: scripts/install-test-deps.sh)");
        return Ok(Vec::new());
    }
    let runs = if size == Size::Smoke { 3 } else { 10 };
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("exe dir")?.to_owned();
    let release = dir.file_name().is_some_and(|n| n == "release");
    eprintln!("building dvipa, dvipa-switch, dvipa-agent, dvipa-testbed (no-op if fresh) ...");
    let mut b = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    b.arg("build");
    if release {
        b.arg("--release");
    }
    let st = b
        .args(["-p", "dvipa", "-p", "dvipa-switch", "-p", "dvipa-agent"])
        .args(["-p", "dvipa-testbed"])
        .status()
        .context("cargo build")?;
    if !st.success() {
        bail!("building the demo binaries failed");
    }
    let (mut bgp, mut hooks) = (Vec::new(), Vec::new());
    for i in 0..runs {
        eprintln!("bgp: run {}/{runs}", i + 1);
        bgp.push(demo(&dir, "bgp")?);
        hooks.push(demo(&dir, "hooks")?);
    }
    let col = |v: &[(f64, f64, f64)], k: usize| -> Vec<f64> {
        v.iter().map(|r| [r.0, r.1, r.2][k]).collect()
    };
    let mut out = Vec::new();
    for (k, what) in [(0, "takeover"), (1, "takeback")] {
        let (bm, bx) = median_max(&mut col(&bgp, k));
        let (hm, hx) = median_max(&mut col(&hooks, k));
        out.push(
            Figure::new(
                "bgp",
                format!("{what}: event → router FIB via the new switch, BGP, median"),
                bm,
                "ms",
                Better::Lower,
            )
            .baseline(hm, "ip route hooks, same run, median")
            .note(format!(
                "{runs} runs each; max BGP {bx} ms, hooks {hx} ms; liveness_ms 300 (takeover \
                 includes detection)"
            )),
        );
    }
    let resets: f64 = col(&bgp, 2).iter().chain(&col(&hooks, 2)).sum();
    out.push(
        Figure::new(
            "bgp",
            "connection resets over every run (50 streams each)",
            resets,
            "resets",
            Better::Lower,
        )
        .goal(0.0, "0"),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_a_demo_run() {
        let t = "[   8.4s] takeover: the DVIPA is advertised by sw2 after 341 ms\n\
                 [  11.4s] step 1: alive 200 -> 200, resets 0, closed 0, longest stall 764 ms -- ok\n\
                 [  11.6s] takeback: the DVIPA is advertised by sw1 after 250 ms\n\
                 [  14.3s] step 2: alive 200 -> 200, resets 2, closed 0, longest stall 119 ms -- ok\n";
        assert_eq!(super::parse(t), Some((341.0, 250.0, 2.0)));
        assert_eq!(super::parse("nothing"), None);
    }
}
