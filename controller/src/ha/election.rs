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
//!
//! The connection ([`connect`]): `[ha.tls]` (etcd's CA, an optional client certificate, an
//! optional server name) and `username` + `password_file` are read at every connection, so a
//! new session uses rotated files. A session that fails on etcd's side is counted in
//! `dvipa_ha_etcd_errors_total{reason}` ([`error_reason`]: `tls`, `auth`, `files`,
//! `unavailable`) and warned about at most once per rate-limit period, naming the cause.

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
    campaign_options(lease).with_timeout(q)
}

/// The options of the campaign's own connection: as [`connect_options`] but with no call
/// timeout, because `Campaign` answers only when this replica is elected (a follower's call
/// lasts as long as another replica leads). A dead connection is still found within half a
/// lease by the HTTP/2 keep-alive, and the session ends anyway once the lease is not renewed.
pub fn campaign_options(lease: Duration) -> ConnectOptions {
    let q = (lease / 4).max(Duration::from_millis(100));
    ConnectOptions::new()
        .with_connect_timeout(q)
        .with_keep_alive(q, q)
        .with_keep_alive_while_idle(true)
        .with_require_leader(true)
}

/// Largest password file read (the password is its first line).
pub const PASSWORD_CAP: u64 = 4096;

/// [`connect_options`] plus `[ha.tls]` and the etcd user of `cfg` (files read now; paths as
/// given, the controller makes them absolute at start: [`resolve_files`]). The error names
/// the field and the file.
pub fn connect_options_for(cfg: &HaCfg) -> Result<ConnectOptions, String> {
    with_files(cfg, connect_options(Duration::from_millis(cfg.lease_ms)))
}

/// [`campaign_options`] plus `[ha.tls]` and the etcd user of `cfg`.
fn campaign_options_for(cfg: &HaCfg) -> Result<ConnectOptions, String> {
    with_files(cfg, campaign_options(Duration::from_millis(cfg.lease_ms)))
}

/// `o` with the TLS files and the user of `cfg`.
fn with_files(cfg: &HaCfg, mut o: ConnectOptions) -> Result<ConnectOptions, String> {
    if let Some(t) = &cfg.tls {
        let tls = dvipa_tls::p4runtime_client_tls(
            &t.ca,
            t.cert.as_deref().zip(t.key.as_deref()),
            t.domain.as_deref(),
        )
        .map_err(|e| {
            use dvipa_tls::TlsError as E;
            let field = match &e {
                E::Read { path, .. } if Some(path) == t.cert.as_ref() => "ha.tls.cert",
                E::Read { path, .. } if Some(path) == t.key.as_ref() => "ha.tls.key",
                E::NoCertificate { what } | E::Pem { what, .. } if *what != "CA file" => {
                    "ha.tls.cert"
                }
                E::NoPrivateKey { .. } => "ha.tls.key",
                _ => "ha.tls.ca",
            };
            format!("{field}: {e}")
        })?;
        o = o.with_tls(tls);
    }
    if let (Some(user), Some(file)) = (&cfg.username, &cfg.password_file) {
        o = o.with_user(user.clone(), read_password(file)?);
    }
    Ok(o)
}

/// The first line of the password file (without its line end).
fn read_password(file: &std::path::Path) -> Result<String, String> {
    let e = |m: String| format!("ha.password_file: {}: {m}", file.display());
    let b = dvipa_core::validate::read_capped(file, PASSWORD_CAP).map_err(|x| e(x.to_string()))?;
    let s = String::from_utf8(b).map_err(|_| e("not UTF-8".into()))?;
    let p = s.lines().next().unwrap_or("").to_string();
    if p.is_empty() {
        return Err(e("empty: the password is the file's first line".into()));
    }
    Ok(p)
}

/// Makes the `[ha]` file paths absolute (relative to `base`, the TOML file's directory) and
/// checks them once (readable regular files within their caps, PEM that parses, a non-empty
/// password), so a replica with unusable files does not start. The error names the field.
pub fn resolve_files(cfg: &mut HaCfg, base: &std::path::Path) -> Result<(), String> {
    let rel = |p: &std::path::Path| {
        if p.is_absolute() {
            p.to_owned()
        } else {
            base.join(p)
        }
    };
    if let Some(t) = &mut cfg.tls {
        t.ca = rel(&t.ca);
        t.cert = t.cert.as_deref().map(rel);
        t.key = t.key.as_deref().map(rel);
        dvipa_tls::read_pem_file(&t.ca)
            .map_err(|e| format!("ha.tls.ca: {}: {e}", t.ca.display()))?;
        for (field, p) in [("ha.tls.cert", &t.cert), ("ha.tls.key", &t.key)] {
            if let Some(p) = p {
                dvipa_tls::read_pem_file(p)
                    .map_err(|e| format!("{field}: {}: {e}", p.display()))?;
            }
        }
    }
    cfg.password_file = cfg.password_file.as_deref().map(rel);
    connect_options_for(cfg).map(|_| ())
}

