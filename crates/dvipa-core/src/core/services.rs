//! Services and the DPT: which services a DVIPA's owner distributes, target readiness and
//! the slot fill.

use super::*;

pub(super) fn method_code(m: DistMethod) -> u8 {
    match m {
        DistMethod::RoundRobin | DistMethod::WeightedActive => 1,
        DistMethod::ServerWlm | DistMethod::HotStandby => 0,
    }
}

impl Core {
    pub(super) fn ready(&self, target: u16, d: &DptEntry) -> bool {
        let st = &self.stacks[TargetId(target)];
        d.listening
            && !d.draining
            && (st.alive || (d.adopted && !st.attached_ever && self.in_hold()))
    }

    pub(super) fn activate_services(&mut self, vi: VipaIdx) {
        let v = &self.cluster.vipas[vi.0];
        let owner = &self.switches[self.vipas[vi].owner].name;
        let dists = v.dist_for(owner).to_vec();
        let keep_roles = self.range_vipas.contains(&vi);
        for s in self.services.iter_mut().filter(|s| s.vipa == vi.0) {
            let old_roles: HashMap<u16, Option<StandbyRole>> =
                s.candidates.iter().map(|c| (c.0, c.2)).collect();
            s.active = false;
            s.candidates.clear();
            for d in &dists {
                let covers = match s.port {
                    None => d.ports.is_empty(),
                    Some(p) => d.ports.contains(&p),
                };
                if covers {
                    s.active = true;
                    s.method = d.method;
                    s.candidates = d
                        .candidates
                        .iter()
                        .map(|c| {
                            let t = self.stack_index[&c.stack];
                            let role = if keep_roles {
                                old_roles.get(&t).copied().flatten()
                            } else {
                                c.role
                            };
                            (t, c.weight, role)
                        })
                        .collect();
                }
            }
        }
    }

    pub(super) fn refill_all(&mut self) {
        for i in 0..self.services.len() {
            let fill = self.compute_fill(i);
            let s = &mut self.services[i];
            s.fill = fill;
            if fill.iter().any(|x| x.is_some()) {
                s.hint = fill;
            }
        }
    }

    pub(super) fn compute_fill(&self, i: usize) -> Fill {
        let s = &self.services[i];
        if !s.active {
            return [None; N_SLOTS];
        }
        let ready: Vec<(u16, u32, Option<StandbyRole>)> = s
            .candidates
            .iter()
            .copied()
            .filter(|(t, _, _)| s.dpt.get(t).is_some_and(|d| self.ready(*t, d)))
            .collect();
        match s.method {
            DistMethod::HotStandby => {
                let best = ready
                    .iter()
                    .max_by_key(|(t, _, r)| {
                        let rank = match r {
                            Some(StandbyRole::Preferred) => 255u16,
                            Some(StandbyRole::Backup(b)) => u16::from(*b),
                            None => 0,
                        };
                        (rank, std::cmp::Reverse(*t))
                    })
                    .map(|x| x.0);
                slots::single_fill(best)
            }
            m => {
                let ts: Vec<(u16, u32)> = ready
                    .iter()
                    .map(|(t, w, _)| {
                        let w = match m {
                            DistMethod::WeightedActive => *w,
                            DistMethod::ServerWlm => {
                                let d = s.dpt[t];
                                let st = &self.stacks[TargetId(*t)];
                                if d.reported_weight > 0 {
                                    d.reported_weight
                                } else if st.wlm_weight > 0 {
                                    st.wlm_weight
                                } else {
                                    1
                                }
                            }
                            _ => 1,
                        };
                        (*t, w)
                    })
                    .collect();
                slots::weighted_fill(s.id, &ts, &s.hint)
            }
        }
    }

    pub(super) fn note_not_ready_for_dead_stacks(&mut self, now: Time) {
        for s in &mut self.services {
            for (t, d) in s.dpt.iter_mut() {
                if !self.stacks[TargetId(*t)].alive && d.listening && d.not_ready.is_none() {
                    d.not_ready = Some((now, "lease_expired"));
                }
            }
        }
    }

    pub(super) fn structural_change(&mut self) {
        self.refill_all();
        for sw in &mut self.switches {
            sw.structural_dirty = true;
        }
    }
}
