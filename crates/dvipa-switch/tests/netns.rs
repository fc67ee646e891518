//! End to end: the `dvipa-switch` binary in a network namespace with two veth pairs, programmed
//! over P4Runtime, forwards real frames through AF_PACKET, reports a digest, and stops cleanly on
//! SIGTERM. Needs root and `ip` (iproute2); without them it says so and does nothing.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use p4rt::Schema;
use p4rt::codec::encode_u128;
use p4rt::proto::p4::config::v1 as cfg;
use p4rt::proto::p4::v1 as p4;
use p4rt::proto::p4::v1::p4_runtime_client::P4RuntimeClient;
use tokio_stream::wrappers::ReceiverStream;

const SW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xfe];
const H1_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const H2_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

struct Netns {
    name: String,
    switch: Option<Child>,
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Some(mut c) = self.switch.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        // The switch's log is kept only when the test failed.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(std::env::temp_dir().join(format!("{}.log", self.name)));
        }
    }
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(st.success(), "{args:?} failed");
}

fn usable() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !root || !ip {
        dvipa_testbed::skip::skip(format!(
            "netns test needs root and iproute2 (root={root}, ip={ip})"
        ));
    }
    root && ip
}

fn setns(name: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{name}")).unwrap();
    // SAFETY: f is an open netns file; this affects only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
}

/// A raw socket on `iface` in the current thread's namespace.
fn raw_socket(iface: &str) -> OwnedFd {
    let c = std::ffi::CString::new(iface).unwrap();
    // SAFETY: plain libc calls on owned values.
    unsafe {
        let fd = libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(0x0003u16.to_be()),
        );
        assert!(fd >= 0);
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = 0x0003u16.to_be();
        sll.sll_ifindex = libc::if_nametoindex(c.as_ptr()) as i32;
        let r = libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(r, 0);
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        fd
    }
}

fn send_frame(fd: &OwnedFd, f: &[u8]) {
    // SAFETY: f is a valid buffer.
    let r = unsafe { libc::send(fd.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
    assert_eq!(r as usize, f.len());
}

/// Receives frames for up to `t` and returns the first IPv4 one.
fn recv_ipv4(fd: &OwnedFd, t: Duration) -> Option<Vec<u8>> {
    let end = Instant::now() + t;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < end {
        // SAFETY: buf is a valid buffer.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n >= 14 && buf[12] == 0x08 && buf[13] == 0x00 {
            return Some(buf[..n as usize].to_vec());
        }
    }
    None
}

fn udp(dst: [u8; 4], dport: u16, ttl: u8) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(H1_MAC, SW_MAC)
        .ipv4([10, 0, 1, 1], dst, ttl)
        .udp(4242, dport)
        .write(&mut v, b"through the switch")
        .unwrap();
    v
}

struct Ids {
    schema: Schema,
}

