//! The state shared by the shell's tasks: the sans-IO [`Core`] behind one mutex, the channels
//! to the switch drivers, agent sessions and the advertiser, and the shell's counters.
//!
//! Every input goes through [`Shared::event`]: the core handles it at the current time and
//! its actions are dispatched right away, still under the lock, by non-blocking channel sends
//! (so the lock is never held across an await). A timer task calls
//! [`Core::handle_timeout`] when [`Core::poll_timeout`] says so.

use crate::advertise::AdvCmd;
use crate::switch::SwitchCmd;
use dvipa_core::core::{Action, Core, Event, Time};
use dvipa_proto::v1 as pb;
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

/// Outbound half of an agent's stream.
pub type AgentTx = mpsc::UnboundedSender<Result<pb::ControllerMessage, tonic::Status>>;

/// Counters of the shell (the core has its own): name → value, also exported as metrics.
#[derive(Debug, Default)]
pub struct Stats {
    map: Mutex<BTreeMap<String, u64>>,
}

impl Stats {
    /// Adds `n` to counter `name`.
    pub fn add(&self, name: &str, n: u64) {
        *self.map.lock().entry(name.to_string()).or_default() += n;
    }
    /// Counts a refused agent message or session by reason (metric
    /// `dvipa_rejected_messages_total{reason}`).
    pub fn reject(&self, reason: &'static str) {
        self.add(&format!("rejected_{reason}"), 1);
        metrics::counter!("dvipa_rejected_messages_total", "reason" => reason).increment(1);
    }
    /// A counter's value.
    pub fn get(&self, name: &str) -> u64 {
        self.map.lock().get(name).copied().unwrap_or(0)
    }
    /// All counters.
    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        self.map.lock().clone()
    }
}

struct AgentSession {
    id: u64,
    tx: AgentTx,
}

/// Everything the tasks share.
pub struct Shared {
    core: Mutex<Core>,
    start: Instant,
    switches: HashMap<String, mpsc::UnboundedSender<SwitchCmd>>,
    agents: Mutex<HashMap<String, AgentSession>>,
    adv: mpsc::UnboundedSender<AdvCmd>,
    /// Shell counters.
    pub stats: Stats,
    /// TLS handshake counters of the agent endpoint.
    pub tls: Arc<dvipa_tls::TlsStats>,
    maintenance: Mutex<BTreeSet<String>>,
    timer: Notify,
    controller_id: String,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl Shared {
    /// Wraps the core.
    pub fn new(
        core: Core,
        switches: HashMap<String, mpsc::UnboundedSender<SwitchCmd>>,
        adv: mpsc::UnboundedSender<AdvCmd>,
    ) -> Shared {
        let controller_id = core.cluster().config.controller_id.clone();
        Shared {
            core: Mutex::new(core),
            start: Instant::now(),
            switches,
            agents: Mutex::new(HashMap::new()),
            adv,
            stats: Stats::default(),
            tls: Arc::new(dvipa_tls::TlsStats::default()),
            maintenance: Mutex::new(BTreeSet::new()),
            timer: Notify::new(),
            controller_id,
        }
    }

    /// The core's clock: milliseconds since the controller started.
    pub fn now(&self) -> Time {
        Time(self.start.elapsed().as_millis() as u64)
    }

    /// Feeds one event to the core and carries out its actions.
    pub fn event(&self, ev: Event) {
        let mut core = self.core.lock();
        core.handle(self.now(), ev);
        self.drain(&mut core);
        drop(core);
        self.timer.notify_one();
    }

    /// Read access to the core (admin queries, metrics).
    pub fn with_core<R>(&self, f: impl FnOnce(&Core) -> R) -> R {
        f(&self.core.lock())
    }

    /// Registers an agent session (replacing an older one of the same stack, whose stream then
    /// ends) and feeds its Hello.
    pub fn agent_attach(&self, stack: &str, id: u64, tx: AgentTx, ev: Event) {
        let old = self
            .agents
            .lock()
            .insert(stack.to_string(), AgentSession { id, tx });
        if let Some(old) = old {
            self.stats.add("agent_session_replaced", 1);
            let _ = old.tx.send(Err(tonic::Status::aborted(
                "replaced by a newer session of the same stack",
            )));
        }
        self.event(ev);
    }

    /// The session ended: the core is told only if it was still the stack's current session.
    pub fn agent_detach(&self, stack: &str, id: u64) {
        let current = {
            let mut a = self.agents.lock();
            if a.get(stack).is_some_and(|s| s.id == id) {
                a.remove(stack);
                true
            } else {
                false
            }
        };
        if current {
            self.event(Event::AgentGone {
                stack: stack.to_string(),
            });
        }
    }

    /// Ends every agent stream with UNAVAILABLE (shutdown), so the agents reconnect elsewhere
    /// or later and the server's graceful shutdown is not held up by open streams.
    pub fn close_agents(&self, why: &str) {
        let sessions: Vec<(String, AgentSession)> = self.agents.lock().drain().collect();
        for (_, s) in sessions {
            let _ = s.tx.send(Err(tonic::Status::unavailable(why.to_string())));
        }
    }

    /// Whether session `id` is the current one of `stack`.
    pub fn agent_current(&self, stack: &str, id: u64) -> bool {
        self.agents.lock().get(stack).is_some_and(|s| s.id == id)
    }

    /// Sends a command to a switch driver.
    pub fn switch_cmd(&self, switch: &str, cmd: SwitchCmd) -> bool {
        self.switches
            .get(switch)
            .is_some_and(|tx| tx.send(cmd).is_ok())
    }

    /// Configured switch names.
    pub fn switch_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.switches.keys().cloned().collect();
        v.sort();
        v
    }

