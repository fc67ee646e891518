//! The operator CLI: subcommands of `dvipa` that talk to a running controller's admin API,
//! and the rendering of its tables (aligned text by default, JSON with `-o json`).
//!
//! `--admin` defaults to the controller's Unix socket (`unix:/run/dvipa/admin.sock`; any
//! `unix:PATH` or a path starting with `/` or `.`). Against a TCP admin API that requires mutual
//! TLS (`[admin.tls]`), pass the admin certificate with `--ca/--cert/--key` (or
//! `DVIPA_ADMIN_CA/_CERT/_KEY`); a host:port then defaults to `https://`.

use clap::builder::TypedValueParser;
use clap::{Args, Subcommand, ValueEnum};
use dvipa_proto::v1 as pb;
use dvipa_proto::v1::admin_client::AdminClient;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Aligned columns.
    #[default]
    Table,
    /// A JSON object `{title, rows: [{column: value}]}`.
    Json,
}

/// Where the controller's admin API is, and how to print.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Admin API of the controller: its Unix socket (`unix:PATH`, or a path starting with
    /// `/` or `.`), or TCP (`http://…`, or `https://…` with --ca/--cert/--key; a bare host:port
    /// gets the scheme from whether TLS material is given).
    #[arg(
        long,
        env = "DVIPA_ADMIN",
        default_value = "unix:/run/dvipa/admin.sock",
        global = true,
        help_heading = "Admin API client (operator commands)"
    )]
    pub admin: String,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// Admin TLS: CA certificate (PEM) that signed the controller's admin certificate.
    #[arg(
        long,
        env = "DVIPA_ADMIN_CA",
        global = true,
        help_heading = "Admin API client (operator commands)",
        value_name = "PEM"
    )]
    pub ca: Option<PathBuf>,
    /// Admin TLS: this operator's client certificate (PEM; its name must be in the
    /// controller's `admin.tls.allow`).
    #[arg(
        long,
        env = "DVIPA_ADMIN_CERT",
        global = true,
        help_heading = "Admin API client (operator commands)",
        value_name = "PEM"
    )]
    pub cert: Option<PathBuf>,
    /// Admin TLS: the client certificate's private key (PEM).
    #[arg(
        long,
        env = "DVIPA_ADMIN_KEY",
        global = true,
        help_heading = "Admin API client (operator commands)",
        value_name = "PEM"
    )]
    pub key: Option<PathBuf>,
    /// Admin TLS: name expected in the controller's certificate (default: the host of --admin).
    #[arg(
        long,
        env = "DVIPA_ADMIN_SERVER_NAME",
        global = true,
        help_heading = "Admin API client (operator commands)",
        value_name = "NAME"
    )]
    pub server_name: Option<String>,
}

impl Common {
    /// Plaintext, table output, against `admin` (tests).
    pub fn plaintext(admin: impl Into<String>) -> Common {
        Common {
            admin: admin.into(),
            output: Output::Table,
            ca: None,
            cert: None,
            key: None,
            server_name: None,
        }
    }
}

/// The `dvipa controller` flags that override the TOML (`[admin] listen`, `agent.insecure`,
/// `[advertise]`, `timers.resync_ms`); also accepted by `dvipa check-config` to show the
/// effective values. Precedence: flag > TOML > built-in default.
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigFlags {
    /// Admin API TCP listen address (overrides `admin.listen`); needs `[admin.tls]` or
    /// --admin-insecure-tcp.
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,
    /// Admin API Unix socket (overrides `admin.socket`; default /run/dvipa/admin.sock; "" =
    /// none).
    #[arg(long, value_name = "PATH", value_parser = clap::builder::OsStringValueParser::new().map(PathBuf::from))]
    pub admin_socket: Option<PathBuf>,
    /// Serve the admin API over plaintext TCP on loopback too (overrides
    /// `admin.insecure_tcp`): every local user can then change routing. Tests and demos.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub admin_insecure_tcp: Option<bool>,
    /// Run the agent endpoint without TLS (overrides `agent.insecure`; `--insecure=false`
    /// turns it off); refused when the configuration has a `[tls]` section. Tests only.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub insecure: Option<bool>,
    /// Command run (sh -c) when a switch must advertise a DVIPA (overrides
    /// `advertise.advertise_cmd`); DVIPA_ACTION, DVIPA_SWITCH, DVIPA_ADDR, DVIPA_PREFIX_LEN
    /// are set.
    #[arg(long, value_name = "CMD")]
    pub advertise_cmd: Option<String>,
    /// Command run when a switch must withdraw a DVIPA (overrides `advertise.withdraw_cmd`).
    #[arg(long, value_name = "CMD")]
    pub withdraw_cmd: Option<String>,
    /// Re-read every switch this often and repair differences (overrides
    /// `timers.resync_ms`; default 30 s).
    #[arg(long, value_name = "SECS")]
    pub resync_secs: Option<u64>,
}

