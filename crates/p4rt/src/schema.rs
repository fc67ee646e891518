//! P4Info loading and name resolution.
//!
//! A [`Schema`] wraps a `P4Info` and resolves objects by fully qualified name
//! (`IngressImpl.crt`), by alias, or by unique dot-separated suffix (`crt`). Unknown and ambiguous
//! names are errors that list the candidates. Pure data: no I/O except the file loaders.
use std::collections::HashMap;
use std::path::Path;

use p4rt_proto::p4::config::v1 as cfg;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

use crate::error::{ObjectKind, Result, SchemaError};

/// Name index for one kind of object: entries are (fully qualified name, alias).
#[derive(Debug, Default, Clone)]
struct Names {
    names: Vec<(String, String)>,
    by_id: HashMap<u32, usize>,
}

impl Names {
    fn new<'a>(it: impl Iterator<Item = &'a cfg::Preamble>) -> Self {
        let mut n = Names::default();
        for (i, p) in it.enumerate() {
            n.names.push((p.name.clone(), p.alias.clone()));
            n.by_id.insert(p.id, i);
        }
        n
    }

    fn all(&self) -> Vec<String> {
        self.names.iter().map(|(n, _)| n.clone()).collect()
    }
}

/// Resolves `name` among `(fully qualified name, alias)` pairs: exact name first, then alias or
/// unique `.`-separated suffix.
fn resolve_in<'a, I>(kind: ObjectKind, name: &str, items: I) -> Result<usize>
where
    I: Iterator<Item = (&'a str, &'a str)> + Clone,
{
    if let Some(i) = items.clone().position(|(n, _)| n == name) {
        return Ok(i);
    }
    let suffix = format!(".{name}");
    let hits: Vec<(usize, &str)> = items
        .clone()
        .enumerate()
        .filter(|(_, (n, a))| (!a.is_empty() && *a == name) || n.ends_with(&suffix))
        .map(|(i, (n, _))| (i, n))
        .collect();
    match hits.as_slice() {
        [(i, _)] => Ok(*i),
        [] => Err(SchemaError::Unknown {
            kind,
            name: name.to_string(),
            candidates: items.map(|(n, _)| n.to_string()).collect(),
        }),
        many => Err(SchemaError::Ambiguous {
            kind,
            name: name.to_string(),
            matches: many.iter().map(|(_, n)| n.to_string()).collect(),
        }),
    }
}

/// Bit layout of a digest: its id, name and struct members `(name, bitwidth)` in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestLayout {
    /// Digest id.
    pub id: u32,
    /// Fully qualified digest name.
    pub name: String,
    /// Members in declaration order. A digest of a plain `bit<W>` has one member named `""`.
    pub members: Vec<(String, u32)>,
    /// True when the digest type is a struct (data arrives as `P4Data.struct`).
    pub is_struct: bool,
}

/// A loaded P4Info with name and id indexes.
#[derive(Debug, Clone)]
pub struct Schema {
    info: cfg::P4Info,
    tables: Names,
    actions: Names,
    action_profiles: Names,
    counters: Names,
    direct_counters: Names,
    meters: Names,
    direct_meters: Names,
    registers: Names,
    digests: Names,
    packet_metadata: Names,
    value_sets: Names,
    digest_layouts: Vec<DigestLayout>,
}

fn pre(p: &Option<cfg::Preamble>) -> &cfg::Preamble {
    static EMPTY: cfg::Preamble = cfg::Preamble {
        id: 0,
        name: String::new(),
        alias: String::new(),
        annotations: Vec::new(),
        annotation_locations: Vec::new(),
        doc: None,
        structured_annotations: Vec::new(),
    };
    p.as_ref().unwrap_or(&EMPTY)
}

/// The preamble name of any P4Info object with a preamble (empty if missing).
pub fn name_of(p: &Option<cfg::Preamble>) -> &str {
    &pre(p).name
}

/// The preamble id of any P4Info object with a preamble (0 if missing).
pub fn id_of(p: &Option<cfg::Preamble>) -> u32 {
    pre(p).id
}

