//! `[advertise] mode = "bgp"`: DVIPAs announced through a GoBGP speaker (`gobgpd`) over its gRPC
//! API ([`BgpAdvertiser`]).
//!
//! - Each DVIPA is one prefix in GoBGP's local RIB per announcing switch (path identifier = the
//!   switch's place in `[[switch]]`, NEXT_HOP = `advertise.bgp.next_hop.<switch>`): the routing
//!   switch with MED 0 and, with `backups = true`, every other VIPABACKUP switch with MED
//!   `med_step × place` ([`paths::Plan::desired`]). GoBGP sends its best path (lowest MED), or
//!   every path to a peer with ADD-PATH, so a takeover is the primary's path leaving and a dead
//!   controller leaves the routes.
//! - A move is: add the new primary's path (MED 0), then delete the paths that are no longer
//!   wanted (the old primary); the core's following withdraw of the old switch finds nothing left.
//! - A DVIPA the core has not advertised or withdrawn since the controller started is left
//!   alone (a restarted controller does not withdraw live routes before its core decides).
//! - A reconcile task ([`BgpAdvertiser::reconcile`], every `reconcile_ms`) lists GoBGP's paths of
//!   the DVIPAs and its peers, re-adds what is missing (a gobgpd that restarted), deletes local
//!   paths nobody wants (a previous run), and keeps the BGP view ([`BgpStatus`]) that
//!   `dvipa netstat vipadyn`, `dvipa counters` and the metrics show: per peer its session state,
//!   per DVIPA the next hops GoBGP has sent (its ADJ-RIB-OUT toward established peers).

pub mod paths;

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use gobgp_api::apipb::{
    self, AddPathRequest, DeletePathRequest, ListPathRequest, ListPeerRequest, TableLookupPrefix,
    TableType, gobgp_api_client::GobgpApiClient,
};
use tonic::transport::{Channel, Endpoint};

use crate::advertise::{AdvCmd, AdvertiseError, Advertiser};
pub use crate::bgp_status::{BgpStatus, BgpView, PeerView};
use dvipa_core::config::{BgpCfg, Cluster};
use paths::{Plan, Prefix, Want};

/// Bound of one gRPC call to gobgpd.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// At most this many destinations / peers are read from one listing (a gobgpd with a full table
/// is not dvipa's business: dvipa asks for its own prefixes only).
const MAX_LISTED: usize = 4096;

/// Announces DVIPAs through gobgpd.
#[derive(Clone)]
pub struct BgpAdvertiser {
    inner: Arc<Inner>,
}

struct Inner {
    client: GobgpApiClient<Channel>,
    /// gobgpd's API address (for messages).
    addr: String,
    plan: Plan,
    /// DVIPA → the switch that routes it (the core's last advertise; `None` after its
    /// withdraw). A DVIPA the core has not spoken about yet (a controller that just restarted)
    /// is absent: its paths in GoBGP are left as they are, so a restart does not withdraw them.
    intent: parking_lot::Mutex<BTreeMap<Prefix, Option<String>>>,
    /// One change at a time (apply and reconcile).
    lock: tokio::sync::Mutex<()>,
    status: Arc<BgpStatus>,
    reconcile_every: Duration,
    /// Wakes the reconciler after a change, so the view follows within milliseconds.
    kick: tokio::sync::Notify,
}

impl std::fmt::Debug for BgpAdvertiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgpAdvertiser").finish_non_exhaustive()
    }
}

/// gobgpd refused or did not answer.
fn grpc_err(call: &'static str, e: impl std::fmt::Display) -> AdvertiseError {
    let msg = match e.to_string() {
        m if m.contains("tcp connect error") => "not reachable (connection refused)".into(),
        m => m,
    };
    AdvertiseError::Bgp {
        call,
        addr: String::new(),
        msg,
    }
}

