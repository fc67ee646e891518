//! Controller HA end to end (issue 17, scenario 1; root only): `dvipa demo --ha` with 200
//! streaming connections through the namespace cluster, a real 3-member etcd on loopback and
//! three `dvipa controller` processes, one agent per server attached to all three:
//! - step 21: the leader is SIGKILLed → a new leader within `lease_ms` + 1 s, both switches up
//!   on it, 30 new connections established, 0 resets on the 200;
//! - step 22: all of etcd stopped (SIGSTOP) for 10 s → the leader steps down, 30 new
//!   connections succeed during the outage, a leader again after etcd's return, 0 resets;
//! - step 1: then the primary switch is SIGKILLed → the new leader moves the DVIPA to the
//!   backup, 0 resets; step 2: the switch restarted, takeback;
//! - step 23: the leader partitioned from etcd (not from the switches) for 5 s → it steps
//!   down and drops its switch sessions before another replica is elected, the route never
//!   changes, 0 resets;
//! - step 24 (double fault): the leader and the primary switch SIGKILLed together → the last
//!   replica is elected and takes over on the backup, 0 resets;
//! - step 25: the killed replicas and sw1 restarted (takeback), an operator move to sw2 on the
//!   leader, the leader SIGKILLed → the next leader keeps the DVIPA on sw2 (the move is in
//!   etcd), 0 resets.
//!
//! The demo prints the figures (time to the new leader, takeover, stalls). Skips with a
//! message without root, without the sibling binaries or without etcd
//! (scripts/install-test-deps.sh).

use dvipa_testbed::skip;
use std::path::Path;
use std::process::Command;

#[test]
fn leader_killed_then_primary_switch_killed_no_connection_lost() {
    let exe = Path::new(env!("CARGO_BIN_EXE_dvipa"));
    if let Some(why) =
        skip::demo_unavailable(exe).or_else(|| skip::tool_missing("etcd", "--version"))
    {
        skip::skip(why);
        return;
    }
    let out = Command::new(exe)
        .args([
            "demo",
            "--no-build",
            "--ha",
            "--hot-standby",
            "--conns",
            "200",
        ])
        .output()
        .expect("run dvipa demo --ha");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "dvipa demo --ha failed: {stderr}");
    for step in [21, 22, 1, 2, 23, 24, 25] {
        let want = format!("step {step}: alive 200 -> 200, resets 0,");
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&want) && l.trim_end().ends_with("-- ok")),
            "no line with {want:?} ... -- ok"
        );
    }
    assert!(stdout.contains("their DPT view warm"), "followers not warm");
    assert!(stdout.contains("cluster removed; PASS"), "no PASS line");
}