/// Human name of a match field's kind (`exact`, `lpm`, ...).
pub fn match_kind_name(f: &cfg::MatchField) -> String {
    use cfg::match_field::{Match, MatchType};
    match &f.r#match {
        Some(Match::MatchType(t)) => match MatchType::try_from(*t) {
            Ok(MatchType::Exact) => "exact".into(),
            Ok(MatchType::Lpm) => "lpm".into(),
            Ok(MatchType::Ternary) => "ternary".into(),
            Ok(MatchType::Range) => "range".into(),
            Ok(MatchType::Optional) => "optional".into(),
            _ => format!("match type {t}"),
        },
        Some(Match::OtherMatchType(o)) => o.clone(),
        None => "unspecified".into(),
    }
}

/// The match type of a field, if it is one of the standard ones.
pub fn match_type(f: &cfg::MatchField) -> Option<cfg::match_field::MatchType> {
    match &f.r#match {
        Some(cfg::match_field::Match::MatchType(t)) => {
            cfg::match_field::MatchType::try_from(*t).ok()
        }
        _ => None,
    }
}

/// Largest P4Info file [`Schema::from_file`] reads (16 MiB; dvipa's is about 10 KiB, large
/// production programs a few MiB).
pub const P4INFO_CAP: u64 = 16 << 20;

impl Schema {
    /// Parses a P4Info in protobuf text format (what p4c writes to `*.p4info.txtpb`).
    pub fn from_text(text: &str) -> Result<Self> {
        let pool = DescriptorPool::decode(p4rt_proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| SchemaError::Text(format!("embedded descriptors: {e}")))?;
        let desc = pool
            .get_message_by_name("p4.config.v1.P4Info")
            .ok_or_else(|| SchemaError::Text("descriptor p4.config.v1.P4Info missing".into()))?;
        let dynm = DynamicMessage::parse_text_format(desc, text)
            .map_err(|e| SchemaError::Text(e.to_string()))?;
        let info = cfg::P4Info::decode(dynm.encode_to_vec().as_slice())?;
        Self::from_p4info(info)
    }

    /// Decodes a binary-encoded P4Info.
    pub fn from_binary(bytes: &[u8]) -> Result<Self> {
        Self::from_p4info(cfg::P4Info::decode(bytes)?)
    }

    /// Loads a P4Info file: binary when the name ends in `.bin` or `.pb`, text otherwise.
    /// Only a regular file of at most [`P4INFO_CAP`] bytes is read (a device, FIFO or
    /// directory is refused before reading).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes =
            dvipa_file::read_capped(path, P4INFO_CAP).map_err(|source| SchemaError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let name = path.to_string_lossy();
        if name.ends_with(".bin") || name.ends_with(".pb") {
            return Self::from_binary(&bytes);
        }
        let text = String::from_utf8(bytes).map_err(|e| {
            let off = e.utf8_error().valid_up_to();
            SchemaError::Text(format!(
                "{}: not UTF-8 (invalid byte 0x{:02x} at byte offset {off}): not a P4Info in \
                 text format (a binary P4Info needs a name ending in .pb or .bin)",
                path.display(),
                e.as_bytes()[off]
            ))
        })?;
        Self::from_text(&text)
    }

    /// Builds the indexes over an already decoded P4Info.
    pub fn from_p4info(info: cfg::P4Info) -> Result<Self> {
        let mut s = Schema {
            tables: Names::new(info.tables.iter().map(|t| pre(&t.preamble))),
            actions: Names::new(info.actions.iter().map(|t| pre(&t.preamble))),
            action_profiles: Names::new(info.action_profiles.iter().map(|t| pre(&t.preamble))),
            counters: Names::new(info.counters.iter().map(|t| pre(&t.preamble))),
            direct_counters: Names::new(info.direct_counters.iter().map(|t| pre(&t.preamble))),
            meters: Names::new(info.meters.iter().map(|t| pre(&t.preamble))),
            direct_meters: Names::new(info.direct_meters.iter().map(|t| pre(&t.preamble))),
            registers: Names::new(info.registers.iter().map(|t| pre(&t.preamble))),
            digests: Names::new(info.digests.iter().map(|t| pre(&t.preamble))),
            packet_metadata: Names::new(
                info.controller_packet_metadata
                    .iter()
                    .map(|t| pre(&t.preamble)),
            ),
            value_sets: Names::new(info.value_sets.iter().map(|t| pre(&t.preamble))),
            digest_layouts: Vec::new(),
            info,
        };
        s.validate()?;
        s.digest_layouts = s
            .info
            .digests
            .iter()
            .map(|d| s.layout_of(d))
            .collect::<Result<_>>()?;
        Ok(s)
    }

