//! The effective VIPA list ([`Cluster`]): the profiles of the routing switches resolved
//! against the configuration (routing switch, ranked backups, distribution per DVIPA), and its
//! checks against the switch (`dvipa` table size).

use super::*;

/// One candidate target stack of a distribution.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Candidate {
    /// Stack name.
    pub stack: String,
    /// Configured weight (WEIGHTEDACTIVE; 1 otherwise).
    pub weight: u32,
    /// HOTSTANDBY role.
    pub role: Option<StandbyRole>,
}

/// One VIPADISTRIBUTE, resolved against the configured stacks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Distribution {
    /// Where it came from.
    pub file: String,
    /// Statement position.
    pub loc: Loc,
    /// Ports; empty = all.
    pub ports: Vec<u16>,
    /// Method.
    pub method: DistMethod,
    /// `DESTIP ALL`.
    pub all_stacks: bool,
    /// Candidates (for ALL: every configured stack).
    pub candidates: Vec<Candidate>,
}

/// A backup routing switch of a DVIPA.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BackupSwitch {
    /// Switch name.
    pub switch: String,
    /// VIPABACKUP rank (higher takes over first).
    pub rank: u8,
    /// Its own VIPADISTRIBUTE statements for the DVIPA (empty = it uses the primary's).
    pub own: Vec<Distribution>,
}

/// One entry of the effective VIPA list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EffectiveVipa {
    /// The DVIPA.
    pub addr: Ipv4Addr,
    /// Prefix length to advertise.
    pub prefix_len: u8,
    /// Routing switch (its profile VIPADEFINEs the address).
    pub owner: String,
    /// Backups, highest rank first.
    pub backups: Vec<BackupSwitch>,
    /// The routing switch's VIPADISTRIBUTE statements (empty = defined but not distributed).
    pub dist: Vec<Distribution>,
}

impl EffectiveVipa {
    /// The distribution used while `switch` routes this DVIPA (a backup's own statements
    /// override the primary's).
    pub fn dist_for(&self, switch: &str) -> &[Distribution] {
        match self.backups.iter().find(|b| b.switch == switch) {
            Some(b) if !b.own.is_empty() => &b.own,
            _ => &self.dist,
        }
    }
}

/// Config + parsed profiles + the effective VIPA list: everything the core needs.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// The TOML.
    pub config: Config,
    /// Switch name → its profile.
    pub profiles: BTreeMap<String, Profile>,
    /// Effective VIPA list, sorted by address.
    pub vipas: Vec<EffectiveVipa>,
    /// VIPARANGE statements: (switch, range).
    pub ranges: Vec<(String, VipaRange)>,
}

impl Cluster {
    /// Validate the TOML and the profiles together. `profiles` maps each switch name to
    /// `(file name for messages, profile text)`; every configured switch needs one.
    pub fn build(
        toml_file: &str,
        toml_src: &str,
        profiles: &BTreeMap<String, (String, String)>,
    ) -> Result<Cluster, ConfigErrors> {
        let config = Config::parse(toml_file, toml_src)?;
        Self::from_config(toml_file, config, profiles)
    }