impl ConfigFlags {
    /// As config overrides.
    pub fn overrides(&self) -> dvipa_core::config::Overrides {
        dvipa_core::config::Overrides {
            admin_listen: self.admin_listen,
            admin_socket: self.admin_socket.clone(),
            admin_insecure_tcp: self.admin_insecure_tcp,
            agent_insecure: self.insecure,
            advertise_cmd: self.advertise_cmd.clone(),
            withdraw_cmd: self.withdraw_cmd.clone(),
            resync_ms: self.resync_secs.map(|s| s.saturating_mul(1000)),
        }
    }
}

/// NETSTAT reports.
#[derive(Debug, Clone, Copy, Subcommand)]
pub enum Report {
    /// Destination port table: DVIPA, port, target stack, XCF, total conns, ready, weight,
    /// health, active conns.
    Vdpt,
    /// Connection routing table: DVIPA, port, client addr/port, target, origin.
    Vcrt,
    /// The configured VIPA list.
    Vipadcfg,
    /// Which switch routes / backs up each DVIPA, and its state.
    Vipadyn,
}

impl Report {
    fn name(self) -> &'static str {
        match self {
            Report::Vdpt => "vdpt",
            Report::Vcrt => "vcrt",
            Report::Vipadcfg => "vipadcfg",
            Report::Vipadyn => "vipadyn",
        }
    }
}

/// `dvipa table …`.
#[derive(Debug, Clone, Subcommand)]
pub enum TableCmd {
    /// Read one P4 table from the switch itself.
    Dump {
        /// P4Info table name or unique suffix (crt, dpt, dvipa, target, ipv4_route).
        table: String,
        /// Switch name.
        #[arg(long)]
        switch: String,
    },
}

/// `dvipa switch …`.
#[derive(Debug, Clone, Subcommand)]
pub enum SwitchCmd {
    /// Mark a switch down for maintenance (its DVIPAs move to backups).
    Down {
        /// Switch name.
        switch: String,
    },
    /// Put a switch back into service.
    Up {
        /// Switch name.
        switch: String,
    },
}

/// Operator subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum OpCmd {
    /// z/OS-like NETSTAT reports.
    Netstat {
        /// Report.
        #[command(subcommand)]
        report: Report,
    },
    /// Switch tables.
    Table {
        /// What.
        #[command(subcommand)]
        cmd: TableCmd,
    },
    /// Entries that differ between the controller and a switch.
    Diff {
        /// Switch name.
        #[arg(long)]
        switch: String,
    },
    /// Re-read a switch now and write what differs.
    Reconcile {
        /// Switch name.
        #[arg(long)]
        switch: String,
    },
    /// Maintenance mark.
    Switch {
        /// Down or up.
        #[command(subcommand)]
        cmd: SwitchCmd,
    },
    /// Move a DVIPA to another routing switch.
    Move {
        /// DVIPA.
        dvipa: Ipv4Addr,
        /// Target switch.
        #[arg(long)]
        to: String,
    },
    /// Controller counters.
    Counters,
}