    fn validate(&self) -> Result<()> {
        let mut seen: HashMap<u32, String> = HashMap::new();
        let all = [
            &self.tables,
            &self.actions,
            &self.action_profiles,
            &self.counters,
            &self.direct_counters,
            &self.meters,
            &self.direct_meters,
            &self.registers,
            &self.digests,
            &self.packet_metadata,
            &self.value_sets,
        ];
        for names in all {
            for (id, &i) in &names.by_id {
                let n = &names.names[i].0;
                if *id == 0 {
                    return Err(SchemaError::Invalid(format!("object {n:?} has id 0")));
                }
                if let Some(prev) = seen.insert(*id, n.clone()) {
                    return Err(SchemaError::Invalid(format!(
                        "id {id} used by both {prev:?} and {n:?}"
                    )));
                }
            }
            if names.by_id.len() != names.names.len() {
                return Err(SchemaError::Invalid(
                    "two objects of one kind share an id".into(),
                ));
            }
        }
        for t in &self.info.tables {
            for a in &t.action_refs {
                if !self.actions.by_id.contains_key(&a.id) {
                    return Err(SchemaError::Invalid(format!(
                        "table {} refers to unknown action id {}",
                        name_of(&t.preamble),
                        a.id
                    )));
                }
            }
        }
        Ok(())
    }

    fn layout_of(&self, d: &cfg::Digest) -> Result<DigestLayout> {
        use p4rt_proto::p4::config::v1::p4_data_type_spec::TypeSpec;
        let name = name_of(&d.preamble).to_string();
        let bad = |m: String| SchemaError::Invalid(format!("digest {name}: {m}"));
        let spec = d
            .type_spec
            .as_ref()
            .and_then(|t| t.type_spec.as_ref())
            .ok_or_else(|| bad("no type_spec".into()))?;
        let (members, is_struct) = match spec {
            TypeSpec::Struct(named) => {
                let st = self
                    .info
                    .type_info
                    .as_ref()
                    .and_then(|ti| ti.structs.get(&named.name))
                    .ok_or_else(|| bad(format!("struct {} missing from type_info", named.name)))?;
                let mut m = Vec::new();
                for mem in &st.members {
                    let w = mem
                        .type_spec
                        .as_ref()
                        .and_then(bitwidth_of)
                        .ok_or_else(|| bad(format!("member {} is not a bit<W>/bool", mem.name)))?;
                    m.push((mem.name.clone(), w));
                }
                (m, true)
            }
            other => {
                let w = bitwidth_of(&cfg::P4DataTypeSpec {
                    type_spec: Some(other.clone()),
                })
                .ok_or_else(|| bad("type is neither a struct nor a bit<W>".into()))?;
                (vec![(String::new(), w)], false)
            }
        };
        Ok(DigestLayout {
            id: id_of(&d.preamble),
            name,
            members,
            is_struct,
        })
    }

    /// The underlying P4Info.
    pub fn p4info(&self) -> &cfg::P4Info {
        &self.info
    }

    fn names(&self, kind: ObjectKind) -> &Names {
        match kind {
            ObjectKind::Table => &self.tables,
            ObjectKind::Action => &self.actions,
            ObjectKind::ActionProfile => &self.action_profiles,
            ObjectKind::Counter => &self.counters,
            ObjectKind::DirectCounter => &self.direct_counters,
            ObjectKind::Meter => &self.meters,
            ObjectKind::DirectMeter => &self.direct_meters,
            ObjectKind::Register => &self.registers,
            ObjectKind::Digest => &self.digests,
            ObjectKind::ControllerPacketMetadata => &self.packet_metadata,
            ObjectKind::ValueSet => &self.value_sets,
        }
    }

