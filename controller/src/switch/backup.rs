//! A follower's session to its switch (HA, docs/ha.md): a P4Runtime BACKUP. Its election id
//! has term 0 in the high 64 bits (every leader's term is >= 1, so any leader out-ranks it)
//! and a low part derived from the replica name (never 0 or 1), so the replicas' backups do
//! not collide. The follower never writes and never reports `SwitchUp` (its core plans no
//! write); it runs the liveness probe and answers reads (`dvipa dump`, `diff`). When the
//! replica becomes the leader the session is dropped and the driver connects at once with
//! the leader's election id (`run`); a step-down comes back here.

use super::*;
use crate::ha_state::HaState;

/// Why a follower answers commands that need a primary.
const FOLLOWER: &str = "follower (HA): the leader writes";

/// Why a follower without its backup session (connecting, or lost) answers nothing.
const FOLLOWER_UNCONNECTED: &str =
    "follower (HA) with no backup session to this switch now (reads need one; the leader writes)";

/// The low 64 bits of a follower's election id: FNV-1a of the replica name, at least 2
/// (0 would be no id; 1 is left to observers such as `dvipa` test sessions).
pub fn backup_low(replica: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in replica.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.max(2)
}

/// The shell gauge (in `dvipa counters`): 1 while this replica holds a backup session to
/// `switch` (`netstat vipadyn` on a follower shows SWITCHSTATE `BACKUP-SESSION` then).
pub fn held_key(switch: &str) -> String {
    format!("switch_backup_session_{switch}")
}

impl Driver {
    /// Holds a backup session while this replica follows. True when the caller should look
    /// at the role again (leader now, or the session ended); false on shutdown.
    pub(super) async fn follow(
        &mut self,
        ha: &mut watch::Receiver<HaState>,
        rx: &mut mpsc::UnboundedReceiver<SwitchCmd>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let low = backup_low(&ha.borrow().replica);
        let cc = match self.client_config(crate::ha::election_id(0, low)) {
            Ok(cc) => cc,
            Err(e) => {
                self.count("tls_files_failed");
                tracing::debug!(switch = %self.cfg.name, error = %e, "backup session: TLS files unusable");
                return self.follower_pause(ha, rx, shutdown).await;
            }
        };
        let connect = Session::connect(cc);
        tokio::pin!(connect);
        let session = loop {
            tokio::select! {
                r = &mut connect => match r {
                    Ok((s, _queues)) => break Arc::new(s),
                    Err(e) => {
                        self.count("backup_connect_failed");
                        tracing::debug!(switch = %self.cfg.name, error = %e, "backup session: connect failed");
                        return self.follower_pause(ha, rx, shutdown).await;
                    }
                },
                _ = shutdown.changed() => return false,
                r = ha.changed() => {
                    if r.is_err() || ha.borrow().is_leader() {
                        return true;
                    }
                }
                c = rx.recv() => match c {
                    Some(c) => self.unreachable(c, FOLLOWER_UNCONNECTED),
                    None => return false,
                },
            }
        };
        self.count("backup_sessions");
        metrics::gauge!("dvipa_switch_backup_session", "switch" => self.cfg.name.clone()).set(1.0);
        self.shared.stats.set(&held_key(&self.cfg.name), 1);
        tracing::info!(switch = %self.cfg.name, election_low = low, "backup session (HA follower: reads only)");
        let r = self.backup_loop(&session, ha, rx, shutdown).await;
        metrics::gauge!("dvipa_switch_backup_session", "switch" => self.cfg.name.clone()).set(0.0);
        self.shared.stats.set(&held_key(&self.cfg.name), 0);
        match r {
            Some(r) => r,
            None => self.follower_pause(ha, rx, shutdown).await,
        }
    }

    /// Serves reads on the backup session. `None` when the session ended.
    async fn backup_loop(
        &mut self,
        session: &Arc<Session>,
        ha: &mut watch::Receiver<HaState>,
        rx: &mut mpsc::UnboundedReceiver<SwitchCmd>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<bool> {
        let mut probe = Probe::start(session.clone(), self.cfg.probe, self.cfg.liveness);
        let mut mastership = session.watch_mastership();
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Some(false),
                r = ha.changed() => {
                    if r.is_err() || ha.borrow().is_leader() {
                        self.count("backup_promoted");
                        return Some(true);
                    }
                }
                _ = &mut probe.0 => {
                    self.count("backup_session_lost");
                    return None;
                }
                ch = mastership.changed() => {
                    if ch.is_err() || *mastership.borrow_and_update() == Mastership::Disconnected {
                        self.count("backup_session_lost");
                        return None;
                    }
                }
                c = rx.recv() => {
                    let r = match c {
                        None => return Some(false),
                        Some(SwitchCmd::Dump { table, reply }) => {
                            probe.or_dead(async { let _ = reply.send(self.dump(session, &table).await); }).await
                        }
                        Some(SwitchCmd::Snapshot { reply }) => {
                            probe.or_dead(async {
                                let r = self.read_tables(session).await.map(|(e, bad)| (e.into_iter().collect(), bad));
                                let _ = reply.send(r);
                            }).await
                        }
                        Some(c) => {
                            // Never a Write: the leader writes.
                            self.unreachable(c, FOLLOWER);
                            Ok(())
                        }
                    };
                    if r.is_err() {
                        self.count("backup_session_lost");
                        return None;
                    }
                }
            }
        }
    }

    /// Waits one retry period without a session; true early when this replica leads.
    async fn follower_pause(
        &mut self,
        ha: &mut watch::Receiver<HaState>,
        rx: &mut mpsc::UnboundedReceiver<SwitchCmd>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> bool {
        let end = tokio::time::Instant::now() + retry_cap(self.cfg.liveness);
        while tokio::time::Instant::now() < end {
            if ha.borrow().is_leader() {
                return true;
            }
            let until = tokio::time::Instant::now() + Duration::from_millis(20);
            if !self
                .wait_unconnected(until, rx, shutdown, FOLLOWER_UNCONNECTED)
                .await
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_id_is_below_every_leader_and_unique_per_replica() {
        let a = crate::ha::election_id(0, backup_low("ctl-a"));
        let b = crate::ha::election_id(0, backup_low("ctl-b"));
        assert_ne!(a, b);
        assert!(a < crate::ha::election_id(1, 0) && b < crate::ha::election_id(1, 0));
        assert!(backup_low("") >= 2);
    }
}