/// Connects to etcd (every call bounded by `lease / 4`; lazy unless a user is configured,
/// which authenticates now).
pub async fn connect(cfg: &HaCfg) -> Result<Client, String> {
    let o = connect_options_for(cfg)?;
    Client::connect(&cfg.etcd, Some(o))
        .await
        .map_err(|e| error_chain(&e))
}

/// [`connect`] without the etcd user: never waits for etcd (the user authenticates at the
/// first call otherwise). For the owner store, which the leader reconnects with the user when
/// elected.
pub async fn connect_lazy(cfg: &HaCfg) -> Result<Client, String> {
    let anon = HaCfg {
        username: None,
        password_file: None,
        ..cfg.clone()
    };
    connect(&anon).await
}

/// An error with its sources (`a: b: c`): tonic hides the TLS cause in them.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// The `reason` of `dvipa_ha_etcd_errors_total` for a session's error text: `files` (a
/// `[ha]` file cannot be used), `tls` (etcd's certificate not trusted or our client
/// certificate refused), `auth` (etcd refused the user or password, or a permission),
/// `unavailable` (anything else: etcd down, timeouts).
pub fn error_reason(e: &str) -> &'static str {
    let l = e.to_ascii_lowercase();
    if l.contains("ha.tls") || l.contains("ha.password_file") {
        "files"
    } else if l.contains("certificate")
        || l.contains("alert")
        || l.contains("tls")
        || l.contains("unknownissuer")
        || l.contains("handshake")
    {
        "tls"
    } else if l.contains("authentication failed")
        || l.contains("invalid user id or password")
        || l.contains("permission denied")
        || l.contains("user name is empty")
        || l.contains("unauthenticated")
    {
        "auth"
    } else {
        "unavailable"
    }
}

/// What to do about a `tls` error, from the TLS alert or verification error in it.
fn tls_hint(e: &str) -> &'static str {
    if e.contains("invalid peer certificate") {
        " (etcd's server certificate is not trusted: it does not chain to [ha.tls] ca, or \
         does not name the endpoint's host or [ha.tls] domain)"
    } else if e.contains("fatal alert") {
        " (etcd refused this replica's client certificate: none in [ha.tls] cert/key, or not \
         from the CA of etcd's --trusted-ca-file)"
    } else {
        ""
    }
}

/// `ctx: error`, counted in `dvipa_ha_etcd_errors_total{reason}`.
fn etcd_error(ctx: &str, e: impl std::fmt::Display) -> SessionError {
    let mut msg = format!("{ctx}: {e}");
    let reason = error_reason(&msg);
    if reason == "tls" {
        msg.push_str(tls_hint(&msg));
    } else if reason == "auth" {
        msg.push_str(
            " (etcd refused this replica's user: check [ha] username and password_file, and \
             that the user's role may read and write the election's prefix)",
        );
    }
    metrics::counter!("dvipa_ha_etcd_errors_total", "reason" => reason).increment(1);
    SessionError {
        msg,
        etcd: Some(reason),
    }
}

fn etcd_call_error(ctx: &str, e: &etcd_client::Error) -> SessionError {
    etcd_error(ctx, error_chain(e))
}

