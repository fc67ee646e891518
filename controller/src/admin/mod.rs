//! The admin API (`dvipa.v1.Admin`, `proto/dvipa/v1/admin.proto`): NETSTAT-style reports
//! built from the core's state, table dumps and diffs read from the switch itself, reconcile,
//! maintenance, move and counters. Every report is a titled table of strings.
//!
//! The endpoint ([`spawn`]) runs plaintext on a loopback address by default; with `[admin.tls]`
//! it requires mutual TLS — a client certificate from the admin CA whose name is in
//! `admin.tls.allow` — and a non-loopback address without TLS is refused unless
//! `admin.allow_insecure_remote` forces it. Refused clients are logged and counted
//! (`dvipa_admin_refused_total{reason}`: `no_cert`, `bad_cert`, `other` for refused handshakes,
//! `not_allowed` for a verified certificate outside the allow-list; `dvipa counters`, layer
//! `admin`). The admin certificate, key and CA follow their files (re-read every 5 s and on
//! SIGHUP; see `dvipa_tls::reload`), so a rotation needs no restart.
//!
//! The reports themselves (`netstat` tables, `counters`) are in [`reports`].

use crate::error::{ApiError, StartError};
use crate::shared::Shared;
use crate::switch::SwitchCmd;
use dvipa_core::core::MoveError;
use dvipa_core::entries::Key;
use dvipa_proto::v1 as pb;
use dvipa_proto::v1::admin_server::{Admin, AdminServer};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

pub mod reports;
use crate::translate::{key_text, value_text};
use reports::table;
pub use reports::{counters, vcrt, vdpt, vipadcfg, vipadyn};

/// Metric of refused admin clients, labelled `reason`.
pub const REFUSED_METRIC: &str = "dvipa_admin_refused_total";

/// How the admin endpoint is protected (`[admin]` of the TOML, files already read).
#[derive(Debug, Clone, Default)]
pub struct AdminSecurity {
    /// Mutual TLS: the controller's admin certificate + the CA of admin certificates, and the
    /// names allowed in.
    pub tls: Option<(dvipa_tls::PemBundle, Vec<String>)>,
    /// Serve plaintext on a non-loopback address anyway.
    pub allow_insecure_remote: bool,
}

impl AdminSecurity {
    /// Reads `[admin.tls]`'s files (relative to `base`, the TOML file's directory).
    pub fn load(cfg: &dvipa_core::config::AdminCfg, base: &Path) -> Result<Self, StartError> {
        let rel = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let tls = match &cfg.tls {
            Some(t) => Some((
                dvipa_tls::PemBundle::load(&dvipa_tls::PemPaths {
                    ca: rel(&t.ca),
                    cert: rel(&t.cert),
                    key: rel(&t.key),
                })?,
                t.allow.clone(),
            )),
            None => None,
        };
        Ok(AdminSecurity {
            tls,
            allow_insecure_remote: cfg.allow_insecure_remote,
        })
    }
}

/// Refuses a plaintext admin listener on a non-loopback address unless forced (the error
/// names `admin.listen`); returns the listener's address.
pub fn check_exposure(
    listener: &tokio::net::TcpListener,
    sec: &AdminSecurity,
) -> Result<std::net::SocketAddr, StartError> {
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: ([0, 0, 0, 0], 0).into(),
        source,
    })?;
    let cfg = dvipa_core::config::AdminCfg {
        listen: Some(addr),
        allow_insecure_remote: sec.allow_insecure_remote || sec.tls.is_some(),
        ..Default::default()
    };
    match dvipa_core::config::Config::admin_exposure(&cfg, addr) {
        Some(msg) => Err(StartError::Listen {
            addr,
            source: std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("admin.listen: {msg}"),
            ),
        }),
        None => Ok(addr),
    }
}

