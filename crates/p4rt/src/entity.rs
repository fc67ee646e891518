//! Building and decoding P4Runtime entities by name.
//!
//! [`TableEntryBuilder`] (from [`Schema::table_entry`]) checks everything a P4Runtime server
//! would: field and action names, match kinds, bit widths, ternary masks, LPM prefixes, priority
//! rules, action scope and missing parameters. The decoders turn entries and digests received
//! from a device (or a client, on the server side) back into names and values.
//!
//! Over the project's ~800-line guide on purpose: the builder and the decoders are the two
//! directions of one encoding, checked against each other by the tests.
use std::net::Ipv4Addr;

use p4rt_proto::p4::config::v1 as cfg;
use p4rt_proto::p4::v1 as p4;

use crate::codec::{self, CodecError, MacAddr, P4Value};
use crate::error::{ObjectKind, Result, SchemaError};
use crate::schema::{DigestLayout, Schema, match_kind_name, match_type, name_of};

fn value_err(context: String) -> impl FnOnce(CodecError) -> SchemaError {
    move |source| SchemaError::Value { context, source }
}

/// Like [`value_err`], with the context made only on error (decoders run once per digest member
/// and per match field: no allocation on the success path).
fn lazy_err(context: impl FnOnce() -> String) -> impl FnOnce(CodecError) -> SchemaError {
    move |source| SchemaError::Value {
        context: context(),
        source,
    }
}

/// Like [`value_err`], with the context formatted only on error (no allocation per field on the
/// success path: entries are built by the hundred thousand).
fn match_err<'a>(table: &'a str, field: &'a str) -> impl FnOnce(CodecError) -> SchemaError + 'a {
    move |source| SchemaError::Value {
        context: format!("{table} match {field}"),
        source,
    }
}

fn mask_bits(bitwidth: u32) -> Vec<u8> {
    // all-ones bytestring of `bitwidth` bits, big-endian
    let nbytes = bitwidth.div_ceil(8) as usize;
    let mut v = vec![0xffu8; nbytes];
    let extra = nbytes as u32 * 8 - bitwidth;
    if nbytes > 0 {
        v[0] = 0xff >> extra;
    }
    v
}

fn pad(be: &[u8], len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len.saturating_sub(be.len())];
    v.extend_from_slice(&be[be.len().saturating_sub(len)..]);
    v
}

/// Builds a `p4.v1.TableEntry` by names; errors are collected and returned by [`build`].
///
/// [`build`]: TableEntryBuilder::build
#[derive(Debug)]
pub struct TableEntryBuilder<'s> {
    schema: &'s Schema,
    table: Option<&'s cfg::Table>,
    entry: p4::TableEntry,
    action: Option<&'s cfg::Action>,
    error: Option<SchemaError>,
}

impl<'s> TableEntryBuilder<'s> {
    fn fail(mut self, e: SchemaError) -> Self {
        if self.error.is_none() {
            self.error = Some(e);
        }
        self
    }

