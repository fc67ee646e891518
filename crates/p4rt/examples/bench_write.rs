//! Write throughput benchmark (not a test): inserts then deletes distinct `crt` entries with
//! batch sizes 1, 100 and 1000 and prints entries/s for each.
//!
//! Usage: `bench_write ADDR P4INFO_TXTPB [ENTRIES] [DEVICE_ID]` (ENTRIES defaults to 10000;
//! batch size 1 uses at most 2000 entries to keep the run short).
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use p4rt::proto::p4::v1 as p4;
use p4rt::{ClientConfig, Schema, Session, delete, insert};

fn entries(s: &Schema, n: usize, round: u8) -> anyhow::Result<Vec<p4::TableEntry>> {
    (0..n)
        .map(|i| {
            Ok(s.table_entry("crt")
                .exact(
                    "hdr.ipv4.srcAddr",
                    Ipv4Addr::new(172, 16 + round, (i >> 8) as u8, i as u8),
                )
                .exact("hdr.ipv4.dstAddr", Ipv4Addr::new(10, 0, 0, 1))
                .exact("hdr.ipv4.protocol", 6u8)
                .exact("meta.l4_sport", 1024 + (i % 60000) as u16)
                .exact("meta.l4_dport", 80u16)
                .action("to_target")
                .param("target_id", (i % 16) as u16)
                .build()?)
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        (3..=5).contains(&args.len()),
        "usage: bench_write ADDR P4INFO_TXTPB [ENTRIES] [DEVICE_ID]"
    );
    let schema = Schema::from_file(&args[2])?;
    let total: usize = args
        .get(3)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(10_000);
    anyhow::ensure!(total <= 65_536, "at most 65536 entries (crt size)");
    let device_id: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let mut cfg = ClientConfig::new(args[1].clone(), device_id);
    cfg.rpc_timeout = Duration::from_secs(120);
    let (session, _queues) = Session::connect(cfg).await?;
    session.wait_primary(Duration::from_secs(5)).await?;
    session
        .set_pipeline(schema.p4info().clone(), b"{}".to_vec(), 0xBE7C4)
        .await?;
    println!("target {} ({})", args[1], session.capabilities().await?);
    for (round, batch) in [1usize, 100, 1000].into_iter().enumerate() {
        let n = if batch == 1 { total.min(2000) } else { total };
        let es = entries(&schema, n, round as u8)?;
        let ins: Vec<p4::Update> = es.iter().cloned().map(insert).collect();
        let t = Instant::now();
        session.write_batched(ins, batch).await?;
        let ins_dt = t.elapsed();
        let del: Vec<p4::Update> = es.into_iter().map(delete).collect();
        let t = Instant::now();
        session.write_batched(del, batch).await?;
        let del_dt = t.elapsed();
        println!(
            "batch {batch:>5}: {n:>6} inserts in {:>8.3} s = {:>9.0} entries/s; deletes {:>9.0} entries/s",
            ins_dt.as_secs_f64(),
            n as f64 / ins_dt.as_secs_f64(),
            n as f64 / del_dt.as_secs_f64()
        );
    }
    Ok(())
}
