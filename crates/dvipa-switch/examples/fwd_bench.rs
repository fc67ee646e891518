//! Forwarding benchmark on veth pairs between network namespaces (needs root and iproute2).
//!
//! ```text
//! cargo run --release -p dvipa-switch --example fwd_bench [-- SECONDS]
//! ```
//!
//! Topology: `gen` ns (a0) ── veth ── (a1) `sw` ns (b1) ── veth ── (b0) `sink` ns. A generator
//! thread (its own AF_PACKET socket, `sendmmsg` batches of pre-built frames, pinned to CPU 0) sends
//! from a0; the packets per second arriving at b0 are counted. Modes, each for SECONDS (default 3):
//! 1. generator alone (a0 → a1, nothing forwards): what the generator can offer;
//! 2. kernel bridge in `sw` (a1, b1 in br0): the kernel's ceiling on this path;
//! 3. dvipa-switch, CRT hit: one pinned TCP connection, forward_l2 to b1;
//! 4. dvipa-switch, SYN selection + digest: SYNs of 65,536 client ports, slot hash, dpt, digest.
//! 5. and 6. when `simple_switch_grpc` is on PATH (or `DVIPA_BENCH_BMV2` names a binary with its
//!    arguments): bmv2 running `p4src/p4c-out/bmv2/dvipa.json` on the same veth path, programmed
//!    over P4Runtime with the same entries, CRT hit and SYN+digest, so the ratio comes from one run.
//!
//! The embedded switch runs in-process (the library's AF_PACKET data path, pinned to CPU 1) in the
//! `sw` ns; bmv2 runs as a process in the `sw` ns.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dvipa_switch::Pipeline;
use dvipa_switch::io::{IoStats, Port};
use dvipa_switch::server::SwitchServer;
use dvipa_switch::tables::{
    CrtKey, DptKey, DvipaAction, DvipaKey, EntryMeta, SelectAction, TargetAction,
};

const GEN: &str = "dvbench-gen";
const SW: &str = "dvbench-sw";
const SINK: &str = "dvbench-sink";
const CLIENT: [u8; 4] = [10, 0, 0, 1];
const VIPA: [u8; 4] = [10, 0, 0, 100];
/// MAC the clients send to (the switch's router MAC; no interface has it, so the kernel stack of
/// the switch namespace discards the frames early, as on a real switch port).
const SWITCH_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
/// MAC of the target server behind b0 (not b0's own, so the sink's stack discards early too).
const SERVER_MAC: [u8; 6] = [2, 0, 0, 0, 0xb, 0x99];

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn must(args: &[&str]) {
    assert!(sh(args), "command failed: {args:?}");
}

struct Topology;

impl Topology {
    fn new() -> Self {
        Self::cleanup();
        for ns in [GEN, SW, SINK] {
            must(&["ip", "netns", "add", ns]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ]);
        }
        must(&[
            "ip", "link", "add", "dvb-a0", "netns", GEN, "type", "veth", "peer", "name", "dvb-a1",
            "netns", SW,
        ]);
        must(&[
            "ip", "link", "add", "dvb-b1", "netns", SW, "type", "veth", "peer", "name", "dvb-b0",
            "netns", SINK,
        ]);
        must(&[
            "ip",
            "-n",
            SW,
            "link",
            "set",
            "dvb-a1",
            "address",
            "02:00:00:00:0a:01",
        ]);
        must(&[
            "ip",
            "-n",
            SINK,
            "link",
            "set",
            "dvb-b0",
            "address",
            "02:00:00:00:0b:00",
        ]);
        for (ns, i) in [
            (GEN, "dvb-a0"),
            (SW, "dvb-a1"),
            (SW, "dvb-b1"),
            (SINK, "dvb-b0"),
        ] {
            must(&["ip", "-n", ns, "link", "set", i, "up"]);
        }
        Topology
    }
    fn cleanup() {
        for ns in [GEN, SW, SINK] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        Self::cleanup();
    }
}

fn setns(name: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{name}")).expect("netns");
    // SAFETY: affects only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {name}");
}

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity on the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn counter(ns: &str, iface: &str, what: &str) -> u64 {
    let out = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "cat",
            &format!("/sys/class/net/{iface}/statistics/{what}"),
        ])
        .output()
        .expect("cat");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}

fn tcp_frame(sport: u16, syn: bool) -> Vec<u8> {
    let mut v = Vec::new();
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0xa, 0], SWITCH_MAC)
        .ipv4(CLIENT, VIPA, 64)
        .tcp(sport, 80, 1, 64000);
    let b = if syn { b.syn() } else { b.ack(1) };
    b.write(&mut v, &[0u8; 18]).unwrap(); // 14+20+20+18 = 72 bytes
    v
}

