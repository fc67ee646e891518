//! Data-plane liveness end to end (issue 13; root only): `dvipa demo --failures --dataplane`
//! (step 11 only) with 200 streaming connections. The router's packets to the primary sw1 are
//! dropped (iptables FORWARD in the router namespace) while sw1's P4Runtime keeps answering,
//! 5 times in a row:
//! - the controller's data-plane probe marks sw1 down and the DVIPA moves to sw2 within
//!   `down_after_ms` (300) + 300 ms;
//! - no takeback while the path is broken; after it heals the takeback comes only after the
//!   controller logged that sw1's data path answers again (within 3 s);
//! - the hook log per cycle is "advertise sw2, withdraw sw1, advertise sw1, withdraw sw2";
//! - then sw1 is restarted (empty tables) while marked down and still cut off: its new session
//!   releases the mark (probation), it is taken back, marked down again, and taken back for
//!   good once the path heals (hooks in that order);
//! - 0 resets, 200 of 200 connections alive.
//!
//! The demo prints the detection, takeover and takeback times (median, min, max of the 5 cycles)
//! and the probe counters. Skips with a message without root, the sibling binaries or iptables.

use dvipa_testbed::skip;
use std::path::Path;
use std::process::Command;

#[test]
fn a_switch_that_forwards_nothing_is_taken_over_and_back_only_after_its_data_path_answers() {
    let exe = Path::new(env!("CARGO_BIN_EXE_dvipa"));
    if let Some(why) = skip::demo_unavailable(exe)
        .or_else(|| skip::tool_missing("iptables", "-V"))
        .or_else(|| skip::tool_missing("ss", "-V"))
    {
        skip::skip(why);
        return;
    }
    let out = Command::new(exe)
        .args(["demo", "--no-build", "--failures", "--dataplane"])
        .args(["--skip", "7,8,9,10", "--conns", "200", "--drop-cycles", "5"])
        .args(["--liveness-ms", "300", "--dataplane-ms", "300"])
        .output()
        .expect("run dvipa demo --failures --dataplane");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "dvipa demo --failures --dataplane failed: {stderr}"
    );
    let want = "step 11: alive 200 -> 200, resets 0,";
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(want) && l.trim_end().ends_with("-- ok")),
        "no line with {want:?} ... -- ok"
    );
    for cycle in 1..=5 {
        assert!(
            stdout.contains(&format!("cycle {cycle}: detection ")),
            "cycle {cycle}: no detection/takeback line"
        );
    }
    assert!(
        stdout.contains("(5 samples)"),
        "no 5-sample detection figures"
    );
    // the probe counted what it did: 10 marks (down and up) for sw1
    let counter = |name: &str| -> Option<u64> {
        let line = stdout
            .lines()
            .find(|l| l.contains("controller counters:"))?;
        let at = line.find(name)? + name.len();
        line[at..].split(';').next()?.trim().parse().ok()
    };
    // 5 cycles, then the probation part: marked down, restarted and released, marked down
    // again, healed
    assert_eq!(counter("dataplane.sw1.marked_down"), Some(7), "marks down");
    assert_eq!(counter("dataplane.sw1.marked_up"), Some(6), "marks up");
    assert_eq!(
        counter("dataplane.sw1.probation"),
        Some(1),
        "releases on probation"
    );
    assert!(
        stdout.contains("probation: sw1 restarted "),
        "no probation figures"
    );
    assert!(counter("dataplane.sw1.answered").unwrap_or(0) > 0);
    assert!(
        stdout.contains("cluster removed; PASS"),
        "no PASS line: {stdout}"
    );
}
