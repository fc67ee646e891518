//! `dvipa-conns`: many long-lived TCP connections to a DVIPA:port, streaming data on all of them,
//! with the figures the failover scenarios need: connections alive, resets, failed connects, the
//! longest stall (time without progress) of any connection, and which server answered each one.
//!
//! Each connection reads the echo server's greeting (`DVIPA-ECHO <name>`), then every `interval`
//! sends `chunk` bytes of a fixed pattern and checks that the echo comes back unchanged.
//! Progress = echoed bytes arriving; a connection's stall is the longest gap between two
//! progress events (or from the last one to now). Outstanding (unechoed) data is capped, so a
//! black-holed path does not fill socket buffers.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::echo::GREETING;

/// Client settings.
#[derive(Debug, Clone)]
pub struct ConnsConfig {
    /// DVIPA:port.
    pub target: SocketAddr,
    /// Number of long-lived connections.
    pub conns: usize,
    /// Stop by itself after this long (from the start).
    pub duration: Duration,
    /// Bytes sent per connection per interval.
    pub chunk: usize,
    /// Send interval per connection.
    pub interval: Duration,
    /// New connections opened per second during the ramp-up.
    pub connect_rate: u32,
    /// Connect (and greeting) timeout.
    pub connect_timeout: Duration,
    /// Short probe connections per second (connect, greeting, one echo, close); 0 = none.
    pub probe_rate: f64,
    /// Cap of sent-but-not-echoed bytes per connection.
    pub max_outstanding: u64,
}

impl Default for ConnsConfig {
    fn default() -> Self {
        ConnsConfig {
            target: "127.0.0.1:8080".parse().expect("addr"),
            conns: 100,
            duration: Duration::from_secs(10),
            chunk: 100,
            interval: Duration::from_millis(100),
            connect_rate: 2000,
            connect_timeout: Duration::from_secs(3),
            probe_rate: 0.0,
            max_outstanding: 64 * 1024,
        }
    }
}

/// A connection's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// Not started yet.
    Pending,
    /// Connecting / waiting for the greeting.
    Connecting,
    /// Streaming.
    Alive,
    /// The server closed it (FIN).
    Closed,
    /// Reset (ECONNRESET, EPIPE, ECONNABORTED).
    Reset,
    /// The connect (or greeting) failed or timed out.
    Failed,
    /// Another error (timeout of an established connection, corrupt echo, bad greeting).
    Error,
    /// Closed by us at the end of the run.
    Done,
}

impl ConnState {
    fn from_u8(v: u8) -> ConnState {
        match v {
            1 => ConnState::Connecting,
            2 => ConnState::Alive,
            3 => ConnState::Closed,
            4 => ConnState::Reset,
            5 => ConnState::Failed,
            6 => ConnState::Error,
            7 => ConnState::Done,
            _ => ConnState::Pending,
        }
    }
}

#[derive(Default)]
struct Slot {
    state: AtomicU8,
    /// ms since start of the last progress event (0 = none yet)
    last_progress: AtomicU64,
    max_gap: AtomicU64,
    /// server index + 1 (0 = unknown)
    server: AtomicU32,
    local_port: AtomicU32,
    rx: AtomicU64,
}

/// Live shared state of a run.
pub struct Shared {
    start: Instant,
    slots: Vec<Slot>,
    servers: Mutex<Vec<String>>,
    established: AtomicU64,
    failed_connects: AtomicU64,
    resets: AtomicU64,
    closed: AtomicU64,
    errors: AtomicU64,
    corrupt: AtomicU64,
    bytes_tx: AtomicU64,
    bytes_rx: AtomicU64,
    max_stall: AtomicU64,
    window_stall: AtomicU64,
    probes_ok: AtomicU64,
    probes_failed: AtomicU64,
    probe_servers: Mutex<BTreeMap<String, u64>>,
    last_error: Mutex<Option<String>>,
}