impl BgpAdvertiser {
    /// Builds the advertiser for `cluster` (its `[advertise.bgp]`); the gRPC channel connects
    /// lazily, so a gobgpd that starts later is picked up by the next call.
    pub fn new(cluster: &Cluster, cfg: &BgpCfg) -> anyhow::Result<BgpAdvertiser> {
        let uri = if cfg.gobgp.contains("://") {
            cfg.gobgp.clone()
        } else {
            format!("http://{}", cfg.gobgp)
        };
        let ch = Endpoint::from_shared(uri)
            .map_err(|e| anyhow::anyhow!("advertise.bgp.gobgp {:?}: {e}", cfg.gobgp))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        let switches = cluster
            .config
            .switches
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let nh = cfg.next_hop.get(&s.name)?;
                Some((s.name.clone(), (i as u32 + 1, *nh)))
            })
            .collect();
        let backups = cluster
            .vipas
            .iter()
            .map(|v| {
                (
                    (v.addr, v.prefix_len),
                    v.backups.iter().map(|b| b.switch.clone()).collect(),
                )
            })
            .collect();
        let plan = Plan {
            switches,
            backups,
            pre_announce: cfg.backups,
            med_step: cfg.med_step,
        };
        Ok(Self::with_plan(
            ch,
            &cfg.gobgp,
            plan,
            Duration::from_millis(cfg.reconcile_ms.max(1)),
        ))
    }

    /// An advertiser for gobgpd at `gobgp` (`host:port`) with an explicit plan (tests, tools).
    pub fn connect_lazy(
        gobgp: &str,
        plan: Plan,
        reconcile_every: Duration,
    ) -> anyhow::Result<BgpAdvertiser> {
        let ch = Endpoint::from_shared(format!("http://{gobgp}"))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        Ok(Self::with_plan(ch, gobgp, plan, reconcile_every))
    }

    fn with_plan(ch: Channel, addr: &str, plan: Plan, reconcile_every: Duration) -> BgpAdvertiser {
        let status = Arc::new(BgpStatus::default());
        *status.next_hops.lock() = plan
            .switches
            .iter()
            .map(|(n, x)| (n.clone(), x.1))
            .collect();
        BgpAdvertiser {
            inner: Arc::new(Inner {
                client: GobgpApiClient::new(ch),
                addr: addr.to_string(),
                plan,
                intent: Default::default(),
                lock: tokio::sync::Mutex::new(()),
                status,
                reconcile_every,
                kick: tokio::sync::Notify::new(),
            }),
        }
    }

    /// `e` with gobgpd's address filled in.
    fn named(&self, mut e: AdvertiseError) -> AdvertiseError {
        if let AdvertiseError::Bgp { addr, .. } = &mut e {
            addr.clone_from(&self.inner.addr);
        }
        e
    }

    /// The BGP view for the admin API.
    pub fn status(&self) -> Arc<BgpStatus> {
        self.inner.status.clone()
    }

    /// Reconciles every `reconcile_ms` until the returned task is dropped/aborted.
    pub fn spawn_reconciler(&self) -> tokio::task::JoinHandle<()> {
        let me = self.clone();
        tokio::spawn(async move {
            let mut t = tokio::time::interval(me.inner.reconcile_every);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = t.tick() => {}
                    _ = me.inner.kick.notified() => {}
                }
                if let Err(e) = me.reconcile().await {
                    tracing::warn!(error = %e, "BGP reconcile failed");
                }
            }
        })
    }

    async fn add(&self, prefix: Prefix, switch: &str, w: Want) -> Result<(), AdvertiseError> {
        let id = self.inner.plan.switches.get(switch).map_or(0, |x| x.0);
        let mut c = self.inner.client.clone();
        c.add_path(AddPathRequest {
            table_type: TableType::Global as i32,
            vrf_id: String::new(),
            path: Some(paths::path(prefix, id, w)),
        })
        .await
        .map_err(|e| grpc_err("AddPath", e))?;
        self.inner.status.counters.add("paths_added", 1);
        Ok(())
    }

    async fn delete(&self, prefix: Prefix, id: u32, w: Want) -> Result<(), AdvertiseError> {
        let mut c = self.inner.client.clone();
        c.delete_path(DeletePathRequest {
            table_type: TableType::Global as i32,
            vrf_id: String::new(),
            family: Some(paths::ipv4_unicast()),
            path: Some(paths::path(prefix, id, w)),
            uuid: Vec::new(),
        })
        .await
        .map_err(|e| grpc_err("DeletePath", e))?;
        self.inner.status.counters.add("paths_deleted", 1);
        Ok(())
    }

    /// The local paths GoBGP holds for the DVIPA prefixes (by prefix: identifier → (next hop,
    /// MED, best)).
    async fn list_local(
        &self,
        prefixes: &[Prefix],
    ) -> Result<BTreeMap<Prefix, BTreeMap<u32, (Ipv4Addr, u32)>>, AdvertiseError> {
        let mut out: BTreeMap<Prefix, BTreeMap<u32, (Ipv4Addr, u32)>> = BTreeMap::new();
        for s in self.list(TableType::Global, "", prefixes).await? {
            if let (true, Some(nh)) = (s.local, s.next_hop) {
                out.entry(s.prefix)
                    .or_default()
                    .insert(s.identifier, (nh, s.med.unwrap_or(0)));
            }
        }
        Ok(out)
    }

    async fn list(
        &self,
        table: TableType,
        name: &str,
        prefixes: &[Prefix],
    ) -> Result<Vec<paths::Seen>, AdvertiseError> {
        if prefixes.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.inner.client.clone();
        let mut stream = c
            .list_path(ListPathRequest {
                table_type: table as i32,
                name: name.into(),
                family: Some(paths::ipv4_unicast()),
                prefixes: prefixes
                    .iter()
                    .map(|(a, l)| TableLookupPrefix {
                        prefix: format!("{a}/{l}"),
                        r#type: apipb::table_lookup_prefix::Type::Exact as i32,
                    })
                    .collect(),
            })
            .await
            .map_err(|e| grpc_err("ListPath", e))?
            .into_inner();
        let mut out = Vec::new();
        let mut n = 0;
        while let Some(d) = tokio::time::timeout(CALL_TIMEOUT, stream.message())
            .await
            .map_err(|_| grpc_err("ListPath", "no answer within 3 s"))?
            .map_err(|e| grpc_err("ListPath", e))?
        {
            n += 1;
            if n > MAX_LISTED {
                return Err(grpc_err("ListPath", "more than 4096 destinations"));
            }
            for p in d.destination.iter().flat_map(|d| &d.paths) {
                match paths::seen(p) {
                    Some(s) => out.push(s),
                    None => self.inner.status.counters.add("paths_unreadable", 1),
                }
            }
        }
        Ok(out)
    }

    async fn peers(&self) -> Result<Vec<PeerView>, AdvertiseError> {
        let mut c = self.inner.client.clone();
        let mut stream = c
            .list_peer(ListPeerRequest::default())
            .await
            .map_err(|e| grpc_err("ListPeer", e))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(r) = tokio::time::timeout(CALL_TIMEOUT, stream.message())
            .await
            .map_err(|_| grpc_err("ListPeer", "no answer within 3 s"))?
            .map_err(|e| grpc_err("ListPeer", e))?
        {
            if out.len() >= MAX_LISTED {
                return Err(grpc_err("ListPeer", "more than 4096 peers"));
            }
            let Some(p) = r.peer else { continue };
            let (conf, st) = (p.conf.unwrap_or_default(), p.state.unwrap_or_default());
            let state = apipb::peer_state::SessionState::try_from(st.session_state)
                .map(|s| s.as_str_name().to_string())
                .unwrap_or_else(|_| format!("STATE{}", st.session_state));
            out.push(PeerView {
                address: if conf.neighbor_address.is_empty() {
                    st.neighbor_address
                } else {
                    conf.neighbor_address
                },
                asn: if conf.peer_asn != 0 {
                    conf.peer_asn
                } else {
                    st.peer_asn
                },
                state,
                flops: st.flops,
            });
        }
        Ok(out)
    }

    /// Makes GoBGP's local paths of `prefix` what the intent says, given what it holds.
    async fn converge(
        &self,
        prefix: Prefix,
        held: &BTreeMap<u32, (Ipv4Addr, u32)>,
    ) -> Result<u64, AdvertiseError> {
        let Some(primary) = self.inner.intent.lock().get(&prefix).cloned() else {
            return Ok(0);
        };
        let want = self.inner.plan.desired(prefix, primary.as_deref());
        let mut changes = 0;
        // New primary first (MED 0), then the rest: traffic never lacks a route.
        let mut order: Vec<_> = want.iter().collect();
        order.sort_by_key(|(_, w)| w.med);
        for (sw, w) in order {
            let id = self.inner.plan.switches[sw].0;
            if held.get(&id) != Some(&(w.next_hop, w.med)) {
                self.add(prefix, sw, *w).await?;
                changes += 1;
            }
        }
        for (&id, &(nh, med)) in held {
            let keep = self
                .inner
                .plan
                .switch_of_id(id)
                .is_some_and(|sw| want.contains_key(sw));
            if !keep {
                self.delete(prefix, id, Want { next_hop: nh, med }).await?;
                changes += 1;
            }
        }
        Ok(changes)
    }

    /// Compares GoBGP's RIB and peers with the intent, repairs the RIB, refreshes the view.
    pub async fn reconcile(&self) -> Result<(), AdvertiseError> {
        let _g = self.inner.lock.lock().await;
        let st = &self.inner.status;
        st.counters.add("reconciles", 1);
        let r = self.reconcile_locked().await.map_err(|e| self.named(e));
        let mut v = st.view.lock();
        match &r {
            Ok(()) => {
                v.reachable = true;
                v.last_error = None;
            }
            Err(e) => {
                v.reachable = false;
                v.last_error = Some(e.to_string());
                st.counters.add("errors", 1);
            }
        }
        metrics::gauge!("dvipa_bgp_gobgp_reachable").set(if v.reachable { 1.0 } else { 0.0 });
        r
    }

    async fn reconcile_locked(&self) -> Result<(), AdvertiseError> {
        let prefixes: Vec<Prefix> = self.inner.plan.backups.keys().copied().collect();
        let held = self.list_local(&prefixes).await?;
        let mut repairs = 0;
        for p in &prefixes {
            repairs += self
                .converge(*p, held.get(p).unwrap_or(&BTreeMap::new()))
                .await?;
        }
        if repairs > 0 {
            tracing::warn!(
                repairs,
                "BGP: GoBGP's RIB differed from the intent; repaired"
            );
            self.inner.status.counters.add("repairs", repairs);
            metrics::counter!("dvipa_bgp_repairs_total").increment(repairs);
        }
        let held = if repairs > 0 {
            self.list_local(&prefixes).await?
        } else {
            held
        };
        let peers = self.peers().await?;
        let mut sent: BTreeMap<Prefix, BTreeSet<Ipv4Addr>> = BTreeMap::new();
        for p in peers.iter().filter(|p| p.state == "ESTABLISHED") {
            for s in self.list(TableType::AdjOut, &p.address, &prefixes).await? {
                if let Some(nh) = s.next_hop {
                    sent.entry(s.prefix).or_default().insert(nh);
                }
            }
        }
        for p in &peers {
            metrics::gauge!("dvipa_bgp_peer_established", "peer" => p.address.clone())
                .set(if p.state == "ESTABLISHED" { 1.0 } else { 0.0 });
        }
        let rib: BTreeMap<Prefix, BTreeMap<String, u32>> = held
            .iter()
            .map(|(p, m)| {
                let by_sw = m
                    .iter()
                    .filter_map(|(id, (_, med))| {
                        Some((self.inner.plan.switch_of_id(*id)?.to_string(), *med))
                    })
                    .collect();
                (*p, by_sw)
            })
            .collect();
        metrics::gauge!("dvipa_bgp_dvipas_sent").set(sent.len() as f64);
        let mut v = self.inner.status.view.lock();
        v.peers = peers;
        v.rib = rib;
        v.sent = sent;
        Ok(())
    }

    async fn apply_one(&self, c: &AdvCmd) -> Result<(), AdvertiseError> {
        let prefix = (c.dvipa, c.prefix_len);
        if !self.inner.plan.switches.contains_key(&c.switch) {
            return Err(grpc_err(
                "AddPath",
                format!("switch {} has no advertise.bgp.next_hop", c.switch),
            ));
        }
        let _g = self.inner.lock.lock().await;
        {
            let mut intent = self.inner.intent.lock();
            let current = intent.get(&prefix).cloned().flatten();
            if c.advertise {
                intent.insert(prefix, Some(c.switch.clone()));
            } else if current.is_none() || current.as_deref() == Some(c.switch.as_str()) {
                intent.insert(prefix, None);
            } else {
                // The withdraw that follows a move: the move already deleted that path.
                return Ok(());
            }
        }
        let held = self.list_local(&[prefix]).await?;
        self.converge(prefix, held.get(&prefix).unwrap_or(&BTreeMap::new()))
            .await?;
        self.inner.kick.notify_one();
        Ok(())
    }
}

