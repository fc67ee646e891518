//! Unit tests of the table structures (exact, ternary-bucketed, LPM).

use super::*;

#[test]
fn exact_table_errors() {
    let mut t: ExactTable<u16, TargetAction> = ExactTable::new("t", 2, TargetAction::Drop);
    let m = EntryMeta::default();
    t.insert(1, TargetAction::Drop, m.clone(), 0).unwrap();
    assert_eq!(
        t.insert(1, TargetAction::Drop, m.clone(), 0),
        Err(TableError::AlreadyExists { table: "t" })
    );
    t.insert(2, TargetAction::Drop, m.clone(), 0).unwrap();
    assert_eq!(
        t.insert(3, TargetAction::Drop, m.clone(), 0),
        Err(TableError::Full {
            table: "t",
            size: 2
        })
    );
    assert!(matches!(t.delete(&3), Err(TableError::NotFound { .. })));
    assert!(matches!(
        t.modify(&3, TargetAction::Drop, m, 0),
        Err(TableError::NotFound { .. })
    ));
}

#[test]
fn ternary_priority_order_and_validation() {
    let mut t = DvipaTable::default();
    let k = |dport, dport_mask, priority| DvipaKey {
        dst: 1,
        proto: 6,
        dport,
        dport_mask,
        priority,
    };
    let d = |s| DvipaAction::Distribute {
        service_id: s,
        method: 0,
    };
    t.insert(k(0, 0, 1), d(1), EntryMeta::default()).unwrap();
    t.insert(k(80, 0xffff, 10), d(2), EntryMeta::default())
        .unwrap();
    assert_eq!(t.lookup(1, 6, 80), Some(d(2)));
    assert_eq!(t.lookup(1, 6, 81), Some(d(1)));
    assert_eq!(t.lookup(1, 17, 80), None);
    assert!(matches!(
        t.insert(k(0x100, 0xff, 3), d(3), EntryMeta::default()),
        Err(TableError::InvalidKey { .. })
    ));
    t.delete(&k(80, 0xffff, 10)).unwrap();
    assert_eq!(t.lookup(1, 6, 80), Some(d(1)));
    assert_eq!(t.len(), 1);
}

#[test]
fn lpm_longest_wins() {
    let mut t = RouteTable::default();
    let a = |p| RouteAction::SetNexthop {
        dmac: [0; 6],
        smac: [0; 6],
        port: p,
    };
    t.insert(RouteKey { prefix: 0, len: 0 }, a(1), EntryMeta::default())
        .unwrap();
    t.insert(
        RouteKey {
            prefix: 0x0a00_0000,
            len: 8,
        },
        a(2),
        EntryMeta::default(),
    )
    .unwrap();
    t.insert(
        RouteKey {
            prefix: 0x0a01_0200,
            len: 24,
        },
        a(3),
        EntryMeta::default(),
    )
    .unwrap();
    assert_eq!(t.lookup(0x0a01_0203), Some(a(3)));
    assert_eq!(t.lookup(0x0a02_0203), Some(a(2)));
    assert_eq!(t.lookup(0x0b00_0001), Some(a(1)));
    assert!(matches!(
        t.insert(
            RouteKey {
                prefix: 0x0a01_0201,
                len: 24
            },
            a(4),
            EntryMeta::default()
        ),
        Err(TableError::InvalidKey { .. })
    ));
}
