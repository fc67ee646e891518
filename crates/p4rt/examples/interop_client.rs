//! Interop driver: runs the scenario of `crates/p4rt/interop/interop.py` against its Python
//! P4Runtime server (official bindings) and prints what this client decoded, one fact per line
//! (`key value...`), for the Python side to compare field by field.
//!
//! Usage: `interop_client ADDR P4INFO_TXTPB REQUEST_LOG`, or
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
    anyhow::ensure!(
        args.len() == 4,
        "usage: interop_client ADDR P4INFO_TXTPB REQUEST_LOG"
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
    for (i, r) in session.write_detailed(batch2).await?.iter().enumerate() {
        match r {
            Ok(()) => println!("batch2 {i} ok"),
            Err(e) => println!(
                "batch2 {i} err code={:?} space={} app_code={} message={}",
                e.code, e.space, e.app_code, e.message
            ),
        }
    }
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
            cells.push(format!(
                "{}:{}:{}",
                c.index.map(|i| i.index).unwrap_or(-1),
                d.packet_count,
                d.byte_count
            ));
        }
    }
    println!("read_counters {}", cells.join(","));

    // stream: digest list, idle timeout, packet-in, stream error
    let d = tokio::time::timeout(Duration::from_secs(5), queues.digests.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("digest queue closed"))?;
    let (name, recs) = schema.decode_digest_list(&d.list)?;
    println!(
        "digest name={name} list_id={} n={}",
        d.list.list_id,
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
        println!("digest_rec {i} {}", vals.join(" "));
    }
    d.ack().await?;
    let n = tokio::time::timeout(Duration::from_secs(5), queues.idle_timeouts.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("idle queue closed"))?;
    for t in &n.table_entry {
        let e = schema.decode_table_entry(t)?;
        println!(
            "idle table={} src={} sport={} ts={}",
            e.table,
            e.exact_ipv4("hdr.ipv4.srcAddr")?,
            e.exact_u128("meta.l4_sport")?,
            n.timestamp
        );
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
    let e = tokio::time::timeout(Duration::from_secs(5), queues.errors.recv())
        .await?
        .ok_or_else(|| anyhow::anyhow!("error queue closed"))?;
    println!(
        "stream_error code={} message={} list_id={}",
        e.canonical_code,
        e.message,
        match &e.details {
            Some(p4::stream_error::Details::DigestListAck(a)) =>
                a.digest_list_ack.map(|x| x.list_id).unwrap_or(0),
            _ => 0,
        }
    );

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
