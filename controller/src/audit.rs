//! The audit trail of mutating admin commands: who sent a request, one log line and a
//! counter per command and result (a leaf below the admin endpoints).

use crate::shared::Shared;
use tonic::{Request, Status};

/// Metric of audited admin commands, labelled `command` and `result` (`ok`, `refused`).
pub const AUDIT_METRIC: &str = "dvipa_admin_commands_total";

/// Who sent `req`: `uid=N` (Unix socket, SO_PEERCRED), `cert=NAME` (mutual TLS), or
/// `tcp=ADDR (unauthenticated)` (plaintext TCP).
pub fn who<T>(req: &Request<T>) -> String {
    if let Some(info) = req
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
    {
        return match &info.peer_cred {
            Some(c) => format!(
                "uid={} gid={} pid={}",
                c.uid(),
                c.gid(),
                c.pid().map(|p| p.to_string()).unwrap_or_else(|| "?".into())
            ),
            None => "unix (no credentials)".into(),
        };
    }
    let names = dvipa_tls::peer_names(req);
    if !names.is_empty() {
        return format!("cert={}", names.join(","));
    }
    match req.remote_addr() {
        Some(a) => format!("tcp={a} (unauthenticated)"),
        None => "unknown".into(),
    }
}

/// Writes the audit line of one mutating admin command and counts it.
pub fn audit<T>(
    shared: &Shared,
    who: &str,
    command: &'static str,
    what: &str,
    result: &Result<T, Status>,
) {
    let (label, detail) = match result {
        Ok(_) => ("ok", String::new()),
        Err(s) => ("refused", format!("{:?}: {}", s.code(), s.message())),
    };
    match result {
        Ok(_) => {
            tracing::info!(target: "dvipa::audit", ?who, command, ?what, result = label, "admin command")
        }
        Err(_) => {
            tracing::warn!(target: "dvipa::audit", ?who, command, ?what, result = label, ?detail, "admin command")
        }
    }
    shared
        .stats
        .add(&format!("admin_audit_{command}_{label}"), 1);
    metrics::counter!(AUDIT_METRIC, "command" => command, "result" => label).increment(1);
}
