//! Start-up and shutdown of the controller: load the TOML + profiles + P4Info (all P4 names
//! checked), build the core, spawn one driver per switch, the agent endpoint (mTLS, or
//! plaintext only with `--insecure`), the admin endpoint, the lease timer, the advertiser and
//! the metrics updater. [`Controller::shutdown`] stops them all (mini-redis style: a watch
//! channel every task selects on, then the tasks are awaited).
//!
//! Ownership persistence: the routing switch of each DVIPA is kept in
//! `<state_dir>/owners.toml` ([`OwnerStore`]): rewritten atomically whenever it changes (an
//! operator move is written before `dvipa move` returns, every other change as soon as the core
//! reports it ([`dvipa_core::core::Action::OwnersChanged`]; a failed write is retried every
//! [`PERSIST_RETRY`]), and once more at shutdown) and restored into the core at start-up,
//! before any switch is contacted, so a restart keeps an operator's move.

use crate::advertise::{self, Advertiser};
use crate::error::StartError;
use crate::shared::Shared;
use crate::switch::{self, DriverConfig};
pub use crate::target::load_p4info;
use crate::{admin, agent, metrics_export};
use dvipa_core::config::{Cluster, Config, Overrides};
use dvipa_core::core::{Core, CoreOptions};
use dvipa_proto::v1::server_stack_server::ServerStackServer;
use p4rt::Schema;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt;

/// Everything read from disk.
#[derive(Debug)]
pub struct Loaded {
    /// Config + profiles + effective VIPA list.
    pub cluster: Cluster,
    /// The P4Info (names checked).
    pub schema: Schema,
    /// Device config bytes.
    pub device_config: Vec<u8>,
    /// TLS material of the agent endpoint.
    pub tls: Option<dvipa_tls::PemBundle>,
    /// The state directory (`state_dir`, resolved; `None` = no persistence).
    pub state_dir: Option<PathBuf>,
    /// The admin endpoint's TLS material and allow-list (`[admin]`).
    pub admin: admin::AdminSecurity,
    /// Per switch name: its own pipeline (`target = "tofino"`); absent = the top-level one.
    pub pipelines: HashMap<String, crate::target::SwitchPipeline>,
}

fn rel(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    }
}

/// Reads a configuration file (TOML or profile): a regular file of at most `cap` bytes
/// ([`dvipa_core::validate::read_capped`]) holding UTF-8 text (an invalid byte is named by
/// offset, line and column).
pub fn read_text(path: &Path, cap: u64) -> Result<String, StartError> {
    let bytes =
        dvipa_core::validate::read_capped(path, cap).map_err(|source| StartError::Read {
            path: path.to_owned(),
            source,
        })?;
    dvipa_core::validate::utf8(&path.display().to_string(), bytes).map_err(StartError::Text)
}

/// Largest device config (bmv2 JSON) read: 64 MiB, and only a regular file.
pub const DEVICE_CONFIG_CAP: u64 = 64 << 20;

/// Switch name → (profile path, profile text).
pub type ProfileTexts = BTreeMap<String, (String, String)>;

/// Reads the TOML file and the profiles it names (relative to `profile_dir`): the parsed
/// configuration, the profiles, and the TOML text.
pub fn read_config(
    config_path: &Path,
    profile_dir: &Path,
    overrides: &Overrides,
) -> Result<(Config, ProfileTexts, String), StartError> {
    let src = read_text(config_path, dvipa_core::validate::TOML_CAP)?;
    let file = config_path.display().to_string();
    let mut config = Config::parse_with(&file, &src, overrides)?;
    switch_tls(&mut config, profile_dir)?;
    if let Some(h) = &mut config.ha {
        let toml_dir = config_path.parent().unwrap_or(Path::new("."));
        crate::ha::election::resolve_files(h, toml_dir).map_err(|e| {
            // `ha.tls.ca: ...` → the value's position in the file.
            let field = e.split([':', ' ']).next().unwrap_or("");
            match dvipa_core::validate::field_pos(&src, field) {
                Some((l, c)) => StartError::Text(format!("{file}:{l}:{c}: {e}")),
                None => StartError::Text(format!("{file}: {e}")),
            }
        })?;
    }
    let mut profiles = BTreeMap::new();
    for sw in &config.switches {
        let p = rel(profile_dir, &sw.profile);
        let text = read_text(&p, dvipa_core::validate::PROFILE_CAP)?;
        profiles.insert(sw.name.clone(), (p.display().to_string(), text));
    }
    Ok((config, profiles, src))
}