    /// Like [`Cluster::build`] with an already parsed [`Config`].
    pub fn from_config(
        toml_file: &str,
        config: Config,
        profiles: &BTreeMap<String, (String, String)>,
    ) -> Result<Cluster, ConfigErrors> {
        let mut errs = Vec::new();
        let mut parsed = BTreeMap::new();
        for (i, sw) in config.switches.iter().enumerate() {
            match profiles.get(&sw.name) {
                None => errs.push(ConfigError::Field {
                    file: toml_file.into(),
                    pos: None,
                    field: format!("switch[{i}].profile"),
                    msg: format!("no profile text given for switch `{}`", sw.name),
                }),
                Some((file, src)) => match profile::parse_profile(file, src) {
                    Ok(p) => {
                        parsed.insert(sw.name.clone(), p);
                    }
                    Err(pe) => errs.extend(pe.0.into_iter().map(ConfigError::Profile)),
                },
            }
        }
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let perr = |file: &str, loc: Loc, msg: String| {
            ConfigError::Profile(profile::ProfileError {
                file: file.into(),
                loc,
                msg,
            })
        };
        let resolve = |p: &Profile, d: &profile::VipaDistribute, errs: &mut Vec<ConfigError>| {
            let (all_stacks, candidates) = match &d.dest {
                DestIp::All => (
                    true,
                    config
                        .stacks
                        .iter()
                        .map(|s| Candidate {
                            stack: s.name.clone(),
                            weight: 1,
                            role: None,
                        })
                        .collect(),
                ),
                DestIp::List(l) => {
                    let mut c = Vec::new();
                    for e in l {
                        match config.stack_by_underlay(e.addr) {
                            Some(s) => c.push(Candidate {
                                stack: s.name.clone(),
                                weight: e.weight.unwrap_or(1),
                                role: e.role,
                            }),
                            None => errs.push(perr(
                                &p.file,
                                e.loc,
                                format!("DESTIP {} is not the underlay address of any configured [[stack]]", e.addr),
                            )),
                        }
                    }
                    (false, c)
                }
            };
            Distribution {
                file: p.file.clone(),
                loc: d.loc,
                ports: d.ports.clone(),
                method: d.method,
                all_stacks,
                candidates,
            }
        };
        // Owners.
        let mut vipas: BTreeMap<Ipv4Addr, EffectiveVipa> = BTreeMap::new();
        let mut def_loc: BTreeMap<Ipv4Addr, (String, Loc)> = BTreeMap::new();
        for sw in &config.switches {
            let p = &parsed[&sw.name];
            for d in &p.defines {
                for a in &d.addrs {
                    if let Some((f, l)) = def_loc.get(a) {
                        errs.push(perr(
                            &p.file,
                            d.loc,
                            format!("VIPA {a} is also VIPADEFINEd at {f}:{l}; exactly one switch may route it (the others use VIPABACKUP)"),
                        ));
                        continue;
                    }
                    def_loc.insert(*a, (p.file.clone(), d.loc));
                    if let Some(st) = config.stack_by_underlay(*a) {
                        errs.push(perr(
                            &p.file,
                            d.loc,
                            format!("VIPA {a} is the underlay address of stack `{}` (a DVIPA must be an address of its own)", st.name),
                        ));
                    }
                    if let Some(s2) = config.switches.iter().find(|s| s.tunnel_src == Some(*a)) {
                        errs.push(perr(
                            &p.file,
                            d.loc,
                            format!("VIPA {a} is the tunnel_src of switch `{}` (a DVIPA must be an address of its own)", s2.name),
                        ));
                    }
                    let dist = p
                        .distributes_of(*a)
                        .map(|x| resolve(p, x, &mut errs))
                        .collect();
                    vipas.insert(
                        *a,
                        EffectiveVipa {
                            addr: *a,
                            prefix_len: d.prefix_len,
                            owner: sw.name.clone(),
                            backups: Vec::new(),
                            dist,
                        },
                    );
                }
            }
        }
        // Backups.
        for sw in &config.switches {
            let p = &parsed[&sw.name];
            for b in &p.backups {
                for a in &b.addrs {
                    let Some(v) = vipas.get_mut(a) else {
                        errs.push(perr(
                            &p.file,
                            b.loc,
                            format!("VIPABACKUP {a}: no switch's profile VIPADEFINEs it"),
                        ));
                        continue;
                    };
                    if let Some(other) = v.backups.iter().find(|x| x.rank == b.rank) {
                        errs.push(perr(
                            &p.file,
                            b.loc,
                            format!(
                                "VIPABACKUP {} {a}: switch `{}` backs it up with the same rank; ranks must differ",
                                b.rank, other.switch
                            ),
                        ));
                        continue;
                    }
                    let own = p
                        .distributes_of(*a)
                        .map(|x| resolve(p, x, &mut errs))
                        .collect();
                    v.backups.push(BackupSwitch {
                        switch: sw.name.clone(),
                        rank: b.rank,
                        own,
                    });
                }
            }
        }
        for v in vipas.values_mut() {
            v.backups.sort_by_key(|b| std::cmp::Reverse(b.rank));
        }
        let mut ranges = Vec::new();
        for sw in &config.switches {
            for r in &parsed[&sw.name].ranges {
                for (osw, o) in &ranges {
                    let o: &VipaRange = o;
                    let m = profile::prefix_mask(o.prefix_len.min(r.prefix_len));
                    if u32::from(o.network) & m == u32::from(r.network) & m {
                        errs.push(perr(
                            &parsed[&sw.name].file,
                            r.loc,
                            format!(
                                "VIPARANGE {}/{} overlaps the VIPARANGE {}/{} of switch `{osw}`",
                                r.network, r.prefix_len, o.network, o.prefix_len
                            ),
                        ));
                    }
                }
                for v in vipas.values() {
                    if r.contains(v.addr) {
                        errs.push(perr(
                            &parsed[&sw.name].file,
                            r.loc,
                            format!(
                                "VIPARANGE {}/{} contains VIPA {} defined by switch `{}`",
                                r.network, r.prefix_len, v.addr, v.owner
                            ),
                        ));
                    }
                }
                ranges.push((sw.name.clone(), r.clone()));
            }
        }
        if !errs.is_empty() {
            return Err(ConfigErrors(errs));
        }
        let c = Cluster {
            config,
            profiles: parsed,
            vipas: vipas.into_values().collect(),
            ranges,
        };
        c.check_dvipa_table(crate::core::MAX_SERVICES, "the pipeline's MAX_SERVICES")?;
        Ok(c)
    }