/// A client error for the CLI.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Connect failed.
    #[error("cannot reach the controller at {addr}: {}", explained(source, server_name.as_deref()))]
    Connect {
        /// Address.
        addr: String,
        /// The name expected in the controller's certificate (TLS).
        server_name: Option<String>,
        /// Cause.
        source: tonic::transport::Error,
    },
    /// The call failed in the transport (TLS, HTTP/2) after connecting; the message names
    /// the cause ([`crate::transport_errors::explain`]).
    #[error("cannot talk to the controller at {addr}: {cause}")]
    Transport {
        /// Address.
        addr: String,
        /// What went wrong, in words.
        cause: String,
        /// The status tonic returned.
        status: tonic::Status,
    },
    /// The controller refused.
    #[error("{:?}: {}", .0.code(), .0.message())]
    Status(#[from] tonic::Status),
    /// Bad admin TLS options or material.
    #[error("admin TLS: {0}")]
    Tls(String),
}

/// The cause in words when known, else the error chain.
fn explained(e: &tonic::transport::Error, server_name: Option<&str>) -> String {
    crate::transport_errors::explain(e, server_name).unwrap_or_else(|| chain(e))
}

/// An error and its causes, `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The socket path when `admin` names a Unix socket (`unix:PATH`, `/…`, `./…`).
pub fn unix_path(admin: &str) -> Option<PathBuf> {
    if let Some(p) = admin.strip_prefix("unix://") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = admin.strip_prefix("unix:") {
        return Some(PathBuf::from(p));
    }
    (admin.starts_with('/') || admin.starts_with('.')).then(|| PathBuf::from(admin))
}

/// The admin channel over the Unix socket at `path`.
async fn connect_unix(path: PathBuf) -> Result<tonic::transport::Channel, CliError> {
    let addr = format!("unix:{}", path.display());
    let ep = tonic::transport::Endpoint::from_static("http://localhost");
    ep.connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        }
    }))
    .await
    .map_err(|source| CliError::Connect {
        addr,
        server_name: None,
        source,
    })
}

/// The admin channel: the Unix socket, plaintext TCP, or mutual TLS when `--ca/--cert/--key`
/// are given.
pub async fn connect(common: &Common) -> Result<tonic::transport::Channel, CliError> {
    use tonic::transport::Endpoint;
    if let Some(p) = unix_path(&common.admin) {
        if common.ca.is_some() || common.cert.is_some() || common.key.is_some() {
            return Err(CliError::Tls(format!(
                "{} is a Unix socket: --ca/--cert/--key are for a TCP admin API",
                common.admin
            )));
        }
        return connect_unix(p).await;
    }
    let tls = match (&common.ca, &common.cert, &common.key) {
        (None, None, None) => None,
        (Some(ca), Some(cert), Some(key)) => {
            let b = dvipa_tls::PemBundle::load(&dvipa_tls::PemPaths {
                ca: ca.clone(),
                cert: cert.clone(),
                key: key.clone(),
            })
            .map_err(|e| CliError::Tls(e.to_string()))?;
            Some(
                dvipa_tls::client_tls_config(&b, common.server_name.as_deref())
                    .map_err(|e| CliError::Tls(e.to_string()))?,
            )
        }
        _ => {
            return Err(CliError::Tls(
                "--ca, --cert and --key (DVIPA_ADMIN_CA/_CERT/_KEY) go together".into(),
            ));
        }
    };
    let addr = match (common.admin.split_once("://"), tls.is_some()) {
        (None, false) => format!("http://{}", common.admin),
        (None, true) => format!("https://{}", common.admin),
        (Some(("http", _)), true) => {
            return Err(CliError::Tls(format!(
                "{} is plaintext but --ca/--cert/--key were given; use https://",
                common.admin
            )));
        }
        (Some(("https", _)), false) => {
            return Err(CliError::Tls(format!(
                "{} needs the admin certificate: --ca, --cert and --key",
                common.admin
            )));
        }
        _ => common.admin.clone(),
    };
    let mut ep = Endpoint::from_shared(addr.clone()).map_err(|source| CliError::Connect {
        addr: addr.clone(),
        server_name: None,
        source,
    })?;
    if let Some(t) = tls {
        ep = ep.tls_config(t).map_err(|source| CliError::Connect {
            addr: addr.clone(),
            server_name: None,
            source,
        })?;
    }
    ep.connect().await.map_err(|source| CliError::Connect {
        addr,
        server_name: common.server_name.clone(),
        source,
    })
}

