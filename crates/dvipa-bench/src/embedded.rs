//! The embedded switch (`dvipa-switch`) served over P4Runtime on loopback, in-process, and a
//! small driver that carries the core's actions out through `p4rt::Session`: write batches
//! (translated to P4Runtime updates, per-update outcomes back to the core), reads (answered
//! from what was written, the switch having one writer), digest lists in, acks out.
//!
//! This is the same loop the controller's switch driver runs (`controller/src/switch.rs`),
//! reduced to what the benchmarks need and instrumented: the time each CRT entry became live.

use crate::harness;
use anyhow::{Context, anyhow};
use dvipa_core::core::{Action, Core, DigestItem, Event, Time, WriteOutcome};
use dvipa_core::entries::{ConnKey, Key, Tables, Update, UpdateKind};
use dvipa_switch::Pipeline;
use dvipa_switch::server::SwitchServer;
use dvipa_switch::tables::{ExactTable, SelectAction};
use p4rt::proto::p4::v1 as p4;
use p4rt::{ClientConfig, DigestDelivery, Schema, Session, insert};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// The project's P4Info, compiled in so the benchmark needs no file at run time.
pub const P4INFO: &str = include_str!("../../../p4src/p4c-out/bmv2/dvipa.p4info.txtpb");

/// Loads the P4Info schema.
pub fn schema() -> anyhow::Result<Schema> {
    Schema::from_text(P4INFO).map_err(|e| anyhow!("P4Info: {e}"))
}

/// One embedded switch with its P4Runtime server on 127.0.0.1 (ephemeral port).
pub struct Embedded {
    /// The server (and through it the pipeline).
    pub server: SwitchServer,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Device id.
    pub device_id: u64,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The switch's own runtime (its P4Runtime server, digest and idle tasks), so the switch
    /// gets CPU like a separate process would instead of queueing behind the controller's
    /// tasks on the benchmark's runtime.
    rt: Option<tokio::runtime::Runtime>,
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Embedded {
    /// Starts a switch whose CRT holds `crt_size` entries (the P4 program's 65,536 unless a
    /// benchmark needs more), on a runtime of its own (two worker threads).
    pub async fn start(device_id: u64, crt_size: usize) -> anyhow::Result<Embedded> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("switch-{device_id}"))
            .enable_all()
            .build()?;
        // The server's own tasks (digests, idle timeouts) are spawned on the switch's runtime.
        let enter = rt.enter();
        let pipeline = Arc::new(Pipeline::new());
        pipeline.tables_mut().crt =
            ExactTable::presized("IngressImpl.crt", crt_size, SelectAction::NoAction);
        let server = SwitchServer::new(device_id, pipeline);
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let listener = tokio::net::TcpListener::from_std(std_listener)?;
        let svc = server.service();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        rt.spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(SwitchServer::incoming(listener), async {
                    let _ = stopped.await;
                })
                .await;
        });
        drop(enter);
        Ok(Embedded {
            server,
            addr,
            device_id,
            stop: Some(stop),
            rt: Some(rt),
        })
    }

    /// The pipeline's CRT size now.
    pub fn crt_len(&self) -> usize {
        self.server.pipeline().tables().crt.len()
    }

    /// Whether the switch's CRT sends `k` to `target`.
    pub fn crt_has(&self, k: &ConnKey, target: u16) -> bool {
        let key = dvipa_switch::tables::CrtKey {
            src: k.src,
            dst: k.dst,
            proto: k.proto,
            sport: k.sport,
            dport: k.dport,
        };
        matches!(
            self.server.pipeline().tables().crt.get(&key).map(|e| e.action),
            Some(SelectAction::ToTarget(t)) if t == target
        )
    }
}

