//! Tests that need something this machine may lack (root, a sibling binary, a Debian package)
//! say so and return; under `DVIPA_TESTS_NO_SKIP=1` the same skip fails the test instead.
//! `scripts/test-all.sh` sets it after installing every prerequisite, so in CI a test that
//! would quietly not run is red, not green.

use std::fmt::Display;
use std::path::Path;

/// The variable that turns skips into failures.
pub const NO_SKIP: &str = "DVIPA_TESTS_NO_SKIP";

/// Whether skips are failures in this run.
pub fn forbidden() -> bool {
    std::env::var_os(NO_SKIP).is_some_and(|v| v == "1")
}

/// Reports that the calling test is skipped because of `why`; the caller returns after it.
/// Panics (fails the test) with the same reason when [`forbidden`].
pub fn skip(why: impl Display) {
    if forbidden() {
        panic!("{why} — and {NO_SKIP}=1 says every prerequisite is installed: not skipped");
    }
    eprintln!("SKIPPED: {why}");
}

/// Binaries the demo starts next to `dvipa` (in the same target directory).
pub const DEMO_SIBLINGS: [&str; 4] = ["dvipa-switch", "dvipa-agent", "dvipa-echo", "dvipa-conns"];

/// Why `dvipa demo` cannot run from `exe`: not root, or a sibling binary missing; `None` if it can.
pub fn demo_unavailable(exe: &Path) -> Option<String> {
    if !crate::netns::is_root() {
        return Some("dvipa demo needs root (network namespaces)".into());
    }
    let dir = exe.parent()?;
    DEMO_SIBLINGS.iter().find_map(|b| {
        (!dir.join(b).exists()).then(|| {
            format!(
                "no {} (cargo build -p dvipa-switch -p dvipa-agent -p dvipa-testbed)",
                dir.join(b).display()
            )
        })
    })
}

/// Why the command `tool` (run with `arg`, e.g. `-V`) is unusable, naming the package script.
pub fn tool_missing(tool: &str, arg: &str) -> Option<String> {
    let ok = std::process::Command::new(tool)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success());
    (!ok).then(|| format!("no {tool} (scripts/install-test-deps.sh installs it)"))
}
