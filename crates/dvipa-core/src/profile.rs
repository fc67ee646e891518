//! Parser for the z/OS TCP/IP profile statements that define dynamic VIPAs.
//!
//! One profile file belongs to one routing switch (as one `PROFILE.TCPIP` belongs to one stack
//! in z/OS). Supported statements, all inside `VIPADYNAMIC … ENDVIPADYNAMIC` blocks:
//!
//! ```text
//! VIPADEFine   [MOVEable IMMEDiate] mask ipaddr…
//! VIPABackup   rank [MOVEable IMMEDiate] ipaddr…              (rank 1–254)
//! VIPADISTribute [DEFine] [DISTMethod m] ipaddr [PORT p…] DESTIP dest…|ALL
//! VIPARange    [DEFine] [MOVEable NONDISRUPTive] mask ipaddr
//! ```
//!
//! where each `dest` is an underlay ("XCF") IPv4 address, optionally followed by `WEIGHT w`
//! (DISTMETHOD WEIGHTEDACTIVE) or `PREFerred` / `BACKup rank` (DISTMETHOD HOTSTANDBY).
//! Methods: `ROUNDROBIN`, `WEIGHTEDActive`, `SERVERWLM` (alias `BASEWLM`), `HOTSTANDBY`.
//!
//! Keywords are case-insensitive; capital letters in the spellings above are the minimum
//! abbreviation (`VIPADEF`, `VIPADIST`, `MOVE`, `DISTM`, …). `;` starts a comment that runs to
//! the end of the line. Tokens are separated by blanks or commas, and a statement may continue
//! over any number of lines: it ends where the next statement keyword starts. Every error names
//! `file:line:column` and what was expected; the parser recovers at the next statement keyword
//! so one run reports all errors.
//!
//! Tests live in `profile/tests.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

/// A position in a profile file (1-based line and column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, serde::Serialize)]
pub struct Loc {
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub col: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One error in a profile file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{loc}: {msg}")]
pub struct ProfileError {
    /// File name as given to the parser.
    pub file: String,
    /// Where.
    pub loc: Loc,
    /// What was expected and what was found.
    pub msg: String,
}

/// All errors of one profile file (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileErrors(pub Vec<ProfileError>);

impl fmt::Display for ProfileErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ProfileErrors {}

/// Distribution method (`DISTMETHOD`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum DistMethod {
    /// Every ready target gets an equal share; the switch walks the slots in turn.
    #[default]
    RoundRobin,
    /// Shares follow the configured `WEIGHT` of each DESTIP entry.
    WeightedActive,
    /// Shares follow the weights the agents report (SRVSTAT / heartbeat weight).
    ServerWlm,
    /// All new connections go to the preferred ready target, then the highest-ranked backup.
    HotStandby,
}

impl DistMethod {
    /// The z/OS spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            DistMethod::RoundRobin => "ROUNDROBIN",
            DistMethod::WeightedActive => "WEIGHTEDACTIVE",
            DistMethod::ServerWlm => "SERVERWLM",
            DistMethod::HotStandby => "HOTSTANDBY",
        }
    }
}

impl fmt::Display for DistMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `VIPADEFINE`: VIPAs this switch routes (it is their primary routing switch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipaDefine {
    /// Where the statement starts.
    pub loc: Loc,
    /// Prefix length of the mask.
    pub prefix_len: u8,
    /// The VIPAs.
    pub addrs: Vec<Ipv4Addr>,
}

/// `VIPABACKUP`: VIPAs this switch takes over, with its rank (higher takes over first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipaBackup {
    /// Where the statement starts.
    pub loc: Loc,
    /// 1–254.
    pub rank: u8,
    /// The VIPAs.
    pub addrs: Vec<Ipv4Addr>,
}

/// Role of a DESTIP entry under HOTSTANDBY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StandbyRole {
    /// Receives all new connections while ready.
    Preferred,
    /// Used when the preferred (and higher-ranked backups) are not ready; higher rank first.
    Backup(u8),
}

