//! The five match-action tables of `IngressImpl`, with typed keys and actions.
//!
//! - exact tables (`crt`, `dpt`, `target`) are hash maps (foldhash);
//! - `dvipa` (exact, exact, ternary) is a hash map on the exact part whose buckets hold the ternary
//!   entries sorted by priority, highest first;
//! - `ipv4_route` (LPM) is one hash map per prefix length plus a bit set of the lengths in use,
//!   searched longest first.
//!
//! Entries carry their direct counter and (for `crt`) the time of their last hit as atomics, so the
//! data path only needs shared access to a table while it counts and stamps.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::sync::atomic::{AtomicU64, Ordering};

/// Hash builder of every table.
pub type Hasher = foldhash::fast::RandomState;
type Map<K, V> = HashMap<K, V, Hasher>;

/// Sizes from the contract.
pub const DVIPA_SIZE: usize = 1024;
/// Size of `crt`.
pub const CRT_SIZE: usize = 65536;
/// Size of `dpt` (1024 services × 256 slots).
pub const DPT_SIZE: usize = 262_144;
/// Size of `target`.
pub const TARGET_SIZE: usize = 4096;
/// Size of `ipv4_route`.
pub const ROUTE_SIZE: usize = 1024;

/// A table-level error of a control-plane operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// INSERT of a key that is present.
    #[error("{table}: entry already exists")]
    AlreadyExists {
        /// Table name.
        table: &'static str,
    },
    /// MODIFY/DELETE of a key that is absent.
    #[error("{table}: entry not found")]
    NotFound {
        /// Table name.
        table: &'static str,
    },
    /// INSERT into a full table.
    #[error("{table}: table full ({size} entries)")]
    Full {
        /// Table name.
        table: &'static str,
        /// Capacity.
        size: usize,
    },
    /// A malformed key.
    #[error("{table}: invalid key: {reason}")]
    InvalidKey {
        /// Table name.
        table: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// Packets-and-bytes counter cell.
#[derive(Debug, Default)]
pub struct Counter {
    /// Packets counted.
    pub packets: AtomicU64,
    /// Bytes counted.
    pub bytes: AtomicU64,
}

impl Counter {
    /// Counts one packet of `len` bytes.
    #[inline]
    pub fn count(&self, len: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(len as u64, Ordering::Relaxed);
    }
    /// (packets, bytes).
    pub fn get(&self) -> (u64, u64) {
        (
            self.packets.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
    /// Overwrites the cell (P4Runtime MODIFY of a counter entry).
    pub fn set(&self, packets: u64, bytes: u64) {
        self.packets.store(packets, Ordering::Relaxed);
        self.bytes.store(bytes, Ordering::Relaxed);
    }
}

/// Control-plane data stored with an entry and returned by reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryMeta {
    /// `TableEntry.controller_metadata`.
    pub controller_metadata: u64,
    /// `TableEntry.metadata`.
    pub metadata: Vec<u8>,
    /// `TableEntry.idle_timeout_ns` (0 = none).
    pub idle_timeout_ns: i64,
}

/// A table entry: action, control-plane data, direct counter and last-hit time.
#[derive(Debug)]
pub struct Entry<A> {
    /// The action with its parameters.
    pub action: A,
    /// Control-plane data (boxed: the data path never reads it, and a small entry keeps a CRT
    /// entry with its key within one cache line).
    pub meta: Box<EntryMeta>,
    /// Direct counter (used by `crt` and `target`).
    pub counter: Counter,
    /// Nanoseconds on the pipeline clock of the last hit (or of insertion / refresh).
    pub last_hit_ns: AtomicU64,
    /// `meta.idle_timeout_ns`, kept inline: the idle sweep reads it for every CRT entry while it
    /// holds the tables shared, and following `meta` there costs a cache miss per entry.
    pub idle_timeout_ns: i64,
}

impl<A> Entry<A> {
    /// A fresh entry stamped at `now_ns`.
    pub fn new(action: A, meta: EntryMeta, now_ns: u64) -> Self {
        Entry {
            action,
            idle_timeout_ns: meta.idle_timeout_ns,
            meta: Box::new(meta),
            counter: Counter::default(),
            last_hit_ns: AtomicU64::new(now_ns),
        }
    }
    #[inline]
    fn hit(&self, now_ns: u64, len: usize, count: bool) {
        if count {
            self.counter.count(len);
        }
        if self.last_hit_ns.load(Ordering::Relaxed) != now_ns {
            self.last_hit_ns.store(now_ns, Ordering::Relaxed);
        }
    }
}

/// Action of `IngressImpl.dvipa`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DvipaAction {
    /// `distribute(service_id, method)`.
    Distribute {
        /// Service index.
        service_id: u16,
        /// 0 = hash slot, 1 (anything else) = round robin.
        method: u8,
    },
    /// `NoAction`.
    NoAction,
}

/// Action of `crt` and `dpt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectAction {
    /// `to_target(target_id)`.
    ToTarget(u16),
    /// `NoAction`.
    NoAction,
}