/// Largest admin reply the CLI accepts. The controller is trusted here, and `netstat vcrt` of a
/// large CRT is big (about 70 bytes a connection: 17.5 MB for 250,000); gRPC's default 4 MiB
/// refused it above about 60,000 connections.
pub const MAX_ADMIN_REPLY: usize = 512 << 20;

/// What one command printed.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A table.
    Table(pb::AdminTable),
    /// A message.
    Message(String),
}

/// Runs one operator command against the admin API; a status that comes from the transport
/// (TLS refused, not HTTP/2) is turned into [`CliError::Transport`] naming the cause.
pub async fn run(common: &Common, cmd: &OpCmd) -> Result<Reply, CliError> {
    match run_inner(common, cmd).await {
        // A status with a source comes from the transport, not from the controller.
        Err(CliError::Status(status)) if std::error::Error::source(&status).is_some() => {
            let sn = common.server_name.as_deref();
            let cause = match crate::transport_errors::explain(&status, sn) {
                Some(c) => Some(c),
                None => probe(common).await,
            };
            Err(match cause {
                Some(cause) => CliError::Transport {
                    addr: common.admin.clone(),
                    cause,
                    status,
                },
                None => CliError::Status(status),
            })
        }
        r => r,
    }
}

/// Without TLS options: send the HTTP/2 preface on a separate connection and look at the
/// first bytes of the answer; a TLS record (alert 0x15, handshake 0x16) means a TLS port.
async fn probe_plain(common: &Common) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = common
        .admin
        .split_once("://")
        .map_or(common.admin.as_str(), |(_, a)| a)
        .trim_end_matches('/');
    let wait = std::time::Duration::from_secs(2);
    let mut s = tokio::time::timeout(wait, tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .ok()?;
    let mut b = [0u8; 5];
    match tokio::time::timeout(wait, s.read(&mut b)).await {
        Ok(Ok(n)) if n >= 1 && (b[0] == 0x15 || b[0] == 0x16) => Some(
            "the controller answered with TLS, not plain HTTP/2: the port needs TLS; give \
             --ca, --cert and --key (or use https://)"
                .into(),
        ),
        _ => None,
    }
}