/// Sends `frames` round-robin from `iface` in the current namespace until `stop`.
fn generate(iface: &str, frames: &[Vec<u8>], stop: &AtomicBool, sent: &AtomicU64) {
    let c = std::ffi::CString::new(iface).unwrap();
    // SAFETY: socket setup with owned values.
    let fd = unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = libc::if_nametoindex(c.as_ptr()) as i32;
        assert_eq!(
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32
            ),
            0
        );
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd.as_raw_fd(),
            263,
            20,
            (&one as *const libc::c_int).cast(),
            4,
        ); // QDISC_BYPASS
        fd
    };
    const B: usize = 64;
    let mut i = 0usize;
    let mut iov: Vec<libc::iovec> = (0..B)
        .map(|_| libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        })
        .collect();
    // SAFETY: zeroed mmsghdr is valid plain data.
    let mut msgs: Vec<libc::mmsghdr> = (0..B).map(|_| unsafe { std::mem::zeroed() }).collect();
    while !stop.load(Ordering::Relaxed) {
        for k in 0..B {
            let f = &frames[(i + k) % frames.len()];
            iov[k].iov_base = f.as_ptr() as *mut libc::c_void;
            iov[k].iov_len = f.len();
            msgs[k].msg_hdr.msg_iov = &mut iov[k];
            msgs[k].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: msgs and iov are valid for B entries and outlive the call.
        let r = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), B as u32, 0) };
        if r > 0 {
            sent.fetch_add(r as u64, Ordering::Relaxed);
            i = (i + r as usize) % frames.len();
        }
    }
}

struct Measure {
    offered: f64,
    delivered: f64,
}

/// Runs the generator for `secs` and returns (offered, delivered at b0) packets/s.
fn run_traffic(frames: Arc<Vec<Vec<u8>>>, secs: f64, count_at: (&str, &str, &str)) -> Measure {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let g = {
        let (stop, sent, frames) = (stop.clone(), sent.clone(), frames.clone());
        std::thread::spawn(move || {
            setns(GEN);
            pin(0);
            generate("dvb-a0", &frames, &stop, &sent);
        })
    };
    std::thread::sleep(Duration::from_millis(500)); // warm up
    let (ns, iface, what) = count_at;
    let c0 = counter(ns, iface, what);
    let s0 = sent.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(secs));
    let c1 = counter(ns, iface, what);
    let s1 = sent.load(Ordering::Relaxed);
    let dt = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    g.join().unwrap();
    Measure {
        offered: (s1 - s0) as f64 / dt,
        delivered: (c1 - c0) as f64 / dt,
    }
}

fn setup_switch(p: &Pipeline) {
    let mut t = p.tables_mut();
    let m = EntryMeta::default();
    t.dvipa
        .insert(
            DvipaKey {
                dst: u32::from_be_bytes(VIPA),
                proto: 6,
                dport: 80,
                dport_mask: 0xffff,
                priority: 1,
            },
            DvipaAction::Distribute {
                service_id: 1,
                method: 0,
            },
            m.clone(),
        )
        .unwrap();
    for slot in 0..256 {
        t.dpt
            .insert(
                DptKey {
                    service_id: 1,
                    slot,
                },
                SelectAction::ToTarget(1),
                m.clone(),
                0,
            )
            .unwrap();
    }
    t.target
        .insert(
            1,
            TargetAction::ForwardL2 {
                dmac: SERVER_MAC,
                port: 2,
            },
            m.clone(),
            0,
        )
        .unwrap();
    t.crt
        .insert(
            CrtKey {
                src: u32::from_be_bytes(CLIENT),
                dst: u32::from_be_bytes(VIPA),
                proto: 6,
                sport: 40000,
                dport: 80,
            },
            SelectAction::ToTarget(1),
            m,
            0,
        )
        .unwrap();
}

