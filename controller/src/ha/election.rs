//! The campaign: lease, keep-alive, etcd election, and the step-down on this replica's own clock.
//!
//! One session = one lease. The replica grants a lease of `ceil(lease_ms / 1000)` s, keeps it
//! alive every `lease_ms / 6`, and campaigns with it (the election value is
//! `<replica> <admin address>`). A keep-alive counts from the moment its request was *sent*, so
//! the lease cannot expire in etcd before `renewed + lease_ms`. The leader steps down on its
//! own clock at `renewed + STEP_DOWN_AT × lease_ms` (1.5 s of a 2 s lease): 500 ms before the
//! earliest moment another replica can be elected, the drivers have dropped their sessions.
//! Other reasons: etcd answered that the lease is gone (`lease_expired`), another key leads
//! (`superseded`), shutdown (`shutdown`, the key is resigned so a follower takes over at once).
//! After a step-down the session ends (the lease is revoked if etcd answers) and a new one
//! campaigns again.

use super::{HaState, Role};
use dvipa_core::config::HaCfg;
use etcd_client::{Client, ConnectOptions, LeaderKey, ResignOptions};
use parking_lot::Mutex;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The leader stops writing when its last renewal is this fraction of `lease_ms` old.
pub const STEP_DOWN_AT: f64 = 0.75;

/// Pause between two sessions after a failure (etcd unreachable, lease lost).
const RETRY: Duration = Duration::from_millis(200);

/// The etcd client options of a replica: every call bounded by a quarter of the lease.
pub fn connect_options(lease: Duration) -> ConnectOptions {
    let q = (lease / 4).max(Duration::from_millis(100));
    ConnectOptions::new()
        .with_connect_timeout(q)
        .with_timeout(q)
        .with_keep_alive(q, q)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true)
}

/// Connects to etcd (bounded by `lease / 4`).
pub async fn connect(cfg: &HaCfg) -> Result<Client, etcd_client::Error> {
    let lease = Duration::from_millis(cfg.lease_ms);
    Client::connect(&cfg.etcd, Some(connect_options(lease))).await
}