/// Resolves every `[[switch]] tls` path against the TOML's directory and checks the files once
/// (they are read again on every connection, to follow rotation): a missing or bad file, or a
/// `cert` without `key`, stops the start.
fn switch_tls(config: &mut Config, base: &Path) -> Result<(), StartError> {
    for (i, sw) in config.switches.iter_mut().enumerate() {
        let Some(t) = &mut sw.tls else { continue };
        if t.cert.is_some() != t.key.is_some() {
            return Err(StartError::Text(format!(
                "switch[{i}].tls ({}): cert and key go together (mutual TLS) or are both left out",
                sw.name
            )));
        }
        t.ca = rel(base, &t.ca);
        t.cert = t.cert.as_deref().map(|p| rel(base, p));
        t.key = t.key.as_deref().map(|p| rel(base, p));
        dvipa_tls::p4runtime_client_tls(
            &t.ca,
            t.cert.as_deref().zip(t.key.as_deref()),
            t.server_name.as_deref(),
        )
        .map_err(|e| StartError::Text(format!("switch[{i}].tls ({}): {e}", sw.name)))?;
    }
    Ok(())
}

/// The size of the `dvipa` table in the P4Info (what bounds the DVIPA services), if given.
pub fn dvipa_table_size(schema: &Schema) -> Option<usize> {
    schema
        .table(dvipa_contract::dvipa::NAME)
        .ok()
        .map(|t| t.size)
        .filter(|s| *s > 0)
        .map(|s| s as usize)
}

/// Reads the TOML file, the profiles, P4Info, device config and TLS files (paths relative to
/// the TOML file's directory) and checks every P4 name.
pub fn load(config_path: &Path) -> Result<Loaded, StartError> {
    load_with(config_path, &Overrides::default())
}

/// [`load`] with command-line values overriding the TOML's.
pub fn load_with(config_path: &Path, overrides: &Overrides) -> Result<Loaded, StartError> {
    let file = config_path.display().to_string();
    let base = config_path.parent().unwrap_or(Path::new(".")).to_owned();
    let (config, profiles, src) = read_config(config_path, &base, overrides)?;
    let p4info_path = rel(&base, &config.p4info);
    let schema = load_p4info(&file, &src, &p4info_path)?;
    let dc_path = rel(&base, &config.device_config);
    let device_config = match dvipa_core::validate::read_capped(&dc_path, DEVICE_CONFIG_CAP) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                path = %dc_path.display(),
                "device config not found: pushing an empty one (the embedded switch ignores it; \
                 bmv2 will refuse the pipeline)"
            );
            Vec::new()
        }
        Err(source) => {
            return Err(StartError::Read {
                path: dc_path,
                source,
            });
        }
    };
    let tls = match &config.tls {
        Some(t) => Some(dvipa_tls::PemBundle::load(&dvipa_tls::PemPaths {
            ca: rel(&base, &t.ca),
            cert: rel(&base, &t.cert),
            key: rel(&base, &t.key),
        })?),
        None => None,
    };
    let admin = admin::AdminSecurity::load(&config.admin, &base)?;
    let state_dir =
        (!config.state_dir.as_os_str().is_empty()).then(|| rel(&base, &config.state_dir));
    let mut pipelines = HashMap::new();
    for (i, sw) in config.switches.iter().enumerate() {
        if let Some(p) = crate::target::load(&base, sw, i)? {
            tracing::info!(switch = %sw.name, "{}", p.summary);
            pipelines.insert(sw.name.clone(), p);
        }
    }
    let cluster = Cluster::from_config(&file, config, &profiles)?;
    if let Some(size) = dvipa_table_size(&schema) {
        cluster.check_dvipa_table(
            size,
            &format!(
                "size of {} in {}",
                dvipa_contract::dvipa::NAME,
                p4info_path.display()
            ),
        )?;
    }
    if let Some(d) = &cluster.config.liveness.dataplane {
        let dvipas: Vec<_> = cluster.vipas.iter().map(|v| v.addr).collect();
        crate::dataplane_probe::check_dvipa(d, &dvipas, &file, &src).map_err(StartError::Text)?;
    }
    Ok(Loaded {
        cluster,
        schema,
        device_config,
        tls,
        state_dir,
        admin,
        pipelines,
    })
}