fn main() {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("fwd_bench needs root (network namespaces, AF_PACKET)");
        std::process::exit(2);
    }
    let secs: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let _topo = Topology::new();
    let ack = Arc::new(vec![tcp_frame(40000, false)]);
    let syns = Arc::new(
        (0..65535u16)
            .map(|p| tcp_frame(p.wrapping_add(1), true))
            .collect::<Vec<_>>(),
    );
    let at_b0 = (SINK, "dvb-b0", "rx_packets");
    println!(
        "frame: 72-byte TCP, veth pairs between namespaces, {secs} s per mode, {} CPUs",
        num_cpus()
    );

    let m = run_traffic(ack.clone(), secs, (SW, "dvb-a1", "rx_packets"));
    println!(
        "generator alone        : offered {:>9.0} pps, arriving at a1 {:>9.0} pps",
        m.offered, m.delivered
    );

    must(&["ip", "-n", SW, "link", "add", "dvb-br", "type", "bridge"]);
    must(&["ip", "-n", SW, "link", "set", "dvb-a1", "master", "dvb-br"]);
    must(&["ip", "-n", SW, "link", "set", "dvb-b1", "master", "dvb-br"]);
    must(&["ip", "-n", SW, "link", "set", "dvb-br", "up"]);
    // Let the bridge learn b0's MAC so it forwards rather than floods.
    must(&[
        "bridge",
        "-n",
        SW,
        "fdb",
        "add",
        "02:00:00:00:0b:00",
        "dev",
        "dvb-b1",
        "master",
        "static",
    ]);
    let bridge_frames = Arc::new(vec![{
        let mut f = tcp_frame(40000, false);
        f[0..6].copy_from_slice(&SERVER_MAC);
        f
    }]);
    let m = run_traffic(bridge_frames, secs, at_b0);
    println!(
        "kernel bridge          : offered {:>9.0} pps, delivered {:>9.0} pps",
        m.offered, m.delivered
    );
    must(&["ip", "-n", SW, "link", "del", "dvb-br"]);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    for (name, frames) in [
        ("dvipa-switch CRT hit   ", ack.clone()),
        ("dvipa-switch SYN+digest", syns.clone()),
    ] {
        let pipeline = Arc::new(Pipeline::new());
        setup_switch(&pipeline);
        let server = SwitchServer::new(0, pipeline.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(IoStats::default());
        let dp = {
            let (p, d, s, st) = (
                pipeline.clone(),
                server.digest_sink(),
                stop.clone(),
                stats.clone(),
            );
            std::thread::spawn(move || {
                setns(SW);
                pin(1);
                let ports = vec![
                    Port::open(1, "dvb-a1").unwrap(),
                    Port::open(2, "dvb-b1").unwrap(),
                ];
                let (c0, t0) = (thread_cpu(), Instant::now());
                dvipa_switch::io::run(p, ports, Some(d), Arc::new(AtomicBool::new(true)), s, st);
                (thread_cpu() - c0) / t0.elapsed().as_secs_f64()
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        let m = run_traffic(frames, secs, at_b0);
        stop.store(true, Ordering::Relaxed);
        let busy = dp.join().unwrap();
        let s = &pipeline.stats;
        println!(
            "{name}: offered {:>9.0} pps, delivered {:>9.0} pps (data-path CPU {:.0}%, switch rx {}, ring drops {}, forwarded {}, digests {})",
            m.offered,
            m.delivered,
            busy * 100.0,
            stats.rx.load(Ordering::Relaxed),
            stats.rx_ring_drops.load(Ordering::Relaxed),
            s.forwarded.load(Ordering::Relaxed),
            s.digests.load(Ordering::Relaxed),
        );
    }
    drop(_guard);
    run_bmv2(
        secs,
        &[
            ("bmv2 CRT hit           ", ack),
            ("bmv2 SYN+digest        ", syns),
        ],
        at_b0,
    );
}

/// The bmv2 binary to measure: `$DVIPA_BENCH_BMV2`, else `simple_switch_grpc` on PATH.
fn bmv2_binary() -> Option<String> {
    if let Ok(b) = std::env::var("DVIPA_BENCH_BMV2") {
        return Some(b);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("simple_switch_grpc"))
            .find(|p| p.is_file())
            .map(|p| p.display().to_string())
    })
}

/// Programs the switch at 127.0.0.1:9559 in the `sw` namespace like [`setup_switch`], over
/// P4Runtime (pipeline = p4c's P4Info + bmv2 JSON), and keeps the session (primary, digest
/// enabled) until `stop`.
fn program_over_p4runtime(
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    stop: Arc<AtomicBool>,
) {
    setns(SW);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../p4src/p4c-out/bmv2");
        let r = async {
            let schema = p4rt::Schema::from_file(format!("{dir}/dvipa.p4info.txtpb"))
                .map_err(|e| e.to_string())?;
            let json = std::fs::read(format!("{dir}/dvipa.json")).map_err(|e| e.to_string())?;
            let t0 = Instant::now();
            let (session, queues) = loop {
                match p4rt::Session::connect(p4rt::ClientConfig::new("127.0.0.1:9559", 0)).await {
                    Ok(s) => break s,
                    Err(e) if t0.elapsed() > Duration::from_secs(10) => {
                        return Err(format!("P4Runtime connect: {e}"));
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
                }
            };
            session
                .set_pipeline(schema.p4info().clone(), json, 1)
                .await
                .map_err(|e| e.to_string())?;
            let e = |r: Result<p4rt::proto::p4::v1::TableEntry, _>| {
                r.map(p4rt::insert)
                    .map_err(|e: p4rt::SchemaError| e.to_string())
            };
            let mut ups = vec![
                e(schema
                    .table_entry("IngressImpl.dvipa")
                    .exact("hdr.ipv4.dstAddr", u32::from_be_bytes(VIPA))
                    .exact("hdr.ipv4.protocol", 6u8)
                    .ternary("meta.l4_dport", 80u16, 0xffffu16)
                    .priority(1)
                    .action("IngressImpl.distribute")
                    .param("service_id", 1u16)
                    .param("method", 0u8)
                    .build())?,
                e(schema
                    .table_entry("IngressImpl.target")
                    .exact("meta.target_id", 1u16)
                    .action("IngressImpl.forward_l2")
                    .param("dmac", u64::from_be_bytes([0, 0, 2, 0, 0, 0, 0xb, 0x99]))
                    .param("port", 2u16)
                    .build())?,
                e(schema
                    .table_entry("IngressImpl.crt")
                    .exact("hdr.ipv4.srcAddr", u32::from_be_bytes(CLIENT))
                    .exact("hdr.ipv4.dstAddr", u32::from_be_bytes(VIPA))
                    .exact("hdr.ipv4.protocol", 6u8)
                    .exact("meta.l4_sport", 40000u16)
                    .exact("meta.l4_dport", 80u16)
                    .action("IngressImpl.to_target")
                    .param("target_id", 1u16)
                    .build())?,
            ];
            for slot in 0..256u16 {
                ups.push(e(schema
                    .table_entry("IngressImpl.dpt")
                    .exact("meta.service_id", 1u16)
                    .exact("meta.slot", slot)
                    .action("IngressImpl.to_target")
                    .param("target_id", 1u16)
                    .build())?);
            }
            let digest = schema
                .digest_entry("learn_t", 1_000_000, 100, 1_000_000_000)
                .map_err(|e| e.to_string())?;
            ups.push(p4rt::insert(digest));
            session.write(ups).await.map_err(|e| e.to_string())?;
            Ok((session, queues))
        }
        .await;
        match r {
            Ok((session, mut queues)) => {
                let _ = ready.send(Ok(()));
                // Digest lists are acked as they come (as the controller would), until stop.
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(Some(d)) =
                        tokio::time::timeout(Duration::from_millis(100), queues.digests.recv())
                            .await
                    {
                        let _ = d.ack().await;
                    }
                }
                drop(session);
            }
            Err(e) => {
                let _ = ready.send(Err(e));
            }
        }
    });
}

