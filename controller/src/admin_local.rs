//! The admin API's local endpoint and its audit trail.
//!
//! - [`bind_socket`]: the Unix socket (`admin.socket`, default `/run/dvipa/admin.sock`), mode
//!   0600 and owned by the controller's user (root), or 0660 with `admin.group`. It is bound in
//!   a private (0700) directory, given its mode and group, and only then renamed into place, so
//!   nobody else can ever connect to it. A live socket at the path (another controller) is an
//!   error; a stale one is replaced.
//! - [`spawn_unix`]: serves the admin API on it; each connection's peer (SO_PEERCRED: uid, gid,
//!   pid) is logged.
//! - [`who`] and [`audit`]: every mutating admin command (reconcile, maintenance, move) writes
//!   one log line (target `dvipa::audit`: who — `uid=N` on the socket, `cert=NAME` with
//!   `[admin.tls]`, `tcp=ADDR (unauthenticated)` with `insecure_tcp` —, what, result) and is
//!   counted (`admin_audit_<command>_<ok|refused>` in `dvipa counters`, metric
//!   [`AUDIT_METRIC`]`{command, result}`).

use crate::admin::AdminService;
use crate::error::StartError;

use dvipa_proto::v1::admin_server::AdminServer;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt;

pub use crate::audit::AUDIT_METRIC;

/// A bound admin socket.
#[derive(Debug)]
pub struct UnixAdmin {
    listener: tokio::net::UnixListener,
    path: PathBuf,
}

impl UnixAdmin {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn sock_err(path: &Path, what: impl std::fmt::Display) -> StartError {
    StartError::AdminSocket {
        path: path.to_owned(),
        msg: what.to_string(),
    }
}

/// The gid of `group`: a number, or a name looked up with getgrnam_r.
pub fn group_id(group: &str) -> Result<u32, String> {
    if let Ok(n) = group.parse::<u32>() {
        return Ok(n);
    }
    let name = std::ffi::CString::new(group).map_err(|_| format!("bad group name {group:?}"))?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut grp: libc::group = unsafe { std::mem::zeroed() };
    let mut out: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives it and `out` is only read
    // when the call set it.
    let rc = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut out,
        )
    };
    if rc != 0 {
        return Err(format!(
            "group `{group}`: {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    if out.is_null() {
        return Err(format!("no group `{group}`"));
    }
    Ok(grp.gr_gid)
}

/// Binds the admin socket at `path`: mode 0600, or 0660 and group `group` (`admin.group`).
pub fn bind_socket(path: &Path, group: Option<&str>) -> Result<UnixAdmin, StartError> {
    let gid = match group {
        Some(g) => Some(group_id(g).map_err(|e| sock_err(path, format!("admin.group: {e}")))?),
        None => None,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&dir)
            .map_err(|e| sock_err(path, format!("cannot create {}: {e}", dir.display())))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                return Err(sock_err(path, "exists and is not a socket; not replaced"));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(sock_err(
                    path,
                    "another process (a running controller?) serves this socket",
                ));
            }
            tracing::info!(path = %path.display(), "replacing a stale admin socket");
            std::fs::remove_file(path).map_err(|e| sock_err(path, e))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err(path, e)),
    }
    // Bind in a private directory, set mode and group, then rename into place.
    let name = path
        .file_name()
        .ok_or_else(|| sock_err(path, "no file name"))?;
    // Short: a socket path is limited to 107 bytes, and this one is a few longer than `path`.
    let tmp_dir = dir.join(format!(".adm{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp_dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp_dir)
        .map_err(|e| sock_err(path, format!("cannot create {}: {e}", tmp_dir.display())))?;
    let tmp = tmp_dir.join(name);
    let r = (|| {
        let l = std::os::unix::net::UnixListener::bind(&tmp)?;
        let mode = if gid.is_some() { 0o660 } else { 0o600 };
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        if let Some(g) = gid {
            std::os::unix::fs::chown(&tmp, None, Some(g))?;
        }
        std::fs::rename(&tmp, path)?;
        l.set_nonblocking(true)?;
        Ok::<_, std::io::Error>(l)
    })();
    let _ = std::fs::remove_dir_all(&tmp_dir);
    let l = r.map_err(|e| sock_err(path, e))?;
    let listener = tokio::net::UnixListener::from_std(l).map_err(|e| sock_err(path, e))?;
    Ok(UnixAdmin {
        listener,
        path: path.to_owned(),
    })
}

/// Serves the admin API on the socket until `shutdown` changes, then removes the socket file.
pub fn spawn_unix(
    svc: AdminService,
    sock: UnixAdmin,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> (&'static str, tokio::task::JoinHandle<()>) {
    let UnixAdmin { listener, path } = sock;
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener).map(|r| {
        if let Ok(s) = &r {
            match s.peer_cred() {
                Ok(c) => tracing::info!(uid = c.uid(), gid = c.gid(), pid = ?c.pid(), "admin connection on the Unix socket"),
                Err(e) => tracing::warn!(error = %e, "admin connection: no peer credentials"),
            }
        }
        r
    });
    let router = tonic::transport::Server::builder().add_service(AdminServer::new(svc));
    tracing::info!(path = %path.display(), "admin API: Unix socket");
    (
        "admin endpoint (Unix socket)",
        tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming_shutdown(incoming, stop).await {
                tracing::error!(error = %e, "admin endpoint (Unix socket) failed");
            }
            let _ = std::fs::remove_file(&path);
        }),
    )
}

pub use crate::audit::{audit, who};
