//! Advertising DVIPAs to the routed network when the core says so ([`Advertiser`]), with a
//! command-running implementation ([`CommandAdvertiser`]) and a recording one for tests
//! ([`RecordingAdvertiser`]). Commands run one at a time, in the core's order. The commands come
//! from the TOML's `[advertise]` (`advertise_cmd`, `withdraw_cmd`), which `--advertise-cmd` /
//! `--withdraw-cmd` override ([`CommandAdvertiser::from_config`]).

use futures::future::BoxFuture;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub use crate::cmd::AdvCmd;

/// A hook failed.
#[derive(Debug, thiserror::Error)]
pub enum AdvertiseError {
    /// The command could not be started.
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        /// Command.
        cmd: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The command failed.
    #[error("`{cmd}` exited with {status}: {stderr}")]
    Failed {
        /// Command.
        cmd: String,
        /// Exit status.
        status: String,
        /// Its stderr (trimmed).
        stderr: String,
    },
    /// The command ran too long.
    #[error("`{0}` did not finish within 30 s")]
    Timeout(String),
    /// gobgpd refused a call or did not answer (`[advertise] mode = "bgp"`).
    #[error("gobgpd {call} ({addr}): {msg}")]
    Bgp {
        /// The API call (`AddPath`, ...).
        call: &'static str,
        /// gobgpd's API address.
        addr: String,
        /// What went wrong.
        msg: String,
    },
}

/// Makes a switch attract (or stop attracting) a DVIPA's traffic: a routing hook, BGP …
pub trait Advertiser: Send + Sync + 'static {
    /// Carry out one request.
    fn apply(&self, cmd: &AdvCmd) -> BoxFuture<'static, Result<(), AdvertiseError>>;
}

/// Runs `sh -c <command>` with `DVIPA_ACTION` (advertise|withdraw), `DVIPA_SWITCH`,
/// `DVIPA_ADDR` and `DVIPA_PREFIX_LEN` in the environment. No command = nothing to do.
#[derive(Debug, Clone, Default)]
pub struct CommandAdvertiser {
    /// Command for advertise.
    pub advertise: Option<String>,
    /// Command for withdraw.
    pub withdraw: Option<String>,
}

impl CommandAdvertiser {
    /// The hooks of the TOML's `[advertise]` (after command-line overrides).
    pub fn from_config(cfg: &dvipa_core::config::AdvertiseCfg) -> Self {
        CommandAdvertiser {
            advertise: cfg.advertise_cmd.clone(),
            withdraw: cfg.withdraw_cmd.clone(),
        }
    }
}

impl Advertiser for CommandAdvertiser {
    fn apply(&self, c: &AdvCmd) -> BoxFuture<'static, Result<(), AdvertiseError>> {
        let cmd = if c.advertise {
            self.advertise.clone()
        } else {
            self.withdraw.clone()
        };
        let c = c.clone();
        Box::pin(async move {
            let Some(cmd) = cmd else { return Ok(()) };
            let child = tokio::process::Command::new("sh")
                .arg("-c")
                .arg(&cmd)
                .env(
                    "DVIPA_ACTION",
                    if c.advertise { "advertise" } else { "withdraw" },
                )
                .env("DVIPA_SWITCH", &c.switch)
                .env("DVIPA_ADDR", c.dvipa.to_string())
                .env("DVIPA_PREFIX_LEN", c.prefix_len.to_string())
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .output();
            let out = tokio::time::timeout(Duration::from_secs(30), child)
                .await
                .map_err(|_| AdvertiseError::Timeout(cmd.clone()))?
                .map_err(|source| AdvertiseError::Spawn {
                    cmd: cmd.clone(),
                    source,
                })?;
            if out.status.success() {
                Ok(())
            } else {
                Err(AdvertiseError::Failed {
                    cmd,
                    status: out.status.to_string(),
                    stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                })
            }
        })
    }
}

/// Records every request (tests).
#[derive(Debug, Clone, Default)]
pub struct RecordingAdvertiser {
    /// Requests in order.
    pub log: Arc<parking_lot::Mutex<Vec<AdvCmd>>>,
}

impl Advertiser for RecordingAdvertiser {
    fn apply(&self, c: &AdvCmd) -> BoxFuture<'static, Result<(), AdvertiseError>> {
        self.log.lock().push(c.clone());
        Box::pin(async { Ok(()) })
    }
}

/// Carries out requests one by one; failures are logged and counted.
pub async fn run(
    adv: Arc<dyn Advertiser>,
    mut rx: mpsc::UnboundedReceiver<AdvCmd>,
    stats: Arc<crate::stats::Stats>,
) {
    while let Some(c) = rx.recv().await {
        let what = if c.advertise { "advertise" } else { "withdraw" };
        match adv.apply(&c).await {
            Ok(()) => {
                tracing::info!(switch = %c.switch, dvipa = %c.dvipa, "{what} done");
                stats.add(&format!("{what}_ok"), 1);
            }
            Err(e) => {
                tracing::error!(switch = %c.switch, dvipa = %c.dvipa, error = %e, "{what} failed");
                metrics::counter!("dvipa_advertise_failures_total", "action" => what).increment(1);
                stats.add(&format!("{what}_failed"), 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[tokio::test]
    async fn command_gets_the_dvipa_in_its_environment_and_failures_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let a = CommandAdvertiser {
            advertise: Some(format!(
                "echo \"$DVIPA_ACTION $DVIPA_SWITCH $DVIPA_ADDR/$DVIPA_PREFIX_LEN\" > {}",
                out.display()
            )),
            withdraw: Some("echo nope >&2; exit 3".into()),
        };
        let mut c = AdvCmd {
            advertise: true,
            switch: "MVS1".into(),
            dvipa: Ipv4Addr::new(203, 0, 113, 10),
            prefix_len: 24,
        };
        a.apply(&c).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "advertise MVS1 203.0.113.10/24"
        );
        c.advertise = false;
        let e = a.apply(&c).await.unwrap_err().to_string();
        assert!(e.contains("nope") && e.contains("exit"), "{e}");
    }
}