/// With TLS 1.3, etcd refuses a client certificate only after the client's handshake is
/// done: the gRPC call may just see the connection closed. Then one TLS handshake with the
/// first endpoint (as this replica, 1 s at most) tells why; the cause is appended.
async fn tls_cause(cfg: &HaCfg, e: &etcd_client::Error) -> String {
    let msg = error_chain(e);
    let Some(t) = &cfg.tls else { return msg };
    if error_reason(&msg) != "unavailable" {
        return msg;
    }
    let Some(hostport) = cfg
        .etcd
        .first()
        .and_then(|ep| ep.strip_prefix("https://"))
        .map(|r| r.trim_end_matches('/'))
    else {
        return msg;
    };
    let host = hostport
        .rsplit_once(':')
        .map_or(hostport, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let read = |p: &std::path::Path| {
        dvipa_tls::read_pem_file(p)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    };
    let Some(ca) = read(&t.ca) else { return msg };
    let id = match (&t.cert, &t.key) {
        (Some(c), Some(k)) => match (read(c), read(k)) {
            (Some(c), Some(k)) => Some((c, k)),
            _ => return msg,
        },
        _ => None,
    };
    let probe = dvipa_tls::probe_handshake_with(
        &ca,
        id.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
        hostport,
        t.domain.as_deref().unwrap_or(host),
        Duration::from_millis(500),
    );
    match tokio::time::timeout(Duration::from_secs(1), probe).await {
        Ok(Err(pe)) => format!("{msg}; a TLS handshake with {hostport} says: {pe}"),
        _ => msg,
    }
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
            Err(SessionError { msg: e, etcd }) => {
                metrics::counter!("dvipa_ha_session_failures_total").increment(1);
                if let Some(reason) = etcd {
                    let cause = (reason, e.clone());
                    tx.send_modify(|s| s.etcd_error = Some(cause));
                }
                match warn.check() {
                    Some(suppressed) => {
                        let reason = etcd.unwrap_or("lease");
                        tracing::warn!(replica = %cfg.replica, reason, error = %e, suppressed, "etcd session ended; campaigning again")
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

/// Why a session ended; `etcd`: the `reason` of an etcd error (counted), `None` for the
/// session's own decisions (lease not renewed in time, superseded).
struct SessionError {
    msg: String,
    etcd: Option<&'static str>,
}

impl From<&str> for SessionError {
    fn from(msg: &str) -> Self {
        SessionError {
            msg: msg.into(),
            etcd: None,
        }
    }
}

impl From<String> for SessionError {
    fn from(msg: String) -> Self {
        SessionError { msg, etcd: None }
    }
}

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
    let client = connect(cfg).await.map_err(|e| etcd_error("connect", e))?;
    let ttl = cfg.lease_ms.div_ceil(1000).max(1) as i64;
    let granted_at = Instant::now();
    let lease = client.clone().lease_grant(ttl, None).await;
    let lease = match lease {
        Ok(l) => l.id(),
        Err(e) => return Err(etcd_error("lease grant", tls_cause(cfg, &e).await)),
    };
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
    let campaign_conn = match campaign_options_for(cfg) {
        Ok(o) => Client::connect(&cfg.etcd, Some(o))
            .await
            .map_err(|e| etcd_error("connect", error_chain(&e))),
        Err(e) => Err(etcd_error("connect", e)),
    };
    let campaign_conn = match campaign_conn {
        Ok(c) => c,
        Err(e) => {
            revoke(client.clone(), lease);
            return Err(e);
        }
    };
    let mut campaign_client = campaign_conn.election_client();
    let name = cfg.election.clone();
    let campaign = async move { campaign_client.campaign(name, value, lease).await };
    tokio::pin!(campaign);
    let mut poll = tokio::time::interval(tick);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Follower: wait for the campaign, following who leads meanwhile.
    let key: LeaderKey = loop {
        tokio::select! {
            r = &mut campaign => {
                // A campaign cancelled under us (its connection went away): not an error of
                // etcd's (the next session campaigns again).
                let mut r = r.map_err(|e| match &e {
                    etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Cancelled => {
                        SessionError::from(format!("campaign: still waiting: {}", s.message()))
                    }
                    e => etcd_call_error("campaign", e),
                })?;
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
                    if tx.borrow().etcd_error.is_some() {
                        tx.send_modify(|s| s.etcd_error = None);
                    }
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
        return Err(format!("elected with a lease renewed {ago:?} ago: not taken").into());
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
        s.etcd_error = None;
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
    use super::{error_reason, parse_value};

    #[test]
    fn etcd_errors_are_sorted_by_cause() {
        assert_eq!(
            error_reason(
                "lease grant: grpc request error: status: Unavailable, message: \"error trying to connect: invalid peer certificate: UnknownIssuer\""
            ),
            "tls"
        );
        assert_eq!(
            error_reason(
                "connect: grpc request error: status: InvalidArgument, message: \"etcdserver: authentication failed, invalid user ID or password\""
            ),
            "auth"
        );
        assert_eq!(
            error_reason("connect: ha.password_file: /x: No such file"),
            "files"
        );
        assert_eq!(
            error_reason("lease grant: transport error: tcp connect error: Connection refused"),
            "unavailable"
        );
    }

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