impl Ids {
    fn id(p: &Option<cfg::Preamble>) -> u32 {
        p.as_ref().unwrap().id
    }
    fn exact(&self, t: &cfg::Table, f: &str, v: u128, bits: u32) -> p4::FieldMatch {
        p4::FieldMatch {
            field_id: self.schema.match_field(t, f).unwrap().id,
            field_match_type: Some(p4::field_match::FieldMatchType::Exact(
                p4::field_match::Exact {
                    value: encode_u128(v, bits).unwrap(),
                },
            )),
        }
    }
    fn action(&self, name: &str, params: &[(&str, u128)]) -> Option<p4::TableAction> {
        let a = self.schema.action(name).unwrap();
        Some(p4::TableAction {
            r#type: Some(p4::table_action::Type::Action(p4::Action {
                action_id: Self::id(&a.preamble),
                params: params
                    .iter()
                    .map(|(n, v)| {
                        let p = self.schema.action_param(a, n).unwrap();
                        p4::action::Param {
                            param_id: p.id,
                            value: encode_u128(*v, p.bitwidth as u32).unwrap(),
                        }
                    })
                    .collect(),
            })),
        })
    }
    fn entries(&self) -> Vec<p4::TableEntry> {
        let s = &self.schema;
        let route = s.table("IngressImpl.ipv4_route").unwrap();
        let dvipa = s.table("IngressImpl.dvipa").unwrap();
        let dpt = s.table("IngressImpl.dpt").unwrap();
        let target = s.table("IngressImpl.target").unwrap();
        let mac = |m: [u8; 6]| m.iter().fold(0u128, |a, b| (a << 8) | u128::from(*b));
        let mut v = vec![
            p4::TableEntry {
                table_id: Self::id(&route.preamble),
                r#match: vec![p4::FieldMatch {
                    field_id: s.match_field(route, "meta.route_dst").unwrap().id,
                    field_match_type: Some(p4::field_match::FieldMatchType::Lpm(
                        p4::field_match::Lpm {
                            value: vec![10, 0, 2, 0],
                            prefix_len: 24,
                        },
                    )),
                }],
                action: self.action(
                    "IngressImpl.set_nexthop",
                    &[("dmac", mac(H2_MAC)), ("smac", mac(SW_MAC)), ("port", 2)],
                ),
                ..Default::default()
            },
            p4::TableEntry {
                table_id: Self::id(&dvipa.preamble),
                r#match: vec![
                    self.exact(dvipa, "hdr.ipv4.dstAddr", 0x0a00_0064, 32),
                    self.exact(dvipa, "hdr.ipv4.protocol", 17, 8),
                ],
                priority: 1,
                action: self.action(
                    "IngressImpl.distribute",
                    &[("service_id", 3), ("method", 0)],
                ),
                ..Default::default()
            },
            p4::TableEntry {
                table_id: Self::id(&target.preamble),
                r#match: vec![self.exact(target, "meta.target_id", 9, 16)],
                action: self.action(
                    "IngressImpl.forward_l2",
                    &[("dmac", mac(H2_MAC)), ("port", 2)],
                ),
                ..Default::default()
            },
        ];
        for slot in 0..256 {
            v.push(p4::TableEntry {
                table_id: Self::id(&dpt.preamble),
                r#match: vec![
                    self.exact(dpt, "meta.service_id", 3, 16),
                    self.exact(dpt, "meta.slot", slot, 16),
                ],
                action: self.action("IngressImpl.to_target", &[("target_id", 9)]),
                ..Default::default()
            });
        }
        v
    }
}