/// Modes 5 and 6: bmv2 on the same path, if it is installed.
fn run_bmv2(secs: f64, modes: &[(&str, Arc<Vec<Vec<u8>>>)], at: (&str, &str, &str)) {
    let Some(bin) = bmv2_binary() else {
        println!(
            "bmv2: skipped: simple_switch_grpc is not on PATH (set DVIPA_BENCH_BMV2 to a binary \
             taking its arguments)"
        );
        return;
    };
    let log = std::env::temp_dir().join("dvbench-bmv2.log");
    let mut argv: Vec<String> = vec!["ip".into(), "netns".into(), "exec".into(), SW.into()];
    argv.extend(bin.split_whitespace().map(str::to_string));
    argv.extend(
        [
            "--no-p4",
            "--device-id",
            "0",
            "-i",
            "1@dvb-a1",
            "-i",
            "2@dvb-b1",
            "--",
            "--grpc-server-addr",
            "127.0.0.1:9559",
        ]
        .map(str::to_string),
    );
    let mut child = match Command::new(&argv[0])
        .args(&argv[1..])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            println!("bmv2: skipped: cannot start {bin}: {e}");
            return;
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let prog = {
        let stop = stop.clone();
        std::thread::spawn(move || program_over_p4runtime(tx, stop))
    };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => {
            for (name, frames) in modes {
                let m = run_traffic(frames.clone(), secs, at);
                println!(
                    "{name}: offered {:>9.0} pps, delivered {:>9.0} pps ({bin})",
                    m.offered, m.delivered
                );
            }
        }
        Ok(Err(e)) => println!(
            "bmv2: skipped: programming it failed: {e} (log {})",
            log.display()
        ),
        Err(_) => println!(
            "bmv2: skipped: not programmed within 30 s (log {})",
            log.display()
        ),
    }
    stop.store(true, Ordering::Relaxed);
    let _ = prog.join();
    let _ = child.kill();
    let _ = child.wait();
}

/// CPU seconds used by the calling thread (user + system, softirqs run in its context included).
fn thread_cpu() -> f64 {
    // SAFETY: ts is written by clock_gettime.
    unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}
