//! What the shell's [`Shared`](crate::shared::Shared) holds of controller HA (issue 17,
//! [`crate::ha`]): the election state ([`HaState`]) and the handle to it and to the etcd
//! store ([`HaHandle`]). A leaf module (no `crate::shared`), so the shell's state and the HA
//! tasks that use it do not import each other; the methods that need the shell
//! ([`HaHandle::persist_now`], [`EtcdStore`]'s reads and writes) are in [`crate::ha`].

use etcd_client::Client;
use parking_lot::Mutex;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The owners (DVIPA, switch, placed by an operator) and maintenance marks last written (or read).
pub(crate) type Snapshot = (Vec<(Ipv4Addr, String, bool)>, Vec<String>);

/// What the shell holds of the HA machinery ([`Shared::set_ha`](crate::shared::Shared::set_ha)).
#[derive(Debug, Clone)]
pub struct HaHandle {
    /// The gate: leader only once the stored state is applied (drivers connect then).
    pub state: watch::Receiver<HaState>,
    /// The owners / maintenance marks in etcd.
    pub store: Arc<EtcdStore>,
}

impl HaHandle {
    /// The current state.
    pub fn now(&self) -> HaState {
        self.state.borrow().clone()
    }
}

/// The owners and maintenance marks in etcd (its methods: [`crate::ha::store`]).
pub struct EtcdStore {
    /// Replaced on each promotion when `[ha.tls]` or a user is configured (rotated files).
    pub(crate) client: Mutex<Client>,
    pub(crate) prefix: String,
    pub(crate) timeout: Duration,
    /// What the leader last wrote (or read).
    pub(crate) last: Mutex<Option<Snapshot>>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// This replica's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not (or no longer) leader: reads only.
    Follower,
    /// Holds the election key on a lease renewed in time: may write.
    Leader,
}

impl Role {
    /// `leader` / `follower`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Leader => "leader",
        }
    }
}

/// What the election says now.
#[derive(Debug, Clone)]
pub struct HaState {
    /// This replica's name.
    pub replica: String,
    /// This replica's role.
    pub role: Role,
    /// The current leader's term (the create revision of its election key; 0 = none known).
    pub term: u64,
    /// The current leader's name and admin address (as it campaigned), when known.
    pub leader: Option<String>,
    /// The leader's admin address, when it published one.
    pub leader_admin: Option<String>,
    /// When the role last changed.
    pub since: Instant,
    /// Times this replica became leader.
    pub elections: u64,
    /// Step-downs by reason.
    pub step_downs: std::collections::BTreeMap<&'static str, u64>,
    /// This replica's election key while it leads (etcd writes are fenced on it).
    pub key: Option<Vec<u8>>,
    /// Why the last etcd session failed (`reason` of `dvipa_ha_etcd_errors_total`, the error
    /// naming the cause, e.g. etcd's certificate not trusted); cleared when elected.
    pub etcd_error: Option<(&'static str, String)>,
}

impl HaState {
    /// A follower that knows no leader yet.
    pub fn new(replica: &str) -> HaState {
        HaState {
            replica: replica.to_string(),
            role: Role::Follower,
            term: 0,
            leader: None,
            leader_admin: None,
            since: Instant::now(),
            elections: 0,
            step_downs: Default::default(),
            key: None,
            etcd_error: None,
        }
    }

    /// Whether this replica may write.
    pub fn is_leader(&self) -> bool {
        self.role == Role::Leader
    }

    /// One line for admin answers: `replica ctl-b: follower, term 42, leader ctl-a (10.0.0.1:7444)`.
    pub fn describe(&self) -> String {
        let leader = match (&self.leader, &self.leader_admin) {
            (Some(l), Some(a)) => format!("{l} (admin {a})"),
            (Some(l), None) => l.clone(),
            (None, _) => "unknown".into(),
        };
        format!(
            "replica {}: {}, term {}, leader {leader}",
            self.replica,
            self.role.as_str(),
            self.term
        )
    }
}