/// Serves the admin API on `listener` until `shutdown` changes: mutual TLS with the allow-list
/// when `sec.tls` is set, plaintext otherwise — refused (`StartError::Listen`, naming
/// `admin.listen`) on a non-loopback address unless `sec.allow_insecure_remote`.
pub fn spawn(
    svc: AdminService,
    listener: tokio::net::TcpListener,
    sec: &AdminSecurity,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<(&'static str, tokio::task::JoinHandle<()>), StartError> {
    let addr = check_exposure(&listener, sec)?;
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    let shared = svc.shared.clone();
    match &sec.tls {
        None => {
            if !addr.ip().is_loopback() {
                tracing::warn!(
                    %addr,
                    "!!! the admin API listens on a non-loopback address WITHOUT TLS \
                     (admin.allow_insecure_remote): anyone who reaches it can move DVIPAs and \
                     take switches down !!!"
                );
            }
            // TCP_NODELAY: without it a small reply waits for the peer's delayed ACK (40 ms).
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let router = tonic::transport::Server::builder().add_service(AdminServer::new(svc));
            Ok((
                "admin endpoint",
                tokio::spawn(async move {
                    if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
                        tracing::error!(error = %e, "admin endpoint failed");
                    }
                }),
            ))
        }
        Some((bundle, allow)) => {
            let config = dvipa_tls::watched_server_config(bundle, "admin")?;
            let stats = svc
                .admin_tls
                .clone()
                .unwrap_or_else(|| Arc::new(admin_tls_stats()));
            let svc = AdminService {
                admin_tls: Some(stats.clone()),
                ..svc
            };
            let allow = allow.clone();
            let check = move |req: Request<()>| -> Result<Request<()>, Status> {
                let names = dvipa_tls::peer_names(&req);
                if dvipa_tls::allowed_name(&names, &allow).is_some() {
                    return Ok(req);
                }
                shared.stats.add("admin_refused_not_allowed", 1);
                metrics::counter!(REFUSED_METRIC, "reason" => "not_allowed").increment(1);
                let peer = req
                    .remote_addr()
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "?".into());
                match p4rt::ratelimit::check("admin request refused") {
                    Some(suppressed) => {
                        tracing::warn!(%peer, ?names, suppressed, "admin request refused: certificate not in admin.tls.allow")
                    }
                    None => {
                        tracing::debug!(%peer, ?names, "admin request refused: certificate not in admin.tls.allow")
                    }
                }
                Err(Status::permission_denied(format!(
                    "admin certificate {names:?} is not in admin.tls.allow"
                )))
            };
            let incoming = dvipa_tls::tls_incoming(listener, config, stats);
            let router = tonic::transport::Server::builder()
                .add_service(AdminServer::with_interceptor(svc, check));
            tracing::info!(%addr, "admin API: mutual TLS");
            Ok((
                "admin endpoint (TLS)",
                tokio::spawn(async move {
                    if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
                        tracing::error!(error = %e, "admin endpoint failed");
                    }
                }),
            ))
        }
    }
}

/// Handshake counters of the admin endpoint.
fn admin_tls_stats() -> dvipa_tls::TlsStats {
    dvipa_tls::TlsStats::new(dvipa_tls::StatsNames {
        endpoint: "admin",
        handshakes_metric: "dvipa_admin_tls_handshakes_total",
        refused_metric: Some(REFUSED_METRIC),
    })
}

/// How long an admin request waits for a switch.
pub const SWITCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The Admin service.
#[derive(Debug, Clone)]
pub struct AdminService {
    shared: Arc<Shared>,
    owners: Option<Arc<crate::owners::OwnerStore>>,
    admin_tls: Option<Arc<dvipa_tls::TlsStats>>,
}