pub use crate::owners::{OwnerStore, PERSIST_RETRY};

/// Whether a switch's P4Runtime address accepts TCP within `timeout`.
async fn reachable(addr: &str, timeout: Duration) -> bool {
    let a = addr
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    matches!(
        tokio::time::timeout(timeout, tokio::net::TcpStream::connect(a)).await,
        Ok(Ok(_))
    )
}

/// Restores the persisted owners into `core` (before its first event). A DVIPA keeps its
/// configured owner, with a warning, when its persisted owner is not configured for it
/// (`Core::restore_owner` refuses) or does not answer on its P4Runtime address. A restored
/// owner that then does not come up within the start-up hold (`lease_ms` + `liveness_ms`) is
/// treated as down by the core: its DVIPAs go to the highest-ranked live switch of their chain.
async fn restore_owners(
    core: &mut Core,
    store: &OwnerStore,
    switches: &[dvipa_core::config::SwitchCfg],
    probe: Duration,
) {
    let state = match store.load() {
        Ok(Some(s)) => s,
        Ok(None) => {
            tracing::info!(path = %store.path().display(), "no persisted DVIPA owners: configured owners");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "persisted DVIPA owners unreadable: configured owners");
            return;
        }
    };
    for d in state.dvipas {
        let configured = core.cluster().vipa(d.addr).map(|v| v.owner.clone());
        if configured.as_deref() != Some(d.owner.as_str()) {
            let addr = switches
                .iter()
                .find(|s| s.name == d.owner)
                .map(|s| s.p4runtime.clone());
            if let Some(addr) = &addr
                && !reachable(addr, probe).await
            {
                tracing::warn!(
                    dvipa = %d.addr, persisted = %d.owner, configured = ?configured, %addr,
                    "persisted owner does not answer: the DVIPA starts on its configured owner"
                );
                continue;
            }
        }
        match core.restore_owner(d.addr, &d.owner, d.admin_pinned) {
            Ok(()) => {
                tracing::info!(dvipa = %d.addr, owner = %d.owner, admin_pinned = d.admin_pinned, "owner restored");
            }
            Err(e) => tracing::warn!(
                error = %e, configured = ?configured,
                "persisted owner not restored: the DVIPA starts on its configured owner"
            ),
        }
    }
}

/// Run-time options (command line).
#[derive(Debug, Clone)]
pub struct Options {
    /// Allow the agent endpoint without TLS (only when the config has no `[tls]`); also on
    /// with `agent.insecure = true` in the TOML.
    pub insecure: bool,
    /// Advertise hook command.
    pub advertise_cmd: Option<String>,
    /// Withdraw hook command.
    pub withdraw_cmd: Option<String>,
    /// Periodic re-read of each switch.
    pub resync: Duration,
    /// Serve Prometheus metrics on the configured `[metrics] listen` address.
    pub metrics: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            insecure: false,
            advertise_cmd: None,
            withdraw_cmd: None,
            resync: Duration::from_secs(30),
            metrics: true,
        }
    }
}

/// A running controller.
#[derive(Debug)]
pub struct Controller {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<()>)>,
    agent_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    admin_socket: Option<PathBuf>,
    store: Option<Arc<OwnerStore>>,
}

/// The admin API's listeners: the Unix socket and/or a TCP listener.
///
/// A `TcpListener` converts into TCP only: a caller that binds one has chosen TCP explicitly
/// (tests, the bench); the binary binds through [`bind_admin`], which serves TCP only with
/// `[admin.tls]` or `admin.insecure_tcp` (the configuration refuses `admin.listen` without
/// them).
#[derive(Debug, Default)]
pub struct AdminListeners {
    /// The Unix socket ([`crate::admin_local::bind_socket`]).
    pub unix: Option<crate::admin_local::UnixAdmin>,
    /// TCP (mutual TLS with `[admin.tls]`, plaintext otherwise).
    pub tcp: Option<TcpListener>,
}

impl From<TcpListener> for AdminListeners {
    fn from(l: TcpListener) -> Self {
        AdminListeners {
            unix: None,
            tcp: Some(l),
        }
    }
}

impl From<crate::admin_local::UnixAdmin> for AdminListeners {
    fn from(u: crate::admin_local::UnixAdmin) -> Self {
        AdminListeners {
            unix: Some(u),
            tcp: None,
        }
    }
}