    /// Sets or clears the maintenance mark of a switch.
    pub fn set_maintenance(&self, switch: &str, on: bool) {
        {
            let mut m = self.maintenance.lock();
            if on {
                m.insert(switch.to_string());
            } else {
                m.remove(switch);
            }
        }
        self.event(Event::AdminMaintenance {
            switch: switch.to_string(),
            on,
        });
    }

    /// Whether a switch is marked down for maintenance.
    pub fn in_maintenance(&self, switch: &str) -> bool {
        self.maintenance.lock().contains(switch)
    }

    /// Runs the core's lease timers until the process ends.
    pub async fn run_timers(self: Arc<Self>) {
        loop {
            let due = self.core.lock().poll_timeout();
            let wait = match due {
                Some(t) => Duration::from_millis(t.0.saturating_sub(self.now().0)),
                None => Duration::from_secs(1),
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.min(Duration::from_secs(1))) => {}
                _ = self.timer.notified() => continue,
            }
            let mut core = self.core.lock();
            core.handle_timeout(self.now());
            self.drain(&mut core);
        }
    }

    fn to_agent(&self, stack: &str, msg: Result<pb::ControllerMessage, tonic::Status>) {
        let mut agents = self.agents.lock();
        let gone = match agents.get(stack) {
            Some(s) => {
                let close = msg.is_err();
                s.tx.send(msg).is_err() || close
            }
            None => {
                self.stats.add("agent_message_no_session", 1);
                false
            }
        };
        if gone {
            agents.remove(stack);
        }
    }

    fn drain(&self, core: &mut Core) {
        while let Some(a) = core.poll_action() {
            match a {
                Action::ReadSwitch { switch } => {
                    self.switch_cmd(&switch, SwitchCmd::Read);
                }
                Action::Write {
                    switch,
                    batch,
                    updates,
                } => {
                    self.switch_cmd(&switch, SwitchCmd::Write { batch, updates });
                }
                Action::AckDigest { switch, list_id } => {
                    self.switch_cmd(&switch, SwitchCmd::Ack { list_id });
                }
                Action::Welcome {
                    stack,
                    heartbeat_ms,
                    lease_ms,
                } => self.to_agent(
                    &stack,
                    Ok(pb::ControllerMessage {
                        msg: Some(pb::controller_message::Msg::Welcome(pb::Welcome {
                            controller_id: self.controller_id.clone(),
                            heartbeat_interval_ms: heartbeat_ms.min(u32::MAX as u64) as u32,
                            lease_ms: lease_ms.min(u32::MAX as u64) as u32,
                        })),
                    }),
                ),
                Action::SendVipaList { stack, list } => {
                    let vl = crate::agent::vipa_list_pb(&list);
                    self.to_agent(
                        &stack,
                        Ok(pb::ControllerMessage {
                            msg: Some(pb::controller_message::Msg::VipaList(vl)),
                        }),
                    )
                }
                Action::AgentAck { stack, seq, errors } => {
                    for e in &errors {
                        self.stats
                            .add(&format!("agent_item_refused_{}", e.reason), 1);
                        metrics::counter!("dvipa_rejected_messages_total", "reason" => e.reason)
                            .increment(1);
                    }
                    self.to_agent(
                        &stack,
                        Ok(pb::ControllerMessage {
                            msg: Some(pb::controller_message::Msg::Ack(pb::Ack {
                                seq,
                                errors: errors
                                    .into_iter()
                                    .map(|e| pb::ItemError {
                                        list: e.list.into(),
                                        index: e.index,
                                        reason: e.reason.into(),
                                        detail: e.detail,
                                    })
                                    .collect(),
                            })),
                        }),
                    )
                }
                Action::AgentRejected { stack, reason } => {
                    self.stats.reject("refused_by_core");
                    self.to_agent(&stack, Err(tonic::Status::permission_denied(reason)));
                }
                Action::Advertise {
                    switch,
                    dvipa,
                    prefix_len,
                } => {
                    let _ = self.adv.send(AdvCmd {
                        advertise: true,
                        switch,
                        dvipa,
                        prefix_len,
                    });
                }
                Action::Withdraw {
                    switch,
                    dvipa,
                    prefix_len,
                } => {
                    let _ = self.adv.send(AdvCmd {
                        advertise: false,
                        switch,
                        dvipa,
                        prefix_len,
                    });
                }
                #[allow(unreachable_patterns)]
                other => {
                    self.stats.add("core_action_unhandled", 1);
                    tracing::warn!(action = ?other, "core action not handled by this shell");
                }
            }
        }
    }
}