/// Connects a primary session (election id 1), pushes the pipeline and enables `learn_t`
/// digests the way the controller does (1 ms, 100 per list, 1 s ack timeout).
pub async fn connect(
    sw: &Embedded,
    schema: &Schema,
) -> anyhow::Result<(Arc<Session>, p4rt::StreamQueues)> {
    let mut cfg = ClientConfig::new(sw.addr.to_string(), sw.device_id);
    cfg.rpc_timeout = Duration::from_secs(120);
    cfg.queue_capacity = 65536;
    let (session, queues) = Session::connect(cfg).await?;
    session.wait_primary(Duration::from_secs(5)).await?;
    session
        .push_pipeline(schema.p4info().clone(), b"{}".to_vec(), 0xD1BA)
        .await?;
    session
        .write(vec![insert(dvipa_contract::learn::digest_entry(schema)?)])
        .await?;
    Ok((Arc::new(session), queues))
}

/// `learn_t` digest lists as core digest items (the contract's decoding, as the controller).
fn digest_items(s: &Schema, list: &p4::DigestList) -> anyhow::Result<Vec<DigestItem>> {
    let (_, recs) = s.decode_digest_list(list)?;
    recs.iter()
        .map(|r| Ok(dvipa_contract::digest_item(r)?))
        .collect()
}

struct Completion {
    rpc: Duration,
    switch: String,
    batch: u64,
    updates: Vec<Update>,
    results: anyhow::Result<Vec<WriteOutcome>>,
}

struct Sw {
    session: Arc<Session>,
    shadow: Tables,
    acks: HashMap<u64, DigestDelivery>,
    up: bool,
}

/// Instrumentation of CRT entries going live: for connection `i` of [`harness::conn`],
/// `live_ns[i]` = nanoseconds since `epoch` at which its insert was confirmed.
pub struct LiveLog {
    /// Start of the clock.
    pub epoch: Instant,
    /// Per connection index (0 = not live yet).
    pub live_ns: Vec<AtomicU64>,
    /// Number of connections live.
    pub live: AtomicU64,
}

impl LiveLog {
    /// For `n` connections.
    pub fn new(epoch: Instant, n: usize) -> Self {
        LiveLog {
            epoch,
            live_ns: (0..n).map(|_| AtomicU64::new(0)).collect(),
            live: AtomicU64::new(0),
        }
    }
    /// Nanoseconds since the epoch, never 0.
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }
}

/// The core and the sessions of its switches.
pub struct Driver {
    /// The core.
    pub core: Core,
    schema: Arc<Schema>,
    epoch: Instant,
    sws: HashMap<String, Sw>,
    done_tx: mpsc::UnboundedSender<Completion>,
    done_rx: mpsc::UnboundedReceiver<Completion>,
    dig_tx: mpsc::UnboundedSender<(String, DigestDelivery)>,
    dig_rx: mpsc::UnboundedReceiver<(String, DigestDelivery)>,
    in_flight: usize,
    /// CRT live instrumentation.
    pub live: Option<Arc<LiveLog>>,
    /// Advertisements seen: (switch, when).
    pub advertised: Vec<(String, Instant)>,
    /// Write batches sent and updates in them.
    pub batches: u64,
    /// Updates sent.
    pub updates: u64,
    /// Failed updates (outcome other than OK / already exists).
    pub failed_updates: u64,
    /// Digest lists received.
    pub digest_lists: u64,
    /// Time spent in the core and dispatching its actions.
    pub core_busy: Duration,
    /// Sum of write RPC times (translation included).
    pub rpc_busy: Duration,
}

