//! The agents' endpoint: `dvipa.v1.ServerStack/Attach`.
//!
//! The first message must be a Hello. With TLS, the verified client-certificate name must equal
//! `Hello.stack`, and the stack must be configured; otherwise the stream is refused
//! (`PERMISSION_DENIED`) and counted. Accepted sessions get the core's Welcome, VIPA list (and
//! every later change) and one Ack per Report batch with per-item errors. Heartbeats renew the
//! lease on the core's clock.
//!
//! The endpoint's certificate, key and client CA follow their files (`dvipa_tls::reload`,
//! set up in `controller.rs`): new handshakes use rotated material, attached sessions go on.

use crate::error::ApiError;
use crate::shared::Shared;
use dvipa_core::core::Event;
use dvipa_proto::v1 as pb;
use dvipa_proto::v1::server_stack_server::ServerStack;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Largest AgentMessage the endpoint decodes (tonic's default, stated): a bigger Report ends
/// the session with `RESOURCE_EXHAUSTED` naming the limit, counted as
/// `rejected_report_too_large`. An agent's Reports hold at most `--max-batch` (512) items,
/// about 20 KiB.
pub const MAX_AGENT_MESSAGE: usize = 4 << 20;

/// How long a new stream may take to send its Hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The ServerStack service.
#[derive(Debug, Clone)]
pub struct AgentService {
    shared: Arc<Shared>,
    /// Certificates are verified (false only with `--insecure`).
    tls: bool,
    next: Arc<AtomicU64>,
    /// The endpoint's connections, to cut a session that does not read its stream.
    conns: Option<Arc<crate::killable::Connections>>,
}

impl AgentService {
    /// A service over `shared`; `tls` = the transport verifies client certificates.
    pub fn new(shared: Arc<Shared>, tls: bool) -> Self {
        AgentService {
            shared,
            tls,
            next: Arc::new(AtomicU64::new(1)),
            conns: None,
        }
    }

    /// Sessions of a slow peer are cut through `conns` (the endpoint must serve
    /// [`Killable`](crate::killable::Killable) connections registered there); without it such a
    /// session is only dropped from the controller's side.
    pub fn with_connections(mut self, conns: Arc<crate::killable::Connections>) -> Self {
        self.conns = Some(conns);
        self
    }

    fn refuse(&self, reason: &'static str, e: ApiError) -> Status {
        self.shared.stats.reject(reason);
        // a misbehaving agent may retry in a loop: one line per 30 s and reason (all counted)
        match p4rt::ratelimit::check(&format!("agent refused {reason}")) {
            Some(suppressed) => tracing::warn!(reason, error = %e, suppressed, "agent refused"),
            None => tracing::debug!(reason, error = %e, "agent refused"),
        }
        e.into()
    }
}

pub use crate::agent_pb::{report, vipa_list_pb};

type AttachStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ControllerMessage, Status>> + Send>>;

#[tonic::async_trait]
impl ServerStack for AgentService {
    type AttachStream = AttachStream;

    async fn attach(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let names = dvipa_tls::peer_names(&req);
        let peer = req.remote_addr();
        let mut inbound = req.into_inner();
        let first = match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
            Err(_) => {
                return Err(self.refuse(
                    "hello_timeout",
                    ApiError::Protocol("no Hello within 10 s".into()),
                ));
            }
            Ok(Err(s)) => return Err(s),
            Ok(Ok(None)) => {
                return Err(self.refuse(
                    "no_hello",
                    ApiError::Protocol("stream closed before Hello".into()),
                ));
            }
            Ok(Ok(Some(m))) => m,
        };
        let hello = match first.msg {
            Some(pb::agent_message::Msg::Hello(h)) => h,
            _ => {
                return Err(self.refuse(
                    "first_message_not_hello",
                    ApiError::Protocol("the first message must be a Hello".into()),
                ));
            }
        };
        let stack = hello.stack.clone();
        if self.tls && !names.contains(&stack) {
            return Err(self.refuse(
                "cert_name_mismatch",
                ApiError::Unauthorised(format!(
                    "Hello says stack `{stack}` but the client certificate names {names:?}"
                )),
            ));
        }
        if self.tls {
            // A certificate good for several stacks could attach as any of them.
            let stacks: Vec<String> = self.shared.with_core(|c| {
                names
                    .iter()
                    .filter(|n| c.stack_id(n).is_some())
                    .cloned()
                    .collect()
            });
            if stacks.len() > 1 {
                return Err(self.refuse(
                    "cert_names_several_stacks",
                    ApiError::Unauthorised(format!(
                        "the client certificate names several configured stacks {stacks:?}; \
                         each stack needs its own certificate"
                    )),
                ));
            }
        }
        let configured = self.shared.with_core(|c| c.stack_id(&stack).is_some());
        if !configured {
            return Err(self.refuse(
                "unknown_stack",
                ApiError::Unauthorised(format!("stack `{stack}` is not configured")),
            ));
        }
        tracing::info!(%stack, ?peer, underlay = %Ipv4Addr::from(hello.underlay_addr), version = %hello.agent_version, "agent attached");
        self.shared.stats.add("agent_sessions", 1);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(crate::shared::AGENT_QUEUE);
        let kill = self.conns.as_ref().zip(peer).and_then(|(c, p)| c.get(p));
        self.shared.agent_attach(
            &stack,
            id,
            tx.clone(),
            kill,
            Event::AgentHello {
                stack: stack.clone(),
                underlay: Ipv4Addr::from(hello.underlay_addr),
                epoch: hello.epoch,
            },
        );
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                // Stop reading once the response stream is gone (session replaced, refused or
                // closed at shutdown): dropping `inbound` resets the stream.
                let m = tokio::select! {
                    m = inbound.message() => m,
                    _ = tx.closed() => break,
                };
                let m = match m {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(e) if e.code() == tonic::Code::OutOfRange => {
                        // tonic's decode limit (MAX_AGENT_MESSAGE): tell the agent why,
                        // instead of ending the stream with OK.
                        shared.stats.reject("report_too_large");
                        tracing::warn!(%stack, error = %e.message(), "agent message over the size limit; session ended");
                        let _ = tx.try_send(Err(Status::resource_exhausted(format!(
                            "agent message too large: {} (the controller decodes at most {} \
                             bytes per message; send smaller Reports, e.g. a lower --max-batch)",
                            e.message(),
                            MAX_AGENT_MESSAGE
                        ))));
                        break;
                    }
                    Err(e) => {
                        tracing::info!(%stack, error = %e, "agent stream error");
                        break;
                    }
                };
                if !shared.agent_current(&stack, id) {
                    break;
                }
                match m.msg {
                    Some(pb::agent_message::Msg::Report(r)) => shared.event(Event::AgentReport {
                        stack: stack.clone(),
                        report: report(m.seq, &r),
                    }),
                    Some(pb::agent_message::Msg::Heartbeat(h)) => {
                        shared.event(Event::AgentHeartbeat {
                            stack: stack.clone(),
                            weight: h.weight,
                        })
                    }
                    Some(pb::agent_message::Msg::Hello(_)) => {
                        shared.stats.reject("duplicate_hello");
                        let _ = tx.try_send(Err(ApiError::Protocol(
                            "a second Hello on the same stream".into(),
                        )
                        .into()));
                        break;
                    }
                    None => {
                        shared.stats.reject("empty_message");
                        let _ = tx.try_send(Err(ApiError::Protocol(
                            "an AgentMessage without a message".into(),
                        )
                        .into()));
                        break;
                    }
                }
            }
            tracing::info!(%stack, "agent stream ended");
            shared.agent_detach(&stack, id);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