    /// Resolves a name of the given kind to its index in the P4Info list: exact name, alias or
    /// unique suffix (so `IngressImpl.crt` finds TNA's `pipe.IngressImpl.crt`); a digest also by
    /// the name of its struct type when no digest has that name (the Tofino compiler names a
    /// digest after its `Digest<learn_t>` instance, p4c's v1model after the struct `learn_t`).
    /// The one place where P4Info names are resolved (docs/tofino.md).
    fn index(&self, kind: ObjectKind, name: &str) -> Result<usize> {
        let n = self.names(kind);
        let found = resolve_in(
            kind,
            name,
            n.names.iter().map(|(a, b)| (a.as_str(), b.as_str())),
        );
        match found {
            Err(SchemaError::Unknown { .. }) if kind == ObjectKind::Digest => {
                let by_type: Vec<usize> = (self.info.digests.iter().enumerate())
                    .filter(|(_, d)| digest_struct_name(d) == Some(name))
                    .map(|(i, _)| i)
                    .collect();
                match by_type.as_slice() {
                    [i] => Ok(*i),
                    _ => found,
                }
            }
            other => other,
        }
    }

    fn index_by_id(&self, kind: ObjectKind, id: u32) -> Result<usize> {
        self.names(kind)
            .by_id
            .get(&id)
            .copied()
            .ok_or(SchemaError::UnknownId { kind, id })
    }

    /// Resolves any object to its id by kind and name.
    pub fn id(&self, kind: ObjectKind, name: &str) -> Result<u32> {
        let i = self.index(kind, name)?;
        let n = &self.names(kind).names[i].0;
        Ok(self
            .names(kind)
            .by_id
            .iter()
            .find(|(_, v)| **v == i)
            .map(|(k, _)| *k)
            .unwrap_or_else(|| unreachable!("index of {n} has an id")))
    }

    /// Fully qualified names of all objects of a kind, in P4Info order.
    pub fn names_of(&self, kind: ObjectKind) -> Vec<String> {
        self.names(kind).all()
    }

    /// Fully qualified name of an object by kind and id.
    pub fn name_by_id(&self, kind: ObjectKind, id: u32) -> Result<&str> {
        let i = self.index_by_id(kind, id)?;
        Ok(&self.names(kind).names[i].0)
    }

    /// A table by name.
    pub fn table(&self, name: &str) -> Result<&cfg::Table> {
        Ok(&self.info.tables[self.index(ObjectKind::Table, name)?])
    }
    /// A table by id.
    pub fn table_by_id(&self, id: u32) -> Result<&cfg::Table> {
        Ok(&self.info.tables[self.index_by_id(ObjectKind::Table, id)?])
    }
    /// An action by name.
    pub fn action(&self, name: &str) -> Result<&cfg::Action> {
        Ok(&self.info.actions[self.index(ObjectKind::Action, name)?])
    }
    /// An action by id.
    pub fn action_by_id(&self, id: u32) -> Result<&cfg::Action> {
        Ok(&self.info.actions[self.index_by_id(ObjectKind::Action, id)?])
    }
    /// An action profile by name.
    pub fn action_profile(&self, name: &str) -> Result<&cfg::ActionProfile> {
        Ok(&self.info.action_profiles[self.index(ObjectKind::ActionProfile, name)?])
    }
    /// An indexed counter by name.
    pub fn counter(&self, name: &str) -> Result<&cfg::Counter> {
        Ok(&self.info.counters[self.index(ObjectKind::Counter, name)?])
    }
    /// A direct counter by name.
    pub fn direct_counter(&self, name: &str) -> Result<&cfg::DirectCounter> {
        Ok(&self.info.direct_counters[self.index(ObjectKind::DirectCounter, name)?])
    }
    /// An indexed meter by name.
    pub fn meter(&self, name: &str) -> Result<&cfg::Meter> {
        Ok(&self.info.meters[self.index(ObjectKind::Meter, name)?])
    }
    /// A register by name.
    pub fn register(&self, name: &str) -> Result<&cfg::Register> {
        Ok(&self.info.registers[self.index(ObjectKind::Register, name)?])
    }
    /// A digest by name.
    pub fn digest(&self, name: &str) -> Result<&cfg::Digest> {
        Ok(&self.info.digests[self.index(ObjectKind::Digest, name)?])
    }
    /// A controller packet metadata header (`packet_in` / `packet_out`) by name.
    pub fn packet_metadata(&self, name: &str) -> Result<&cfg::ControllerPacketMetadata> {
        Ok(&self.info.controller_packet_metadata
            [self.index(ObjectKind::ControllerPacketMetadata, name)?])
    }