/// Figures at one moment (cumulative since the start, except `alive`/`connecting`/stall now).
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Milliseconds since the start.
    pub t_ms: u64,
    /// Connections requested.
    pub conns: usize,
    /// Streaming now.
    pub alive: usize,
    /// Connecting now (or not started).
    pub connecting: usize,
    /// Ever established (greeting received).
    pub established: u64,
    /// Connects that failed or timed out.
    pub failed_connects: u64,
    /// Established connections reset.
    pub resets: u64,
    /// Established connections closed by the server (FIN).
    pub closed: u64,
    /// Established connections ended by another error (timeout, corrupt echo).
    pub errors: u64,
    /// Echo mismatches seen.
    pub corrupt: u64,
    /// Bytes sent.
    pub bytes_tx: u64,
    /// Echoed bytes received.
    pub bytes_rx: u64,
    /// Longest stall of any connection since the start (including ongoing stalls), ms.
    pub max_stall_ms: u64,
    /// Longest stall since the previous [`ConnsRun::window`] call (or the start), ms.
    pub window_stall_ms: u64,
    /// Longest ongoing stall of a live connection now, ms.
    pub current_stall_ms: u64,
    /// Live connections per server name.
    pub servers: BTreeMap<String, usize>,
    /// Probe connections that worked.
    pub probes_ok: u64,
    /// Probe connections that failed.
    pub probes_failed: u64,
    /// Probe connections per server name.
    pub probe_servers: BTreeMap<String, u64>,
    /// The last error message seen, if any.
    pub last_error: Option<String>,
}

/// One connection at the end.
#[derive(Debug, Clone, Serialize)]
pub struct ConnInfo {
    /// Index (0-based).
    pub id: usize,
    /// Local (client) port.
    pub local_port: u16,
    /// Server that answered (from its greeting).
    pub server: Option<String>,
    /// Final state.
    pub state: ConnState,
    /// Echoed bytes received.
    pub rx: u64,
    /// Its longest stall, ms.
    pub max_stall_ms: u64,
}

/// The end-of-run report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Final figures (taken just before closing the connections; `alive` = alive at the end).
    pub summary: Snapshot,
    /// Every connection.
    pub per_conn: Vec<ConnInfo>,
}

impl Shared {
    fn new(n: usize) -> Shared {
        Shared {
            start: Instant::now(),
            slots: (0..n).map(|_| Slot::default()).collect(),
            servers: Mutex::new(Vec::new()),
            established: AtomicU64::new(0),
            failed_connects: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            closed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            corrupt: AtomicU64::new(0),
            bytes_tx: AtomicU64::new(0),
            bytes_rx: AtomicU64::new(0),
            max_stall: AtomicU64::new(0),
            window_stall: AtomicU64::new(0),
            probes_ok: AtomicU64::new(0),
            probes_failed: AtomicU64::new(0),
            probe_servers: Mutex::new(BTreeMap::new()),
            last_error: Mutex::new(None),
        }
    }

    /// ms since start, at least 1 (0 means "never").
    fn now_ms(&self) -> u64 {
        (self.start.elapsed().as_millis() as u64).max(1)
    }

    fn server_index(&self, name: &str) -> u32 {
        let mut v = self.servers.lock().expect("lock");
        if let Some(i) = v.iter().position(|s| s == name) {
            return i as u32 + 1;
        }
        v.push(name.to_string());
        v.len() as u32
    }