/// Runs the campaign until `shutdown` turns true, publishing on `tx`.
pub async fn run(
    cfg: HaCfg,
    admin: Option<String>,
    tx: watch::Sender<HaState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut warn = p4rt::ratelimit::RateLimit::new(p4rt::ratelimit::PERIOD);
    loop {
        if *shutdown.borrow() {
            return;
        }
        match session(&cfg, admin.as_deref(), &tx, &mut shutdown).await {
            Ok(()) => return,
            Err(e) => {
                metrics::counter!("dvipa_ha_session_failures_total").increment(1);
                match warn.check() {
                    Some(suppressed) => {
                        tracing::warn!(replica = %cfg.replica, error = %e, suppressed, "etcd session ended; campaigning again")
                    }
                    None => {
                        tracing::debug!(replica = %cfg.replica, error = %e, "etcd session ended")
                    }
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// Why a session ended.
type SessionError = String;

fn publish(tx: &watch::Sender<HaState>, f: impl FnOnce(&mut HaState)) {
    tx.send_modify(|s| {
        let before = s.role;
        f(s);
        if s.role != before {
            s.since = Instant::now();
        }
        metrics::gauge!("dvipa_ha_leader").set(if s.role == Role::Leader { 1.0 } else { 0.0 });
        metrics::gauge!("dvipa_ha_term").set(s.term as f64);
    });
}

fn step_down(
    tx: &watch::Sender<HaState>,
    reason: &'static str,
    replica: &str,
    renewed_ago: Duration,
) {
    tracing::warn!(%replica, reason, ?renewed_ago, "stepping down: this replica stops writing");
    metrics::counter!("dvipa_ha_step_downs_total", "reason" => reason).increment(1);
    publish(tx, |s| {
        s.role = Role::Follower;
        s.key = None;
        s.leader = None;
        s.leader_admin = None;
        *s.step_downs.entry(reason).or_default() += 1;
    });
}

/// Longest election value kept (another replica's name and admin address).
const MAX_VALUE: usize = 512;

/// Splits an election value `<replica> <admin>` (cut at [`MAX_VALUE`] bytes).
fn parse_value(v: &[u8]) -> (String, Option<String>) {
    let v = String::from_utf8_lossy(&v[..v.len().min(MAX_VALUE)]);
    match v.split_once(' ') {
        Some((r, a)) => (r.to_string(), Some(a.to_string())),
        None => (v.to_string(), None),
    }
}

async fn session(
    cfg: &HaCfg,
    admin: Option<&str>,
    tx: &watch::Sender<HaState>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), SessionError> {
    let lease_len = Duration::from_millis(cfg.lease_ms);
    let safe = lease_len.mul_f64(STEP_DOWN_AT);
    let tick = lease_len / 4;
    let client = connect(cfg).await.map_err(|e| format!("connect: {e}"))?;
    let ttl = cfg.lease_ms.div_ceil(1000).max(1) as i64;
    let granted_at = Instant::now();
    let lease = client
        .clone()
        .lease_grant(ttl, None)
        .await
        .map_err(|e| format!("lease grant: {e}"))?
        .id();
    let renewed = Arc::new(Mutex::new(granted_at));
    let (lost_tx, mut lost_rx) = watch::channel(false);
    let keeper = tokio::spawn(keep_alive(
        client.clone(),
        lease,
        lease_len / 6,
        renewed.clone(),
        lost_tx,
    ));
    let _keeper = AbortOnDrop(keeper);
    let value = match admin {
        Some(a) => format!("{} {a}", cfg.replica),
        None => cfg.replica.clone(),
    };
    let mut el = client.election_client();
    let mut campaign_client = client.election_client();
    let name = cfg.election.clone();
    let campaign = async move { campaign_client.campaign(name, value, lease).await };
    tokio::pin!(campaign);
    let mut poll = tokio::time::interval(tick);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Follower: wait for the campaign, following who leads meanwhile.
    let key: LeaderKey = loop {
        tokio::select! {
            r = &mut campaign => {
                let mut r = r.map_err(|e| format!("campaign: {e}"))?;
                break r.take_leader().ok_or("campaign answered without a leader key")?;
            }
            _ = poll.tick() => {
                if renewed.lock().elapsed() >= safe || *lost_rx.borrow() {
                    revoke(client.clone(), lease);
                    return Err("lease not renewed while campaigning".into());
                }
                if let Ok(Ok(mut r)) = tokio::time::timeout(tick, el.leader(cfg.election.clone())).await
                    && let Some(kv) = r.take_kv()
                {
                    let (l, a) = parse_value(kv.value());
                    let term = kv.create_revision().max(0) as u64;
                    if tx.borrow().leader.as_deref() != Some(l.as_str()) || tx.borrow().term != term {
                        tracing::info!(replica = %cfg.replica, leader = %l, term, "following");
                        publish(tx, |s| { s.leader = Some(l); s.leader_admin = a; s.term = term; });
                    }
                }
            }
            _ = shutdown.changed() => {
                revoke(client.clone(), lease);
                return Ok(());
            }
        }
    };
    let term = key.rev().max(0) as u64;
    let ago = renewed.lock().elapsed();
    if ago >= safe || *lost_rx.borrow() {
        revoke(client.clone(), lease);
        return Err(format!(
            "elected with a lease renewed {ago:?} ago: not taken"
        ));
    }
    tracing::info!(replica = %cfg.replica, term, "elected leader");
    metrics::counter!("dvipa_ha_elections_total").increment(1);
    publish(tx, |s| {
        s.role = Role::Leader;
        s.term = term;
        s.key = Some(key.key().to_vec());
        s.leader = Some(cfg.replica.clone());
        s.leader_admin = admin.map(str::to_string);
        s.elections += 1;
    });
    // Leader: hold while the lease is renewed in time.
    loop {
        let deadline = *renewed.lock() + safe;
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {
                let ago = renewed.lock().elapsed();
                if ago >= safe {
                    step_down(tx, "lease_not_renewed", &cfg.replica, ago);
                    revoke(client.clone(), lease);
                    return Err("lease not renewed in time".into());
                }
            }
            _ = lost_rx.changed() => {
                step_down(tx, "lease_expired", &cfg.replica, renewed.lock().elapsed());
                return Err("etcd says the lease is gone".into());
            }
            _ = poll.tick() => {
                // The query may hang while etcd does: it never holds the loop past the
                // step-down deadline (the next turn then steps down at once).
                let budget = tick.min(deadline.saturating_duration_since(Instant::now()));
                if let Ok(Ok(mut r)) = tokio::time::timeout(budget, el.leader(cfg.election.clone())).await
                    && let Some(kv) = r.take_kv()
                    && kv.key() != key.key()
                {
                    step_down(tx, "superseded", &cfg.replica, renewed.lock().elapsed());
                    revoke(client.clone(), lease);
                    return Err("another key leads".into());
                }
            }
            _ = shutdown.changed() => {
                step_down(tx, "shutdown", &cfg.replica, renewed.lock().elapsed());
                let opts = ResignOptions::new().with_leader(key);
                let _ = tokio::time::timeout(tick, el.resign(Some(opts))).await;
                revoke(client.clone(), lease);
                return Ok(());
            }
        }
    }
}

/// Revokes `lease` in the background (best effort, bounded).
fn revoke(mut client: Client, lease: i64) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(lease)).await;
    });
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews `lease` every `every`; `renewed` = the send time of the last answered renewal.
/// `lost` turns true when etcd answers that the lease does not exist any more.
async fn keep_alive(
    mut client: Client,
    lease: i64,
    every: Duration,
    renewed: Arc<Mutex<Instant>>,
    lost: watch::Sender<bool>,
) {
    loop {
        let Ok(Ok((mut keeper, mut stream))) =
            tokio::time::timeout(every, client.lease_keep_alive(lease)).await
        else {
            tokio::time::sleep(every / 2).await;
            continue;
        };
        loop {
            let sent = Instant::now();
            if keeper.keep_alive().await.is_err() {
                break;
            }
            match tokio::time::timeout(every, stream.message()).await {
                Ok(Ok(Some(r))) if r.ttl() > 0 => *renewed.lock() = sent,
                Ok(Ok(Some(_))) => {
                    let _ = lost.send(true);
                    return;
                }
                // A late answer could not be told from the next one's: a new stream.
                Ok(Ok(None)) | Ok(Err(_)) | Err(_) => break,
            }
            tokio::time::sleep_until((sent + every).into()).await;
        }
        tokio::time::sleep(every / 2).await;
    }
}

#[cfg(test)]
mod tests {
    use super::parse_value;

    #[test]
    fn election_values_are_split_and_bounded() {
        assert_eq!(
            parse_value(b"ctl-a 10.0.0.1:7444"),
            ("ctl-a".into(), Some("10.0.0.1:7444".into()))
        );
        assert_eq!(parse_value(b"ctl-b"), ("ctl-b".into(), None));
        let long = vec![b'x'; 10_000];
        assert_eq!(parse_value(&long).0.len(), super::MAX_VALUE);
    }
}
