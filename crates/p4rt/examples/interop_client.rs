//! Interop driver: one P4Runtime scenario, printed as one fact per line (`key value...`) for a
//! Python checker to compare field by field. Two modes share the scenario:
//!
//! - against the recording server of `crates/p4rt/interop/interop.py` (official bindings), which
//!   injects the stream messages (digest, idle notification, packet-in, stream error) and drops
//!   the stream once to exercise reconnection;
//! - `--switch`: against a real `dvipa-switch` (`crates/p4rt/interop/switch_interop.py`). The
//!   stream messages then come from the switch: the client prints `syn_ready` when the driver
//!   should send SYNs into a switch port, and waits for the real digests (acking, then printing
//!   `acked` for the next SYN), idle notifications of its `crt` entries and the StreamError a
//!   PacketOut earns (the program has no CPU port). It also writes a batch with malformed and
//!   missing entries for per-update INVALID_ARGUMENT / NOT_FOUND; packet-in and reconnection are
//!   left to the recording mode.
//!
//! Usage: `interop_client [--switch] ADDR P4INFO_TXTPB REQUEST_LOG`, or
//! `interop_client --descriptors FILE` to write the compiled `FileDescriptorSet` of the
//! project's protos (compared with the official bindings' descriptors by the Python side).
use std::net::Ipv4Addr;
use std::time::Duration;

use p4rt::proto::p4::v1 as p4;
use p4rt::{
    ClientConfig, ClientError, IntoEntity, MacAddr, Mastership, Schema, Session, SessionEvent,
    delete, entity, insert, modify,
};