impl Driver {
    /// A driver for `core`.
    pub fn new(core: Core, schema: Arc<Schema>, epoch: Instant) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (dig_tx, dig_rx) = mpsc::unbounded_channel();
        Driver {
            core,
            schema,
            epoch,
            sws: HashMap::new(),
            done_tx,
            done_rx,
            dig_tx,
            dig_rx,
            in_flight: 0,
            live: None,
            advertised: Vec::new(),
            batches: 0,
            updates: 0,
            failed_updates: 0,
            digest_lists: 0,
            core_busy: Duration::ZERO,
            rpc_busy: Duration::ZERO,
        }
    }

    fn now(&self) -> Time {
        Time(self.epoch.elapsed().as_millis() as u64)
    }

    /// Adds a connected switch (its digest queue is forwarded to the driver) and reports it
    /// up to the core.
    pub fn attach(&mut self, name: &str, session: Arc<Session>, mut queues: p4rt::StreamQueues) {
        let tx = self.dig_tx.clone();
        let n = name.to_string();
        tokio::spawn(async move {
            while let Some(d) = queues.digests.recv().await {
                if tx.send((n.clone(), d)).is_err() {
                    return;
                }
            }
        });
        self.sws.insert(
            name.to_string(),
            Sw {
                session,
                shadow: Tables::new(),
                acks: HashMap::new(),
                up: false,
            },
        );
        self.switch_up(name, false);
    }

    /// The switch (re)connected; `wiped` = it lost its tables.
    pub fn switch_up(&mut self, name: &str, wiped: bool) {
        if let Some(s) = self.sws.get_mut(name) {
            s.up = true;
            if wiped {
                s.shadow.clear();
            }
        }
        let now = self.now();
        self.core.handle(
            now,
            Event::SwitchUp {
                switch: name.into(),
            },
        );
        self.dispatch();
    }

    /// The switch is lost (as the controller's liveness check would report it).
    pub fn switch_down(&mut self, name: &str) {
        if let Some(s) = self.sws.get_mut(name) {
            s.up = false;
            s.acks.clear();
        }
        let now = self.now();
        self.core.handle(
            now,
            Event::SwitchDown {
                switch: name.into(),
            },
        );
        self.dispatch();
    }

    /// Feeds an event to the core and dispatches its actions.
    pub fn event(&mut self, ev: Event) {
        let now = self.now();
        self.core.handle(now, ev);
        self.dispatch();
    }

    /// Carries out the core's pending actions (writes are started, not awaited).
    pub fn dispatch(&mut self) {
        while let Some(a) = self.core.poll_action() {
            match a {
                Action::Write {
                    switch,
                    batch,
                    updates,
                } => {
                    let Some(sw) = self.sws.get(&switch) else {
                        continue;
                    };
                    if !sw.up {
                        continue;
                    }
                    let session = sw.session.clone();
                    let schema = self.schema.clone();
                    let tx = self.done_tx.clone();
                    self.in_flight += 1;
                    self.batches += 1;
                    self.updates += updates.len() as u64;
                    tokio::spawn(async move {
                        let t = Instant::now();
                        let results = write(&session, &schema, &updates).await;
                        let _ = tx.send(Completion {
                            rpc: t.elapsed(),
                            switch,
                            batch,
                            updates,
                            results,
                        });
                    });
                }
                Action::ReadSwitch { switch } => {
                    let entries = self
                        .sws
                        .get(&switch)
                        .map(|s| s.shadow.iter().map(|(k, v)| (*k, *v)).collect())
                        .unwrap_or_default();
                    let now = self.now();
                    self.core.handle(now, Event::SwitchRead { switch, entries });
                }
                Action::AckDigest { switch, list_id } => {
                    if let Some(d) = self
                        .sws
                        .get_mut(&switch)
                        .and_then(|s| s.acks.remove(&list_id))
                    {
                        tokio::spawn(async move {
                            let _ = d.ack().await;
                        });
                    }
                }
                Action::Advertise { switch, .. } => {
                    self.advertised.push((switch, Instant::now()));
                }
                _ => {}
            }
        }
    }

    /// Waits for the next write completion or digest list and handles it. Returns false on
    /// timeout.
    pub async fn step(&mut self, timeout: Duration) -> anyhow::Result<bool> {
        tokio::select! {
            c = self.done_rx.recv() => {
                let c = c.context("completion channel closed")?;
                self.complete(c)?;
            }
            d = self.dig_rx.recv() => {
                let (sw, d) = d.context("digest channel closed")?;
                self.digest(sw, d)?;
            }
            _ = tokio::time::sleep(timeout) => return Ok(false),
        }
        let t = Instant::now();
        // Take whatever else is ready before the core flushes again (bigger batches).
        while let Ok((sw, d)) = self.dig_rx.try_recv() {
            self.digest(sw, d)?;
        }
        self.dispatch();
        self.core_busy += t.elapsed();
        Ok(true)
    }

    fn digest(&mut self, sw: String, d: DigestDelivery) -> anyhow::Result<()> {
        let t = Instant::now();
        self.digest_lists += 1;
        let items = digest_items(&self.schema, &d.list)?;
        let list_id = d.list.list_id;
        match self.sws.get_mut(&sw) {
            Some(s) if s.up => {
                s.acks.insert(list_id, d);
            }
            _ => return Ok(()),
        }
        let now = self.now();
        self.core.handle(
            now,
            Event::Digest {
                switch: sw,
                list_id,
                items,
            },
        );
        self.core_busy += t.elapsed();
        Ok(())
    }

    fn complete(&mut self, c: Completion) -> anyhow::Result<()> {
        let t = Instant::now();
        self.in_flight -= 1;
        self.rpc_busy += c.rpc;
        let results = c.results?;
        let sw = self.sws.get_mut(&c.switch).context("unknown switch")?;
        if !sw.up {
            return Ok(());
        }
        let ns = self.live.as_ref().map(|l| l.now_ns());
        for (u, r) in c.updates.iter().zip(&results) {
            let ok = matches!(r, WriteOutcome::Ok)
                || (matches!(r, WriteOutcome::AlreadyExists) && u.kind == UpdateKind::Insert)
                || (matches!(r, WriteOutcome::NotFound) && u.kind == UpdateKind::Delete);
            if !ok {
                self.failed_updates += 1;
                continue;
            }
            match u.kind {
                UpdateKind::Delete => {
                    sw.shadow.remove(&u.key);
                }
                _ => {
                    sw.shadow.insert(u.key, u.value);
                }
            }
            if let (Some(live), Some(ns), Key::Crt(k), UpdateKind::Insert) =
                (&self.live, ns, u.key, u.kind)
                && let Some(i) = harness::conn_index(&k)
                && let Some(slot) = live.live_ns.get(i as usize)
                && slot.load(Ordering::Relaxed) == 0
            {
                slot.store(ns, Ordering::Relaxed);
                live.live.fetch_add(1, Ordering::Relaxed);
            }
        }
        let now = self.now();
        self.core.handle(
            now,
            Event::WriteResult {
                switch: c.switch,
                batch: c.batch,
                results,
            },
        );
        self.core_busy += t.elapsed();
        Ok(())
    }

    /// Runs until `done` holds with no write in flight and no action pending, or `timeout`
    /// passes without any event.
    pub async fn run_until(
        &mut self,
        mut done: impl FnMut(&Driver) -> bool,
        idle_timeout: Duration,
    ) -> anyhow::Result<()> {
        self.dispatch();
        loop {
            if self.in_flight == 0 && done(self) {
                return Ok(());
            }
            if !self.step(idle_timeout).await? {
                if self.in_flight == 0 && done(self) {
                    return Ok(());
                }
                anyhow::bail!(
                    "no progress for {idle_timeout:?} ({} writes in flight, counters {:?})",
                    self.in_flight,
                    self.core.counters()
                );
            }
        }
    }

    /// Runs until nothing is in flight and the core has nothing to do (`quiet` of silence).
    pub async fn settle(&mut self, quiet: Duration) -> anyhow::Result<()> {
        self.dispatch();
        loop {
            if !self.step(quiet).await? && self.in_flight == 0 {
                return Ok(());
            }
        }
    }
}

async fn write(
    session: &Session,
    schema: &Schema,
    updates: &[Update],
) -> anyhow::Result<Vec<WriteOutcome>> {
    let ups = updates
        .iter()
        .map(|u| dvipa_contract::to_p4_update(schema, u, 0))
        .collect::<Result<Vec<_>, _>>()?;
    let res = session.write_detailed(ups).await?;
    Ok(res
        .into_iter()
        .map(|r| match r {
            Ok(()) => WriteOutcome::Ok,
            Err(e) => match e.code {
                tonic::Code::AlreadyExists => WriteOutcome::AlreadyExists,
                tonic::Code::NotFound => WriteOutcome::NotFound,
                tonic::Code::ResourceExhausted => WriteOutcome::ResourceExhausted,
                _ => WriteOutcome::Other(e.message.clone()),
            },
        })
        .collect())
}