/// Action of `IngressImpl.target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAction {
    /// `forward_l2(dmac, port)`.
    ForwardL2 {
        /// New destination MAC.
        dmac: [u8; 6],
        /// Egress port (9 bits).
        port: u16,
    },
    /// `encap_ipip(outer_src, outer_dst)`.
    EncapIpip {
        /// Outer source address.
        outer_src: u32,
        /// Outer destination address.
        outer_dst: u32,
    },
    /// `drop()`.
    Drop,
}

/// Action of `IngressImpl.ipv4_route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteAction {
    /// `set_nexthop(dmac, smac, port)`.
    SetNexthop {
        /// Next hop MAC.
        dmac: [u8; 6],
        /// Our MAC.
        smac: [u8; 6],
        /// Egress port.
        port: u16,
    },
    /// `drop()`.
    Drop,
}

/// Key of `dvipa`: exact dst, exact protocol, ternary dport, plus the entry priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DvipaKey {
    /// `hdr.ipv4.dstAddr`.
    pub dst: u32,
    /// `hdr.ipv4.protocol`.
    pub proto: u8,
    /// `meta.l4_dport` value (already masked).
    pub dport: u16,
    /// `meta.l4_dport` mask (0 = wildcard).
    pub dport_mask: u16,
    /// Entry priority (higher wins).
    pub priority: i32,
}

/// Key of `crt`: the 5-tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CrtKey {
    /// `hdr.ipv4.srcAddr`.
    pub src: u32,
    /// `hdr.ipv4.dstAddr`.
    pub dst: u32,
    /// `hdr.ipv4.protocol`.
    pub proto: u8,
    /// `meta.l4_sport`.
    pub sport: u16,
    /// `meta.l4_dport`.
    pub dport: u16,
}

/// Key of `dpt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DptKey {
    /// `meta.service_id`.
    pub service_id: u16,
    /// `meta.slot`.
    pub slot: u16,
}

/// Key of `ipv4_route`: prefix and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RouteKey {
    /// Prefix (host bits zero).
    pub prefix: u32,
    /// Prefix length 0..=32.
    pub len: u8,
}

/// Mask of a prefix length.
#[inline]
pub fn prefix_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

/// A generic exact-match table.
#[derive(Debug)]
pub struct ExactTable<K, A> {
    name: &'static str,
    size: usize,
    entries: Map<K, Entry<A>>,
    /// The default (miss) action.
    pub default_action: A,
    initial_default: A,
}

impl<K: std::hash::Hash + Eq + Copy, A: Copy> ExactTable<K, A> {
    /// An empty table of `size` entries that grows as entries come (room for up to 4,096 at
    /// first). For tables written a few entries at a time (`dpt`, `target`): a small table keeps
    /// the data path's lookups in cache.
    pub fn new(name: &'static str, size: usize, default_action: A) -> Self {
        Self::with_room(name, size, default_action, size.min(4096))
    }

    /// An empty table with room for all `size` entries (the P4Info size) allocated up front, for
    /// `crt`: growing a hash map rehashes every entry at once, under the exclusive lock the data
    /// path waits on (a CRT of 57k entries took milliseconds). Untouched pages of the allocation
    /// cost no memory.
    pub fn presized(name: &'static str, size: usize, default_action: A) -> Self {
        Self::with_room(name, size, default_action, size)
    }