#[test]
fn binary_forwards_real_frames_in_a_netns() {
    if !usable() {
        return;
    }
    let name = format!("dvsw-test-{}", std::process::id());
    sh(&["ip", "netns", "add", &name]);
    let mut ns = Netns {
        name: name.clone(),
        switch: None,
    };
    for (a, b) in [("sw1", "h1"), ("sw2", "h2")] {
        sh(&[
            "ip", "-n", &name, "link", "add", a, "type", "veth", "peer", "name", b,
        ]);
    }
    sh(&[
        "ip",
        "netns",
        "exec",
        &name,
        "sysctl",
        "-qw",
        "net.ipv6.conf.all.disable_ipv6=1",
    ]);
    for i in ["sw1", "h1", "sw2", "h2", "lo"] {
        sh(&["ip", "-n", &name, "link", "set", i, "up"]);
    }
    let log = std::fs::File::create(std::env::temp_dir().join(format!("{name}.log"))).unwrap();
    ns.switch = Some(
        Command::new("ip")
            .args(["netns", "exec", &name, env!("CARGO_BIN_EXE_dvipa-switch")])
            .args(["--no-p4", "--device-id", "0", "-i", "1@sw1", "-i", "2@sw2"])
            .args(["--", "--grpc-server-addr", "127.0.0.1:9559"])
            .stderr(log.try_clone().unwrap())
            .stdout(log)
            .spawn()
            .unwrap(),
    );
    let info_path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../p4src/p4c-out/bmv2/dvipa.p4info.txtpb"
    );
    let schema = Schema::from_file(info_path).unwrap();
    let ids = Ids { schema };
    let th_name = name.clone();
    let pid = ns.switch.as_ref().unwrap().id() as i32;
    let result = std::thread::spawn(move || {
        setns(&th_name);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut client = None;
            for _ in 0..100 {
                if let Ok(c) = P4RuntimeClient::connect("http://127.0.0.1:9559").await {
                    client = Some(c);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut client = client.expect("switch P4Runtime server did not come up");
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(p4::StreamMessageRequest {
                update: Some(p4::stream_message_request::Update::Arbitration(
                    p4::MasterArbitrationUpdate {
                        device_id: 0,
                        election_id: Some(p4::Uint128 { high: 0, low: 1 }),
                        ..Default::default()
                    },
                )),
            })
            .await
            .unwrap();
            let mut stream = client
                .stream_channel(ReceiverStream::new(rx))
                .await
                .unwrap()
                .into_inner();
            stream.message().await.unwrap().unwrap();
            let eid = Some(p4::Uint128 { high: 0, low: 1 });
            client
                .set_forwarding_pipeline_config(p4::SetForwardingPipelineConfigRequest {
                    device_id: 0,
                    election_id: eid,
                    action: p4::set_forwarding_pipeline_config_request::Action::VerifyAndCommit
                        as i32,
                    config: Some(p4::ForwardingPipelineConfig {
                        p4info: Some(ids.schema.p4info().clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut updates: Vec<p4::Update> = ids
                .entries()
                .into_iter()
                .map(|e| p4::Update {
                    r#type: p4::update::Type::Insert as i32,
                    entity: Some(p4::Entity {
                        entity: Some(p4::entity::Entity::TableEntry(e)),
                    }),
                })
                .collect();
            let learn = Ids::id(&ids.schema.digest("learn_t").unwrap().preamble);
            updates.push(p4::Update {
                r#type: p4::update::Type::Insert as i32,
                entity: Some(p4::Entity {
                    entity: Some(p4::entity::Entity::DigestEntry(p4::DigestEntry {
                        digest_id: learn,
                        config: Some(p4::digest_entry::Config {
                            max_timeout_ns: 1_000_000,
                            max_list_size: 10,
                            ack_timeout_ns: 1_000_000_000,
                        }),
                    })),
                }),
            });
            client
                .write(p4::WriteRequest {
                    device_id: 0,
                    election_id: eid,
                    updates,
                    ..Default::default()
                })
                .await
                .unwrap();

            let h1 = raw_socket("h1");
            let h2 = raw_socket("h2");
            // Routed: TTL 64 -> 63, MACs rewritten.
            let f = udp([10, 0, 2, 7], 5000, 64);
            send_frame(&h1, &f);
            let got = recv_ipv4(&h2, Duration::from_secs(3))
                .expect("routed frame did not come out of port 2");
            let mut want = f.clone();
            want[0..6].copy_from_slice(&H2_MAC);
            want[6..12].copy_from_slice(&SW_MAC);
            want[22] = 63;
            let (mut h, _) = etherparse::Ipv4Header::from_slice(&want[14..]).unwrap();
            h.time_to_live = 63;
            want[24..26].copy_from_slice(&h.calc_header_checksum().to_be_bytes());
            assert_eq!(got, want);
            // DVIPA: UDP to 10.0.0.100 -> service 3 -> target 9 -> forward_l2 on port 2, digest.
            let f = udp([10, 0, 0, 100], 53, 64);
            send_frame(&h1, &f);
            let got = recv_ipv4(&h2, Duration::from_secs(3))
                .expect("DVIPA frame did not come out of port 2");
            let mut want = f.clone();
            want[0..6].copy_from_slice(&H2_MAC);
            assert_eq!(got, want);
            let msg = tokio::time::timeout(Duration::from_secs(3), stream.message())
                .await
                .expect("no digest")
                .unwrap()
                .unwrap();
            match msg.update {
                Some(p4::stream_message_response::Update::Digest(d)) => assert_eq!(d.data.len(), 1),
                m => panic!("expected a digest, got {m:?}"),
            }
            // SIGTERM while this controller's stream is still open: the switch closes it and exits.
            // SAFETY: signalling the switch process this test started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let end = tokio::time::timeout(Duration::from_secs(5), async {
                while let Ok(Some(_)) = stream.message().await {}
            })
            .await;
            assert!(end.is_ok(), "stream still open 5 s after SIGTERM");
        });
    })
    .join();
    // Graceful shutdown on SIGTERM (sent by the client thread, or here if it failed early).
    let child = ns.switch.as_mut().unwrap();
    if result.is_err() {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let end = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > end {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if result.is_err() {
        let log = std::fs::read_to_string(std::env::temp_dir().join(format!("{name}.log")))
            .unwrap_or_default();
        panic!("end-to-end check failed; switch log:\n{log}");
    }
    let status = status.expect("switch did not exit within 5 s of SIGTERM");
    assert!(status.success(), "switch exit status {status:?}");
}