    /// The direct counter attached to a table, if any.
    pub fn direct_counter_of(&self, table: &cfg::Table) -> Option<&cfg::DirectCounter> {
        table.direct_resource_ids.iter().find_map(|id| {
            self.index_by_id(ObjectKind::DirectCounter, *id)
                .ok()
                .map(|i| &self.info.direct_counters[i])
        })
    }

    /// A match field of a table, by exact name or unique suffix (`srcAddr` → `hdr.ipv4.srcAddr`).
    pub fn match_field<'a>(
        &self,
        table: &'a cfg::Table,
        name: &str,
    ) -> Result<&'a cfg::MatchField> {
        let i = resolve_in(
            ObjectKind::Table,
            name,
            table.match_fields.iter().map(|f| (f.name.as_str(), "")),
        )
        .map_err(|e| match e {
            SchemaError::Ambiguous { matches, .. } => SchemaError::Ambiguous {
                kind: ObjectKind::Table,
                name: format!("{}: match field {name}", name_of(&table.preamble)),
                matches,
            },
            _ => SchemaError::UnknownMatchField {
                table: name_of(&table.preamble).to_string(),
                name: name.to_string(),
                candidates: table.match_fields.iter().map(|f| f.name.clone()).collect(),
            },
        })?;
        Ok(&table.match_fields[i])
    }

    /// A parameter of an action by exact name.
    pub fn action_param<'a>(
        &self,
        action: &'a cfg::Action,
        name: &str,
    ) -> Result<&'a cfg::action::Param> {
        action
            .params
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| SchemaError::UnknownParam {
                action: name_of(&action.preamble).to_string(),
                name: name.to_string(),
                candidates: action.params.iter().map(|p| p.name.clone()).collect(),
            })
    }

    /// The bit layout of a digest by name.
    pub fn digest_layout(&self, name: &str) -> Result<&DigestLayout> {
        Ok(&self.digest_layouts[self.index(ObjectKind::Digest, name)?])
    }

    /// The bit layout of a digest by id.
    pub fn digest_layout_by_id(&self, id: u32) -> Result<&DigestLayout> {
        Ok(&self.digest_layouts[self.index_by_id(ObjectKind::Digest, id)?])
    }
}

/// The struct type name of a digest (`learn_t`), if its type is a named struct.
fn digest_struct_name(d: &cfg::Digest) -> Option<&str> {
    use cfg::p4_data_type_spec::TypeSpec;
    match d.type_spec.as_ref()?.type_spec.as_ref()? {
        TypeSpec::Struct(s) => Some(s.name.as_str()),
        _ => None,
    }
}

/// Bit width of a bitstring-like (or bool) type spec; `None` for structured types.
fn bitwidth_of(t: &cfg::P4DataTypeSpec) -> Option<u32> {
    use cfg::p4_bitstring_like_type_spec::TypeSpec as B;
    use cfg::p4_data_type_spec::TypeSpec;
    match t.type_spec.as_ref()? {
        TypeSpec::Bitstring(b) => match b.type_spec.as_ref()? {
            B::Bit(x) => Some(x.bitwidth as u32),
            B::Int(x) => Some(x.bitwidth as u32),
            B::Varbit(x) => Some(x.max_bitwidth as u32),
        },
        TypeSpec::Bool(_) => Some(1),
        _ => None,
    }
}