/// Election id with both halves set, to check the Uint128 split.
const ELECTION_ID: u128 = (1u128 << 64) | 5;
const COOKIE: u64 = 0xC0FFEE;
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(192, 168, 1, 10);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn crt(s: &Schema, sport: u16, target: u16) -> Result<p4::TableEntry, p4rt::SchemaError> {
    s.table_entry("crt")
        .exact("hdr.ipv4.srcAddr", CLIENT_IP)
        .exact("hdr.ipv4.dstAddr", VIP)
        .exact("hdr.ipv4.protocol", 6u8)
        .exact("meta.l4_sport", sport)
        .exact("meta.l4_dport", 80u16)
        .action("to_target")
        .param("target_id", target)
        .idle_timeout_ns(500_000_000)
        .build()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() == 3 && args[1] == "--descriptors" {
        std::fs::write(&args[2], p4rt::proto::FILE_DESCRIPTOR_SET)?;
        return Ok(());
    }
    let switch = args.get(1).is_some_and(|a| a == "--switch");
    let args = &args[usize::from(switch)..];
    anyhow::ensure!(
        args.len() == 4,
        "usage: interop_client [--switch] ADDR P4INFO_TXTPB REQUEST_LOG"
    );
    let schema = Schema::from_file(&args[2])?;
    let mut cfg = ClientConfig::new(args[1].clone(), 3);
    cfg.role = "dvipa".into();
    cfg.election_id = ELECTION_ID;
    cfg.request_log = Some(args[3].clone().into());
    cfg.backoff_initial = Duration::from_millis(50);
    let (session, mut queues) = Session::connect(cfg).await?;
    let mut events = session.events();
    println!("mastership {:?}", session.mastership());
    println!("capabilities {}", session.capabilities().await?);

    let p4info = schema.p4info().clone();
    let first = session
        .set_pipeline(p4info.clone(), b"dvipa-bmv2-json".to_vec(), COOKIE)
        .await?;
    println!("pipeline_first {first:?}");
    let second = session
        .set_pipeline(p4info, b"dvipa-bmv2-json".to_vec(), COOKIE)
        .await?;
    println!("pipeline_second {second:?}");

    // batch 1: digest config + 3 CRT + target + dvipa (ternary) + route (lpm)
    let batch1 = vec![
        insert(schema.digest_entry("learn_t", 1_000_000, 10, 1_000_000_000)?),
        insert(crt(&schema, 40000, 7)?),
        insert(crt(&schema, 40001, 8)?),
        insert(crt(&schema, 40002, 9)?),
        insert(
            schema
                .table_entry("target")
                .exact("meta.target_id", 7u16)
                .action("forward_l2")
                .param("dmac", "02:00:00:00:00:07".parse::<MacAddr>()?)
                .param("port", 1u16)
                .build()?,
        ),
        insert(
            schema
                .table_entry("dvipa")
                .exact("hdr.ipv4.dstAddr", VIP)
                .exact("hdr.ipv4.protocol", 6u8)
                .ternary("meta.l4_dport", 80u16, 0xffffu16)
                .priority(10)
                .action("distribute")
                .param("service_id", 3u16)
                .param("method", 0u8)
                .build()?,
        ),
        insert(
            schema
                .table_entry("ipv4_route")
                .lpm("meta.route_dst", Ipv4Addr::new(10, 1, 0, 0), 16)
                .action("set_nexthop")
                .param("dmac", MacAddr([2, 0, 0, 0, 1, 1]))
                .param("smac", MacAddr([2, 0, 0, 0, 1, 2]))
                .param("port", 2u16)
                .build()?,
        ),
    ];
    let n1 = batch1.len();
    session.write(batch1).await?;
    println!("batch1_ok {n1}");

    // batch 2: one new CRT entry, one duplicate (fails), one modify
    let batch2 = vec![
        insert(crt(&schema, 40003, 7)?),
        insert(crt(&schema, 40000, 7)?),
        modify(
            schema
                .table_entry("target")
                .exact("meta.target_id", 7u16)
                .action("forward_l2")
                .param("dmac", "02:00:00:00:00:17".parse::<MacAddr>()?)
                .param("port", 3u16)
                .build()?,
        ),
    ];
    print_updates("batch2", &session.write_detailed(batch2).await?);
    match session.write(vec![insert(crt(&schema, 40000, 7)?)]).await {
        Err(ClientError::Write { failed, total }) => {
            println!(
                "write_error total={total} index={} code={:?}",
                failed[0].index, failed[0].code
            )
        }
        other => println!("write_error unexpected {other:?}"),
    }

    // non-strict delete of a missing entry succeeds
    let r = session.write(vec![delete(crt(&schema, 50000, 1)?)]).await;
    println!("delete_missing {}", if r.is_ok() { "ok" } else { "err" });
    session.write(vec![delete(crt(&schema, 40002, 9)?)]).await?;
    println!("delete_existing ok");

    if switch {
        // batch 3: a good insert, a malformed key (8-bit protocol given 16 bits), a MODIFY of a
        // missing entry (the recording server does not validate, so only the switch runs this)
        let mut malformed = crt(&schema, 40005, 7)?;
        let proto_id = schema
            .match_field(schema.table("crt")?, "hdr.ipv4.protocol")?
            .id;
        for m in &mut malformed.r#match {
            if let (true, Some(p4::field_match::FieldMatchType::Exact(x))) =
                (m.field_id == proto_id, &mut m.field_match_type)
            {
                x.value = vec![0x12, 0x34];
            }
        }
        let batch3 = vec![
            insert(crt(&schema, 40004, 7)?),
            insert(malformed),
            modify(crt(&schema, 50001, 7)?),
        ];
        print_updates("batch3", &session.write_detailed(batch3).await?);
    }

    // stream: digest list (the switch's comes from a SYN the driver sends now) and its ack
    if switch {
        println!("syn_ready");
    }
    let d = tokio::time::timeout(Duration::from_secs(10), queues.digests.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("digest queue closed"))?;
    print_digest("digest", &schema, &d.list)?;
    if switch {
        // the SYN was sent twice: the duplicate is suppressed while the list is unacked
        let extra = tokio::time::timeout(Duration::from_millis(300), queues.digests.recv()).await;
        println!(
            "digest_before_ack {}",
            if extra.is_ok() { "another" } else { "none" }
        );
    }
    d.ack().await?;
    if switch {
        // once acked, the same connection is reported again
        println!("acked");
        let d = tokio::time::timeout(Duration::from_secs(10), queues.digests.recv())
            .await?
            .ok_or_else(|| anyhow::anyhow!("digest queue closed"))?;
        print_digest("digest_after_ack", &schema, &d.list)?;
        d.ack().await?;
    }

    // reads
    let crt_entries = session
        .read_all(vec![schema.table_wildcard("crt")?.into_entity()])
        .await?;
    let mut sports = Vec::new();
    for e in &crt_entries {
        if let Some(p4::entity::Entity::TableEntry(t)) = &e.entity {
            let d = schema.decode_table_entry(t)?;
            let tgt = d
                .action
                .as_ref()
                .map(|a| a.param_u128("target_id"))
                .transpose()?;
            sports.push(format!(
                "{}:{}",
                d.exact_u128("meta.l4_sport")?,
                tgt.unwrap_or(0)
            ));
        }
    }
    sports.sort();
    println!("read_crt {}", sports.join(","));
    let all = session.read_all(vec![entity::all_tables()]).await?;
    println!("read_all_tables {}", all.len());
    let counters = session
        .read_all(vec![
            schema.counter_entry("service_counter", None)?.into_entity(),
        ])
        .await?;
    let mut cells = Vec::new();
    for e in &counters {
        if let Some(p4::entity::Entity::CounterEntry(c)) = &e.entity {
            let d = c.data.unwrap_or_default();
            if d.packet_count == 0 && d.byte_count == 0 {
                continue;
            }
            cells.push(format!(
                "{}:{}:{}",
                c.index.map(|i| i.index).unwrap_or(-1),
                d.packet_count,
                d.byte_count
            ));
        }
    }
    println!("read_counters {}", cells.join(","));

    if switch {
        let target = schema.table_wildcard("target")?;
        let dc = session
            .read_all(vec![schema.direct_counter_entry(target)?.into_entity()])
            .await?;
        let mut cells = Vec::new();
        for e in &dc {
            if let Some(p4::entity::Entity::DirectCounterEntry(c)) = &e.entity {
                let t = schema
                    .decode_table_entry(c.table_entry.as_ref().unwrap_or(&Default::default()))?;
                let d = c.data.unwrap_or_default();
                cells.push(format!(
                    "{}:{}:{}",
                    t.exact_u128("meta.target_id")?,
                    d.packet_count,
                    d.byte_count
                ));
            }
        }
        cells.sort();
        println!("read_target_counter {}", cells.join(","));
        let de = session
            .read_all(vec![p4::DigestEntry::default().into_entity()])
            .await?;
        for e in &de {
            if let Some(p4::entity::Entity::DigestEntry(d)) = &e.entity {
                let c = d.config.unwrap_or_default();
                println!(
                    "read_digest_entry max_timeout_ns={} max_list_size={} ack_timeout_ns={}",
                    c.max_timeout_ns, c.max_list_size, c.ack_timeout_ns
                );
            }
        }
    }

    // stream: idle timeout, packet-in, stream error
    let n = tokio::time::timeout(Duration::from_secs(5), queues.idle_timeouts.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("idle queue closed"))?;
    let mut notes = vec![n];
    if switch {
        // the switch notifies each entry when its timeout passes (100 ms sweeps) and again about
        // once a second: gather a window of notifications, one line per entry
        while let Ok(Some(n)) =
            tokio::time::timeout(Duration::from_millis(400), queues.idle_timeouts.recv()).await
        {
            notes.push(n);
        }
    }
    let mut idle = std::collections::BTreeMap::new();
    for n in &notes {
        for t in &n.table_entry {
            let e = schema.decode_table_entry(t)?;
            let sport = e.exact_u128("meta.l4_sport")?;
            idle.entry(sport).or_insert(format!(
                "idle table={} src={} sport={sport} ts={}",
                e.table,
                e.exact_ipv4("hdr.ipv4.srcAddr")?,
                n.timestamp
            ));
        }
    }
    for line in idle.values() {
        println!("{line}");
    }
    if switch {
        // a PacketOut earns a StreamError carrying it (the program has no CPU port)
        session
            .packet_out(p4::PacketOut {
                payload: b"no-cpu-port".to_vec(),
                metadata: vec![],
            })
            .await?;
        print_stream_error(&mut queues).await?;
        println!("done");
        return Ok(());
    }
    let p = tokio::time::timeout(Duration::from_secs(5), queues.packets.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("packet queue closed"))?;
    println!(
        "packet_in payload={} meta={}",
        p4rt::codec::hex(&p.payload),
        p.metadata
            .iter()
            .map(|m| format!("{}:{}", m.metadata_id, p4rt::codec::hex(&m.value)))
            .collect::<Vec<_>>()
            .join(",")
    );
    print_stream_error(&mut queues).await?;

    // reconnect: ask the server to drop the stream, then expect re-arbitration
    session
        .packet_out(p4::PacketOut {
            payload: b"drop-stream".to_vec(),
            metadata: vec![p4::PacketMetadata {
                metadata_id: 1,
                value: vec![1],
            }],
        })
        .await?;
    let mut saw_close = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Ok(ev)) = tokio::time::timeout_at(deadline, events.recv()).await {
        match ev {
            SessionEvent::StreamClosed { .. } => saw_close = true,
            SessionEvent::Mastership(Mastership::Primary) if saw_close => break,
            _ => {}
        }
    }
    session.wait_primary(Duration::from_secs(5)).await?;
    println!(
        "reconnected closed={saw_close} reconnects={} mastership={:?}",
        session.reconnects(),
        session.mastership()
    );
    // let the ack and packet-out reach the server before the process exits
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("done");
    Ok(())
}