impl Advertiser for BgpAdvertiser {
    fn apply(&self, c: &AdvCmd) -> BoxFuture<'static, Result<(), AdvertiseError>> {
        let me = self.clone();
        let c = c.clone();
        Box::pin(async move { me.apply_one(&c).await.map_err(|e| me.named(e)) })
    }
}

/// ` — BGP: gobgpd up, peers 10.0.0.1 ESTABLISHED` for the `netstat vipadyn` title.
pub fn title_suffix(v: &BgpView) -> String {
    let peers: Vec<String> = v
        .peers
        .iter()
        .map(|p| format!("{} AS{} {}", p.address, p.asn, p.state))
        .collect();
    format!(
        " (BGP: gobgpd {}; peers: {})",
        if v.reachable { "up" } else { "unreachable" },
        if peers.is_empty() {
            "none".to_string()
        } else {
            peers.join(", ")
        }
    )
}

/// Keeps the reconciler of a [`BgpAdvertiser`] running; dropping it stops the reconciler.
#[derive(Debug)]
pub struct Attached(tokio::task::JoinHandle<()>);

impl Drop for Attached {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Shows `b`'s view in the controller's admin API and starts its reconciler.
pub fn attach(shared: &crate::shared::Shared, b: &BgpAdvertiser) -> Attached {
    *shared.bgp.lock() = Some(b.status());
    Attached(b.spawn_reconciler())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bgp_column_says_what_gobgpd_holds_and_sent() {
        let nh = |i| Ipv4Addr::new(10, 0, i, 2);
        let d = (Ipv4Addr::new(10, 9, 9, 9), 32);
        let st = BgpStatus::default();
        *st.next_hops.lock() = [("A", nh(1)), ("B", nh(2)), ("C", nh(3))]
            .into_iter()
            .map(|(n, h)| (n.to_string(), h))
            .collect();
        {
            let mut v = st.view.lock();
            v.reachable = true;
            v.rib.insert(
                d,
                [
                    ("A".to_string(), 0),
                    ("B".to_string(), 100),
                    ("C".to_string(), 200),
                ]
                .into_iter()
                .collect(),
            );
            v.sent.insert(d, [nh(1), nh(2)].into_iter().collect());
            v.peers.push(PeerView {
                address: "10.0.0.1".into(),
                asn: 65001,
                state: "ESTABLISHED".into(),
                flops: 2,
            });
        }
        assert_eq!(st.state_of(d, "A"), "SENT");
        assert_eq!(st.state_of(d, "B"), "SENT med=100");
        assert_eq!(st.state_of(d, "C"), "RIB med=200");
        assert_eq!(st.state_of((Ipv4Addr::new(10, 9, 9, 8), 32), "A"), "-");
        let c = st.counters();
        assert_eq!(c["peer_10.0.0.1_established"], 1);
        assert_eq!(c["peer_10.0.0.1_flops"], 2);
        assert_eq!(c["gobgp_reachable"], 1);
        assert_eq!(
            title_suffix(&st.view()),
            " (BGP: gobgpd up; peers: 10.0.0.1 AS65001 ESTABLISHED)"
        );
    }
}