    fn progress(&self, id: usize, n: usize) {
        let s = &self.slots[id];
        let now = self.now_ms();
        let last = s.last_progress.swap(now, Ordering::Relaxed);
        if last != 0 {
            let gap = now.saturating_sub(last);
            s.max_gap.fetch_max(gap, Ordering::Relaxed);
            self.max_stall.fetch_max(gap, Ordering::Relaxed);
            self.window_stall.fetch_max(gap, Ordering::Relaxed);
        }
        s.rx.fetch_add(n as u64, Ordering::Relaxed);
        self.bytes_rx.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn set_state(&self, id: usize, st: ConnState) {
        self.slots[id].state.store(st as u8, Ordering::Relaxed);
    }

    fn note_error(&self, msg: String) {
        *self.last_error.lock().expect("lock") = Some(msg);
    }

    /// Current figures; `take_window` resets the window stall.
    pub fn snapshot(&self, take_window: bool) -> Snapshot {
        let now = self.now_ms();
        let names = self.servers.lock().expect("lock").clone();
        let mut servers = BTreeMap::new();
        let (mut alive, mut connecting, mut current) = (0, 0, 0u64);
        for s in &self.slots {
            match ConnState::from_u8(s.state.load(Ordering::Relaxed)) {
                ConnState::Alive => {
                    alive += 1;
                    let last = s.last_progress.load(Ordering::Relaxed);
                    if last != 0 {
                        current = current.max(now.saturating_sub(last));
                    }
                    let idx = s.server.load(Ordering::Relaxed) as usize;
                    let name = names
                        .get(idx.wrapping_sub(1))
                        .cloned()
                        .unwrap_or_else(|| "?".into());
                    *servers.entry(name).or_insert(0) += 1;
                }
                ConnState::Pending | ConnState::Connecting => connecting += 1,
                _ => {}
            }
        }
        let window = if take_window {
            self.window_stall.swap(0, Ordering::Relaxed)
        } else {
            self.window_stall.load(Ordering::Relaxed)
        };
        Snapshot {
            t_ms: now,
            conns: self.slots.len(),
            alive,
            connecting,
            established: self.established.load(Ordering::Relaxed),
            failed_connects: self.failed_connects.load(Ordering::Relaxed),
            resets: self.resets.load(Ordering::Relaxed),
            closed: self.closed.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            bytes_tx: self.bytes_tx.load(Ordering::Relaxed),
            bytes_rx: self.bytes_rx.load(Ordering::Relaxed),
            max_stall_ms: self.max_stall.load(Ordering::Relaxed).max(current),
            window_stall_ms: window.max(current),
            current_stall_ms: current,
            servers,
            probes_ok: self.probes_ok.load(Ordering::Relaxed),
            probes_failed: self.probes_failed.load(Ordering::Relaxed),
            probe_servers: self.probe_servers.lock().expect("lock").clone(),
            last_error: self.last_error.lock().expect("lock").clone(),
        }
    }

    fn per_conn(&self) -> Vec<ConnInfo> {
        let names = self.servers.lock().expect("lock").clone();
        self.slots
            .iter()
            .enumerate()
            .map(|(id, s)| ConnInfo {
                id,
                local_port: s.local_port.load(Ordering::Relaxed) as u16,
                server: names
                    .get((s.server.load(Ordering::Relaxed) as usize).wrapping_sub(1))
                    .cloned(),
                state: ConnState::from_u8(s.state.load(Ordering::Relaxed)),
                rx: s.rx.load(Ordering::Relaxed),
                max_stall_ms: s.max_gap.load(Ordering::Relaxed),
            })
            .collect()
    }
}

fn pattern_byte(offset: u64) -> u8 {
    (offset % 251) as u8
}

fn is_reset(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted)
}

/// Read the greeting line; returns the stream (nothing else was buffered: the server sends only
/// the greeting before it receives data) and the server's name.
async fn read_greeting(s: TcpStream, timeout: Duration) -> Result<(TcpStream, String)> {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    tokio::time::timeout(timeout, r.read_line(&mut line))
        .await
        .map_err(|_| anyhow!("no greeting within {timeout:?}"))??;
    if !r.buffer().is_empty() {
        return Err(anyhow!("data after the greeting before any was sent"));
    }
    let name = line
        .trim_end()
        .strip_prefix(GREETING)
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| anyhow!("bad greeting {line:?}"))?;
    Ok((r.into_inner(), name.to_string()))
}

