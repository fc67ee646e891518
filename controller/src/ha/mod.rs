//! Controller high availability on etcd (issue 17, docs/ha.md).
//!
//! With `[ha]`, every `dvipa controller` replica campaigns for the election key through etcd's
//! election API ([`election`]) on a lease it keeps alive; exactly one is leader. The replica's
//! [`HaState`] (role, term, leader) is published on a watch channel that the shell reads:
//!
//! - the switch drivers connect only while this replica leads, with the P4Runtime election id
//!   `(term << 64) | election_id` ([`election_id`]), so a new leader (a higher term: the
//!   create revision of its election key) always out-ranks every earlier one and the switches
//!   demote a deposed leader by arbitration;
//! - the advertiser, switch writes and mutating admin commands are the leader's only;
//! - the owners, operator moves and maintenance marks live in etcd ([`store`]), and a new
//!   leader applies them before its drivers connect.
//!
//! Without `[ha]` none of this runs and the controller behaves as before.

pub mod admin;
pub mod election;
pub mod store;

pub use crate::ha_state::{HaHandle, HaState, Role};
use crate::shared::Shared;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

impl HaHandle {
    /// Writes the owners and marks now (after an operator command); failures are logged and
    /// counted, and the periodic persistence retries.
    pub async fn persist_now(&self, shared: &Shared) {
        let st = self.now();
        persist_logged(&self.store, shared, &st).await;
    }
}

/// [`store::EtcdStore::persist`], logged and counted.
pub async fn persist_logged(store: &store::EtcdStore, shared: &Shared, st: &HaState) {
    match store.persist(shared, st).await {
        Ok(true) => {
            shared.stats.add("ha_state_written", 1);
            tracing::info!(
                term = st.term,
                "DVIPA owners and maintenance marks written to etcd"
            );
        }
        Ok(false) => {}
        Err(e) => {
            shared.stats.add("ha_state_write_failed", 1);
            match p4rt::ratelimit::check("cannot write the HA state to etcd") {
                Some(suppressed) => {
                    tracing::warn!(error = %e, suppressed, "cannot write the HA state to etcd")
                }
                None => tracing::debug!(error = %e, "cannot write the HA state to etcd"),
            }
        }
    }
}