    fn add_match<F>(mut self, field: &str, used: &'static str, make: F) -> Self
    where
        F: FnOnce(&cfg::MatchField, &str) -> Result<Option<p4::field_match::FieldMatchType>>,
    {
        if self.error.is_some() {
            return self;
        }
        let Some(table) = self.table else { return self };
        let tname = name_of(&table.preamble);
        let f = match self.schema.match_field(table, field) {
            Ok(f) => f,
            Err(e) => return self.fail(e),
        };
        let declared = match_kind_name(f);
        if declared != used {
            return self.fail(SchemaError::MatchKind {
                table: tname.to_string(),
                field: f.name.clone(),
                declared,
                used,
            });
        }
        if self.entry.r#match.iter().any(|m| m.field_id == f.id) {
            return self.fail(SchemaError::Duplicate {
                what: "match field",
                name: f.name.clone(),
            });
        }
        match make(f, tname) {
            Ok(Some(m)) => {
                self.entry.r#match.push(p4::FieldMatch {
                    field_id: f.id,
                    field_match_type: Some(m),
                });
                self
            }
            Ok(None) => self,
            Err(e) => self.fail(e),
        }
    }

    /// Exact match on `field`.
    pub fn exact(self, field: &str, value: impl P4Value) -> Self {
        self.add_match(field, "exact", |f, t| {
            let v = value
                .encode(f.bitwidth as u32)
                .map_err(match_err(t, &f.name))?;
            Ok(Some(p4::field_match::FieldMatchType::Exact(
                p4::field_match::Exact { value: v },
            )))
        })
    }

    /// Ternary match. A zero mask means "don't care" and omits the field, as P4Runtime requires.
    pub fn ternary(self, field: &str, value: impl P4Value, mask: impl P4Value) -> Self {
        self.add_match(field, "ternary", |f, t| {
            let ctx = format!("{t} match {}", f.name);
            let w = f.bitwidth as u32;
            let v = value.encode(w).map_err(value_err(ctx.clone()))?;
            let m = mask.encode(w).map_err(value_err(ctx.clone()))?;
            if m == [0] {
                return Ok(None);
            }
            let n = w.div_ceil(8) as usize;
            let (vp, mp) = (pad(&v, n), pad(&m, n));
            if vp.iter().zip(&mp).any(|(v, m)| v & !m != 0) {
                return Err(SchemaError::Rule(format!(
                    "{ctx}: value 0x{} has bits set outside mask 0x{}",
                    codec::hex(&v),
                    codec::hex(&m)
                )));
            }
            Ok(Some(p4::field_match::FieldMatchType::Ternary(
                p4::field_match::Ternary { value: v, mask: m },
            )))
        })
    }

    /// LPM match. Prefix length 0 means "don't care" and omits the field.
    pub fn lpm(self, field: &str, value: impl P4Value, prefix_len: u32) -> Self {
        self.add_match(field, "lpm", |f, t| {
            let ctx = format!("{t} match {}", f.name);
            let w = f.bitwidth as u32;
            if prefix_len > w {
                return Err(SchemaError::Rule(format!(
                    "{ctx}: prefix length {prefix_len} exceeds bit<{w}>"
                )));
            }
            let v = value.encode(w).map_err(value_err(ctx.clone()))?;
            if prefix_len == 0 {
                return Ok(None);
            }
            let n = w.div_ceil(8) as usize;
            let vp = pad(&v, n);
            // host bits: the low (w - prefix_len) bits must be zero
            let host = w - prefix_len;
            let host_mask = if host == 0 {
                vec![0u8; n]
            } else {
                pad(&mask_bits(host), n)
            };
            if vp.iter().zip(&host_mask).any(|(v, m)| v & m != 0) {
                return Err(SchemaError::Rule(format!(
                    "{ctx}: value 0x{} has bits set beyond prefix /{prefix_len}",
                    codec::hex(&v)
                )));
            }
            Ok(Some(p4::field_match::FieldMatchType::Lpm(
                p4::field_match::Lpm {
                    value: v,
                    prefix_len: prefix_len as i32,
                },
            )))
        })
    }

    /// Range match `low..=high`. The full range means "don't care" and omits the field.
    pub fn range(self, field: &str, low: impl P4Value, high: impl P4Value) -> Self {
        self.add_match(field, "range", |f, t| {
            let ctx = format!("{t} match {}", f.name);
            let w = f.bitwidth as u32;
            let lo = low.encode(w).map_err(value_err(ctx.clone()))?;
            let hi = high.encode(w).map_err(value_err(ctx.clone()))?;
            let n = w.div_ceil(8) as usize;
            if pad(&lo, n) > pad(&hi, n) {
                return Err(SchemaError::Rule(format!(
                    "{ctx}: low 0x{} > high 0x{}",
                    codec::hex(&lo),
                    codec::hex(&hi)
                )));
            }
            if lo == [0] && codec::canonical(&hi) == codec::canonical(&mask_bits(w)) {
                return Ok(None);
            }
            Ok(Some(p4::field_match::FieldMatchType::Range(
                p4::field_match::Range { low: lo, high: hi },
            )))
        })
    }

    /// Optional match (present = exact on `value`).
    pub fn optional(self, field: &str, value: impl P4Value) -> Self {
        self.add_match(field, "optional", |f, t| {
            let v = value
                .encode(f.bitwidth as u32)
                .map_err(match_err(t, &f.name))?;
            Ok(Some(p4::field_match::FieldMatchType::Optional(
                p4::field_match::Optional { value: v },
            )))
        })
    }

    /// Entry priority (required, > 0, for tables with ternary, range or optional fields).
    pub fn priority(mut self, priority: i32) -> Self {
        self.entry.priority = priority;
        self
    }

    /// Idle timeout in nanoseconds (tables with `NOTIFY_CONTROL` only).
    pub fn idle_timeout_ns(mut self, ns: i64) -> Self {
        self.entry.idle_timeout_ns = ns;
        self
    }

    /// Opaque controller metadata stored with the entry.
    pub fn metadata(mut self, metadata: impl Into<Vec<u8>>) -> Self {
        self.entry.metadata = metadata.into();
        self
    }

    /// Makes this entry the table's default-action entry (no match fields allowed).
    pub fn default_action(mut self) -> Self {
        self.entry.is_default_action = true;
        self
    }

    /// Sets the direct action by name; it must be one of the table's actions.
    pub fn action(mut self, name: &str) -> Self {
        if self.error.is_some() {
            return self;
        }
        let Some(table) = self.table else { return self };
        let a = match self.schema.action(name) {
            Ok(a) => a,
            Err(e) => return self.fail(e),
        };
        if self.action.is_some() {
            return self.fail(SchemaError::Duplicate {
                what: "action for entry of",
                name: name_of(&table.preamble).to_string(),
            });
        }
        self.action = Some(a);
        self.entry.action = Some(p4::TableAction {
            r#type: Some(p4::table_action::Type::Action(p4::Action {
                action_id: crate::schema::id_of(&a.preamble),
                params: Vec::new(),
            })),
        });
        self
    }

    /// Sets an action parameter (call after [`action`](Self::action)).
    pub fn param(mut self, name: &str, value: impl P4Value) -> Self {
        if self.error.is_some() {
            return self;
        }
        let Some(a) = self.action else {
            return self.fail(SchemaError::Missing(format!(
                "parameter {name} given before an action"
            )));
        };
        let p = match self.schema.action_param(a, name) {
            Ok(p) => p,
            Err(e) => return self.fail(e),
        };
        let aname = name_of(&a.preamble);
        let v = match value
            .encode(p.bitwidth as u32)
            .map_err(|source| SchemaError::Value {
                context: format!("{aname} param {}", p.name),
                source,
            }) {
            Ok(v) => v,
            Err(e) => return self.fail(e),
        };
        if let Some(p4::table_action::Type::Action(act)) =
            self.entry.action.as_mut().and_then(|x| x.r#type.as_mut())
        {
            if act.params.iter().any(|x| x.param_id == p.id) {
                return self.fail(SchemaError::Duplicate {
                    what: "parameter",
                    name: format!("{aname}.{}", p.name),
                });
            }
            act.params.push(p4::action::Param {
                param_id: p.id,
                value: v,
            });
        }
        self
    }

    /// Finishes the entry, checking priority, action scope and parameters.
    pub fn build(self) -> Result<p4::TableEntry> {
        if let Some(e) = self.error {
            return Err(e);
        }
        let table = self.table.expect("no error implies a table");
        let tname = name_of(&table.preamble);
        let mut entry = self.entry;
        use cfg::match_field::MatchType as M;
        let needs_priority = table.match_fields.iter().any(|f| {
            matches!(
                match_type(f),
                Some(M::Ternary) | Some(M::Range) | Some(M::Optional)
            )
        });
        if entry.is_default_action {
            if !entry.r#match.is_empty() {
                return Err(SchemaError::Rule(format!(
                    "default-action entry of {tname} must not have match fields"
                )));
            }
            if entry.priority != 0 {
                return Err(SchemaError::Rule(format!(
                    "default-action entry of {tname} must have priority 0"
                )));
            }
        } else if needs_priority && entry.priority <= 0 {
            return Err(SchemaError::Rule(format!(
                "table {tname} has ternary/range/optional fields: entries need a priority > 0"
            )));
        } else if !needs_priority && entry.priority != 0 {
            return Err(SchemaError::Rule(format!(
                "table {tname} has only exact/lpm fields: priority must be 0, got {}",
                entry.priority
            )));
        }
        if !entry.is_default_action {
            for f in &table.match_fields {
                let given = entry.r#match.iter().any(|m| m.field_id == f.id);
                if !given && matches!(match_type(f), Some(M::Exact)) {
                    return Err(SchemaError::Missing(format!(
                        "table {tname}: exact match field {} is missing",
                        f.name
                    )));
                }
            }
        }
        if entry.idle_timeout_ns != 0
            && table.idle_timeout_behavior != cfg::table::IdleTimeoutBehavior::NotifyControl as i32
        {
            return Err(SchemaError::Rule(format!(
                "table {tname} does not support idle timeout (no NOTIFY_CONTROL)"
            )));
        }
        if let Some(a) = self.action {
            let aid = crate::schema::id_of(&a.preamble);
            use cfg::action_ref::Scope;
            let allowed = |r: &cfg::ActionRef| {
                let scope = Scope::try_from(r.scope).unwrap_or(Scope::TableAndDefault);
                if entry.is_default_action {
                    scope != Scope::TableOnly
                } else {
                    scope != Scope::DefaultOnly
                }
            };
            if !table.action_refs.iter().any(|r| r.id == aid && allowed(r)) {
                return Err(SchemaError::ActionNotInTable {
                    table: tname.to_string(),
                    action: name_of(&a.preamble).to_string(),
                    position: if entry.is_default_action {
                        "as default action"
                    } else {
                        "in entries"
                    },
                    allowed: table
                        .action_refs
                        .iter()
                        .filter(|r| allowed(r))
                        .filter_map(|r| {
                            self.schema
                                .name_by_id(ObjectKind::Action, r.id)
                                .ok()
                                .map(str::to_string)
                        })
                        .collect(),
                });
            }
            if let Some(p4::table_action::Type::Action(act)) =
                entry.action.as_mut().and_then(|x| x.r#type.as_mut())
            {
                for p in &a.params {
                    if !act.params.iter().any(|x| x.param_id == p.id) {
                        return Err(SchemaError::Missing(format!(
                            "action {} parameter {} is missing",
                            name_of(&a.preamble),
                            p.name
                        )));
                    }
                }
                act.params.sort_by_key(|p| p.param_id);
            }
        }
        entry.r#match.sort_by_key(|m| m.field_id);
        Ok(entry)
    }
}