fn print_updates(key: &str, results: &[Result<(), p4rt::UpdateError>]) {
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(()) => println!("{key} {i} ok"),
            Err(e) => println!(
                "{key} {i} err code={:?} space={} app_code={} message={}",
                e.code, e.space, e.app_code, e.message
            ),
        }
    }
}

fn print_digest(key: &str, schema: &Schema, list: &p4::DigestList) -> anyhow::Result<()> {
    let (name, recs) = schema.decode_digest_list(list)?;
    println!(
        "{key} name={name} list_id={} n={}",
        list.list_id,
        recs.len()
    );
    for (i, r) in recs.iter().enumerate() {
        let vals: Vec<String> = r
            .values
            .iter()
            .map(|(n, w, _)| {
                format!(
                    "{n}={}",
                    r.u128(n)
                        .map(|v| v.to_string())
                        .unwrap_or(format!("bad/{w}"))
                )
            })
            .collect();
        println!("{key}_rec {i} {}", vals.join(" "));
    }
    Ok(())
}

async fn print_stream_error(queues: &mut p4rt::StreamQueues) -> anyhow::Result<()> {
    let e = tokio::time::timeout(Duration::from_secs(5), queues.errors.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("error queue closed"))?;
    let details = match &e.details {
        Some(p4::stream_error::Details::DigestListAck(a)) => format!(
            "digest_list_ack:{}",
            a.digest_list_ack.map(|x| x.list_id).unwrap_or(0)
        ),
        Some(p4::stream_error::Details::PacketOut(p)) => format!(
            "packet_out:{}",
            p.packet_out
                .as_ref()
                .map(|p| p4rt::codec::hex(&p.payload))
                .unwrap_or_default()
        ),
        Some(p4::stream_error::Details::Other(_)) => "other".into(),
        None => "none".into(),
    };
    println!(
        "stream_error code={} space={} message={} details={details}",
        e.canonical_code, e.space, e.message
    );
    Ok(())
}
