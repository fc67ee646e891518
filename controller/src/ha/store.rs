//! The shared state in etcd (instead of `<state_dir>/owners.toml`): under the cluster prefix
//! (the election key's parent, e.g. `/dvipa/prod/`)
//!
//! - `owners`: the routing switch of each DVIPA and whether an operator placed it there, in
//!   the `owners.toml` format ([`OwnerState`]);
//! - `maintenance`: the switches marked down for maintenance, one name per line.
//!
//! Only the leader writes, and each write is a transaction that holds only while the
//! leader's election key still has the create revision of its term, so a deposed leader
//! cannot overwrite its successor's state. A new leader reads both keys and applies them
//! before its drivers connect ([`apply`]). The CRT is never stored here: it is rebuilt from
//! switch reads and agent reports, as after a restart.

use super::HaState;
pub use crate::ha_state::EtcdStore;
use crate::shared::Shared;
use dvipa_core::config::OwnerState;
use dvipa_core::core::Event;
use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
use parking_lot::Mutex;
use std::net::Ipv4Addr;
use std::time::Duration;

/// Largest value read back from etcd (a peer-controlled size).
pub const MAX_VALUE: usize = 4 << 20;

/// State read from etcd.
#[derive(Debug, Default)]
pub struct Stored {
    /// The owners (`None`: never written).
    pub owners: Option<OwnerState>,
    /// Switches marked down for maintenance.
    pub maintenance: Vec<String>,
}

/// Why the stored state could not be read.
#[derive(Debug)]
pub enum LoadError {
    /// etcd did not answer (in time): worth asking again.
    Unreachable(String),
    /// etcd answered with something that is not a stored state: asking again does not help.
    Invalid(String),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Unreachable(m) | LoadError::Invalid(m) => f.write_str(m),
        }
    }
}

impl EtcdStore {
    /// A store under `prefix` (ends with `/`).
    pub fn new(client: Client, prefix: &str, timeout: Duration) -> EtcdStore {
        EtcdStore {
            client: Mutex::new(client),
            prefix: prefix.to_string(),
            timeout,
            last: Mutex::new(None),
        }
    }

    /// Uses `client` from now on (a new connection with the current TLS files and password).
    pub fn set_client(&self, client: Client) {
        *self.client.lock() = client;
    }

    /// The owners key.
    pub fn owners_key(&self) -> String {
        format!("{}owners", self.prefix)
    }

    /// The maintenance key.
    pub fn maintenance_key(&self) -> String {
        format!("{}maintenance", self.prefix)
    }

    async fn get(&self, key: &str) -> Result<Option<String>, LoadError> {
        let mut c = self.client.lock().clone();
        let r = tokio::time::timeout(self.timeout, c.get(key, None))
            .await
            .map_err(|_| LoadError::Unreachable(format!("etcd get {key}: timed out")))?
            .map_err(|e| LoadError::Unreachable(format!("etcd get {key}: {e}")))?;
        match r.kvs().first() {
            None => Ok(None),
            Some(kv) if kv.value().len() > MAX_VALUE => Err(LoadError::Invalid(format!(
                "etcd {key}: {} bytes, more than {MAX_VALUE}",
                kv.value().len()
            ))),
            Some(kv) => Ok(Some(
                std::str::from_utf8(kv.value())
                    .map_err(|e| LoadError::Invalid(format!("etcd {key}: not UTF-8: {e}")))?
                    .to_string(),
            )),
        }
    }