/// Starts the campaign, the gate, and the leader's periodic persistence (tasks pushed to
/// `tasks`, all ending on `shutdown`), and hands the gate to `shared`.
pub async fn start(
    cfg: dvipa_core::config::HaCfg,
    admin: Option<String>,
    shared: &Arc<Shared>,
    shutdown: &watch::Receiver<bool>,
    tasks: &mut Vec<(&'static str, tokio::task::JoinHandle<()>)>,
) -> Result<(), crate::error::StartError> {
    let lease = Duration::from_millis(cfg.lease_ms);
    let settle_within = shared.with_core(|c| {
        let t = c.cluster().config.timers;
        Duration::from_millis(t.liveness_ms.saturating_mul(2) + t.lease_ms + 2000)
    });
    // Lazy: connecting does not need etcd up (the campaign retries until it is); with a user,
    // the gate reconnects the store with it when this replica is elected.
    let client = election::connect_lazy(&cfg).await.map_err(|e| {
        crate::error::StartError::Ha(format!("etcd client for {:?}: {e}", cfg.etcd))
    })?;
    let store = Arc::new(store::EtcdStore::new(client, &cfg.prefix(), lease / 4));
    let (raw_tx, raw_rx) = watch::channel(HaState::new(&cfg.replica));
    let (gate_tx, gate_rx) = watch::channel(HaState::new(&cfg.replica));
    shared.set_ha(HaHandle {
        state: gate_rx.clone(),
        store: store.clone(),
    });
    let admin = cfg.advertise_admin.clone().or(admin);
    tracing::info!(replica = %cfg.replica, etcd = ?cfg.etcd, election = %cfg.election, lease_ms = cfg.lease_ms, "HA: campaigning");
    metrics::gauge!("dvipa_ha_leader").set(0.0);
    metrics::gauge!("dvipa_ha_term").set(0.0);
    metrics::counter!("dvipa_ha_elections_total").increment(0);
    let mut sd = shutdown.clone();
    let gate_cfg = cfg.clone();
    // The campaign resigns on shutdown itself: not raced against it.
    tasks.push((
        "ha campaign",
        tokio::spawn(election::run(cfg, admin, raw_tx, shutdown.clone())),
    ));
    let (st, sh) = (store.clone(), shared.clone());
    tasks.push((
        "ha gate",
        tokio::spawn(async move {
            tokio::select! {
                _ = gate(raw_rx, gate_tx, st, sh, lease / 4, settle_within, gate_cfg) => {}
                _ = sd.changed() => {}
            }
        }),
    ));
    let (sh, mut sd, mut rx) = (shared.clone(), shutdown.clone(), gate_rx);
    let mut changes = shared.owners_changes();
    tasks.push((
        "ha persistence",
        tokio::spawn(async move {
            // On every ownership change the core reports and on every change of role; while
            // leader, a write that did not land is retried every PERSIST_RETRY (the store only
            // writes what differs from what it last wrote).
            loop {
                let st = rx.borrow_and_update().clone();
                if st.is_leader() {
                    persist_logged(&store, &sh, &st).await;
                }
                tokio::select! {
                    _ = changes.changed() => {}
                    _ = rx.changed() => {}
                    _ = tokio::time::sleep(crate::owners::PERSIST_RETRY), if st.is_leader() => {}
                    _ = sd.changed() => return,
                }
            }
        }),
    ));
    Ok(())
}

/// Forwards the election's states to the gate: a step-down at once, a new term only after
/// the state stored in etcd is applied to the core (so the drivers connect with it).
pub async fn gate(
    mut raw: watch::Receiver<HaState>,
    gate: watch::Sender<HaState>,
    store: Arc<store::EtcdStore>,
    shared: Arc<Shared>,
    timeout: Duration,
    settle_within: Duration,
    cfg: dvipa_core::config::HaCfg,
) {
    loop {
        let st = raw.borrow_and_update().clone();
        let promoted =
            st.is_leader() && !(gate.borrow().is_leader() && gate.borrow().term == st.term);
        let mut restored = Vec::new();
        if promoted {
            if cfg.tls.is_some() || cfg.username.is_some() {
                // The store connects as the election did: with the files as they are now
                // (rotated certificates, a changed password).
                match tokio::time::timeout(timeout, election::connect(&cfg)).await {
                    Ok(Ok(c)) => store.set_client(c),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "leader: cannot reconnect the store to etcd; keeping its connection")
                    }
                    Err(_) => tracing::warn!(
                        "leader: reconnecting the store to etcd timed out; keeping its connection"
                    ),
                }
            }
            store.forget();
            let t0 = Instant::now();
            // The gate stays shut (no primary session, no write, no advertisement) until the
            // stored owners are read: a slow etcd (a loaded host) must not make a new leader
            // act on its local view and forget an operator's move. Asked again while this
            // replica still leads this term; if etcd stays away the lease ends the term.
            let mut tries = 0u32;
            let loaded = loop {
                tries += 1;
                match tokio::time::timeout(timeout, store.load()).await {
                    Ok(Ok(stored)) => break Some(Ok(stored)),
                    Ok(Err(store::LoadError::Invalid(e))) => break Some(Err(e)),
                    Ok(Err(store::LoadError::Unreachable(e))) => {
                        shared.stats.add("ha_state_load_retried", 1);
                        if tries == 4 {
                            tracing::warn!(error = %e, "leader: the stored state cannot be read yet; not acting before it is");
                        }
                    }
                    Err(_) => {
                        shared.stats.add("ha_state_load_retried", 1);
                        if tries == 4 {
                            tracing::warn!(
                                "leader: reading the stored state timed out; not acting before it is read"
                            );
                        }
                    }
                }
                let now = raw.borrow();
                if !(now.is_leader() && now.term == st.term) {
                    break None;
                }
            };
            match loaded {
                Some(Ok(stored)) => {
                    restored = store::apply(&shared, &stored);
                    tracing::info!(term = st.term, restored = restored.len(), tries, took = ?t0.elapsed(), "leader: stored owners and maintenance marks applied");
                }
                Some(Err(e)) => {
                    shared.stats.add("ha_state_load_failed", 1);
                    tracing::warn!(error = %e, "leader: the stored state is unreadable; continuing with the local view");
                }
                None => {
                    tracing::info!(
                        term = st.term,
                        "leader: the term ended before the stored state was read"
                    );
                    continue;
                }
            }
            // Before the drivers connect (the gate opens next), and after the stored state is
            // in, so the switches' start-up hold runs from here: their first reads adopt what
            // another leader pinned, as after a controller restart.
            shared.with_core_mut(|c| c.restart_as_leader(shared.now()));
        }
        gate.send_replace(st);
        if !restored.is_empty() {
            let sh = shared.clone();
            tokio::spawn(async move { store::settle(&sh, restored, settle_within).await });
        }
        if raw.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves when the replica is no longer the leader of `term` (never without HA).
pub async fn lost(rx: Option<watch::Receiver<HaState>>, term: u64) {
    let Some(mut rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        {
            let s = rx.borrow_and_update();
            if !s.is_leader() || s.term != term {
                return;
            }
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The P4Runtime election id of a leader of `term` whose switch config says `base`: the term
/// in the high 64 bits, so every later leader out-ranks every earlier one whatever `base`
/// (and its `election_id_range` raises) are.
pub fn election_id(term: u64, base: u64) -> u128 {
    (u128::from(term) << 64) | u128::from(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_later_term_always_out_ranks_an_earlier_one() {
        assert!(election_id(8, 1) > election_id(7, u64::MAX));
        assert_eq!(election_id(0, 5), 5);
        assert_eq!(election_id(1, 0), 1u128 << 64);
    }
}