/// Value of one decoded match field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchValue {
    /// Exact value.
    Exact(Vec<u8>),
    /// Ternary value and mask.
    Ternary {
        /// Value.
        value: Vec<u8>,
        /// Mask.
        mask: Vec<u8>,
    },
    /// LPM value and prefix length.
    Lpm {
        /// Value.
        value: Vec<u8>,
        /// Prefix length.
        prefix_len: i32,
    },
    /// Inclusive range.
    Range {
        /// Low bound.
        low: Vec<u8>,
        /// High bound.
        high: Vec<u8>,
    },
    /// Optional (present) value.
    Optional(Vec<u8>),
}

/// A table entry translated back to names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedEntry {
    /// Fully qualified table name.
    pub table: String,
    /// Match fields present in the entry: (field name, bitwidth, value), in field-id order.
    pub matches: Vec<(String, u32, MatchValue)>,
    /// Direct action, if any.
    pub action: Option<DecodedAction>,
    /// Priority.
    pub priority: i32,
    /// Idle timeout.
    pub idle_timeout_ns: i64,
    /// Whether this is the default-action entry.
    pub is_default_action: bool,
}

/// A direct action translated back to names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedAction {
    /// Fully qualified action name.
    pub name: String,
    /// Parameters: (name, bitwidth, canonical value).
    pub params: Vec<(String, u32, Vec<u8>)>,
}