    /// Reads the owners and maintenance marks.
    pub async fn load(&self) -> Result<Stored, LoadError> {
        let owners = match self.get(&self.owners_key()).await? {
            Some(t) => Some(
                OwnerState::parse(&format!("etcd:{}", self.owners_key()), &t)
                    .map_err(|e| LoadError::Invalid(e.to_string()))?,
            ),
            None => None,
        };
        let maintenance = self
            .get(&self.maintenance_key())
            .await?
            .map(|t| {
                t.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        Ok(Stored {
            owners,
            maintenance,
        })
    }

    /// Writes the core's ownership and the maintenance marks when they changed, if `ha` is
    /// still the leader of its term (the transaction compares the election key). Ok(true)
    /// when written.
    pub async fn persist(&self, shared: &Shared, ha: &HaState) -> Result<bool, String> {
        let (Some(key), true) = (&ha.key, ha.is_leader()) else {
            return Ok(false);
        };
        let own = shared.with_core(|c| c.ownership());
        let maint: Vec<String> = shared
            .switch_names()
            .into_iter()
            .filter(|s| shared.in_maintenance(s))
            .collect();
        let snap = (own, maint);
        if self.last.lock().as_ref() == Some(&snap) {
            return Ok(false);
        }
        let owners = OwnerState::from_ownership(&snap.0).to_toml();
        let maintenance = snap.1.join("\n");
        let txn = Txn::new()
            .when([Compare::create_revision(
                key.clone(),
                CompareOp::Equal,
                ha.term as i64,
            )])
            .and_then([
                TxnOp::put(self.owners_key(), owners, None),
                TxnOp::put(self.maintenance_key(), maintenance, None),
            ]);
        let mut c = self.client.lock().clone();
        let r = tokio::time::timeout(self.timeout, c.txn(txn))
            .await
            .map_err(|_| "etcd txn: timed out".to_string())?
            .map_err(|e| format!("etcd txn: {e}"))?;
        if !r.succeeded() {
            return Err(format!(
                "not written: the election key of term {} is gone (another leader)",
                ha.term
            ));
        }
        *self.last.lock() = Some(snap);
        Ok(true)
    }

    /// Forgets what was last written (a new term writes everything again).
    pub fn forget(&self) {
        *self.last.lock() = None;
    }
}

/// Applies the stored state to a replica that just became leader, before its drivers
/// connect: maintenance marks, then every DVIPA an operator placed is restored to that switch
/// (`Core::restore_owner`). Returns the DVIPAs restored (for [`settle`]).
pub fn apply(shared: &Shared, st: &Stored) -> Vec<(Ipv4Addr, String)> {
    for sw in shared.switch_names() {
        let on = st.maintenance.contains(&sw);
        if shared.in_maintenance(&sw) != on {
            shared.set_maintenance(&sw, on);
        }
    }
    let mut pinned = Vec::new();
    if let Some(o) = &st.owners {
        for d in o.dvipas.iter().filter(|d| d.admin_pinned) {
            match shared.with_core_mut(|c| c.restore_owner(d.addr, &d.owner, true)) {
                Ok(()) => {
                    tracing::info!(dvipa = %d.addr, owner = %d.owner, "operator move from etcd restored");
                    pinned.push((d.addr, d.owner.clone()));
                }
                Err(e) => {
                    shared.stats.add("ha_owner_not_restored", 1);
                    tracing::warn!(error = %e, "operator move from etcd not restored");
                }
            }
        }
    }
    pinned
}

/// After the drivers connected: a restored DVIPA that the core moved elsewhere meanwhile
/// (its switch came up after another one of its chain) is moved back by an operator move as
/// soon as its switch is up; gives up after `within`.
pub async fn settle(shared: &Shared, pinned: Vec<(Ipv4Addr, String)>, within: Duration) {
    use dvipa_core::core::SwitchLiveness;
    let t0 = std::time::Instant::now();
    let mut left = pinned;
    while !left.is_empty() && t0.elapsed() < within {
        left.retain(|(dvipa, owner)| {
            let (now, live) = shared.with_core(|c| {
                (c.owner(*dvipa).map(str::to_string), c.liveness(owner))
            });
            let up = live == Some(SwitchLiveness::Up);
            // Settled only once the owner is up and routing: while the switches are still
            // coming up, another one that comes up first can take the DVIPA over.
            if now.as_deref() == Some(owner.as_str()) {
                return !up;
            }
            if up {
                tracing::info!(dvipa = %dvipa, owner = %owner, "operator move from etcd applied again");
                shared.stats.add("ha_owner_moved_back", 1);
                shared.event(Event::AdminMove {
                    dvipa: *dvipa,
                    to: owner.clone(),
                });
            }
            true
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