    fn with_room(name: &'static str, size: usize, default_action: A, room: usize) -> Self {
        ExactTable {
            name,
            size,
            entries: Map::with_capacity_and_hasher(room, Hasher::default()),
            default_action,
            initial_default: default_action,
        }
    }
    /// Table name.
    pub fn name(&self) -> &'static str {
        self.name
    }
    /// Capacity.
    pub fn size(&self) -> usize {
        self.size
    }
    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Data-path lookup: on a hit, counts the direct counter (if `count`) and stamps the hit time.
    #[inline]
    pub fn lookup(&self, key: &K, now_ns: u64, len: usize, count: bool) -> Option<A> {
        self.entries.get(key).map(|e| {
            e.hit(now_ns, len, count);
            e.action
        })
    }
    /// The entry of `key`.
    pub fn get(&self, key: &K) -> Option<&Entry<A>> {
        self.entries.get(key)
    }
    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = (&K, &Entry<A>)> {
        self.entries.iter()
    }
    /// INSERT.
    pub fn insert(
        &mut self,
        key: K,
        action: A,
        meta: EntryMeta,
        now_ns: u64,
    ) -> Result<(), TableError> {
        let full = self.entries.len() >= self.size;
        match self.entries.entry(key) {
            MapEntry::Occupied(_) => Err(TableError::AlreadyExists { table: self.name }),
            MapEntry::Vacant(_) if full => Err(TableError::Full {
                table: self.name,
                size: self.size,
            }),
            MapEntry::Vacant(v) => {
                v.insert(Entry::new(action, meta, now_ns));
                Ok(())
            }
        }
    }
    /// MODIFY: replaces action and control data, keeps the counter; refreshes the hit time.
    pub fn modify(
        &mut self,
        key: &K,
        action: A,
        meta: EntryMeta,
        now_ns: u64,
    ) -> Result<(), TableError> {
        let e = self
            .entries
            .get_mut(key)
            .ok_or(TableError::NotFound { table: self.name })?;
        e.action = action;
        e.idle_timeout_ns = meta.idle_timeout_ns;
        *e.meta = meta;
        e.last_hit_ns.store(now_ns, Ordering::Relaxed);
        Ok(())
    }
    /// DELETE.
    pub fn delete(&mut self, key: &K) -> Result<Entry<A>, TableError> {
        self.entries
            .remove(key)
            .ok_or(TableError::NotFound { table: self.name })
    }
    /// Removes every entry and restores the initial default action.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.default_action = self.initial_default;
    }
    /// Restores the initial default action (P4Runtime MODIFY of the default entry with no action).
    pub fn reset_default(&mut self) {
        self.default_action = self.initial_default;
    }
}

/// Entries sharing (dst, proto), highest priority first.
type DvipaBucket = Vec<(DvipaKey, Entry<DvipaAction>)>;

/// `IngressImpl.dvipa`: exact on (dst, proto), ternary on dport, with priorities.
#[derive(Debug)]
pub struct DvipaTable {
    buckets: Map<(u32, u8), DvipaBucket>,
    len: usize,
    /// Default action.
    pub default_action: DvipaAction,
}

impl Default for DvipaTable {
    fn default() -> Self {
        DvipaTable {
            buckets: Map::default(),
            len: 0,
            default_action: DvipaAction::NoAction,
        }
    }
}