/// Binds the admin endpoints of `cfg` (`admin.socket` relative to `base`, the TOML file's
/// directory): the Unix socket unless `socket = ""`, TCP only when
/// [`AdminCfg::tcp_listen`](dvipa_core::config::AdminCfg::tcp_listen) says so.
pub async fn bind_admin(
    cfg: &dvipa_core::config::AdminCfg,
    base: &Path,
) -> Result<AdminListeners, StartError> {
    if let Some(a) = cfg.listen
        && !cfg.tcp_allowed()
    {
        return Err(StartError::Listen {
            addr: a,
            source: std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "admin.listen: a TCP admin endpoint needs [admin.tls] or admin.insecure_tcp = true \
                 (--admin-insecure-tcp)",
            ),
        });
    }
    let unix = match cfg.socket_path() {
        Some(p) => Some(crate::admin_local::bind_socket(
            &rel(base, p),
            cfg.group.as_deref(),
        )?),
        None => None,
    };
    let tcp = match cfg.tcp_listen() {
        Some(a) => Some(bind(a).await?),
        None => None,
    };
    Ok(AdminListeners { unix, tcp })
}

/// The admin address a follower tells operators (`[ha] advertise_admin` overrides it).
fn admin_addr_hint(l: &Option<TcpListener>) -> Option<String> {
    l.as_ref()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.to_string())
}

/// Binds a listener.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })
}

