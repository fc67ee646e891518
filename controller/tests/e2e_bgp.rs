//! `dvipa demo --advertise bgp` end to end (root; skipped without gobgpd and bird, which
//! scripts/install-test-deps.sh installs): the router namespace runs BIRD 2 peering with a
//! gobgpd the controller drives; 100 streaming connections; the primary switch is killed
//! (takeover = sw1's path withdrawn, the pre-announced sw2 path becomes best) and restarted
//! (takeback), every connection intact; hot standby. Last, step 12: the controller and the
//! primary die together (and the primary's link): nobody withdraws, R moves to the
//! pre-announced backup (ADD-PATH) on its own, every connection intact. The demo prints the time
//! from the event to R's kernel route pointing at the new switch ("advert ms") and R's BGP table
//! before and after.

use dvipa_testbed::skip;
use std::path::Path;
use std::process::Command;

#[test]
fn demo_over_bgp_takeover_and_takeback_keep_every_connection() {
    let exe = Path::new(env!("CARGO_BIN_EXE_dvipa"));
    if let Some(why) = skip::demo_unavailable(exe).or_else(|| {
        (!dvipa_testbed::bgp::available())
            .then(|| "gobgpd and bird are not installed (scripts/install-test-deps.sh)".to_string())
    }) {
        skip::skip(why);
        return;
    }
    let out = Command::new(exe)
        .args(["demo", "--no-build", "--conns", "100", "--advertise", "bgp"])
        .args(["--hot-standby", "--kill-controller-with-primary"])
        .output()
        .expect("run dvipa demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(out.status.success(), "dvipa demo failed: {stderr}");
    for step in [1, 2, 12] {
        let want = format!("step {step}: alive 100 -> 100, resets 0,");
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(&want) && l.trim_end().ends_with("-- ok")),
            "no line with {want:?} ... -- ok"
        );
    }
    assert!(stdout.contains("established with gobgpd"), "{stdout}");
    // R's best BGP route: via sw1 (10.77.101.2) before, via sw2 (10.77.102.2) after the takeover
    let table = |when: &str| {
        let start = stdout
            .find(&format!("birdc show route (router R, {when})"))
            .unwrap_or_else(|| panic!("no BGP table {when}"));
        // BIRD lists the best route (`*`) first: its first `via` line is R's choice
        stdout[start..]
            .lines()
            .take(8)
            .find(|l| l.trim_start().starts_with("via "))
            .unwrap_or_default()
            .to_string()
    };
    assert!(
        table("before the takeover").contains("via 10.77.101.2 on up1"),
        "{}",
        table("before the takeover")
    );
    assert!(
        table("after the takeover").contains("via 10.77.102.2 on up2"),
        "{}",
        table("after the takeover")
    );
    assert!(table("after the takeback").contains("via 10.77.101.2 on up1"));
    assert!(
        table("after the controller and sw1 died").contains("via 10.77.102.2 on up2"),
        "{}",
        table("after the controller and sw1 died")
    );
    // netstat vipadyn shows BGP's view: the routing switch SENT, the backup in GoBGP's RIB
    assert!(stdout.contains("ESTABLISHED)"), "no peer state in vipadyn");
    assert!(
        stdout
            .lines()
            .any(|l| l.contains(" sw2 ") && l.contains("SENT med=100")),
        "sw2 not pre-announced with MED 100"
    );
    // dvipa counters, layer bgp: the session up, paths added and deleted by the moves
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("bgp peer_10.77.") && l.contains("_established 1")),
        "no established peer in dvipa counters"
    );
    assert!(
        stdout.lines().any(|l| l.trim() == "bgp gobgp_reachable 1"),
        "gobgpd not reachable in dvipa counters"
    );
    assert!(stdout.contains("cluster removed; PASS"), "no PASS line");
}