impl AdminService {
    /// A service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        AdminService {
            shared,
            owners: None,
            admin_tls: None,
        }
    }

    /// Persist ownership to `store` after an operator move, before the reply.
    pub fn with_owner_store(mut self, store: Option<Arc<crate::owners::OwnerStore>>) -> Self {
        self.owners = store;
        self
    }

    fn known_switch(&self, s: &str) -> Result<(), ApiError> {
        if self.shared.switch_names().iter().any(|n| n == s) {
            Ok(())
        } else {
            Err(ApiError::UnknownSwitch(s.into()))
        }
    }

    async fn ask<T>(
        &self,
        switch: &str,
        make: impl FnOnce(oneshot::Sender<Result<T, String>>) -> SwitchCmd,
    ) -> Result<T, ApiError> {
        self.known_switch(switch)?;
        let unavailable = |detail: String| ApiError::SwitchUnavailable {
            switch: switch.into(),
            detail,
        };
        let (tx, rx) = oneshot::channel();
        if !self.shared.switch_cmd(switch, make(tx)) {
            return Err(unavailable("driver stopped".into()));
        }
        match tokio::time::timeout(SWITCH_TIMEOUT, rx).await {
            Err(_) => Err(unavailable("no answer within 10 s".into())),
            Ok(Err(_)) => Err(unavailable("driver dropped the request".into())),
            Ok(Ok(r)) => r.map_err(unavailable),
        }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn netstat(
        &self,
        req: Request<pb::NetstatRequest>,
    ) -> Result<Response<pb::AdminTable>, Status> {
        let r = req.into_inner().report.to_lowercase();
        let t = self.shared.with_core(|c| match r.as_str() {
            "vdpt" => Ok(vdpt(c)),
            "vcrt" => Ok(vcrt(c)),
            "vipadcfg" => Ok(vipadcfg(c)),
            "vipadyn" => Ok(crate::ha::admin::title(
                vipadyn(c, &self.shared),
                &self.shared,
            )),
            other => Err(ApiError::BadRequest(format!(
                "unknown report `{other}` (vdpt, vcrt, vipadcfg, vipadyn)"
            ))),
        })?;
        Ok(Response::new(t))
    }

    async fn table_dump(
        &self,
        req: Request<pb::TableDumpRequest>,
    ) -> Result<Response<pb::AdminTable>, Status> {
        let r = req.into_inner();
        let t = self
            .ask(&r.switch, |reply| SwitchCmd::Dump {
                table: r.table.clone(),
                reply,
            })
            .await?;
        Ok(Response::new(t))
    }

    async fn diff(
        &self,
        req: Request<pb::SwitchRequest>,
    ) -> Result<Response<pb::AdminTable>, Status> {
        let sw = req.into_inner().switch;
        let (actual, bad) = self.ask(&sw, |reply| SwitchCmd::Snapshot { reply }).await?;
        let desired = self
            .shared
            .with_core(|c| c.desired(&sw))
            .ok_or_else(|| ApiError::UnknownSwitch(sw.clone()))?;
        let keys: BTreeSet<&Key> = desired.keys().chain(actual.keys()).collect();
        let mut rows = Vec::new();
        for k in keys {
            let (d, a) = (desired.get(k), actual.get(k));
            if d != a {
                rows.push(vec![
                    dvipa_contract::table_name(k).into(),
                    key_text(k),
                    d.map(value_text).unwrap_or_else(|| "-".into()),
                    a.map(value_text).unwrap_or_else(|| "-".into()),
                ]);
            }
        }
        for b in bad {
            rows.push(vec!["?".into(), b, "-".into(), "(not understood)".into()]);
        }
        Ok(Response::new(table(
            format!(
                "Differences controller vs switch {sw} ({} entries)",
                rows.len()
            ),
            &["TABLE", "KEY", "CONTROLLER", "SWITCH"],
            rows,
        )))
    }

    async fn reconcile(
        &self,
        req: Request<pb::SwitchRequest>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let who = crate::audit::who(&req);
        let sw = req.into_inner().switch;
        let r = crate::ha::admin::leader_only(&self.shared).and_then(|()| self.reconcile_one(&sw));
        crate::audit::audit(
            &self.shared,
            &who,
            "reconcile",
            &format!("reconcile {sw}"),
            &r,
        );
        r
    }

    async fn maintenance(
        &self,
        req: Request<pb::MaintenanceRequest>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let who = crate::audit::who(&req);
        let r = req.into_inner();
        let what = format!("switch {} {}", if r.down { "down" } else { "up" }, r.switch);
        let res =
            crate::ha::admin::leader_only(&self.shared).and_then(|()| self.maintenance_one(r));
        crate::ha::admin::persist_after(&self.shared, res.is_ok()).await;
        crate::audit::audit(&self.shared, &who, "maintenance", &what, &res);
        res
    }

    async fn r#move(
        &self,
        req: Request<pb::MoveRequest>,
    ) -> Result<Response<pb::AdminReply>, Status> {
        let who = crate::audit::who(&req);
        let r = req.into_inner();
        let what = format!("move {} --to {}", Ipv4Addr::from(r.dvipa), r.to);
        let res = crate::ha::admin::leader_only(&self.shared).and_then(|()| self.move_one(r));
        crate::ha::admin::persist_after(&self.shared, res.is_ok()).await;
        crate::audit::audit(&self.shared, &who, "move", &what, &res);
        res
    }

    async fn counters(
        &self,
        _req: Request<pb::CountersRequest>,
    ) -> Result<Response<pb::AdminTable>, Status> {
        Ok(Response::new(self.counters_table()))
    }
}

/// The mutating commands (audited by their callers above) and the counters table.
impl AdminService {
    fn reconcile_one(&self, sw: &str) -> Result<Response<pb::AdminReply>, Status> {
        let sw = sw.to_string();
        self.known_switch(&sw)?;
        if !self.shared.switch_cmd(&sw, SwitchCmd::Resync) {
            return Err(ApiError::SwitchUnavailable {
                switch: sw,
                detail: "driver stopped".into(),
            }
            .into());
        }
        Ok(Response::new(pb::AdminReply {
            message: format!("re-reading {sw}; differences will be written"),
        }))
    }