impl DecodedAction {
    /// A parameter as an integer.
    pub fn param_u128(&self, name: &str) -> Result<u128> {
        let (n, w, v) = self
            .params
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| SchemaError::UnknownParam {
                action: self.name.clone(),
                name: name.to_string(),
                candidates: self.params.iter().map(|p| p.0.clone()).collect(),
            })?;
        codec::decode_u128(v, *w).map_err(lazy_err(|| format!("{} param {n}", self.name)))
    }
}

impl DecodedEntry {
    fn field(&self, name: &str) -> Result<&(String, u32, MatchValue)> {
        self.matches
            .iter()
            .find(|(n, _, _)| n == name || n.ends_with(&format!(".{name}")))
            .ok_or_else(|| SchemaError::UnknownMatchField {
                table: self.table.clone(),
                name: name.to_string(),
                candidates: self.matches.iter().map(|m| m.0.clone()).collect(),
            })
    }

    /// The value of an exact (or optional) match field as an integer.
    pub fn exact_u128(&self, field: &str) -> Result<u128> {
        let (n, w, v) = self.field(field)?;
        match v {
            MatchValue::Exact(b) | MatchValue::Optional(b) => {
                codec::decode_u128(b, *w).map_err(lazy_err(|| format!("{} match {n}", self.table)))
            }
            other => Err(SchemaError::Rule(format!(
                "{} match {n} is {other:?}, not exact",
                self.table
            ))),
        }
    }

