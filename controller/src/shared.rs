//! The state shared by the shell's tasks: the sans-IO [`Core`] behind one mutex, the channels
//! to the switch drivers, agent sessions and the advertiser, and the shell's counters.
//!
//! Every input goes through [`Shared::event`]: the core handles it at the current time and
//! its actions are dispatched right away, still under the lock, by non-blocking channel sends
//! (so the lock is never held across an await). A timer task calls
//! [`Core::handle_timeout`] when [`Core::poll_timeout`] says so.

use crate::agent_pb;
use crate::cmd::{AdvCmd, SwitchCmd};
use dvipa_core::core::{Action, Core, Event, MoveError, Time};
use dvipa_proto::v1 as pb;
use parking_lot::Mutex;
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};

pub use crate::cmd::AgentTx;

/// Messages queued for one agent at the most (Acks, VIPA lists). An agent that lets its queue
/// fill (it does not read its stream) is disconnected and counted (`agent_disconnected_slow`,
/// metric [`SLOW_AGENT_METRIC`]): before the bound, such an agent grew the controller by
/// 950 MB in 250k Reports. An agent sends one Report per batch and reads each Ack at once, so
/// a healthy session has a handful queued; with Acks of 15 item errors the bound is a few MB.
pub const AGENT_QUEUE: usize = 1024;

/// Metric of agents disconnected because they did not read their stream.
pub const SLOW_AGENT_METRIC: &str = "dvipa_agent_slow_disconnects_total";

pub use crate::stats::Stats;

struct AgentSession {
    id: u64,
    tx: AgentTx,
    /// Cuts the session's connection (when the endpoint's connections are [`Killable`]).
    ///
    /// [`Killable`]: crate::killable::Killable
    kill: Option<Arc<crate::killable::Kill>>,
}

impl AgentSession {
    /// Ends the stream with `status`; when the queue is full the connection is cut instead.
    fn end(&self, status: tonic::Status) {
        if self.tx.try_send(Err(status)).is_err()
            && let Some(k) = &self.kill
        {
            k.kill();
        }
    }
}