impl DvipaTable {
    /// Table name for errors.
    pub const NAME: &'static str = dvipa_contract::dvipa::NAME;

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Data-path lookup: the highest-priority entry whose ternary key matches.
    #[inline]
    pub fn lookup(&self, dst: u32, proto: u8, dport: u16) -> Option<DvipaAction> {
        let bucket = self.buckets.get(&(dst, proto))?;
        bucket
            .iter()
            .find(|(k, _)| dport & k.dport_mask == k.dport)
            .map(|(_, e)| e.action)
    }
    fn validate(key: &DvipaKey) -> Result<(), TableError> {
        if key.dport & !key.dport_mask != 0 {
            return Err(TableError::InvalidKey {
                table: Self::NAME,
                reason: format!(
                    "meta.l4_dport value {:#06x} has bits outside mask {:#06x}",
                    key.dport, key.dport_mask
                ),
            });
        }
        Ok(())
    }
    /// Looks up an entry by its full key (control plane).
    pub fn get(&self, key: &DvipaKey) -> Option<&Entry<DvipaAction>> {
        self.buckets
            .get(&(key.dst, key.proto))?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, e)| e)
    }
    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = (&DvipaKey, &Entry<DvipaAction>)> {
        self.buckets
            .values()
            .flat_map(|b| b.iter().map(|(k, e)| (k, e)))
    }
    /// INSERT.
    pub fn insert(
        &mut self,
        key: DvipaKey,
        action: DvipaAction,
        meta: EntryMeta,
    ) -> Result<(), TableError> {
        Self::validate(&key)?;
        if self.get(&key).is_some() {
            return Err(TableError::AlreadyExists { table: Self::NAME });
        }
        if self.len >= DVIPA_SIZE {
            return Err(TableError::Full {
                table: Self::NAME,
                size: DVIPA_SIZE,
            });
        }
        let bucket = self.buckets.entry((key.dst, key.proto)).or_default();
        // Highest priority first; among equal priorities, older entries first.
        let pos = bucket
            .iter()
            .position(|(k, _)| k.priority < key.priority)
            .unwrap_or(bucket.len());
        bucket.insert(pos, (key, Entry::new(action, meta, 0)));
        self.len += 1;
        Ok(())
    }
    /// MODIFY.
    pub fn modify(
        &mut self,
        key: &DvipaKey,
        action: DvipaAction,
        meta: EntryMeta,
    ) -> Result<(), TableError> {
        Self::validate(key)?;
        let e = self
            .buckets
            .get_mut(&(key.dst, key.proto))
            .and_then(|b| b.iter_mut().find(|(k, _)| k == key))
            .ok_or(TableError::NotFound { table: Self::NAME })?;
        e.1.action = action;
        e.1.idle_timeout_ns = meta.idle_timeout_ns;
        *e.1.meta = meta;
        Ok(())
    }
    /// DELETE.
    pub fn delete(&mut self, key: &DvipaKey) -> Result<(), TableError> {
        let b = self
            .buckets
            .get_mut(&(key.dst, key.proto))
            .ok_or(TableError::NotFound { table: Self::NAME })?;
        let pos = b
            .iter()
            .position(|(k, _)| k == key)
            .ok_or(TableError::NotFound { table: Self::NAME })?;
        b.remove(pos);
        if b.is_empty() {
            self.buckets.remove(&(key.dst, key.proto));
        }
        self.len -= 1;
        Ok(())
    }
    /// Removes all entries and restores `NoAction` as default.
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// `IngressImpl.ipv4_route`: longest prefix match.
#[derive(Debug)]
pub struct RouteTable {
    by_len: Vec<Map<u32, Entry<RouteAction>>>,
    /// Bit `l` set when some entry has prefix length `l`.
    lens: u64,
    len: usize,
    /// Default action.
    pub default_action: RouteAction,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable {
            by_len: (0..=32).map(|_| Map::default()).collect(),
            lens: 0,
            len: 0,
            default_action: RouteAction::Drop,
        }
    }
}