    /// The value of an exact match field as an IPv4 address.
    pub fn exact_ipv4(&self, field: &str) -> Result<Ipv4Addr> {
        let v = self.exact_u128(field)?;
        u32::try_from(v)
            .map(Ipv4Addr::from)
            .map_err(|_| SchemaError::Rule(format!("{field}: not a 32-bit value")))
    }
}

fn decode_value(ctx: impl Fn() -> String, v: &[u8], w: u32) -> Result<Vec<u8>> {
    codec::check(v, w).map_err(|source| SchemaError::Value {
        context: ctx(),
        source,
    })
}

impl Schema {
    /// Starts building an entry of table `name`.
    pub fn table_entry(&self, name: &str) -> TableEntryBuilder<'_> {
        let mut b = TableEntryBuilder {
            schema: self,
            table: None,
            entry: p4::TableEntry::default(),
            action: None,
            error: None,
        };
        match self.table(name) {
            Ok(t) => {
                b.entry.table_id = crate::schema::id_of(&t.preamble);
                b.table = Some(t);
            }
            Err(e) => b.error = Some(e),
        }
        b
    }

    /// Translates a table entry back to names, checking ids and value widths.
    pub fn decode_table_entry(&self, e: &p4::TableEntry) -> Result<DecodedEntry> {
        use p4::field_match::FieldMatchType as F;
        let t = self.table_by_id(e.table_id)?;
        let tname = name_of(&t.preamble).to_string();
        let mut matches = Vec::new();
        for m in &e.r#match {
            let f = t
                .match_fields
                .iter()
                .find(|f| f.id == m.field_id)
                .ok_or_else(|| {
                    SchemaError::Rule(format!(
                        "table {tname} has no match field id {}",
                        m.field_id
                    ))
                })?;
            let w = f.bitwidth as u32;
            let ctx = || format!("{tname} match {}", f.name);
            let v = match &m.field_match_type {
                Some(F::Exact(x)) => MatchValue::Exact(decode_value(ctx, &x.value, w)?),
                Some(F::Ternary(x)) => MatchValue::Ternary {
                    value: decode_value(ctx, &x.value, w)?,
                    mask: decode_value(ctx, &x.mask, w)?,
                },
                Some(F::Lpm(x)) => MatchValue::Lpm {
                    value: decode_value(ctx, &x.value, w)?,
                    prefix_len: x.prefix_len,
                },
                Some(F::Range(x)) => MatchValue::Range {
                    low: decode_value(ctx, &x.low, w)?,
                    high: decode_value(ctx, &x.high, w)?,
                },
                Some(F::Optional(x)) => MatchValue::Optional(decode_value(ctx, &x.value, w)?),
                Some(F::Other(_)) | None => {
                    return Err(SchemaError::Rule(format!(
                        "{tname} match {}: unsupported match type",
                        f.name
                    )));
                }
            };
            matches.push((f.name.clone(), w, v));
        }
        let action = match e.action.as_ref().and_then(|a| a.r#type.as_ref()) {
            Some(p4::table_action::Type::Action(a)) => Some(self.decode_action(a)?),
            Some(_) => {
                return Err(SchemaError::Rule(format!(
                    "{tname}: action profile actions are not decoded"
                )));
            }
            None => None,
        };
        Ok(DecodedEntry {
            table: tname,
            matches,
            action,
            priority: e.priority,
            idle_timeout_ns: e.idle_timeout_ns,
            is_default_action: e.is_default_action,
        })
    }

    /// Translates a direct action back to names.
    pub fn decode_action(&self, a: &p4::Action) -> Result<DecodedAction> {
        let ai = self.action_by_id(a.action_id)?;
        let aname = name_of(&ai.preamble).to_string();
        let mut params = Vec::new();
        for p in &a.params {
            let pi = ai
                .params
                .iter()
                .find(|x| x.id == p.param_id)
                .ok_or_else(|| {
                    SchemaError::Rule(format!("action {aname} has no param id {}", p.param_id))
                })?;
            let v = decode_value(
                || format!("{aname} param {}", pi.name),
                &p.value,
                pi.bitwidth as u32,
            )?;
            params.push((pi.name.clone(), pi.bitwidth as u32, v));
        }
        Ok(DecodedAction {
            name: aname,
            params,
        })
    }

    /// A `DigestEntry` enabling digest `name` with the given batching configuration.
    pub fn digest_entry(
        &self,
        name: &str,
        max_timeout_ns: i64,
        max_list_size: i32,
        ack_timeout_ns: i64,
    ) -> Result<p4::DigestEntry> {
        Ok(p4::DigestEntry {
            digest_id: self.digest_layout(name)?.id,
            config: Some(p4::digest_entry::Config {
                max_timeout_ns,
                max_list_size,
                ack_timeout_ns,
            }),
        })
    }

    /// A `CounterEntry` of indexed counter `name`; `index = None` reads every cell.
    pub fn counter_entry(&self, name: &str, index: Option<i64>) -> Result<p4::CounterEntry> {
        let c = self.counter(name)?;
        if let Some(i) = index
            && (i < 0 || i >= c.size)
        {
            return Err(SchemaError::Rule(format!(
                "counter {} index {i} out of range 0..{}",
                name_of(&c.preamble),
                c.size
            )));
        }
        Ok(p4::CounterEntry {
            counter_id: crate::schema::id_of(&c.preamble),
            index: index.map(|index| p4::Index { index }),
            data: None,
        })
    }

    /// A `RegisterEntry` of register `name`; `index = None` reads every cell.
    pub fn register_entry(&self, name: &str, index: Option<i64>) -> Result<p4::RegisterEntry> {
        let r = self.register(name)?;
        if let Some(i) = index
            && (i < 0 || i >= i64::from(r.size))
        {
            return Err(SchemaError::Rule(format!(
                "register {} index {i} out of range 0..{}",
                name_of(&r.preamble),
                r.size
            )));
        }
        Ok(p4::RegisterEntry {
            register_id: crate::schema::id_of(&r.preamble),
            index: index.map(|index| p4::Index { index }),
            data: None,
        })
    }

    /// A `DirectCounterEntry` for `entry` (which must belong to a table with a direct counter).
    /// Pass a match-less entry (`TableEntry { table_id, .. }`) to read all of the table's cells.
    pub fn direct_counter_entry(&self, entry: p4::TableEntry) -> Result<p4::DirectCounterEntry> {
        let t = self.table_by_id(entry.table_id)?;
        if self.direct_counter_of(t).is_none() {
            return Err(SchemaError::Rule(format!(
                "table {} has no direct counter",
                name_of(&t.preamble)
            )));
        }
        Ok(p4::DirectCounterEntry {
            table_entry: Some(entry),
            data: None,
        })
    }

    /// A match-less `TableEntry` of table `name`, i.e. a wildcard read of the whole table.
    pub fn table_wildcard(&self, name: &str) -> Result<p4::TableEntry> {
        Ok(p4::TableEntry {
            table_id: crate::schema::id_of(&self.table(name)?.preamble),
            ..Default::default()
        })
    }

    /// Decodes one digest message (`P4Data`) of digest `digest_id`.
    pub fn decode_digest_data(&self, digest_id: u32, data: &p4::P4Data) -> Result<DigestRecord> {
        let layout = self.digest_layout_by_id(digest_id)?;
        decode_with_layout(layout, data)
    }

    /// Decodes every message of a `DigestList`; returns the digest name and the records.
    pub fn decode_digest_list(&self, list: &p4::DigestList) -> Result<(String, Vec<DigestRecord>)> {
        let layout = self.digest_layout_by_id(list.digest_id)?;
        let recs = list
            .data
            .iter()
            .map(|d| decode_with_layout(layout, d))
            .collect::<Result<_>>()?;
        Ok((layout.name.clone(), recs))
    }

    /// Encodes one digest message of digest `name` from `(member, value)` pairs, every member
    /// exactly once (used by P4Runtime servers such as the embedded switch).
    pub fn encode_digest(&self, name: &str, values: &[(&str, u128)]) -> Result<p4::P4Data> {
        use p4::p4_data::Data;
        let layout = self.digest_layout(name)?;
        let mut members = Vec::with_capacity(layout.members.len());
        for (m, w) in &layout.members {
            let hits: Vec<_> = values.iter().filter(|(n, _)| n == m).collect();
            let v = match hits.as_slice() {
                [(_, v)] => *v,
                [] => {
                    return Err(SchemaError::Missing(format!(
                        "digest {} member {m} is missing",
                        layout.name
                    )));
                }
                _ => {
                    return Err(SchemaError::Duplicate {
                        what: "digest member",
                        name: m.clone(),
                    });
                }
            };
            let b = codec::encode_u128(v, *w)
                .map_err(lazy_err(|| format!("digest {} member {m}", layout.name)))?;
            members.push(p4::P4Data {
                data: Some(Data::Bitstring(b)),
            });
        }
        if let Some((n, _)) = values
            .iter()
            .find(|(n, _)| !layout.members.iter().any(|(m, _)| m == n))
        {
            return Err(SchemaError::UnknownMember {
                digest: layout.name.clone(),
                name: n.to_string(),
                candidates: layout.members.iter().map(|m| m.0.clone()).collect(),
            });
        }
        if layout.is_struct {
            Ok(p4::P4Data {
                data: Some(Data::Struct(p4::P4StructLike { members })),
            })
        } else {
            Ok(members.pop().expect("one member"))
        }
    }
}