/// Everything the tasks share.
pub struct Shared {
    core: Mutex<Core>,
    start: Instant,
    switches: HashMap<String, mpsc::UnboundedSender<SwitchCmd>>,
    agents: Mutex<HashMap<String, AgentSession>>,
    /// Sessions dropped for not reading (stack, id): the core is told when their stream ends.
    cut: Mutex<BTreeSet<(String, u64)>>,
    adv: mpsc::UnboundedSender<AdvCmd>,
    /// Shell counters.
    pub stats: Arc<Stats>,
    /// TLS handshake counters of the agent endpoint.
    pub tls: Arc<dvipa_tls::TlsStats>,
    /// The BGP view when DVIPAs are advertised by BGP (`[advertise] mode = "bgp"`).
    pub bgp: Mutex<Option<Arc<crate::bgp_status::BgpStatus>>>,
    timer: Notify,
    /// Signalled on [`Action::OwnersChanged`] (the owner-persistence task waits on it).
    owners_changed: tokio::sync::watch::Sender<u64>,
    controller_id: String,
    /// `[ha]`: the election's gate and the etcd store (unset without HA).
    ha: std::sync::OnceLock<crate::ha_state::HaHandle>,
    /// [`Shared::now`] of the last input (the age of this replica's view).
    last_event: std::sync::atomic::AtomicU64,
    /// The data-plane mark of each switch combined with its driver's up/down (locked before
    /// `core`; see [`crate::dataplane_probe`]).
    gate: Mutex<crate::dataplane_gate::Gate>,
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
            cut: Mutex::new(BTreeSet::new()),
            adv,
            stats: Arc::default(),
            tls: Arc::new(dvipa_tls::TlsStats::default()),
            bgp: Mutex::new(None),
            timer: Notify::new(),
            owners_changed: tokio::sync::watch::Sender::new(0),
            controller_id,
            ha: std::sync::OnceLock::new(),
            last_event: std::sync::atomic::AtomicU64::new(0),
            gate: Mutex::new(Default::default()),
        }
    }

    /// The core's clock: milliseconds since the controller started.
    pub fn now(&self) -> Time {
        Time(self.start.elapsed().as_millis() as u64)
    }

    /// Feeds one event to the core and carries out its actions.
    pub fn event(&self, ev: Event) {
        // The gate stays locked while the core handles the event, so a driver's and the
        // data-plane probe's view of a switch reach the core in the order they were decided.
        let mut gate = self.gate.lock();
        if let Some(sw) = gate.observe(&ev) {
            self.stats.add(&format!("dataplane.{sw}.probation"), 1);
            metrics::gauge!("dvipa_dataplane_down", "switch" => sw.clone()).set(0.0);
            tracing::warn!(switch = %sw, "new P4Runtime session of a switch marked down by the \
                data-plane probe: released on probation (watched again once it routes a DVIPA)");
        }
        let mut core = self.core.lock();
        self.last_event
            .store(self.now().0, std::sync::atomic::Ordering::Relaxed);
        core.handle(self.now(), ev);
        self.drain(&mut core);
        drop(core);
        drop(gate);
        self.timer.notify_one();
    }

    /// Changes the core directly (HA: a new leader restores the stored owners); its actions
    /// are carried out as after an event.
    pub fn with_core_mut<R>(&self, f: impl FnOnce(&mut Core) -> R) -> R {
        let mut core = self.core.lock();
        let r = f(&mut core);
        self.drain(&mut core);
        drop(core);
        self.timer.notify_one();
        r
    }

    /// Marks a switch down (or up again) for its data path. True when the mark changed; the
    /// core sees `SwitchDown`/`SwitchUp` when the switch's session is up.
    pub fn dataplane_mark(&self, switch: &str, down: bool) -> bool {
        let mut gate = self.gate.lock();
        let before = gate.dp_down(switch);
        let ev = gate.mark(switch, down);
        if let Some(ev) = ev {
            let mut core = self.core.lock();
            core.handle(self.now(), ev);
            self.drain(&mut core);
        }
        drop(gate);
        self.timer.notify_one();
        before != down
    }

    /// (marked down by the data-plane probe, session up) of a switch.
    pub fn dataplane_state(&self, switch: &str) -> (bool, bool) {
        let g = self.gate.lock();
        (g.dp_down(switch), g.ctl_up(switch))
    }

    /// Operator move of a DVIPA (its outcome, not a counter to diff).
    pub fn admin_move(&self, dvipa: Ipv4Addr, to: &str) -> Result<(), MoveError> {
        let mut core = self.core.lock();
        let r = core.admin_move(self.now(), dvipa, to);
        self.drain(&mut core);
        drop(core);
        self.timer.notify_one();
        r
    }

    /// Read access to the core (admin queries, metrics).
    pub fn with_core<R>(&self, f: impl FnOnce(&Core) -> R) -> R {
        f(&self.core.lock())
    }

    /// Registers an agent session (replacing an older one of the same stack, whose stream then
    /// ends) and feeds its Hello. `kill` cuts the session's connection when its queue is full.
    pub fn agent_attach(
        &self,
        stack: &str,
        id: u64,
        tx: AgentTx,
        kill: Option<Arc<crate::killable::Kill>>,
        ev: Event,
    ) {
        let old = self
            .agents
            .lock()
            .insert(stack.to_string(), AgentSession { id, tx, kill });
        if let Some(old) = old {
            self.stats.add("agent_session_replaced", 1);
            old.end(tonic::Status::aborted(
                "replaced by a newer session of the same stack",
            ));
        }
        self.event(ev);
    }

    /// The session ended: the core is told only if it was still the stack's current session
    /// (or was dropped for not reading and no newer session replaced it).
    pub fn agent_detach(&self, stack: &str, id: u64) {
        let current = {
            let mut a = self.agents.lock();
            let was_cut = self.cut.lock().remove(&(stack.to_string(), id));
            if a.get(stack).is_some_and(|s| s.id == id) {
                a.remove(stack);
                true
            } else {
                was_cut && !a.contains_key(stack)
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
            s.end(tonic::Status::unavailable(why.to_string()));
        }
    }

    /// Whether session `id` is the current one of `stack`.
    pub fn agent_current(&self, stack: &str, id: u64) -> bool {
        self.agents.lock().get(stack).is_some_and(|s| s.id == id)
    }

    /// Turns HA on (once, at start-up).
    pub fn set_ha(&self, h: crate::ha_state::HaHandle) {
        let _ = self.ha.set(h);
    }

    /// The HA machinery, when `[ha]` is set.
    pub fn ha(&self) -> Option<&crate::ha_state::HaHandle> {
        self.ha.get()
    }

    /// The gate channel (drivers connect only while it says leader).
    pub fn ha_rx(&self) -> Option<tokio::sync::watch::Receiver<crate::ha_state::HaState>> {
        self.ha.get().map(|h| h.state.clone())
    }

    /// How long ago the core last handled an input (agent report, switch read, ...).
    pub fn view_age(&self) -> Duration {
        let last = self.last_event.load(std::sync::atomic::Ordering::Relaxed);
        Duration::from_millis(self.now().0.saturating_sub(last))
    }

    /// Whether this replica may change anything (always without HA).
    pub fn may_write(&self) -> bool {
        self.ha.get().is_none_or(|h| h.state.borrow().is_leader())
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

    /// Sets or clears the maintenance mark of a switch (kept by the core only).
    pub fn set_maintenance(&self, switch: &str, on: bool) {
        self.event(Event::AdminMaintenance {
            switch: switch.to_string(),
            on,
        });
    }

    /// Whether a switch is marked down for maintenance (the core's mark).
    pub fn in_maintenance(&self, switch: &str) -> bool {
        self.core.lock().in_maintenance(switch)
    }

    /// A receiver that sees every ownership change the core reports ([`Action::OwnersChanged`]):
    /// `changed().await` returns at once if a change came since its last look, so none is
    /// missed, and each persistence task (owners file, etcd) has its own.
    pub fn owners_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.owners_changed.subscribe()
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

    /// The number of messages queued for `stack`'s session.
    pub fn agent_queued(&self, stack: &str) -> Option<usize> {
        self.agents
            .lock()
            .get(stack)
            .map(|s| s.tx.max_capacity() - s.tx.capacity())
    }

    fn to_agent(&self, stack: &str, msg: Result<pb::ControllerMessage, tonic::Status>) {
        let mut agents = self.agents.lock();
        let gone = match agents.get(stack) {
            Some(s) => {
                let close = msg.is_err();
                match s.tx.try_send(msg) {
                    Ok(()) => close,
                    Err(mpsc::error::TrySendError::Closed(_)) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        self.stats.add("agent_disconnected_slow", 1);
                        metrics::counter!(SLOW_AGENT_METRIC).increment(1);
                        tracing::warn!(
                            %stack,
                            queued = AGENT_QUEUE,
                            "agent disconnected: it does not read its stream ({AGENT_QUEUE} \
                             messages queued)"
                        );
                        match &s.kill {
                            Some(k) => k.kill(),
                            None => self.stats.add("agent_disconnect_no_handle", 1),
                        }
                        self.cut.lock().insert((stack.to_string(), s.id));
                        true
                    }
                }
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
                    Ok(agent_pb::welcome(
                        &self.controller_id,
                        heartbeat_ms,
                        lease_ms,
                    )),
                ),
                Action::SendVipaList { stack, list } => {
                    self.to_agent(&stack, Ok(agent_pb::vipa_list_msg(&list)))
                }
                Action::AgentAck { stack, seq, errors } => {
                    for e in &errors {
                        self.stats
                            .add(&format!("agent_item_refused_{}", e.reason), 1);
                        metrics::counter!("dvipa_rejected_messages_total", "reason" => e.reason)
                            .increment(1);
                    }
                    self.to_agent(&stack, Ok(agent_pb::ack(seq, errors)))
                }
                Action::AgentRejected { stack, reason } => {
                    self.stats.reject("refused_by_core");
                    self.to_agent(&stack, Err(tonic::Status::permission_denied(reason)));
                }
                Action::Advertise { .. } | Action::Withdraw { .. } if !self.may_write() => {
                    // HA: a follower (or a deposed leader) never moves routes.
                    self.stats.add("ha_follower_advertise_dropped", 1);
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
                Action::OwnersChanged => self.owners_changed.send_modify(|n| *n += 1),
            }
        }
    }
}