impl RouteTable {
    /// Table name for errors.
    pub const NAME: &'static str = dvipa_contract::route::NAME;

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.len
    }
    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Data-path lookup.
    #[inline]
    pub fn lookup(&self, addr: u32) -> Option<RouteAction> {
        let mut lens = self.lens;
        while lens != 0 {
            let l = 63 - lens.leading_zeros();
            lens &= !(1u64 << l);
            let l = l as u8;
            if let Some(e) = self.by_len[usize::from(l)].get(&(addr & prefix_mask(l))) {
                return Some(e.action);
            }
        }
        None
    }
    fn validate(key: &RouteKey) -> Result<(), TableError> {
        if key.len > 32 {
            return Err(TableError::InvalidKey {
                table: Self::NAME,
                reason: format!("prefix length {} exceeds 32", key.len),
            });
        }
        if key.prefix & !prefix_mask(key.len) != 0 {
            return Err(TableError::InvalidKey {
                table: Self::NAME,
                reason: format!(
                    "meta.route_dst {:#010x}/{} has host bits set",
                    key.prefix, key.len
                ),
            });
        }
        Ok(())
    }
    /// Entry of a key.
    pub fn get(&self, key: &RouteKey) -> Option<&Entry<RouteAction>> {
        self.by_len.get(usize::from(key.len))?.get(&key.prefix)
    }
    /// All entries.
    pub fn iter(&self) -> impl Iterator<Item = (RouteKey, &Entry<RouteAction>)> {
        self.by_len.iter().enumerate().flat_map(|(l, m)| {
            m.iter().map(move |(p, e)| {
                (
                    RouteKey {
                        prefix: *p,
                        len: l as u8,
                    },
                    e,
                )
            })
        })
    }
    /// INSERT.
    pub fn insert(
        &mut self,
        key: RouteKey,
        action: RouteAction,
        meta: EntryMeta,
    ) -> Result<(), TableError> {
        Self::validate(&key)?;
        if self.get(&key).is_some() {
            return Err(TableError::AlreadyExists { table: Self::NAME });
        }
        if self.len >= ROUTE_SIZE {
            return Err(TableError::Full {
                table: Self::NAME,
                size: ROUTE_SIZE,
            });
        }
        self.by_len[usize::from(key.len)].insert(key.prefix, Entry::new(action, meta, 0));
        self.lens |= 1 << key.len;
        self.len += 1;
        Ok(())
    }
    /// MODIFY.
    pub fn modify(
        &mut self,
        key: &RouteKey,
        action: RouteAction,
        meta: EntryMeta,
    ) -> Result<(), TableError> {
        Self::validate(key)?;
        let e = self.by_len[usize::from(key.len)]
            .get_mut(&key.prefix)
            .ok_or(TableError::NotFound { table: Self::NAME })?;
        e.action = action;
        e.idle_timeout_ns = meta.idle_timeout_ns;
        *e.meta = meta;
        Ok(())
    }
    /// DELETE.
    pub fn delete(&mut self, key: &RouteKey) -> Result<(), TableError> {
        Self::validate(key)?;
        let m = &mut self.by_len[usize::from(key.len)];
        m.remove(&key.prefix)
            .ok_or(TableError::NotFound { table: Self::NAME })?;
        if m.is_empty() {
            self.lens &= !(1 << key.len);
        }
        self.len -= 1;
        Ok(())
    }
    /// Removes everything and restores `drop` as default.
    pub fn clear(&mut self) {
        *self = Self::default();
    }
}

/// All five tables.
#[derive(Debug)]
pub struct Tables {
    /// `IngressImpl.dvipa`.
    pub dvipa: DvipaTable,
    /// `IngressImpl.crt`.
    pub crt: ExactTable<CrtKey, SelectAction>,
    /// `IngressImpl.dpt`.
    pub dpt: ExactTable<DptKey, SelectAction>,
    /// `IngressImpl.target`.
    pub target: ExactTable<u16, TargetAction>,
    /// `IngressImpl.ipv4_route`.
    pub route: RouteTable,
}

impl Default for Tables {
    fn default() -> Self {
        Tables {
            dvipa: DvipaTable::default(),
            crt: ExactTable::presized(dvipa_contract::crt::NAME, CRT_SIZE, SelectAction::NoAction),
            dpt: ExactTable::new(dvipa_contract::dpt::NAME, DPT_SIZE, SelectAction::NoAction),
            target: ExactTable::new(
                dvipa_contract::target::NAME,
                TARGET_SIZE,
                TargetAction::Drop,
            ),
            route: RouteTable::default(),
        }
    }
}

impl Tables {
    /// Empties every table and restores the default actions.
    pub fn clear(&mut self) {
        self.dvipa.clear();
        self.crt.clear();
        self.dpt.clear();
        self.target.clear();
        self.route.clear();
    }
}

#[cfg(test)]
mod tests;