fn decode_with_layout(layout: &DigestLayout, data: &p4::P4Data) -> Result<DigestRecord> {
    use p4::p4_data::Data;
    let shape = |m: &str| SchemaError::Rule(format!("digest {}: {m}", layout.name));
    let items: Vec<&p4::P4Data> = match (&data.data, layout.is_struct) {
        (Some(Data::Struct(s)), true) => s.members.iter().collect(),
        (Some(Data::Bitstring(_)), false) => vec![data],
        (other, _) => {
            return Err(shape(&format!(
                "expected {}, got {other:?}",
                if layout.is_struct {
                    "a struct"
                } else {
                    "a bitstring"
                }
            )));
        }
    };
    if items.len() != layout.members.len() {
        return Err(shape(&format!(
            "{} members, expected {}",
            items.len(),
            layout.members.len()
        )));
    }
    let mut values = Vec::with_capacity(items.len());
    for ((name, w), d) in layout.members.iter().zip(items) {
        let b = match &d.data {
            Some(Data::Bitstring(b)) => b,
            Some(Data::Bool(x)) => &vec![u8::from(*x)],
            other => return Err(shape(&format!("member {name} is {other:?}"))),
        };
        let v = codec::check(b, *w)
            .map_err(lazy_err(|| format!("digest {} member {name}", layout.name)))?;
        values.push((name.clone(), *w, v));
    }
    Ok(DigestRecord {
        digest: layout.name.clone(),
        values,
    })
}

