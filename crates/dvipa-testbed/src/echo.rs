//! `dvipa-echo`: a TCP echo server that names itself in a greeting line.
//!
//! Protocol: on accept the server sends `DVIPA-ECHO <name>\n`, then echoes every byte it
//! receives. A graceful stop closes the listener at once (new connections are refused); existing
//! connections keep being served for the drain time, then the server half-closes them (FIN),
//! reads until the client closes, and closes (never a reset). An abort drops everything.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;

/// The greeting line prefix.
pub const GREETING: &str = "DVIPA-ECHO";

/// Echo server settings.
#[derive(Debug, Clone)]
pub struct EchoConfig {
    /// Where to listen (a DVIPA:port, or 0.0.0.0:port).
    pub listen: SocketAddr,
    /// Name told in the greeting (e.g. `srv1`).
    pub name: String,
    /// After a graceful stop, keep serving existing connections this long before closing them.
    pub drain: Duration,
    /// Bind with IP_FREEBIND (the DVIPA need not be on an interface yet).
    pub freebind: bool,
}

/// How to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Keep running.
    Run,
    /// Stop accepting; drain, then close existing connections with FIN.
    Graceful,
    /// Close everything now.
    Abort,
}

/// Counters (shared, live).
#[derive(Debug, Default)]
pub struct EchoCounters {
    /// Connections accepted.
    pub accepted: AtomicU64,
    /// Connections open now.
    pub active: AtomicU64,
    /// Bytes echoed.
    pub bytes: AtomicU64,
    /// Connections that ended with an error (reset by the peer, ...).
    pub errors: AtomicU64,
}

/// A snapshot of [`EchoCounters`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct EchoStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections open.
    pub active: u64,
    /// Bytes echoed.
    pub bytes: u64,
    /// Connections that ended with an error.
    pub errors: u64,
}

impl EchoCounters {
    /// Current values.
    pub fn snapshot(&self) -> EchoStats {
        EchoStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

/// Bind the listening socket (backlog 4096, SO_REUSEADDR, optional IP_FREEBIND).
pub fn bind(cfg: &EchoConfig) -> Result<TcpListener> {
    let sock = match cfg.listen {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    sock.set_reuseaddr(true)?;
    if cfg.freebind {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt with a valid fd and a c_int option value.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_FREEBIND,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
    sock.bind(cfg.listen)
        .with_context(|| format!("bind {}", cfg.listen))?;
    Ok(sock.listen(4096)?)
}

/// Serve on `listener` until `stop` says otherwise; returns when every connection is closed.
pub async fn serve(
    listener: TcpListener,
    cfg: EchoConfig,
    counters: Arc<EchoCounters>,
    mut stop: watch::Receiver<Stop>,
) -> Result<()> {
    let greeting: Arc<[u8]> = format!("{GREETING} {}\n", cfg.name).into_bytes().into();
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((stream, _peer)) = r else { continue };
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                counters.active.fetch_add(1, Ordering::Relaxed);
                let c = counters.clone();
                let g = greeting.clone();
                let st = stop.clone();
                let drain = cfg.drain;
                tasks.spawn(async move {
                    if handle(stream, &g, &c, st, drain).await.is_err() {
                        c.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    c.active.fetch_sub(1, Ordering::Relaxed);
                });
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() != Stop::Run {
                    break;
                }
            }
        }
    }
    drop(listener);
    if *stop.borrow() == Stop::Abort {
        tasks.abort_all();
    }
    while tasks.join_next().await.is_some() {}
    Ok(())
}

async fn handle(
    mut s: TcpStream,
    greeting: &[u8],
    c: &EchoCounters,
    mut stop: watch::Receiver<Stop>,
    drain: Duration,
) -> std::io::Result<()> {
    let _ = s.set_nodelay(true);
    s.write_all(greeting).await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut drain_deadline: Option<tokio::time::Instant> = None;
    loop {
        let sleep_until = drain_deadline
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            r = s.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    // client closed: close our side too
                    let _ = s.shutdown().await;
                    return Ok(());
                }
                s.write_all(&buf[..n]).await?;
                c.bytes.fetch_add(n as u64, Ordering::Relaxed);
            }
            r = stop.changed(), if drain_deadline.is_none() => {
                match (r, *stop.borrow()) {
                    (Err(_), _) | (_, Stop::Abort) => return Ok(()),
                    (_, Stop::Graceful) => {
                        drain_deadline = Some(tokio::time::Instant::now() + drain);
                    }
                    (_, Stop::Run) => {}
                }
            }
            _ = tokio::time::sleep_until(sleep_until), if drain_deadline.is_some() => break,
        }
    }
    // graceful close: FIN, then read (and discard) until the client closes, so that no unread
    // data makes our close a reset
    s.shutdown().await?;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    Ok(())
}

/// An echo server running on its own thread (and runtime), optionally inside a namespace.
pub struct EchoServer {
    /// Live counters.
    pub counters: Arc<EchoCounters>,
    /// The bound address.
    pub local_addr: SocketAddr,
    stop: watch::Sender<Stop>,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl EchoServer {
    /// Bind and serve; with `ns`, inside that network namespace. Returns once listening.
    pub fn start(ns: Option<&str>, cfg: EchoConfig) -> Result<EchoServer> {
        let counters = Arc::new(EchoCounters::default());
        let (stop_tx, stop_rx) = watch::channel(Stop::Run);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<SocketAddr>>();
        let c = counters.clone();
        let ns = ns.map(str::to_string);
        let thread = std::thread::Builder::new()
            .name(format!("echo-{}", cfg.name))
            .spawn(move || -> Result<()> {
                let setup = || -> Result<tokio::runtime::Runtime> {
                    if let Some(ns) = &ns {
                        crate::netns::enter_netns(ns)?;
                    }
                    Ok(tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?)
                };
                let rt = match setup() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!("{e:#}")));
                        return Err(e);
                    }
                };
                rt.block_on(async move {
                    let listener = match bind(&cfg) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(anyhow!("{e:#}")));
                            return Err(e);
                        }
                    };
                    let _ = ready_tx.send(Ok(listener.local_addr()?));
                    serve(listener, cfg, c, stop_rx).await
                })
            })?;
        let local_addr = ready_rx
            .recv()
            .map_err(|_| anyhow!("echo server thread died"))??;
        Ok(EchoServer {
            counters,
            local_addr,
            stop: stop_tx,
            thread: Some(thread),
        })
    }

    /// Current counters.
    pub fn stats(&self) -> EchoStats {
        self.counters.snapshot()
    }

    /// Stop accepting; existing connections are drained and closed with FIN. Waits for the end.
    pub fn stop_graceful(mut self) -> Result<EchoStats> {
        let _ = self.stop.send(Stop::Graceful);
        self.join()
    }

    /// Close everything now and wait.
    pub fn abort(mut self) -> Result<EchoStats> {
        let _ = self.stop.send(Stop::Abort);
        self.join()
    }

    fn join(&mut self) -> Result<EchoStats> {
        if let Some(t) = self.thread.take() {
            t.join().map_err(|_| anyhow!("echo thread panicked"))??;
        }
        Ok(self.counters.snapshot())
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        let _ = self.stop.send(Stop::Abort);
        let _ = self.join();
    }
}