impl Controller {
    /// Starts everything on the given listeners.
    pub async fn start(
        loaded: Loaded,
        opts: Options,
        agent_listener: TcpListener,
        admin: impl Into<AdminListeners>,
        advertiser: Arc<dyn Advertiser>,
    ) -> Result<Controller, StartError> {
        let AdminListeners {
            unix: admin_unix,
            tcp: admin_listener,
        } = admin.into();
        let Loaded {
            cluster,
            schema,
            device_config,
            tls,
            state_dir,
            admin: admin_sec,
            pipelines,
        } = loaded;
        if let Some(l) = &admin_listener {
            admin::check_exposure(l, &admin_sec)?;
        }
        let insecure = opts.insecure || cluster.config.agent.insecure;
        match (&tls, insecure) {
            (None, false) => return Err(StartError::InsecureNotAllowed),
            (Some(_), true) => return Err(StartError::InsecureConflict),
            _ => {}
        }
        let tls_config = match &tls {
            Some(b) => Some(dvipa_tls::watched_server_config(b, "agent")?),
            None => None,
        };
        if opts.metrics
            && let Some(m) = &cluster.config.metrics
        {
            metrics_export::install(m.listen)?;
        }
        metrics_export::security(insecure, admin_sec.tls.is_some());
        let timers = cluster.config.timers;
        let switch_cfgs = cluster.config.switches.clone();
        let ha_cfg = cluster.config.ha.clone();
        // the data-plane probe's sockets are opened now: a path that cannot be used is a
        // start-up error
        let dataplane = match &cluster.config.liveness.dataplane {
            Some(d) => {
                Some(crate::dataplane_probe::Prober::new(d.clone()).map_err(StartError::Text)?)
            }
            None => None,
        };
        let mut core = Core::new(cluster, CoreOptions::default())?;
        // With [ha] the owners live in etcd (crate::ha::store), not in <state_dir>.
        let store = state_dir
            .filter(|_| ha_cfg.is_none())
            .map(|d| Arc::new(OwnerStore::new(&d)));
        if let Some(st) = &store {
            let probe = Duration::from_millis(timers.liveness_ms.clamp(200, 2000));
            restore_owners(&mut core, st, &switch_cfgs, probe).await;
        }
        let schema = Arc::new(schema);
        let p4info = schema.p4info().clone();
        let cookie = switch::cookie(&p4info, &device_config);
        let (shutdown, shut_rx) = watch::channel(false);
        let mut txs = HashMap::new();
        let mut rxs = Vec::new();
        for s in &switch_cfgs {
            let (tx, rx) = mpsc::unbounded_channel();
            txs.insert(s.name.clone(), tx);
            rxs.push((s.clone(), rx));
        }
        let (adv_tx, adv_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared::new(core, txs, adv_tx));
        let mut tasks = Vec::new();
        if let Some(h) = ha_cfg {
            crate::ha::start(
                h,
                admin_addr_hint(&admin_listener),
                &shared,
                &shut_rx,
                &mut tasks,
            )
            .await?;
        }
        {
            let mut sd = shut_rx.clone();
            let run = advertise::run(advertiser, adv_rx, shared.stats.clone());
            tasks.push((
                "advertiser",
                tokio::spawn(async move {
                    tokio::select! {
                        _ = run => {}
                        _ = sd.changed() => {}
                    }
                }),
            ));
        }
        for (s, rx) in rxs {
            let own = pipelines.get(&s.name);
            let (sw_schema, sw_p4info, sw_dc, sw_cookie) = match own {
                Some(p) => {
                    let info = p.schema.p4info().clone();
                    let c = switch::cookie(&info, &p.device_config);
                    (p.schema.clone(), info, p.device_config.clone(), c)
                }
                None => (
                    schema.clone(),
                    p4info.clone(),
                    device_config.clone(),
                    cookie,
                ),
            };
            let dc = DriverConfig {
                capabilities: s.capabilities(),
                name: s.name.clone(),
                addr: s.p4runtime.clone(),
                device_id: s.device_id,
                election_id: s.election_id,
                p4info: sw_p4info,
                device_config: sw_dc,
                cookie: sw_cookie,
                idle_timeout_ns: (timers.idle_timeout_ms as i64).saturating_mul(1_000_000),
                liveness: timers.liveness(),
                probe: timers.probe(),
                keepalive: timers.keepalive(),
                tcp_user_timeout: timers.tcp_user_timeout(),
                connect_timeout: timers.connect_timeout(),
                election_id_range: s.election_id_range,
                resync: opts.resync,
                tls: s.tls.clone(),
            };
            tasks.push((
                "switch driver",
                tokio::spawn(switch::run(
                    dc,
                    sw_schema,
                    shared.clone(),
                    rx,
                    shut_rx.clone(),
                )),
            ));
        }
        {
            let s = shared.clone();
            let mut sd = shut_rx.clone();
            tasks.push((
                "lease timer",
                tokio::spawn(async move {
                    tokio::select! {
                        _ = s.run_timers() => {}
                        _ = sd.changed() => {}
                    }
                }),
            ));
        }
        if let Some(prober) = dataplane {
            tasks.push((
                "data-plane probe",
                tokio::spawn(prober.run(shared.clone(), shut_rx.clone())),
            ));
        }
        if let Some(st) = &store {
            let (s, st) = (shared.clone(), st.clone());
            let mut sd = shut_rx.clone();
            let mut changes = shared.owners_changes();
            tasks.push((
                "owner persistence",
                tokio::spawn(async move {
                    // Once at start, then on every change the core reports; a failed write is
                    // retried every PERSIST_RETRY until it succeeds.
                    let mut ok = st.persist(&s);
                    loop {
                        tokio::select! {
                            _ = changes.changed() => {}
                            _ = tokio::time::sleep(PERSIST_RETRY), if !ok => {}
                            _ = sd.changed() => return,
                        }
                        ok = st.persist(&s);
                    }
                }),
            ));
        }
        {
            let s = shared.clone();
            let mut sd = shut_rx.clone();
            tasks.push((
                "metrics",
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    let mut n = 0u64;
                    loop {
                        tokio::select! {
                            _ = tick.tick() => {
                                // Table occupancy copies the installed view: every 5 s only.
                                metrics_export::update(&s, n.is_multiple_of(5));
                                n += 1;
                            }
                            _ = sd.changed() => return,
                        }
                    }
                }),
            ));
        }
        let agent_addr = agent_listener
            .local_addr()
            .map_err(|source| StartError::Listen {
                addr: ([0, 0, 0, 0], 0).into(),
                source,
            })?;
        let admin_addr = match &admin_listener {
            Some(l) => Some(l.local_addr().map_err(|source| StartError::Listen {
                addr: ([0, 0, 0, 0], 0).into(),
                source,
            })?),
            None => None,
        };
        let admin_socket = admin_unix.as_ref().map(|u| u.path().to_owned());
        let conns = Arc::new(crate::killable::Connections::default());
        let agent_svc = ServerStackServer::new(
            agent::AgentService::new(shared.clone(), tls_config.is_some())
                .with_connections(conns.clone()),
        )
        .max_decoding_message_size(agent::MAX_AGENT_MESSAGE);
        {
            let mut sd = shut_rx.clone();
            let stop = async move {
                let _ = sd.changed().await;
            };
            let router = tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(10)))
                .add_service(agent_svc);
            match tls_config {
                Some(c) => {
                    let incoming = dvipa_tls::tls_incoming(agent_listener, c, shared.tls.clone())
                        .map(move |r| {
                            r.map(|s| {
                                let peer = s.get_ref().0.peer_addr().ok();
                                conns.wrap(s, peer)
                            })
                        });
                    tasks.push((
                        "agent endpoint (TLS)",
                        tokio::spawn(async move {
                            if let Err(e) =
                                router.serve_with_incoming_shutdown(incoming, stop).await
                            {
                                tracing::error!(error = %e, "agent endpoint failed");
                            }
                        }),
                    ));
                }
                None => {
                    tracing::warn!(
                        "!!! INSECURE: the agent endpoint on {agent_addr} runs WITHOUT TLS; any \
                         client can claim any stack. Use this only in tests. !!!"
                    );
                    // TCP_NODELAY: without it a small reply waits for the peer's delayed ACK (40 ms).
                    let incoming = tonic::transport::server::TcpIncoming::from(agent_listener)
                        .with_nodelay(Some(true))
                        .map(move |r| {
                            r.map(|s| {
                                let peer = s.peer_addr().ok();
                                conns.wrap(s, peer)
                            })
                        });
                    tasks.push((
                        "agent endpoint (plaintext)",
                        tokio::spawn(async move {
                            if let Err(e) =
                                router.serve_with_incoming_shutdown(incoming, stop).await
                            {
                                tracing::error!(error = %e, "agent endpoint failed");
                            }
                        }),
                    ));
                }
            }
        }
        let admin_svc = admin::AdminService::new(shared.clone()).with_owner_store(store.clone());
        if let Some(l) = admin_listener {
            tasks.push(admin::spawn(
                admin_svc.clone(),
                l,
                &admin_sec,
                shut_rx.clone(),
            )?);
        }
        if let Some(u) = admin_unix {
            tasks.push(crate::admin_local::spawn_unix(
                admin_svc,
                u,
                shut_rx.clone(),
            ));
        }
        tracing::info!(%agent_addr, admin_tcp = ?admin_addr, admin_socket = ?admin_socket, switches = switch_cfgs.len(), "controller started");
        Ok(Controller {
            shared,
            shutdown,
            tasks,
            agent_addr,
            admin_addr,
            admin_socket,
            store,
        })
    }

    /// The agent endpoint's address.
    pub fn agent_addr(&self) -> SocketAddr {
        self.agent_addr
    }

    /// The TCP admin endpoint's address.
    ///
    /// # Panics
    /// When the admin API has no TCP endpoint (see [`Controller::admin_tcp`]).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr.expect("the admin API has no TCP endpoint")
    }

    /// The TCP admin endpoint's address, if there is one.
    pub fn admin_tcp(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The admin Unix socket, if there is one.
    pub fn admin_socket(&self) -> Option<&Path> {
        self.admin_socket.as_deref()
    }

    /// The ownership state file, when persistence is on.
    pub fn owner_state_path(&self) -> Option<&Path> {
        self.store.as_deref().map(OwnerStore::path)
    }

    /// The shared state (tests, metrics).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Ends every task at once without any goodbye, as SIGKILL would: no resignation from the
    /// HA election (its lease runs out), no last persistence, connections just close (HA tests).
    pub fn kill(self) {
        for (_, t) in &self.tasks {
            t.abort();
        }
    }

    /// Stops every task and waits for them (at most 5 s).
    pub async fn shutdown(self) {
        self.shared.close_agents("controller shutting down");
        let _ = self.shutdown.send(true);
        let (names, mut rest): (Vec<&str>, Vec<JoinHandle<()>>) = self
            .tasks
            .into_iter()
            .filter(|t| !t.1.is_finished())
            .unzip();
        let all = futures::future::join_all(rest.iter_mut());
        if tokio::time::timeout(Duration::from_secs(5), all)
            .await
            .is_err()
        {
            for (n, t) in names.iter().zip(&rest) {
                if !t.is_finished() {
                    tracing::warn!(task = n, "did not stop within 5 s; aborted");
                    t.abort();
                }
            }
        }
        if let Some(st) = &self.store {
            st.persist(&self.shared);
        }
        tracing::info!("controller stopped");
    }
}