/// One decoded digest message: member names with canonical values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestRecord {
    /// Digest name.
    pub digest: String,
    /// Members in order: (name, bitwidth, canonical value).
    pub values: Vec<(String, u32, Vec<u8>)>,
}

impl DigestRecord {
    fn member(&self, name: &str) -> Result<&(String, u32, Vec<u8>)> {
        self.values
            .iter()
            .find(|(n, _, _)| n == name)
            .ok_or_else(|| SchemaError::UnknownMember {
                digest: self.digest.clone(),
                name: name.to_string(),
                candidates: self.values.iter().map(|v| v.0.clone()).collect(),
            })
    }

    /// A member's canonical bytes.
    pub fn bytes(&self, name: &str) -> Result<&[u8]> {
        Ok(&self.member(name)?.2)
    }

    /// A member as an integer.
    pub fn u128(&self, name: &str) -> Result<u128> {
        let (_, w, v) = self.member(name)?;
        codec::decode_u128(v, *w).map_err(lazy_err(|| format!("digest member {name}")))
    }

    /// A `bit<32>` member as an IPv4 address.
    pub fn ipv4(&self, name: &str) -> Result<Ipv4Addr> {
        let (_, w, v) = self.member(name)?;
        codec::decode_ipv4(v, *w).map_err(lazy_err(|| format!("digest member {name}")))
    }

