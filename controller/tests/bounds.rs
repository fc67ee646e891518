//! Peers that control a size the controller must hold: an agent that never reads its stream.

use dvipa::advertise::RecordingAdvertiser;
use dvipa::cli::{self, Common, OpCmd, Reply};
use dvipa::shared::{AGENT_QUEUE, SLOW_AGENT_METRIC};
use dvipa_proto::v1 as pb;
use dvipa_proto::v1::server_stack_client::ServerStackClient;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

mod common;
use common::DVIPA;

/// This process's resident set, in KiB.
fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// A Report of 15 TERMCONNs of connections the controller never pinned: each is answered with
/// an item error, so every Ack carries 15 of them.
fn termconn_report(seq: u64) -> pb::AgentMessage {
    let termconn = (0..15u32)
        .map(|i| pb::Conn {
            client_addr: u32::from(Ipv4Addr::new(198, 51, 100, 1)) + i,
            client_port: 40000 + (seq % 20000) as u32,
            dvipa: u32::from(DVIPA),
            dvipa_port: 60,
            protocol: 6,
            server_originated: false,
        })
        .collect();
    pb::AgentMessage {
        seq,
        msg: Some(pb::agent_message::Msg::Report(pb::Report {
            termconn,
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_never_reads_its_acks_is_disconnected_counted_and_released() {
    slow_agent(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_agent_that_never_reads_its_acks_is_disconnected_too() {
    slow_agent(true).await;
}

async fn slow_agent(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (cfg, client_tls) = if tls {
        let ca = common::ca_with_server_cert("dvipa test CA", dir.path());
        let b = ca.client_bundle("MVS1").unwrap();
        let top = "tls = { ca = \"ctl-ca.pem\", cert = \"ctl.pem\", key = \"ctl-key.pem\" }\n\
                   agent = { listen = \"127.0.0.1:0\" }";
        (
            common::unreachable_switch_config(dir.path(), top, ""),
            Some(dvipa_tls::client_tls_config(&b, Some("localhost")).unwrap()),
        )
    } else {
        let top = "agent = { listen = \"127.0.0.1:0\", insecure = true }";
        (common::unreachable_switch_config(dir.path(), top, ""), None)
    };
    let ctl = common::start_controller(&cfg, RecordingAdvertiser::default()).await;
    let shared = ctl.shared().clone();
    let rss0 = rss_kib();

    // A raw agent with the smallest HTTP/2 window: it sends, and never reads.
    let scheme = if tls { "https" } else { "http" };
    let mut ep =
        tonic::transport::Endpoint::from_shared(format!("{scheme}://{}", ctl.agent_addr()))
            .unwrap()
            .initial_stream_window_size(65_535);
    if let Some(t) = client_tls {
        ep = ep.tls_config(t).unwrap();
    }
    let ch = ep.connect().await.unwrap();
    let (tx, rx) = mpsc::channel(64);
    tx.send(pb::AgentMessage {
        seq: 1,
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            stack: "MVS1".into(),
            underlay_addr: u32::from(Ipv4Addr::new(10, 0, 0, 1)),
            agent_version: "slow".into(),
            epoch: 1,
        })),
    })
    .await
    .unwrap();
    let mut stream = ServerStackClient::new(ch)
        .attach(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();

    let t0 = Instant::now();
    let (mut sent, mut max_queued, mut peak_rss) = (0u64, 0usize, rss0);
    let limit = 200_000u64;
    while sent < limit && shared.stats.get("agent_disconnected_slow") == 0 {
        let send = tokio::time::timeout(Duration::from_secs(5), tx.send(termconn_report(sent + 2)));
        match send.await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break, // the request stream is gone: the connection was cut
            Err(_) => panic!("the controller stopped reading but did not disconnect the agent"),
        }
        if sent.is_multiple_of(256) {
            max_queued = max_queued.max(shared.agent_queued("MVS1").unwrap_or(0));
            peak_rss = peak_rss.max(rss_kib());
            tokio::task::yield_now().await;
        }
    }
    eprintln!(
        "slow agent (tls {tls}): {sent} reports sent in {:?}, queue max {max_queued}, RSS {rss0} -> \
         peak {peak_rss} KiB",
        t0.elapsed()
    );
    common::wait_until("the slow agent is counted", 10, 20, || async {
        shared.stats.get("agent_disconnected_slow") == 1
    })
    .await;
    let cut_after = t0.elapsed();

    // The agent sees its stream end (after the Acks its own window held).
    let mut acks = 0u64;
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => acks += 1,
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the agent's stream was not ended");
    // ... and its requests go nowhere: the connection is gone.
    common::wait_until("the agent's request stream is closed", 5, 20, || async {
        tx.is_closed() || tx.send(termconn_report(0)).await.is_err()
    })
    .await;
    assert_eq!(shared.stats.get("agent_disconnect_no_handle"), 0, "not cut");

    // The session and its queue are gone.
    common::wait_until("the session is released", 10, 20, || async {
        shared.agent_queued("MVS1").is_none()
    })
    .await;
    let rss1 = rss_kib();
    eprintln!(
        "slow agent (tls {tls}): {sent} reports of 15 TERMCONN sent, cut after {cut_after:?}; queue peaked at \
         {max_queued} of {AGENT_QUEUE}; the agent had received {acks} acks; RSS {rss0} KiB -> \
         peak {peak_rss} KiB -> {rss1} KiB after"
    );
    assert!(sent < limit, "not disconnected within {limit} reports");
    assert!(max_queued <= AGENT_QUEUE);
    assert!(
        peak_rss.saturating_sub(rss0) < 200 * 1024,
        "RSS grew by {} KiB",
        peak_rss - rss0
    );

    // `dvipa counters` shows it (the metric has the same name as SLOW_AGENT_METRIC's docs say).
    assert_eq!(SLOW_AGENT_METRIC, "dvipa_agent_slow_disconnects_total");
    let admin = ctl.admin_addr();
    let Reply::Table(t) = cli::run(
        &Common::plaintext(format!("http://{admin}")),
        &OpCmd::Counters,
    )
    .await
    .unwrap() else {
        panic!()
    };
    assert!(
        t.rows
            .iter()
            .any(|r| r.cells == ["shell", "agent_disconnected_slow", "1"]),
        "{:?}",
        t.rows
    );

    if tls {
        ctl.shutdown().await;
        return;
    }
    // The stack can attach again at once with a well-behaved agent.
    let (_tx2, mut s2) = common::plaintext_agent(ctl.agent_addr()).await;
    let first = tokio::time::timeout(Duration::from_secs(5), s2.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(
        first.msg,
        Some(pb::controller_message::Msg::Welcome(_))
    ));
    ctl.shutdown().await;
}