/// One DESTIP entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestEntry {
    /// Where the entry starts.
    pub loc: Loc,
    /// Underlay ("XCF") address of the target stack.
    pub addr: Ipv4Addr,
    /// `WEIGHT w` (WEIGHTEDACTIVE only).
    pub weight: Option<u32>,
    /// `PREFERRED` / `BACKUP rank` (HOTSTANDBY only).
    pub role: Option<StandbyRole>,
}

/// DESTIP list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestIp {
    /// `DESTIP ALL`: every stack of the cluster, present and future.
    All,
    /// Enumerated stacks.
    List(Vec<DestEntry>),
}

/// `VIPADISTRIBUTE`: makes a VIPA a distributed (routable) DVIPA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipaDistribute {
    /// Where the statement starts.
    pub loc: Loc,
    /// DISTMETHOD (default ROUNDROBIN).
    pub method: DistMethod,
    /// The DVIPA.
    pub addr: Ipv4Addr,
    /// Distributed ports; empty = all ports.
    pub ports: Vec<u16>,
    /// Candidate target stacks.
    pub dest: DestIp,
}

/// `VIPARANGE`: addresses server stacks may activate as moveable (non-disruptive) VIPAs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipaRange {
    /// Where the statement starts.
    pub loc: Loc,
    /// Prefix length of the mask.
    pub prefix_len: u8,
    /// Network address (ipaddr with host bits cleared).
    pub network: Ipv4Addr,
}

impl VipaRange {
    /// Whether `a` falls in the range.
    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let m = prefix_mask(self.prefix_len);
        u32::from(a) & m == u32::from(self.network)
    }
}

/// A parsed profile of one routing switch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Profile {
    /// File name as given to the parser (for messages).
    pub file: String,
    /// VIPADEFINE statements.
    pub defines: Vec<VipaDefine>,
    /// VIPABACKUP statements.
    pub backups: Vec<VipaBackup>,
    /// VIPADISTRIBUTE statements.
    pub distributes: Vec<VipaDistribute>,
    /// VIPARANGE statements.
    pub ranges: Vec<VipaRange>,
}

impl Profile {
    /// Prefix length of a VIPA this profile defines.
    pub fn defined(&self, a: Ipv4Addr) -> Option<&VipaDefine> {
        self.defines.iter().find(|d| d.addrs.contains(&a))
    }
    /// Rank with which this profile backs up `a`.
    pub fn backup_rank(&self, a: Ipv4Addr) -> Option<(u8, Loc)> {
        self.backups
            .iter()
            .find(|b| b.addrs.contains(&a))
            .map(|b| (b.rank, b.loc))
    }
    /// VIPADISTRIBUTE statements of `a`.
    pub fn distributes_of(&self, a: Ipv4Addr) -> impl Iterator<Item = &VipaDistribute> {
        self.distributes.iter().filter(move |d| d.addr == a)
    }
}

/// Netmask bits for a prefix length.
pub fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

#[derive(Debug, Clone)]
struct Tok {
    text: String,
    loc: Loc,
}

fn tokenize(src: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    for (ln, line) in src.lines().enumerate() {
        let mut cur: Option<(String, u32)> = None;
        let flush = |cur: &mut Option<(String, u32)>, out: &mut Vec<Tok>| {
            if let Some((text, col)) = cur.take() {
                out.push(Tok {
                    text,
                    loc: Loc {
                        line: ln as u32 + 1,
                        col,
                    },
                });
            }
        };
        for (ci, ch) in line.chars().enumerate() {
            if ch == ';' {
                break;
            }
            if ch.is_whitespace() || ch == ',' {
                flush(&mut cur, &mut out);
            } else {
                match &mut cur {
                    Some((t, _)) => t.push(ch),
                    None => cur = Some((ch.to_string(), ci as u32 + 1)),
                }
            }
        }
        flush(&mut cur, &mut out);
    }
    out
}

/// Whether `tok` is an allowed abbreviation of `spec`, whose capital letters give the minimum.
pub fn keyword_matches(tok: &str, spec: &str) -> bool {
    let min = spec.chars().take_while(|c| c.is_ascii_uppercase()).count();
    let t = tok.to_ascii_uppercase();
    let s = spec.to_ascii_uppercase();
    t.len() >= min.max(1) && s.starts_with(&t)
}

