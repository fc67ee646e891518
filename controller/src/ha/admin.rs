//! `[ha]` in the admin API: mutating commands only on the leader, reports that say whose view
//! they are, and the `ha` rows of `dvipa counters`.

use crate::error::ApiError;
use crate::shared::Shared;
use dvipa_proto::v1 as pb;
use tonic::Status;

/// Refuses a mutating command on a follower, naming the leader and its admin address.
pub fn leader_only(shared: &Shared) -> Result<(), Status> {
    match shared.ha() {
        Some(h) if !h.now().is_leader() => {
            shared.stats.add("ha_admin_refused_follower", 1);
            Err(ApiError::Refused(format!(
                "{}: mutating commands are the leader's; send it there",
                h.now().describe()
            ))
            .into())
        }
        _ => Ok(()),
    }
}

/// After a successful mutating command: the owners and marks go to etcd before the reply, so
/// they survive a leader change.
pub async fn persist_after(shared: &Shared, ok: bool) {
    if ok && let Some(h) = shared.ha() {
        h.persist_now(shared).await;
    }
}

/// `netstat vipadyn`: whose view and how old.
pub fn title(mut t: pb::AdminTable, shared: &Shared) -> pb::AdminTable {
    if let Some(h) = shared.ha() {
        t.title = format!(
            "{} ({}; view age {} ms)",
            t.title,
            h.now().describe(),
            shared.view_age().as_millis()
        );
    }
    t
}

/// `dvipa counters`: rows `ha role|term|leader|elections|view_age_ms|step_down_<reason>` and
/// the replica in the title.
pub fn counter_rows(t: &mut pb::AdminTable, shared: &Shared) {
    let Some(h) = shared.ha() else { return };
    let s = h.now();
    let mut rows = vec![
        ("role".to_string(), s.role.as_str().to_string()),
        ("term".into(), s.term.to_string()),
        (
            "leader".into(),
            s.leader.clone().unwrap_or_else(|| "-".into()),
        ),
        ("elections".into(), s.elections.to_string()),
        (
            "view_age_ms".into(),
            shared.view_age().as_millis().to_string(),
        ),
    ];
    for (r, n) in &s.step_downs {
        rows.push((format!("step_down_{r}"), n.to_string()));
    }
    for (k, v) in rows {
        t.rows.push(pb::AdminRow {
            cells: vec!["ha".into(), k, v],
        });
    }
    t.title = format!("{} ({})", t.title, s.describe());
}