async fn one_conn(
    id: usize,
    cfg: Arc<ConnsConfig>,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    sh.set_state(id, ConnState::Connecting);
    let connect = async {
        let s = TcpStream::connect(cfg.target).await?;
        read_greeting(s, cfg.connect_timeout).await
    };
    let (stream, name) = match tokio::time::timeout(cfg.connect_timeout, connect).await {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            sh.failed_connects.fetch_add(1, Ordering::Relaxed);
            sh.note_error(format!("conn {id}: connect: {e:#}"));
            sh.set_state(id, ConnState::Failed);
            return;
        }
        Err(_) => {
            sh.failed_connects.fetch_add(1, Ordering::Relaxed);
            sh.note_error(format!("conn {id}: connect timeout"));
            sh.set_state(id, ConnState::Failed);
            return;
        }
    };
    let slot = &sh.slots[id];
    if let Ok(a) = stream.local_addr() {
        slot.local_port.store(a.port() as u32, Ordering::Relaxed);
    }
    let _ = stream.set_nodelay(true);
    let (mut r, mut w) = stream.into_split();
    slot.server.store(sh.server_index(&name), Ordering::Relaxed);
    sh.established.fetch_add(1, Ordering::Relaxed);
    slot.last_progress.store(sh.now_ms(), Ordering::Relaxed);
    sh.set_state(id, ConnState::Alive);

    let mut chunk: Vec<u8> = Vec::with_capacity(cfg.chunk);
    let mut tx: u64 = 0;
    let mut rx: u64 = 0;
    let mut buf = vec![0u8; 16 * 1024];
    // spread the connections' send instants over the interval
    let phase = Duration::from_micros(
        (id as u64).wrapping_mul(7919) % (cfg.interval.as_micros() as u64).max(1),
    );
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + phase, cfg.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome: ConnState = loop {
        tokio::select! {
            _ = tick.tick() => {
                if tx - rx + cfg.chunk as u64 > cfg.max_outstanding {
                    continue;
                }
                chunk.clear();
                chunk.extend((0..cfg.chunk as u64).map(|i| pattern_byte(tx + i)));
                match w.write_all(&chunk).await {
                    Ok(()) => {
                        tx += cfg.chunk as u64;
                        sh.bytes_tx.fetch_add(cfg.chunk as u64, Ordering::Relaxed);
                    }
                    Err(e) if is_reset(&e) => {
                        sh.note_error(format!("conn {id} ({name}): write: {e}"));
                        break ConnState::Reset;
                    }
                    Err(e) => {
                        sh.note_error(format!("conn {id} ({name}): write: {e}"));
                        break ConnState::Error;
                    }
                }
            }
            res = r.read(&mut buf) => {
                match res {
                    Ok(0) => break ConnState::Closed,
                    Ok(n) => {
                        let ok = buf[..n].iter().enumerate().all(|(i, b)| *b == pattern_byte(rx + i as u64));
                        rx += n as u64;
                        sh.progress(id, n);
                        if !ok {
                            sh.corrupt.fetch_add(1, Ordering::Relaxed);
                            sh.note_error(format!("conn {id} ({name}): echo mismatch"));
                            break ConnState::Error;
                        }
                    }
                    Err(e) if is_reset(&e) => {
                        sh.note_error(format!("conn {id} ({name}): read: {e}"));
                        break ConnState::Reset;
                    }
                    Err(e) => {
                        sh.note_error(format!("conn {id} ({name}): read: {e}"));
                        break ConnState::Error;
                    }
                }
            }
            r2 = stop.changed() => {
                if r2.is_err() || *stop.borrow() {
                    break ConnState::Done;
                }
            }
        }
    };
    match outcome {
        ConnState::Reset => {
            sh.resets.fetch_add(1, Ordering::Relaxed);
        }
        ConnState::Closed => {
            sh.closed.fetch_add(1, Ordering::Relaxed);
            let _ = w.shutdown().await;
        }
        ConnState::Error => {
            sh.errors.fetch_add(1, Ordering::Relaxed);
        }
        ConnState::Done => {
            // orderly close: FIN, then read until the server's FIN (bounded)
            let _ = w.shutdown().await;
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                loop {
                    match r.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            })
            .await;
        }
        _ => {}
    }
    sh.set_state(id, outcome);
}

