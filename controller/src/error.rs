//! Errors of the controller shell, one enum per layer, and their mapping to the wire
//! (`tonic::Status`) in one `From`.

use std::path::PathBuf;

/// Start-up errors (configuration, P4Info, TLS, listeners).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `[ha]` could not start.
    #[error("[ha]: {0}")]
    Ha(String),
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// Path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The TOML or a profile is invalid.
    #[error("{0}")]
    Config(#[from] dvipa_core::config::ConfigErrors),
    /// The core refused the cluster.
    #[error("{0}")]
    Core(#[from] dvipa_core::core::CoreError),
    /// A configuration file is not UTF-8 (the message names the byte offset).
    #[error("{0}")]
    Text(String),
    /// The P4Info could not be loaded (`at`: `file:line:col: ` of the TOML's `p4info`).
    #[error("{at}p4info: {path}: {msg}")]
    P4Info {
        /// Where the TOML names it.
        at: String,
        /// Path.
        path: PathBuf,
        /// Cause.
        msg: String,
    },
    /// The P4Info lacks names of the contract.
    #[error("{0}")]
    Names(#[from] dvipa_contract::Mismatches),
    /// TLS material.
    #[error("TLS: {0}")]
    Tls(#[from] dvipa_tls::TlsError),
    /// Plaintext agent endpoint without explicit permission.
    #[error(
        "the configuration has no [tls] section: the agent endpoint would run without \
         authentication; pass --insecure to allow this (tests only)"
    )]
    InsecureNotAllowed,
    /// `--insecure` together with a `[tls]` section.
    #[error("--insecure was given but the configuration has a [tls] section; remove one")]
    InsecureConflict,
    /// A listener could not be bound.
    #[error("listening on {addr}: {source}")]
    Listen {
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// Metrics exporter.
    #[error("metrics endpoint: {0}")]
    Metrics(String),
    /// The admin Unix socket could not be set up.
    #[error("admin.socket {path}: {msg}")]
    AdminSocket {
        /// Path.
        path: PathBuf,
        /// Cause.
        msg: String,
    },
}

/// Errors answering an admin request or an agent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Unknown switch name.
    #[error("unknown switch `{0}`")]
    UnknownSwitch(String),
    /// Unknown DVIPA.
    #[error("unknown DVIPA {0}")]
    UnknownDvipa(std::net::Ipv4Addr),
    /// Unknown report or table.
    #[error("{0}")]
    BadRequest(String),
    /// The switch is not connected or did not answer.
    #[error("switch `{switch}` is not reachable: {detail}")]
    SwitchUnavailable {
        /// Switch.
        switch: String,
        /// Why.
        detail: String,
    },
    /// The request was understood but refused by the core.
    #[error("{0}")]
    Refused(String),
    /// Not built yet.
    #[error("{0} is not implemented yet")]
    NotImplemented(&'static str),
    /// Agent protocol violation.
    #[error("{0}")]
    Protocol(String),
    /// Agent not authorised.
    #[error("{0}")]
    Unauthorised(String),
}

impl From<ApiError> for tonic::Status {
    fn from(e: ApiError) -> Self {
        let msg = e.to_string();
        match e {
            ApiError::UnknownSwitch(_) | ApiError::UnknownDvipa(_) => tonic::Status::not_found(msg),
            ApiError::BadRequest(_) | ApiError::Protocol(_) => tonic::Status::invalid_argument(msg),
            ApiError::SwitchUnavailable { .. } => tonic::Status::unavailable(msg),
            ApiError::Refused(_) => tonic::Status::failed_precondition(msg),
            ApiError::NotImplemented(_) => tonic::Status::unimplemented(msg),
            ApiError::Unauthorised(_) => tonic::Status::permission_denied(msg),
        }
    }
}