const STATEMENTS: &[&str] = &[
    "VIPADYNamic",
    "ENDVIPADYNamic",
    "VIPADEFine",
    "VIPABackup",
    "VIPADISTribute",
    "VIPARange",
];

fn is_statement(tok: &str) -> bool {
    STATEMENTS.iter().any(|s| keyword_matches(tok, s))
}

struct Parser<'a> {
    file: &'a str,
    toks: Vec<Tok>,
    pos: usize,
    eof: Loc,
    errors: Vec<ProfileError>,
}

type PResult<T> = Result<T, ProfileError>;

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn err(&self, loc: Loc, msg: String) -> ProfileError {
        ProfileError {
            file: self.file.to_string(),
            loc,
            msg,
        }
    }
    fn here(&self) -> Loc {
        self.peek().map(|t| t.loc).unwrap_or(self.eof)
    }
    fn found(&self) -> String {
        match self.peek() {
            Some(t) => format!("`{}`", t.text),
            None => "end of file".to_string(),
        }
    }
    fn expected(&self, what: &str) -> ProfileError {
        self.err(
            self.here(),
            format!("expected {what}, found {}", self.found()),
        )
    }
    fn eat_kw(&mut self, spec: &str) -> bool {
        if self.peek().is_some_and(|t| keyword_matches(&t.text, spec)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_kw(&mut self, spec: &str) -> PResult<()> {
        if self.eat_kw(spec) {
            Ok(())
        } else {
            Err(self.expected(&spec.to_ascii_uppercase()))
        }
    }
    fn peek_addr(&self) -> Option<Ipv4Addr> {
        self.peek().and_then(|t| t.text.parse().ok())
    }
    fn addr(&mut self, what: &str) -> PResult<(Ipv4Addr, Loc)> {
        match self.peek_addr() {
            Some(a) => {
                let loc = self.here();
                self.pos += 1;
                Ok((a, loc))
            }
            None => Err(self.expected(what)),
        }
    }
    fn mask(&mut self) -> PResult<u8> {
        let (m, loc) = self.addr("an address mask (e.g. 255.255.255.0)")?;
        let bits = u32::from(m);
        let len = bits.leading_ones();
        if bits != prefix_mask(len as u8) {
            return Err(self.err(
                loc,
                format!("address mask {m} is not contiguous (expected e.g. 255.255.255.0)"),
            ));
        }
        if len == 0 {
            return Err(self.err(
                loc,
                "address mask 0.0.0.0 covers every address (/0); a VIPA needs a mask of at \
                 least one bit (e.g. 255.255.255.0)"
                    .into(),
            ));
        }
        Ok(len as u8)
    }
    /// An address that must be a unicast host address (a VIPA).
    fn vipa_addr(&mut self, what: &str) -> PResult<(Ipv4Addr, Loc)> {
        let (a, loc) = self.addr(what)?;
        match crate::validate::unicast_problem(a) {
            Some(m) => Err(self.err(
                loc,
                format!("VIPA {a} {m}; a VIPA must be a unicast address"),
            )),
            None => Ok((a, loc)),
        }
    }
    fn number(&mut self, what: &str, min: u32, max: u32) -> PResult<u32> {
        let loc = self.here();
        let v = self
            .peek()
            .and_then(|t| t.text.parse::<u32>().ok())
            .ok_or_else(|| self.expected(what))?;
        if v < min || v > max {
            return Err(self.err(loc, format!("{what} must be {min}–{max}, found {v}")));
        }
        self.pos += 1;
        Ok(v)
    }
    /// Skip to the next statement keyword.
    fn recover(&mut self) {
        self.pos += 1;
        while self.peek().is_some_and(|t| !is_statement(&t.text)) {
            self.pos += 1;
        }
    }

    fn moveable_immediate(&mut self) -> PResult<()> {
        if self.eat_kw("MOVEable") {
            self.expect_kw("IMMEDiate")?;
        }
        Ok(())
    }

    fn vipadefine(&mut self, loc: Loc) -> PResult<VipaDefine> {
        self.moveable_immediate()?;
        let prefix_len = self.mask()?;
        let mut addrs = vec![self.vipa_addr("a VIPA address (IPv4)")?];
        while self.peek_addr().is_some() {
            addrs.push(self.vipa_addr("a VIPA address")?);
        }
        let m = prefix_mask(prefix_len);
        let net = u32::from(addrs[0].0) & m;
        for (a, l) in &addrs[1..] {
            if u32::from(*a) & m != net {
                return Err(self.err(
                    *l,
                    format!(
                        "VIPA {a} is not in the subnet {}/{prefix_len} of {} (all VIPAs of one VIPADEFINE must share the mask's subnet)",
                        Ipv4Addr::from(net),
                        addrs[0].0
                    ),
                ));
            }
        }
        Ok(VipaDefine {
            loc,
            prefix_len,
            addrs: addrs.into_iter().map(|a| a.0).collect(),
        })
    }

    fn vipabackup(&mut self, loc: Loc) -> PResult<VipaBackup> {
        let rank = self.number("a backup rank", 1, 254)? as u8;
        self.moveable_immediate()?;
        let mut addrs = vec![self.vipa_addr("a VIPA address (IPv4)")?.0];
        while self.peek_addr().is_some() {
            addrs.push(self.addr("a VIPA address")?.0);
        }
        Ok(VipaBackup { loc, rank, addrs })
    }

    fn vipadistribute(&mut self, loc: Loc) -> PResult<VipaDistribute> {
        if self.eat_kw("DELEte") {
            return Err(self.err(
                loc,
                "VIPADISTRIBUTE DELETE is an operator command, not supported in a profile (remove the statement instead)".into(),
            ));
        }
        self.eat_kw("DEFine");
        let mut method = DistMethod::default();
        if self.eat_kw("DISTMethod") {
            method = if self.eat_kw("ROUNDROBIN") {
                DistMethod::RoundRobin
            } else if self.eat_kw("WEIGHTEDActive") {
                DistMethod::WeightedActive
            } else if self.eat_kw("SERVERWLM") || self.eat_kw("BASEWLM") {
                DistMethod::ServerWlm
            } else if self.eat_kw("HOTSTANDBY") {
                DistMethod::HotStandby
            } else {
                return Err(self
                    .expected("a DISTMETHOD (ROUNDROBIN, WEIGHTEDACTIVE, SERVERWLM, HOTSTANDBY)"));
            };
        }
        let (addr, _) = self.addr("the DVIPA address (IPv4)")?;
        let mut ports = Vec::new();
        if self.eat_kw("PORT") {
            ports.push(self.number("a port number", 1, 65535)? as u16);
            while self
                .peek()
                .is_some_and(|t| t.text.chars().all(|c| c.is_ascii_digit()))
            {
                ports.push(self.number("a port number", 1, 65535)? as u16);
            }
        }
        if !self.eat_kw("DESTIP") {
            return Err(self.expected(if ports.is_empty() {
                "PORT or DESTIP"
            } else {
                "another port or DESTIP"
            }));
        }
        let dest = if self.eat_kw("ALL") {
            if method == DistMethod::HotStandby {
                return Err(self.err(
                    self.toks[self.pos - 1].loc,
                    "DESTIP ALL cannot be used with DISTMETHOD HOTSTANDBY (it needs PREFERRED and BACKUP entries)".into(),
                ));
            }
            DestIp::All
        } else {
            let mut list = Vec::new();
            loop {
                let (a, l) = self.addr(if list.is_empty() {
                    "a DESTIP underlay (XCF) address or ALL"
                } else {
                    "a DESTIP underlay (XCF) address"
                })?;
                let mut e = DestEntry {
                    loc: l,
                    addr: a,
                    weight: None,
                    role: None,
                };
                if self.eat_kw("WEIGHT") {
                    if method != DistMethod::WeightedActive {
                        return Err(self.err(
                            self.toks[self.pos - 1].loc,
                            format!("WEIGHT is only valid with DISTMETHOD WEIGHTEDACTIVE (method is {method})"),
                        ));
                    }
                    e.weight = Some(self.number("a weight", 1, 100)?);
                } else if self.eat_kw("PREFerred") {
                    e.role = Some(StandbyRole::Preferred);
                } else if self.eat_kw("BACKup") {
                    e.role = Some(StandbyRole::Backup(
                        self.number("a backup rank", 1, 254)? as u8
                    ));
                }
                if e.role.is_some() && method != DistMethod::HotStandby {
                    return Err(self.err(
                        self.toks[self.pos - 1].loc,
                        format!("PREFERRED/BACKUP is only valid with DISTMETHOD HOTSTANDBY (method is {method})"),
                    ));
                }
                if method == DistMethod::HotStandby && e.role.is_none() {
                    return Err(self.expected("PREFERRED or BACKUP rank (DISTMETHOD HOTSTANDBY)"));
                }
                list.push(e);
                if self.peek_addr().is_none() {
                    break;
                }
            }
            if method == DistMethod::HotStandby {
                let n = list
                    .iter()
                    .filter(|e| e.role == Some(StandbyRole::Preferred))
                    .count();
                if n != 1 {
                    return Err(self.err(
                        loc,
                        format!("DISTMETHOD HOTSTANDBY needs exactly one PREFERRED DESTIP entry, found {n}"),
                    ));
                }
            }
            DestIp::List(list)
        };
        Ok(VipaDistribute {
            loc,
            method,
            addr,
            ports,
            dest,
        })
    }

    fn viparange(&mut self, loc: Loc) -> PResult<VipaRange> {
        if self.eat_kw("DELEte") {
            return Err(self.err(
                loc,
                "VIPARANGE DELETE is an operator command, not supported in a profile".into(),
            ));
        }
        self.eat_kw("DEFine");
        if self.eat_kw("MOVEable") {
            if self.eat_kw("DISRUPTive") {
                return Err(self.err(
                    self.toks[self.pos - 1].loc,
                    "MOVEABLE DISRUPTIVE is not supported: dvipa moves VIPAs without disruption (use NONDISRUPTIVE)".into(),
                ));
            }
            self.expect_kw("NONDISRUPTive")?;
        }
        let prefix_len = self.mask()?;
        let (a, _) = self.vipa_addr("the range's IPv4 address")?;
        let network = Ipv4Addr::from(u32::from(a) & prefix_mask(prefix_len));
        Ok(VipaRange {
            loc,
            prefix_len,
            network,
        })
    }
}

/// Parse one profile. `file` is only used in messages.
pub fn parse_profile(file: &str, src: &str) -> Result<Profile, ProfileErrors> {
    let toks = tokenize(src);
    let eof = Loc {
        line: src.lines().count().max(1) as u32,
        col: src
            .lines()
            .last()
            .map(|l| l.chars().count() as u32 + 1)
            .unwrap_or(1),
    };
    let mut p = Parser {
        file,
        toks,
        pos: 0,
        eof,
        errors: Vec::new(),
    };
    let mut prof = Profile {
        file: file.to_string(),
        ..Profile::default()
    };
    let mut in_block: Option<Loc> = None;
    while let Some(t) = p.peek().cloned() {
        let loc = t.loc;
        if in_block.is_none() {
            if keyword_matches(&t.text, "VIPADYNamic") {
                in_block = Some(loc);
                p.pos += 1;
            } else {
                let e = p.expected("VIPADYNAMIC");
                p.errors.push(e);
                p.recover();
            }
            continue;
        }
        p.pos += 1;
        let r = if keyword_matches(&t.text, "ENDVIPADYNamic") {
            in_block = None;
            Ok(())
        } else if keyword_matches(&t.text, "VIPADYNamic") {
            Err(p.err(
                loc,
                "expected ENDVIPADYNAMIC before a new VIPADYNAMIC block".into(),
            ))
        } else if keyword_matches(&t.text, "VIPADEFine") {
            p.vipadefine(loc).map(|s| prof.defines.push(s))
        } else if keyword_matches(&t.text, "VIPABackup") {
            p.vipabackup(loc).map(|s| prof.backups.push(s))
        } else if keyword_matches(&t.text, "VIPADISTribute") {
            p.vipadistribute(loc).map(|s| prof.distributes.push(s))
        } else if keyword_matches(&t.text, "VIPARange") {
            p.viparange(loc).map(|s| prof.ranges.push(s))
        } else {
            p.pos -= 1;
            Err(p.expected(
                "a statement (VIPADEFINE, VIPABACKUP, VIPADISTRIBUTE, VIPARANGE or ENDVIPADYNAMIC)",
            ))
        };
        if let Err(e) = r {
            p.errors.push(e);
            // Continue at the next statement keyword (the current token may be one).
            if p.peek().is_some_and(|t| !is_statement(&t.text)) {
                p.recover();
            }
        } else if p.peek().is_some_and(|t| !is_statement(&t.text)) && in_block.is_some() {
            let e = p.expected("the next statement or ENDVIPADYNAMIC");
            p.errors.push(e);
            p.recover();
        }
    }
    if let Some(l) = in_block {
        let e = p.err(
            p.eof,
            format!(
                "expected ENDVIPADYNAMIC for the VIPADYNAMIC block opened at {l}, found end of file"
            ),
        );
        p.errors.push(e);
    }
    check_semantics(&prof, &mut p.errors);
    if p.errors.is_empty() {
        Ok(prof)
    } else {
        p.errors.sort_by_key(|e| e.loc);
        Err(ProfileErrors(p.errors))
    }
}

fn check_semantics(prof: &Profile, errors: &mut Vec<ProfileError>) {
    let err = |loc: Loc, msg: String| ProfileError {
        file: prof.file.clone(),
        loc,
        msg,
    };
    let mut defined: BTreeMap<Ipv4Addr, Loc> = BTreeMap::new();
    for d in &prof.defines {
        for a in &d.addrs {
            if let Some(prev) = defined.insert(*a, d.loc) {
                errors.push(err(
                    d.loc,
                    format!("VIPA {a} is already defined by the VIPADEFINE at {prev}"),
                ));
            }
        }
    }
    let mut backed: BTreeMap<Ipv4Addr, Loc> = BTreeMap::new();
    for b in &prof.backups {
        for a in &b.addrs {
            if let Some(prev) = defined.get(a) {
                errors.push(err(
                    b.loc,
                    format!("VIPA {a} is both defined (VIPADEFINE at {prev}) and backed up here; a switch routes or backs up a VIPA, not both"),
                ));
            }
            if let Some(prev) = backed.insert(*a, b.loc) {
                errors.push(err(
                    b.loc,
                    format!("VIPA {a} is already backed up by the VIPABACKUP at {prev}"),
                ));
            }
        }
    }
    let mut ports_seen: BTreeSet<(Ipv4Addr, Option<u16>)> = BTreeSet::new();
    for d in &prof.distributes {
        if !defined.contains_key(&d.addr) && !backed.contains_key(&d.addr) {
            errors.push(err(
                d.loc,
                format!("VIPADISTRIBUTE {}: the DVIPA must first appear in a VIPADEFINE or VIPABACKUP of this profile", d.addr),
            ));
        }
        let keys: Vec<Option<u16>> = if d.ports.is_empty() {
            vec![None]
        } else {
            d.ports.iter().map(|p| Some(*p)).collect()
        };
        for k in keys {
            if !ports_seen.insert((d.addr, k)) {
                errors.push(err(
                    d.loc,
                    match k {
                        Some(p) => {
                            format!("VIPADISTRIBUTE {} PORT {p} is distributed twice", d.addr)
                        }
                        None => {
                            format!("VIPADISTRIBUTE {} (all ports) is distributed twice", d.addr)
                        }
                    },
                ));
            }
        }
        if let DestIp::List(l) = &d.dest {
            let mut seen = BTreeSet::new();
            for e in l {
                if !seen.insert(e.addr) {
                    errors.push(err(e.loc, format!("DESTIP {} is listed twice", e.addr)));
                }
            }
        }
    }
    for r in &prof.ranges {
        for (a, l) in &defined {
            if r.contains(*a) {
                errors.push(err(
                    r.loc,
                    format!(
                        "VIPARANGE {}/{} overlaps VIPA {a} of the VIPADEFINE at {l}",
                        r.network, r.prefix_len
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests;