    /// A `bit<48>` member as a MAC address.
    pub fn mac(&self, name: &str) -> Result<MacAddr> {
        let (_, w, v) = self.member(name)?;
        codec::decode_mac(v, *w).map_err(lazy_err(|| format!("digest member {name}")))
    }
}

/// Wraps an entity message into a `p4.v1.Entity`.
pub trait IntoEntity {
    /// The wrapped entity.
    fn into_entity(self) -> p4::Entity;
}

macro_rules! into_entity {
    ($($t:ident => $v:ident),* $(,)?) => {$(
        impl IntoEntity for p4::$t {
            fn into_entity(self) -> p4::Entity {
                p4::Entity { entity: Some(p4::entity::Entity::$v(self)) }
            }
        }
    )*};
}
into_entity!(
    TableEntry => TableEntry,
    ActionProfileMember => ActionProfileMember,
    ActionProfileGroup => ActionProfileGroup,
    MeterEntry => MeterEntry,
    DirectMeterEntry => DirectMeterEntry,
    CounterEntry => CounterEntry,
    DirectCounterEntry => DirectCounterEntry,
    PacketReplicationEngineEntry => PacketReplicationEngineEntry,
    ValueSetEntry => ValueSetEntry,
    RegisterEntry => RegisterEntry,
    DigestEntry => DigestEntry,
    ExternEntry => ExternEntry,
);

impl IntoEntity for p4::Entity {
    fn into_entity(self) -> p4::Entity {
        self
    }
}

fn update(t: p4::update::Type, e: impl IntoEntity) -> p4::Update {
    p4::Update {
        r#type: t as i32,
        entity: Some(e.into_entity()),
    }
}

/// An INSERT update.
pub fn insert(e: impl IntoEntity) -> p4::Update {
    update(p4::update::Type::Insert, e)
}

/// A MODIFY update.
pub fn modify(e: impl IntoEntity) -> p4::Update {
    update(p4::update::Type::Modify, e)
}

/// A DELETE update.
pub fn delete(e: impl IntoEntity) -> p4::Update {
    update(p4::update::Type::Delete, e)
}

/// Wildcard read entities: every entry of every table.
pub fn all_tables() -> p4::Entity {
    p4::TableEntry::default().into_entity()
}

/// Wildcard read entities: every cell of every indexed counter.
pub fn all_counters() -> p4::Entity {
    p4::CounterEntry::default().into_entity()
}

/// Wildcard read entities: every member of every action profile.
pub fn all_action_profile_members() -> p4::Entity {
    p4::ActionProfileMember::default().into_entity()
}

/// Wildcard read entities: every group of every action profile.
pub fn all_action_profile_groups() -> p4::Entity {
    p4::ActionProfileGroup::default().into_entity()
}
