//! Connections the controller can cut: the agent endpoint's connections are wrapped in
//! [`Killable`] and registered by peer address in a [`Connections`] registry, so a session whose
//! peer stopped reading (its bounded send queue is full) can be disconnected.
//!
//! Why the connection and not just the stream: once the peer's HTTP/2 window is closed the server
//! no longer polls the response stream, so ending it from our side (an error item, dropping the
//! request half) never reaches the peer and the queued messages stay in memory. Failing the
//! transport's next read or write makes hyper drop the connection with every stream on it, which
//! releases the queue.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Cuts one connection: every later read and write of its [`Killable`] fails.
#[derive(Debug, Default)]
pub struct Kill {
    killed: AtomicBool,
    read: futures::task::AtomicWaker,
    write: futures::task::AtomicWaker,
}

impl Kill {
    /// Cuts the connection (idempotent) and wakes its pending read and write.
    pub fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
        self.read.wake();
        self.write.wake();
    }

    /// Whether [`Kill::kill`] was called.
    pub fn is_killed(&self) -> bool {
        self.killed.load(Ordering::SeqCst)
    }
}

/// The live connections of an endpoint by peer address.
#[derive(Debug, Default)]
pub struct Connections {
    map: Mutex<HashMap<SocketAddr, Arc<Kill>>>,
}

impl Connections {
    /// The kill handle of the connection from `peer`, while it is open.
    pub fn get(&self, peer: SocketAddr) -> Option<Arc<Kill>> {
        self.map.lock().get(&peer).cloned()
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// No open connection.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wraps `io` (from `peer`) and registers it until it is dropped.
    pub fn wrap<IO>(self: &Arc<Self>, io: IO, peer: Option<SocketAddr>) -> Killable<IO> {
        let kill = Arc::new(Kill::default());
        if let Some(p) = peer {
            self.map.lock().insert(p, kill.clone());
        }
        Killable {
            io,
            kill,
            reg: peer.map(|p| (self.clone(), p)),
        }
    }
}

/// A transport that fails once its [`Kill`] is used.
#[derive(Debug)]
pub struct Killable<IO> {
    io: IO,
    kill: Arc<Kill>,
    reg: Option<(Arc<Connections>, SocketAddr)>,
}

impl<IO> Drop for Killable<IO> {
    fn drop(&mut self) {
        if let Some((c, p)) = &self.reg {
            let mut m = c.map.lock();
            if m.get(p).is_some_and(|k| Arc::ptr_eq(k, &self.kill)) {
                m.remove(p);
            }
        }
    }
}

fn cut() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection cut by the controller",
    )
}

impl<IO: AsyncRead + Unpin> AsyncRead for Killable<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.kill.read.register(cx.waker());
        if self.kill.is_killed() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Killable<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.kill.write.register(cx.waker());
        if self.kill.is_killed() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.kill.is_killed() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.kill.write.register(cx.waker());
        if self.kill.is_killed() {
            return Poll::Ready(Err(cut()));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl<IO: tonic::transport::server::Connected> tonic::transport::server::Connected for Killable<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
