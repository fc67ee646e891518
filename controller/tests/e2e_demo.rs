//! `dvipa demo` end to end (root only): the namespace cluster, two embedded switches, the
//! controller process, agents, echo servers and 100 streaming connections; the primary switch is
//! killed (takeover) and restarted (takeback) with every connection intact, and everything is
//! removed afterwards (R routed by the `ip route` hooks; `e2e_bgp.rs` runs it over BGP). The five-step scenario of issue 8 runs from `scripts/e2e-test.sh`.
//!
//! Skips with a message without root or without the sibling binaries (dvipa-switch,
//! dvipa-agent, dvipa-echo, dvipa-conns: `cargo build -p dvipa-switch -p dvipa-agent -p
//! dvipa-testbed`, done by `cargo test --workspace`).

use dvipa_testbed::skip;
use std::path::Path;
use std::process::Command;

#[test]
fn demo_takeover_and_takeback_keep_every_connection() {
    let exe = Path::new(env!("CARGO_BIN_EXE_dvipa"));
    if let Some(why) = skip::demo_unavailable(exe) {
        skip::skip(why);
        return;
    }
    let out = Command::new(exe)
        .args([
            "demo",
            "--no-build",
            "--conns",
            "100",
            "--advertise",
            "hooks",
        ])
        .output()
        .expect("run dvipa demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "dvipa demo failed: {stderr}");
    // per step: 100 alive before and after, no reset, step ok
    for step in 1..=2 {
        let want = format!("step {step}: alive 100 -> 100, resets 0,");
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&want) && l.trim_end().ends_with("-- ok")),
            "no line with {want:?} ... -- ok"
        );
    }
    assert!(
        stdout.contains("cluster removed; PASS"),
        "no PASS line: {stdout}"
    );
}