async fn probe(cfg: &ConnsConfig, sh: &Shared) {
    let attempt = async {
        let s = TcpStream::connect(cfg.target).await?;
        let (mut r, name) = read_greeting(s, cfg.connect_timeout).await?;
        let msg: Vec<u8> = (0..16).map(pattern_byte).collect();
        r.write_all(&msg).await?;
        let mut back = [0u8; 16];
        r.read_exact(&mut back).await?;
        if back[..] != msg[..] {
            return Err(anyhow!("probe echo mismatch"));
        }
        let _ = r.shutdown().await;
        let mut rest = [0u8; 64];
        let _ = r.read(&mut rest).await;
        Ok::<_, anyhow::Error>(name)
    };
    match tokio::time::timeout(cfg.connect_timeout, attempt).await {
        Ok(Ok(name)) => {
            sh.probes_ok.fetch_add(1, Ordering::Relaxed);
            *sh.probe_servers
                .lock()
                .expect("lock")
                .entry(name)
                .or_insert(0) += 1;
        }
        Ok(Err(e)) => {
            sh.probes_failed.fetch_add(1, Ordering::Relaxed);
            sh.note_error(format!("probe: {e:#}"));
        }
        Err(_) => {
            sh.probes_failed.fetch_add(1, Ordering::Relaxed);
            sh.note_error("probe: timeout".into());
        }
    }
}

/// Run the client until `duration` has passed or `stop` turns true. Returns the report; the
/// final figures are taken before the connections are closed.
pub async fn run(cfg: ConnsConfig, sh: Arc<Shared>, mut stop: watch::Receiver<bool>) -> Report {
    let cfg = Arc::new(cfg);
    let (close_tx, close_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    let deadline = tokio::time::Instant::from_std(sh.start + cfg.duration);

    // ramp-up: open the connections at connect_rate per second
    let opener = {
        let cfg = cfg.clone();
        let sh = sh.clone();
        let close_rx = close_rx.clone();
        tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            let rate = cfg.connect_rate.max(1) as u64;
            let t0 = tokio::time::Instant::now();
            for id in 0..cfg.conns {
                let due = t0 + Duration::from_micros(id as u64 * 1_000_000 / rate);
                tokio::time::sleep_until(due).await;
                if *close_rx.borrow() {
                    break;
                }
                set.spawn(one_conn(id, cfg.clone(), sh.clone(), close_rx.clone()));
            }
            while set.join_next().await.is_some() {}
        })
    };
    if cfg.probe_rate > 0.0 {
        let cfg = cfg.clone();
        let sh = sh.clone();
        let mut close_rx = close_rx.clone();
        tasks.spawn(async move {
            let mut t = tokio::time::interval(Duration::from_secs_f64(1.0 / cfg.probe_rate));
            let mut inflight = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = t.tick() => {
                        let cfg = cfg.clone();
                        let sh = sh.clone();
                        inflight.spawn(async move { probe(&cfg, &sh).await });
                    }
                    Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
                    _ = close_rx.changed() => break,
                }
            }
            while inflight.join_next().await.is_some() {}
        });
    }
    tokio::select! {
        _ = tokio::time::sleep_until(deadline) => {}
        _ = async { while stop.changed().await.is_ok() { if *stop.borrow() { break; } } } => {}
    }
    let summary = sh.snapshot(false);
    let _ = close_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        let _ = opener.await;
        while tasks.join_next().await.is_some() {}
    })
    .await;
    Report {
        summary,
        per_conn: sh.per_conn(),
    }
}

/// A client run on its own thread and runtime, optionally inside a namespace; watch it live with
/// [`ConnsRun::snapshot`] / [`ConnsRun::window`], end it with [`ConnsRun::stop`] or wait for its
/// duration with [`ConnsRun::wait`].
pub struct ConnsRun {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    thread: Option<std::thread::JoinHandle<Result<Report>>>,
}

impl ConnsRun {
    /// Start; with `ns`, inside that network namespace (2 worker threads).
    pub fn start(ns: Option<&str>, cfg: ConnsConfig) -> Result<ConnsRun> {
        crate::netns::raise_nofile(cfg.conns as u64 * 2 + 1024);
        let shared = Arc::new(Shared::new(cfg.conns));
        let (stop_tx, stop_rx) = watch::channel(false);
        let sh = shared.clone();
        let ns = ns.map(str::to_string);
        let thread = std::thread::Builder::new()
            .name("dvipa-conns".into())
            .spawn(move || -> Result<Report> {
                if let Some(ns) = &ns {
                    crate::netns::enter_netns(ns)?;
                }
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                Ok(rt.block_on(run(cfg, sh, stop_rx)))
            })?;
        Ok(ConnsRun {
            shared,
            stop: stop_tx,
            thread: Some(thread),
        })
    }