/// With TLS options: a separate handshake to learn why the connection closed (a refused
/// client certificate arrives as an alert the HTTP/2 client may never read).
async fn probe(common: &Common) -> Option<String> {
    let (Some(ca), Some(cert), Some(key)) = (&common.ca, &common.cert, &common.key) else {
        return probe_plain(common).await;
    };
    let b = dvipa_tls::PemBundle::load(&dvipa_tls::PemPaths {
        ca: ca.clone(),
        cert: cert.clone(),
        key: key.clone(),
    })
    .ok()?;
    let addr = common
        .admin
        .split_once("://")
        .map_or(common.admin.as_str(), |(_, a)| a)
        .trim_end_matches('/');
    let host = addr
        .rsplit_once(':')
        .map_or(addr, |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let sn = common.server_name.as_deref().unwrap_or(host);
    match dvipa_tls::probe_handshake(&b, addr, sn, std::time::Duration::from_secs(2)).await {
        Ok(()) => None,
        Err(e) => Some(
            crate::transport_errors::explain(&e, Some(sn)).unwrap_or_else(|| format!("TLS: {e}")),
        ),
    }
}

async fn run_inner(common: &Common, cmd: &OpCmd) -> Result<Reply, CliError> {
    let mut c = AdminClient::new(connect(common).await?).max_decoding_message_size(MAX_ADMIN_REPLY);
    Ok(match cmd {
        OpCmd::Netstat { report } => Reply::Table(
            c.netstat(pb::NetstatRequest {
                report: report.name().into(),
            })
            .await?
            .into_inner(),
        ),
        OpCmd::Table {
            cmd: TableCmd::Dump { table, switch },
        } => Reply::Table(
            c.table_dump(pb::TableDumpRequest {
                switch: switch.clone(),
                table: table.clone(),
            })
            .await?
            .into_inner(),
        ),
        OpCmd::Diff { switch } => Reply::Table(
            c.diff(pb::SwitchRequest {
                switch: switch.clone(),
            })
            .await?
            .into_inner(),
        ),
        OpCmd::Reconcile { switch } => Reply::Message(
            c.reconcile(pb::SwitchRequest {
                switch: switch.clone(),
            })
            .await?
            .into_inner()
            .message,
        ),
        OpCmd::Switch { cmd } => {
            let (switch, down) = match cmd {
                SwitchCmd::Down { switch } => (switch, true),
                SwitchCmd::Up { switch } => (switch, false),
            };
            Reply::Message(
                c.maintenance(pb::MaintenanceRequest {
                    switch: switch.clone(),
                    down,
                })
                .await?
                .into_inner()
                .message,
            )
        }
        OpCmd::Move { dvipa, to } => Reply::Message(
            c.r#move(pb::MoveRequest {
                dvipa: u32::from(*dvipa),
                to: to.clone(),
            })
            .await?
            .into_inner()
            .message,
        ),
        OpCmd::Counters => Reply::Table(c.counters(pb::CountersRequest {}).await?.into_inner()),
    })
}

/// Aligned text: title, header, rows.
pub fn render_text(t: &pb::AdminTable) -> String {
    let n = t.columns.len();
    let mut w: Vec<usize> = t.columns.iter().map(|c| c.chars().count()).collect();
    for r in &t.rows {
        for (i, c) in r.cells.iter().enumerate().take(n) {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate().take(n) {
            if i + 1 == n {
                s.push_str(c);
            } else {
                s.push_str(&format!("{:<width$}  ", c, width = w[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = format!("{}\n", t.title);
    out.push_str(&line(&t.columns));
    out.push('\n');
    for r in &t.rows {
        out.push_str(&line(&r.cells));
        out.push('\n');
    }
    if t.rows.is_empty() {
        out.push_str("(none)\n");
    }
    out
}

/// JSON: `{"title": …, "rows": [{column: cell, …}, …]}`.
pub fn render_json(t: &pb::AdminTable) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = t
        .rows
        .iter()
        .map(|r| {
            serde_json::Value::Object(
                t.columns
                    .iter()
                    .zip(&r.cells)
                    .map(|(c, v)| (c.to_lowercase(), serde_json::Value::String(v.clone())))
                    .collect(),
            )
        })
        .collect();
    serde_json::json!({ "title": t.title, "rows": rows })
}

/// Prints a reply in the chosen format.
pub fn print(reply: &Reply, out: Output) {
    match (reply, out) {
        (Reply::Table(t), Output::Table) => print!("{}", render_text(t)),
        (Reply::Table(t), Output::Json) => println!("{}", render_json(t)),
        (Reply::Message(m), Output::Table) => println!("{m}"),
        (Reply::Message(m), Output::Json) => println!("{}", serde_json::json!({ "message": m })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> pb::AdminTable {
        pb::AdminTable {
            title: "T".into(),
            columns: vec!["DVIPA".into(), "PORT".into()],
            rows: vec![pb::AdminRow {
                cells: vec!["203.0.113.10".into(), "60".into()],
            }],
        }
    }

    #[test]
    fn text_columns_are_aligned_and_json_is_keyed_by_column() {
        let s = render_text(&t());
        assert_eq!(s, "T\nDVIPA         PORT\n203.0.113.10  60\n");
        let j = render_json(&t());
        assert_eq!(j["rows"][0]["dvipa"], "203.0.113.10");
        assert_eq!(j["rows"][0]["port"], "60");
    }
}
