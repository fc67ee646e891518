//! The local control socket (a Unix stream socket, mode 0600, default
//! `/run/dvipa-agent.sock`): one request line, one reply line.
//!
//! ```text
//! drain <port> [<dvipa>]     SRVSTAT draining=true for listeners on port (on one DVIPA or all)
//! undrain <port> [<dvipa>]   back to normal
//! status                     the agent's state as JSON
//! ```
//! Replies start with `ok:` or `error:` (or are the JSON status). `dvipa-agent drain --port P`
//! and friends are clients of this socket.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use crate::agent::{AgentStats, Control};
use crate::tracker::Drain;

/// Control socket errors.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad command: {0}")]
    BadCommand(String),
    #[error("agent replied: {0}")]
    Refused(String),
}

/// A parsed control request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Drain { drain: Drain, on: bool },
    Status,
}

/// Parses one request line.
pub fn parse_command(line: &str) -> Result<Command, ControlError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let bad = |m: &str| {
        Err(ControlError::BadCommand(format!(
            "{m} (in `{}`)",
            line.trim()
        )))
    };
    match words.as_slice() {
        ["status"] => Ok(Command::Status),
        [verb @ ("drain" | "undrain"), rest @ ..] => {
            let (port, dvipa) = match rest {
                [p] => (*p, None),
                [p, d] => (*p, Some(*d)),
                _ => return bad("usage: drain|undrain <port> [<dvipa>]"),
            };
            let port = match port.parse::<u16>() {
                Ok(p) if p != 0 => p,
                _ => return bad("port must be 1..65535"),
            };
            let dvipa = match dvipa.map(str::parse::<Ipv4Addr>) {
                None => None,
                Some(Ok(a)) => Some(a),
                Some(Err(_)) => return bad("dvipa must be an IPv4 address"),
            };
            Ok(Command::Drain {
                drain: Drain { dvipa, port },
                on: *verb == "drain",
            })
        }
        _ => bad("unknown command; expected drain, undrain or status"),
    }
}

/// Binds the socket (replacing a stale one) and serves requests on the current runtime until
/// the agent goes away. Unparsable lines are answered with an `error:` reply and counted in
/// `stats.control_bad_requests`.
pub fn serve(
    path: &Path,
    agent: mpsc::Sender<Control>,
    stats: Arc<AgentStats>,
) -> Result<tokio::task::JoinHandle<()>, ControlError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let agent = agent.clone();
            let stats = stats.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut line = String::new();
                if BufReader::new(r).read_line(&mut line).await.is_err() {
                    return;
                }
                let reply = match parse_command(&line) {
                    Err(e) => {
                        stats.control_bad_requests.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("dvipa_agent_control_bad_requests_total").increment(1);
                        format!("error: {e}")
                    }
                    Ok(cmd) => {
                        let (tx, rx) = oneshot::channel();
                        let req = match cmd {
                            Command::Status => Control::Status { reply: tx },
                            Command::Drain { drain, on } => Control::Drain {
                                drain,
                                on,
                                reply: tx,
                            },
                        };
                        if agent.send(req).await.is_err() {
                            "error: agent is shutting down".to_string()
                        } else {
                            rx.await
                                .unwrap_or_else(|_| "error: agent is shutting down".into())
                        }
                    }
                };
                let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
            });
        }
    }))
}

/// Sends one request line to the agent at `path` and returns its reply (an `error:` reply is
/// returned as [`ControlError::Refused`]).
pub async fn request(path: &Path, line: &str) -> Result<String, ControlError> {
    let io = |source| ControlError::Io {
        path: path.to_owned(),
        source,
    };
    let stream = UnixStream::connect(path).await.map_err(io)?;
    let (r, mut w) = stream.into_split();
    w.write_all(format!("{}\n", line.trim()).as_bytes())
        .await
        .map_err(io)?;
    let mut reply = String::new();
    BufReader::new(r).read_line(&mut reply).await.map_err(io)?;
    let reply = reply.trim().to_string();
    match reply.strip_prefix("error: ") {
        Some(e) => Err(ControlError::Refused(e.to_string())),
        None => Ok(reply),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(parse_command("status\n").unwrap(), Command::Status);
        assert_eq!(
            parse_command("drain 80").unwrap(),
            Command::Drain {
                drain: Drain {
                    dvipa: None,
                    port: 80
                },
                on: true
            }
        );
        assert_eq!(
            parse_command("undrain 443 10.0.0.1").unwrap(),
            Command::Drain {
                drain: Drain {
                    dvipa: Some(Ipv4Addr::new(10, 0, 0, 1)),
                    port: 443
                },
                on: false
            }
        );
    }

    #[test]
    fn bad_commands_are_explained() {
        for (line, want) in [
            ("drain", "usage"),
            ("drain 0", "port"),
            ("drain 70000", "port"),
            ("drain 80 nope", "IPv4"),
            ("reboot", "unknown command"),
        ] {
            let e = parse_command(line).unwrap_err().to_string();
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[tokio::test]
    async fn socket_round_trip_and_bad_request_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let (tx, mut rx) = mpsc::channel(4);
        let stats = Arc::new(AgentStats::default());
        let _h = serve(&path, tx, stats.clone()).unwrap();
        tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                if let Control::Drain { drain, on, reply } = c {
                    let _ = reply.send(format!("ok: {} {on}", drain.port));
                }
            }
        });
        assert_eq!(request(&path, "drain 8080").await.unwrap(), "ok: 8080 true");
        let e = request(&path, "drain x").await.unwrap_err();
        assert!(matches!(e, ControlError::Refused(_)), "{e}");
        assert_eq!(stats.control_bad_requests.load(Ordering::Relaxed), 1);
    }
}