    /// Figures now.
    pub fn snapshot(&self) -> Snapshot {
        self.shared.snapshot(false)
    }

    /// Figures now, and start a new stall window (`window_stall_ms` covers the time since the
    /// previous call): call it before and after each scenario step.
    pub fn window(&self) -> Snapshot {
        self.shared.snapshot(true)
    }

    /// Wait until `n` connections are alive (or `timeout`); returns the snapshot.
    pub fn wait_alive(&self, n: usize, timeout: Duration) -> Result<Snapshot> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.snapshot();
            if s.alive >= n {
                return Ok(s);
            }
            if Instant::now() >= deadline || self.thread.as_ref().is_none_or(|t| t.is_finished()) {
                return Err(anyhow!(
                    "only {} of {n} connections alive after {timeout:?}: {}",
                    s.alive,
                    serde_json::to_string(&s).unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait until every live connection has received echoed data after `since` (e.g. the
    /// instant a switch was killed) and return how long after `since` that was: the time until
    /// all connections recovered. Connections that die meanwhile stop counting. Errors after
    /// `timeout` with the number still waiting.
    pub fn wait_all_progress_since(&self, since: Instant, timeout: Duration) -> Result<Duration> {
        let sh = &self.shared;
        let since_ms = since.saturating_duration_since(sh.start).as_millis() as u64;
        let deadline = Instant::now() + timeout;
        loop {
            let waiting = sh
                .slots
                .iter()
                .filter(|s| {
                    ConnState::from_u8(s.state.load(Ordering::Relaxed)) == ConnState::Alive
                        && s.last_progress.load(Ordering::Relaxed) <= since_ms
                })
                .count();
            if waiting == 0 {
                return Ok(since.elapsed());
            }
            if Instant::now() >= deadline {
                return Err(anyhow!(
                    "{waiting} live connections made no progress within {timeout:?}"
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// End now (connections closed with FIN) and return the report.
    pub fn stop(mut self) -> Result<Report> {
        let _ = self.stop.send(true);
        self.join()
    }

    /// Wait for the configured duration to pass and return the report.
    pub fn wait(mut self) -> Result<Report> {
        self.join()
    }

    fn join(&mut self) -> Result<Report> {
        let t = self
            .thread
            .take()
            .ok_or_else(|| anyhow!("already joined"))?;
        t.join().map_err(|_| anyhow!("conns thread panicked"))?
    }
}

impl Drop for ConnsRun {
    fn drop(&mut self) {
        if self.thread.is_some() {
            let _ = self.stop.send(true);
            let _ = self.join();
        }
    }
}

/// A new shared state for `n` connections (for running [`run`] on your own runtime).
pub fn shared(n: usize) -> Arc<Shared> {
    Arc::new(Shared::new(n))
}

/// A human summary of a report.
pub fn human(cfg_target: SocketAddr, r: &Report) -> String {
    let s = &r.summary;
    let servers: Vec<String> = s.servers.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut out = format!(
        "dvipa-conns {cfg_target}: {} of {} connections alive at the end ({:.1} s); \
         established {}, failed connects {}, resets {}, closed by server {}, errors {}, \
         corrupt {}; longest stall {} ms; {} KiB sent, {} KiB echoed; servers: {}",
        s.alive,
        s.conns,
        s.t_ms as f64 / 1000.0,
        s.established,
        s.failed_connects,
        s.resets,
        s.closed,
        s.errors,
        s.corrupt,
        s.max_stall_ms,
        s.bytes_tx / 1024,
        s.bytes_rx / 1024,
        if servers.is_empty() {
            "-".into()
        } else {
            servers.join(" ")
        }
    );
    if s.probes_ok + s.probes_failed > 0 {
        out.push_str(&format!(
            "; probes ok {} failed {}",
            s.probes_ok, s.probes_failed
        ));
    }
    if let Some(e) = &s.last_error {
        out.push_str(&format!("; last error: {e}"));
    }
    out
}
