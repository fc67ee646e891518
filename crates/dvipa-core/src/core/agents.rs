//! Agent sessions: hello, heartbeats and leases, report batches (SRVSTAT, NEWCONN, TERMCONN,
//! sync rounds) and the VIPA lists sent to each stack.

use super::*;

#[derive(Debug, Clone)]
pub(super) struct SyncRound {
    pub(super) started: Time,
    pub(super) listeners: HashSet<(u16, u16)>,
    pub(super) conns: HashSet<ConnKey>,
}

#[derive(Debug)]
pub(super) struct StackState {
    pub(super) name: String,
    pub(super) underlay: Ipv4Addr,
    pub(super) session: Option<u64>,
    pub(super) alive: bool,
    pub(super) attached_ever: bool,
    pub(super) lease_expired_at: Option<Time>,
    pub(super) wlm_weight: u32,
    pub(super) sync: Option<SyncRound>,
    pub(super) last_list: Option<Vec<VipaEntry>>,
}

impl Core {
    pub(super) fn renew(&mut self, t: u16) {
        let lease = self.timers.lease_ms;
        let now = self.now;
        self.timer_table.set(Timer::Lease(t), now.plus(lease));
        let st = &mut self.stacks[TargetId(t)];
        if !st.alive {
            st.alive = true;
            self.structural_change();
        }
    }

    pub(super) fn on_hello(&mut self, stack: &str, underlay: Ipv4Addr, epoch: u64) {
        let Some(t) = self.stack_id(stack) else {
            self.count("agent_rejected_unknown_stack");
            self.actions.push_back(Action::AgentRejected {
                stack: stack.into(),
                reason: format!("stack `{stack}` is not configured"),
            });
            return;
        };
        let configured = self.stacks[TargetId(t)].underlay;
        if configured != underlay {
            self.count("agent_rejected_underlay_mismatch");
            self.actions.push_back(Action::AgentRejected {
                stack: stack.into(),
                reason: format!(
                    "stack `{stack}` has underlay address {configured} in the configuration, hello says {underlay}"
                ),
            });
            return;
        }
        let st = &mut self.stacks[TargetId(t)];
        st.attached_ever = true;
        st.session = Some(epoch);
        st.sync = None;
        st.last_list = None;
        self.actions.push_back(Action::Welcome {
            stack: stack.into(),
            heartbeat_ms: self.timers.heartbeat_ms,
            lease_ms: self.timers.lease_ms,
        });
        self.count("agent_hello");
        self.renew(t);
    }

    pub(super) fn on_heartbeat(&mut self, stack: &str, weight: u32) {
        let Some(t) = self.session_stack(stack) else {
            return;
        };
        let st = &mut self.stacks[TargetId(t)];
        if st.wlm_weight != weight {
            st.wlm_weight = weight;
            self.structural_change();
        }
        self.renew(t);
    }

    pub(super) fn session_stack(&mut self, stack: &str) -> Option<u16> {
        match self.stack_id(stack) {
            Some(t) if self.stacks[TargetId(t)].session.is_some() => Some(t),
            _ => {
                self.count("agent_message_without_hello");
                None
            }
        }
    }

    pub(super) fn on_report(&mut self, stack: &str, r: Report) {
        let Some(t) = self.session_stack(stack) else {
            self.actions.push_back(Action::AgentAck {
                stack: stack.into(),
                seq: r.seq,
                errors: vec![ItemError {
                    list: "report",
                    index: 0,
                    reason: "no_hello",
                    detail: "a Hello must come first".into(),
                }],
            });
            return;
        };
        self.renew(t);
        // A VIPA inside a VIPARANGE becomes a DVIPA when a stack binds to it (figs. 11–12).
        let addrs: BTreeSet<Ipv4Addr> = r
            .srvstat
            .iter()
            .map(|s| s.dvipa)
            .chain(r.newconn.iter().map(|c| c.dvipa))
            .collect();
        for a in addrs {
            self.ensure_range_vipa(a);
        }
        let mut errors = Vec::new();
        if r.full_sync && self.stacks[TargetId(t)].sync.is_none() {
            self.stacks[TargetId(t)].sync = Some(SyncRound {
                started: self.now,
                listeners: HashSet::new(),
                conns: HashSet::new(),
            });
        }
        let mut structural = self.srvstat(t, stack, &r.srvstat, &mut errors);
        self.newconn(t, stack, &r.newconn, r.full_sync, &mut errors);
        self.termconn(t, stack, &r.termconn, &mut errors);
        if r.sync_done {
            structural |= self.end_sync(t, &mut errors);
        }
        for e in &errors {
            *self.counters.entry(e.reason).or_default() += 1;
        }
        self.count("agent_reports");
        if structural {
            self.structural_change();
        }
        self.actions.push_back(Action::AgentAck {
            stack: stack.into(),
            seq: r.seq,
            errors,
        });
    }