    /// The `dvipa` table needs one entry per (DVIPA, port, protocol) of every distribution
    /// (the routing switch's and each backup's own). Refuses the configuration when that is
    /// more than `size` (`source` says where the size comes from, e.g. the P4Info), naming
    /// the VIPADISTRIBUTE statement where the count passes the size.
    pub fn check_dvipa_table(&self, size: usize, source: &str) -> Result<(), ConfigErrors> {
        let protos: &[u8] = if self.config.distribute_udp {
            &[6, 17]
        } else {
            &[6]
        };
        let mut keys = BTreeSet::new();
        let mut first_over: Option<(&Distribution, Ipv4Addr)> = None;
        for v in &self.vipas {
            let all = std::iter::once(&v.dist).chain(v.backups.iter().map(|b| &b.own));
            for d in all.flatten() {
                let ports: Vec<Option<u16>> = if d.ports.is_empty() {
                    vec![None]
                } else {
                    d.ports.iter().map(|p| Some(*p)).collect()
                };
                for p in ports {
                    for pr in protos {
                        keys.insert((v.addr, p, *pr));
                        if keys.len() > size && first_over.is_none() {
                            first_over = Some((d, v.addr));
                        }
                    }
                }
            }
        }
        match first_over {
            None => Ok(()),
            Some((d, a)) => Err(ConfigErrors(vec![ConfigError::Profile(
                profile::ProfileError {
                    file: d.file.clone(),
                    loc: d.loc,
                    msg: format!(
                        "VIPADISTRIBUTE {a}: the profiles distribute {} (DVIPA, port, protocol) \
                         services, more than the {} entries of the `dvipa` table ({source}); \
                         this statement passes the limit",
                        keys.len(),
                        size
                    ),
                },
            )])),
        }
    }

    /// Effective VIPA entry by address.
    pub fn vipa(&self, a: Ipv4Addr) -> Option<&EffectiveVipa> {
        self.vipas.iter().find(|v| v.addr == a)
    }

    /// Switch config by name.
    pub fn switch(&self, name: &str) -> Option<&SwitchCfg> {
        self.config.switches.iter().find(|s| s.name == name)
    }

    /// Stack config by name.
    pub fn stack(&self, name: &str) -> Option<&StackCfg> {
        self.config.stacks.iter().find(|s| s.name == name)
    }

    /// The effective VIPA list as a z/OS-like table (`NETSTAT VIPADCFG` in spirit).
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        out.push_str("DYNAMIC VIPA DISTRIBUTION (effective VIPA list)\n");
        out.push_str(&format!(
            "{:<18} {:<8} {:<14} {:<8} {:<15} {:<18} {}\n",
            "DVIPA", "PORT", "DISTMETHOD", "ROUTER", "SOURCE", "BACKUPS(RANK)", "DESTIP"
        ));
        for v in &self.vipas {
            let backups = if v.backups.is_empty() {
                "-".to_string()
            } else {
                v.backups
                    .iter()
                    .map(|b| format!("{}({})", b.switch, b.rank))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            let mut rows: Vec<(String, &Distribution)> =
                v.dist.iter().map(|d| (v.owner.clone(), d)).collect();
            for b in &v.backups {
                rows.extend(b.own.iter().map(|d| (b.switch.clone(), d)));
            }
            let addr = format!("{}/{}", v.addr, v.prefix_len);
            if rows.is_empty() {
                out.push_str(&format!(
                    "{:<18} {:<8} {:<14} {:<8} {:<15} {:<18} {}\n",
                    addr, "-", "(not distributed)", v.owner, v.owner, backups, "-"
                ));
            }
            for (src, d) in rows {
                let ports = if d.ports.is_empty() {
                    "ALL".to_string()
                } else {
                    d.ports
                        .iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                };
                let dest = if d.all_stacks {
                    format!(
                        "ALL ({})",
                        d.candidates
                            .iter()
                            .map(|c| c.stack.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                } else {
                    d.candidates
                        .iter()
                        .map(|c| {
                            let s = self
                                .stack(&c.stack)
                                .map(|s| s.underlay.to_string())
                                .unwrap_or_default();
                            match (d.method, c.role) {
                                (DistMethod::WeightedActive, _) => {
                                    format!("{}={s} W{}", c.stack, c.weight)
                                }
                                (_, Some(StandbyRole::Preferred)) => {
                                    format!("{}={s} PREF", c.stack)
                                }
                                (_, Some(StandbyRole::Backup(r))) => {
                                    format!("{}={s} BACK{r}", c.stack)
                                }
                                _ => format!("{}={s}", c.stack),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let source = if src == v.owner {
                    src.clone()
                } else {
                    format!("{src}(own)")
                };
                out.push_str(&format!(
                    "{:<18} {:<8} {:<14} {:<8} {:<15} {:<18} {}\n",
                    addr,
                    ports,
                    d.method.as_str(),
                    v.owner,
                    source,
                    backups,
                    dest
                ));
            }
        }
        for (sw, r) in &self.ranges {
            out.push_str(&format!(
                "VIPARANGE {}/{} MOVEABLE NONDISRUPTIVE on {sw}\n",
                r.network, r.prefix_len
            ));
        }
        out
    }
}
