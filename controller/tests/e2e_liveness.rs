//! Failure detection end to end (issue 13; root only): `dvipa demo --failures` with 200
//! streaming connections, liveness_ms 300:
//! - step 7: the primary `dvipa-switch` frozen (SIGSTOP) for 5 s → the DVIPA moves to the
//!   backup within liveness_ms + 200 ms, every connection moves data again within 1 s, then
//!   SIGCONT → takeback only after the thaw, the advertise hook log in order (advertise new,
//!   withdraw old), 0 resets;
//! - steps 8 and 9: the controller's P4Runtime packets to the primary dropped (iptables, only
//!   that 127.0.0.1 port) for 5 s, 5 times in a row, without and with `ss -K` of the
//!   controller's socket → takeover within the same bound, takeback within 1 s of healing,
//!   0 resets;
//! - step 10: the same against a primary without server keep-alive (like simple_switch_grpc,
//!   which keeps the dead stream): the controller raises its election id and takes back.
//!
//! The demo prints the detection times (fault → "switch down"). Skips with a message without
//! root, without the sibling binaries or without iptables/ss (scripts/install-test-deps.sh).

use dvipa_testbed::skip;
use std::path::Path;
use std::process::Command;

#[test]
fn freeze_and_path_loss_are_detected_within_liveness_and_the_primary_comes_back() {
    let exe = Path::new(env!("CARGO_BIN_EXE_dvipa"));
    if let Some(why) = skip::demo_unavailable(exe)
        .or_else(|| skip::tool_missing("iptables", "-V"))
        .or_else(|| skip::tool_missing("ss", "-V"))
    {
        skip::skip(why);
        return;
    }
    let out = Command::new(exe)
        .args(["demo", "--no-build", "--failures", "--conns", "200"])
        .args(["--liveness-ms", "300"])
        .output()
        .expect("run dvipa demo --failures");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "dvipa demo --failures failed: {stderr}"
    );
    for step in 7..=10 {
        let want = format!("step {step}: alive 200 -> 200, resets 0,");
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&want) && l.trim_end().ends_with("-- ok")),
            "no line with {want:?} ... -- ok"
        );
    }
    assert!(
        stdout.contains("detection (freeze -> controller's \"switch down\")"),
        "no detection time printed"
    );
    assert!(
        stdout.contains("cluster removed; PASS"),
        "no PASS line: {stdout}"
    );
    // every rule the test inserted is gone
    let rules = Command::new("iptables")
        .args(["-S", "OUTPUT"])
        .output()
        .expect("iptables -S");
    let rules = String::from_utf8_lossy(&rules.stdout);
    assert!(
        !rules.contains("127.0.0.1/32") || !rules.contains("DROP"),
        "an iptables DROP rule was left behind: {rules}"
    );
}