    /// SRVSTAT items: listeners and weights of stack `t`; true when the DPT changed.
    fn srvstat(
        &mut self,
        t: u16,
        stack: &str,
        list: &[SrvStat],
        errors: &mut Vec<ItemError>,
    ) -> bool {
        let mut structural = false;
        for (i, s) in list.iter().enumerate() {
            let mut err = |reason: &'static str, detail: String| {
                errors.push(ItemError {
                    list: "srvstat",
                    index: i as u32,
                    reason,
                    detail,
                })
            };
            let (port, proto) = match (u16::try_from(s.port), u8::try_from(s.protocol)) {
                (Ok(p), Ok(pr)) if p != 0 && (pr == TCP || pr == UDP) => (p, pr),
                _ => {
                    err(
                        "invalid",
                        format!("port {} / protocol {} out of range", s.port, s.protocol),
                    );
                    continue;
                }
            };
            let Some(svc) = self.service_of(s.dvipa, port, proto) else {
                if self.vipa_index(s.dvipa).is_some() {
                    err(
                        "unknown_port",
                        format!("{}:{port} is not a distributed port", s.dvipa),
                    );
                } else {
                    err("unknown_dvipa", format!("{} is not a DVIPA", s.dvipa));
                }
                continue;
            };
            let service = &mut self.services[svc as usize];
            if !service.any_candidates.contains(&t) {
                err(
                    "not_in_destip",
                    format!("stack `{stack}` is not in the DESTIP list of {}", s.dvipa),
                );
                continue;
            }
            let now = self.now;
            let d = service.dpt.entry(t).or_default();
            let was_ready = d.listening && !d.draining;
            d.listening = s.listening;
            d.adopted = false;
            d.draining = s.draining;
            d.reported_weight = s.weight;
            let is_ready = d.listening && !d.draining;
            if !is_ready && (was_ready || d.not_ready.is_none()) {
                d.not_ready = Some((
                    now,
                    if s.listening {
                        "draining"
                    } else {
                        "not_listening"
                    },
                ));
            } else if is_ready {
                d.not_ready = None;
            }
            structural = true;
            if let Some(sync) = &mut self.stacks[TargetId(t)].sync {
                sync.listeners.insert((svc, t));
            }
            if s.listening
                && !s.draining
                && self
                    .range_vipas
                    .contains(&VipaIdx(self.services[svc as usize].vipa))
            {
                // Moveable VIPA: the stack that bound last gets the new connections; the
                // earlier ones keep theirs (pinned) and stay next in line.
                let cands = &mut self.services[svc as usize].candidates;
                if !cands
                    .iter()
                    .any(|c| c.0 == t && c.2 == Some(StandbyRole::Preferred))
                {
                    for c in cands.iter_mut() {
                        c.2 = if c.0 == t {
                            Some(StandbyRole::Preferred)
                        } else {
                            match c.2 {
                                Some(StandbyRole::Preferred) => Some(StandbyRole::Backup(254)),
                                Some(StandbyRole::Backup(r)) => {
                                    Some(StandbyRole::Backup(r.saturating_sub(1).max(1)))
                                }
                                None => None,
                            }
                        };
                    }
                }
            }
        }
        structural
    }

    /// NEWCONN items (or the connections of a full re-report): pin them to stack `t`.
    fn newconn(
        &mut self,
        t: u16,
        stack: &str,
        list: &[ConnReport],
        full: bool,
        errors: &mut Vec<ItemError>,
    ) {
        for (i, c) in list.iter().enumerate() {
            match self.conn_key(c) {
                Err((reason, detail)) => errors.push(ItemError {
                    list: "newconn",
                    index: i as u32,
                    reason,
                    detail,
                }),
                Ok((k, svc)) => {
                    if !self.services[svc as usize].any_candidates.contains(&t) {
                        errors.push(ItemError {
                            list: "newconn",
                            index: i as u32,
                            reason: "not_in_destip",
                            detail: format!(
                                "stack `{stack}` is not in the DESTIP list of {}",
                                c.dvipa
                            ),
                        });
                        continue;
                    }
                    if let Some(sync) = &mut self.stacks[TargetId(t)].sync {
                        sync.conns.insert(k);
                    }
                    let flags = F_CONFIRMED
                        | if c.server_originated {
                            F_SERVER_ORIG
                        } else {
                            0
                        };
                    match self.crt.get(&k).copied() {
                        Some(e) if e.target == t => {
                            if e.confirmed() && !full {
                                errors.push(ItemError {
                                    list: "newconn",
                                    index: i as u32,
                                    reason: "duplicate",
                                    detail: format!("{k} is already pinned to `{stack}`"),
                                });
                            } else {
                                let e2 = self.crt.get_mut(&k).expect("present");
                                e2.flags |= flags;
                                self.count("crt_confirmed");
                                // A takeover/takeback: make sure the new owner has it.
                                self.mark_conn_dirty(k);
                            }
                        }
                        Some(e) => {
                            let other_alive = self.stacks[TargetId(e.target)].alive;
                            if e.confirmed() && other_alive {
                                errors.push(ItemError {
                                    list: "newconn",
                                    index: i as u32,
                                    reason: "conflict",
                                    detail: format!(
                                        "{k} is pinned to `{}`, which reported it too",
                                        self.stacks[TargetId(e.target)].name
                                    ),
                                });
                            } else {
                                // The stack holding the socket is authoritative.
                                self.pin(
                                    k,
                                    t,
                                    svc,
                                    if full {
                                        Origin::Takeover
                                    } else {
                                        Origin::NewConn
                                    },
                                    flags,
                                );
                                self.count("crt_repinned_by_agent");
                            }
                        }
                        None => {
                            self.pin(
                                k,
                                t,
                                svc,
                                if full {
                                    Origin::Takeover
                                } else {
                                    Origin::NewConn
                                },
                                flags,
                            );
                            self.count(if full {
                                "crt_pinned_rereport"
                            } else {
                                "crt_pinned_newconn"
                            });
                        }
                    }
                }
            }
        }
    }

    /// TERMCONN items: unpin connections of stack `t`.
    fn termconn(&mut self, t: u16, stack: &str, list: &[ConnReport], errors: &mut Vec<ItemError>) {
        for (i, c) in list.iter().enumerate() {
            match self.conn_key(c) {
                Err((reason, detail)) => errors.push(ItemError {
                    list: "termconn",
                    index: i as u32,
                    reason,
                    detail,
                }),
                Ok((k, _)) => match self.crt.get(&k) {
                    None => errors.push(ItemError {
                        list: "termconn",
                        index: i as u32,
                        reason: "late",
                        detail: format!("{k} is not in the CRT (already ended or never pinned)"),
                    }),
                    Some(e) if e.target != t => errors.push(ItemError {
                        list: "termconn",
                        index: i as u32,
                        reason: "not_owner",
                        detail: format!(
                            "{k} is pinned to `{}`, not `{stack}`",
                            self.stacks[TargetId(e.target)].name
                        ),
                    }),
                    Some(_) => {
                        self.unpin(&k);
                        self.count("crt_removed_termconn");
                    }
                },
            }
        }
    }

    /// End of a full re-report: what stack `t` did not re-report is gone; true when the DPT
    /// changed.
    fn end_sync(&mut self, t: u16, errors: &mut Vec<ItemError>) -> bool {
        let mut structural = false;
        if let Some(sync) = self.stacks[TargetId(t)].sync.take() {
            for s in &mut self.services {
                if let Some(d) = s.dpt.get_mut(&t)
                    && d.listening
                    && !sync.listeners.contains(&(s.id, t))
                {
                    d.listening = false;
                    d.not_ready = Some((sync.started, "not_rereported"));
                    structural = true;
                }
            }
            let start_s = (sync.started.0 / 1000) as u32;
            let gone: Vec<ConnKey> = self
                .crt
                .iter()
                .filter(|(k, e)| e.target == t && e.pinned_s < start_s && !sync.conns.contains(k))
                .map(|(k, _)| *k)
                .collect();
            for k in gone {
                self.unpin(&k);
                self.count("crt_removed_not_rereported");
            }
        } else {
            errors.push(ItemError {
                list: "report",
                index: 0,
                reason: "sync_done_without_full_sync",
                detail: "sync_done set on a batch without a full re-report".into(),
            });
        }
        structural
    }

    pub(super) fn conn_key(
        &self,
        c: &ConnReport,
    ) -> Result<(ConnKey, u16), (&'static str, String)> {
        let (cp, dp, pr) = match (
            u16::try_from(c.client_port),
            u16::try_from(c.dvipa_port),
            u8::try_from(c.protocol),
        ) {
            (Ok(cp), Ok(dp), Ok(pr)) if cp != 0 && dp != 0 && (pr == TCP || pr == UDP) => {
                (cp, dp, pr)
            }
            _ => {
                return Err((
                    "invalid",
                    format!(
                        "ports {}/{} or protocol {} out of range",
                        c.client_port, c.dvipa_port, c.protocol
                    ),
                ));
            }
        };
        if let Some(reason) = bad_client(c.client) {
            return Err((
                reason,
                format!(
                    "client address {} cannot be a TCP/UDP peer ({})",
                    c.client,
                    reason.trim_start_matches("client_")
                ),
            ));
        }
        let Some(svc) = self.service_of(c.dvipa, dp, pr) else {
            return Err(if self.vipa_index(c.dvipa).is_some() {
                (
                    "unknown_port",
                    format!("{}:{dp} is not a distributed port", c.dvipa),
                )
            } else {
                ("unknown_dvipa", format!("{} is not a DVIPA", c.dvipa))
            });
        };
        Ok((ConnKey::new(c.client, cp, c.dvipa, dp, pr), svc))
    }

    pub(super) fn push_vipa_lists(&mut self) {
        for i in self.stacks.ids() {
            if self.stacks[i].session.is_none() {
                continue;
            }
            let name = self.stacks[i].name.clone();
            let list = self.vipa_list_for(&name);
            if self.stacks[i].last_list.as_ref() != Some(&list) {
                self.list_version += 1;
                self.stacks[i].last_list = Some(list.clone());
                self.actions.push_back(Action::SendVipaList {
                    stack: name,
                    list: VipaList {
                        version: self.list_version,
                        vipas: list,
                    },
                });
            }
        }
    }
}