    fn maintenance_one(
        &self,
        r: pb::MaintenanceRequest,
    ) -> Result<Response<pb::AdminReply>, Status> {
        self.known_switch(&r.switch)?;
        self.shared.set_maintenance(&r.switch, r.down);
        if let Some(st) = &self.owners {
            st.persist(&self.shared);
        }
        Ok(Response::new(pb::AdminReply {
            message: format!(
                "switch {} {}",
                r.switch,
                if r.down {
                    "marked down for maintenance"
                } else {
                    "back in service"
                }
            ),
        }))
    }

    fn move_one(&self, r: pb::MoveRequest) -> Result<Response<pb::AdminReply>, Status> {
        let dvipa = Ipv4Addr::from(r.dvipa);
        self.known_switch(&r.to)?;
        let moved = self.shared.admin_move(dvipa, &r.to);
        if let Some(st) = &self.owners {
            st.persist(&self.shared);
        }
        match moved {
            Ok(()) => Ok(Response::new(pb::AdminReply {
                message: format!("{dvipa} is routed by {}", r.to),
            })),
            Err(MoveError::UnknownDvipa(_)) => Err(ApiError::UnknownDvipa(dvipa).into()),
            Err(e) => {
                let owner = self
                    .shared
                    .with_core(|c| c.owner(dvipa).map(str::to_string));
                Err(ApiError::Refused(format!(
                    "{dvipa} was not moved to {} ({e}); it is routed by {}",
                    r.to,
                    owner.unwrap_or_else(|| "?".into())
                ))
                .into())
            }
        }
    }

    fn counters_table(&self) -> pb::AdminTable {
        let mut t = self.shared.with_core(|c| counters(c, &self.shared));
        crate::ha::admin::counter_rows(&mut t, &self.shared);
        if let Some(a) = &self.admin_tls {
            let a = a.snapshot();
            for (k, v) in [
                ("admin_handshakes_accepted", a.accepted),
                ("admin_refused_no_cert", a.refused_no_cert),
                ("admin_refused_bad_cert", a.refused_bad_cert),
                ("admin_refused_other", a.refused_other),
            ] {
                t.rows.push(pb::AdminRow {
                    cells: vec!["admin".into(), k.into(), v.to_string()],
                });
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dvipa_core::core::{Core, CoreOptions};

    fn figure4() -> Core {
        let l = crate::controller::load(std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/examples/figure4/dvipa.toml"
        )))
        .unwrap();
        Core::new(l.cluster, CoreOptions::default()).unwrap()
    }

    fn rows(t: &pb::AdminTable) -> Vec<Vec<&str>> {
        t.rows
            .iter()
            .map(|r| r.cells.iter().map(String::as_str).collect())
            .collect()
    }

    #[test]
    fn vipadcfg_of_the_design_example() {
        let t = vipadcfg(&figure4());
        assert_eq!(
            t.columns,
            [
                "DVIPA",
                "DEFINEDBY",
                "BACKUPS",
                "DISTBY",
                "PORTS",
                "DESTIP",
                "DISTMETHOD"
            ]
        );
        assert_eq!(
            rows(&t),
            [
                [
                    "203.0.113.10/24",
                    "MVS1",
                    "MVS5:10",
                    "MVS1",
                    "60",
                    "MVS1,MVS2,MVS4",
                    "ROUNDROBIN"
                ],
                [
                    "203.0.113.10/24",
                    "MVS1",
                    "MVS5:10",
                    "MVS5",
                    "60",
                    "MVS2,MVS3,MVS4",
                    "ROUNDROBIN"
                ],
                [
                    "203.0.113.20/24",
                    "MVS5",
                    "MVS1:30",
                    "MVS5",
                    "60",
                    "ALL",
                    "ROUNDROBIN"
                ],
            ]
        );
    }

    #[test]
    fn vdpt_lists_the_current_owners_candidates_not_ready_before_any_srvstat() {
        let t = vdpt(&figure4());
        let dva1: Vec<&str> = t
            .rows
            .iter()
            .filter(|r| r.cells[0] == "203.0.113.10")
            .map(|r| r.cells[3].as_str())
            .collect();
        assert_eq!(dva1, ["MVS1", "MVS2", "MVS4"]);
        for r in &t.rows {
            assert_eq!(r.cells[6], "N", "{r:?}");
            assert_eq!(r.cells[8], "NOLISTEN", "{r:?}");
            assert_eq!(r.cells[10], "0", "{r:?}");
        }
    }
}
