//! Packet I/O on Linux interfaces with AF_PACKET.
//!
//! Each port is one `AF_PACKET`/`SOCK_RAW` socket bound to its interface, promiscuous, ignoring its
//! own outgoing frames. Reception uses a `TPACKET_V3` mmap ring (the kernel fills whole blocks of
//! frames; the data path walks a block and hands it back with one store), transmission batches the
//! frames of a block per output port into one `sendmmsg` (with `PACKET_QDISC_BYPASS`). One data-path
//! thread polls all ports; the tables are locked shared once per block.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering, fence};

use tracing::{debug, info, warn};

use crate::pipeline::{Output, Pipeline, Verdict};
use crate::server::DigestSink;

const SOL_PACKET: libc::c_int = 263;
const PACKET_ADD_MEMBERSHIP: libc::c_int = 1;
const PACKET_STATISTICS: libc::c_int = 6;
const PACKET_RX_RING: libc::c_int = 5;
const PACKET_VERSION: libc::c_int = 10;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TPACKET_V3: libc::c_int = 2;
const PACKET_MR_PROMISC: libc::c_ushort = 1;
const ETH_P_ALL: u16 = 0x0003;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_KERNEL: u32 = 0;

const BLOCK_SIZE: u32 = 1 << 18;
const BLOCK_NR: u32 = 64;
const FRAME_SIZE: u32 = 2048;
/// Frames per `sendmmsg`.
const TX_BATCH: usize = 64;
/// Largest frame transmitted.
const MAX_FRAME: usize = 9216 + 64;

/// Errors of packet I/O setup.
#[derive(Debug, thiserror::Error)]
pub enum IoError {
    /// The interface does not exist.
    #[error("interface {0:?} not found")]
    NoSuchInterface(String),
    /// A socket call failed.
    #[error("{what} on interface {iface}: {source}")]
    Sys {
        /// The call.
        what: &'static str,
        /// The interface.
        iface: String,
        /// The OS error.
        source: io::Error,
    },
}

#[repr(C)]
struct TpacketReq3 {
    tp_block_size: u32,
    tp_block_nr: u32,
    tp_frame_size: u32,
    tp_frame_nr: u32,
    tp_retire_blk_tov: u32,
    tp_sizeof_priv: u32,
    tp_feature_req_word: u32,
}

#[repr(C)]
struct PacketMreq {
    mr_ifindex: libc::c_int,
    mr_type: libc::c_ushort,
    mr_alen: libc::c_ushort,
    mr_address: [u8; 8],
}

/// One switch port: an interface with its RX ring.
pub struct Port {
    /// Switch port number.
    pub number: u16,
    /// Interface name.
    pub iface: String,
    fd: OwnedFd,
    ring: *mut u8,
    ring_len: usize,
    next_block: u32,
}

// SAFETY: the ring mapping is owned by the Port and only accessed through &mut self.
unsafe impl Send for Port {}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: ring/ring_len come from a successful mmap and are unmapped once.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_len);
        }
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: val points to a live T of the given size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl Port {
    /// Opens `iface` as switch port `number`.
    pub fn open(number: u16, iface: &str) -> Result<Port, IoError> {
        let sys = |what| {
            let iface = iface.to_string();
            move |source| IoError::Sys {
                what,
                iface,
                source,
            }
        };
        let cname = CString::new(iface).map_err(|_| IoError::NoSuchInterface(iface.into()))?;
        // SAFETY: cname is a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
        if ifindex == 0 {
            return Err(IoError::NoSuchInterface(iface.into()));
        }
        // SAFETY: plain socket call; the fd is owned right after.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        if raw < 0 {
            return Err(sys("socket")(io::Error::last_os_error()));
        }
        // SAFETY: raw is a fresh, valid fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        setsockopt(&fd, SOL_PACKET, PACKET_VERSION, &TPACKET_V3).map_err(sys("PACKET_VERSION"))?;
        let one: libc::c_int = 1;
        if let Err(e) = setsockopt(&fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one) {
            warn!(iface, error = %e, "PACKET_IGNORE_OUTGOING unsupported");
        }
        let _ = setsockopt(&fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one);
        let req = TpacketReq3 {
            tp_block_size: BLOCK_SIZE,
            tp_block_nr: BLOCK_NR,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: BLOCK_SIZE / FRAME_SIZE * BLOCK_NR,
            tp_retire_blk_tov: 1,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, SOL_PACKET, PACKET_RX_RING, &req).map_err(sys("PACKET_RX_RING"))?;
        let ring_len = (BLOCK_SIZE * BLOCK_NR) as usize;
        // SAFETY: mapping the ring just configured on this fd.
        let ring = unsafe {
            libc::mmap(
                ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(sys("mmap")(io::Error::last_os_error()));
        }
        let port = Port {
            number,
            iface: iface.into(),
            fd,
            ring: ring.cast(),
            ring_len,
            next_block: 0,
        };
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = ETH_P_ALL.to_be();
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a valid sockaddr_ll.
        let r = unsafe {
            libc::bind(
                port.fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(sys("bind")(io::Error::last_os_error()));
        }
        let mreq = PacketMreq {
            mr_ifindex: ifindex,
            mr_type: PACKET_MR_PROMISC,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt(&port.fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq)
            .map_err(sys("PACKET_ADD_MEMBERSHIP"))?;
        info!(port = number, iface, ifindex, "port up");
        Ok(port)
    }

    /// Frames the kernel dropped because the RX ring was full since the last call.
    pub fn take_ring_drops(&self) -> u64 {
        // tpacket_stats_v3: tp_packets, tp_drops, tp_freeze_q_cnt.
        let mut st = [0u32; 3];
        let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
        // SAFETY: st is a writable buffer of len bytes.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_PACKET,
                PACKET_STATISTICS,
                st.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r < 0 { 0 } else { u64::from(st[1]) }
    }

    /// Reads and clears the socket's pending error (SO_ERROR).
    fn take_error(&self) -> Option<io::Error> {
        let mut err: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: err is a writable c_int.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut err as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        (r == 0 && err != 0).then(|| io::Error::from_raw_os_error(err))
    }

    fn block(&self, i: u32) -> *mut u8 {
        // SAFETY: i < BLOCK_NR, inside the mapping.
        unsafe { self.ring.add((i * BLOCK_SIZE) as usize) }
    }

    fn block_status(&self, i: u32) -> u32 {
        // SAFETY: block_status is the u32 at offset 8 of the block descriptor.
        unsafe { ptr::read_volatile(self.block(i).add(8).cast::<u32>()) }
    }

    /// Whether the next block is ready for user space.
    fn ready(&self) -> bool {
        self.block_status(self.next_block) & TP_STATUS_USER != 0
    }

    /// Walks the frames of the next ready block, then returns the block to the kernel.
    fn drain_block(&mut self, mut f: impl FnMut(&[u8])) -> usize {
        let b = self.block(self.next_block);
        if self.block_status(self.next_block) & TP_STATUS_USER == 0 {
            return 0;
        }
        fence(Ordering::Acquire);
        // SAFETY: the kernel handed this block to us (TP_STATUS_USER); the header layout is
        // tpacket_block_desc / tpacket_hdr_v1 and each frame a tpacket3_hdr; offsets and lengths
        // are checked against the block size before slicing.
        let n = unsafe {
            let num_pkts = ptr::read_volatile(b.add(12).cast::<u32>());
            let mut off = ptr::read_volatile(b.add(16).cast::<u32>()) as usize;
            for _ in 0..num_pkts {
                if off + 32 > BLOCK_SIZE as usize {
                    break;
                }
                let h = b.add(off);
                let next = ptr::read_volatile(h.cast::<u32>()) as usize;
                let snaplen = ptr::read_volatile(h.add(12).cast::<u32>()) as usize;
                let mac = ptr::read_volatile(h.add(24).cast::<u16>()) as usize;
                if off + mac + snaplen <= BLOCK_SIZE as usize {
                    f(std::slice::from_raw_parts(h.add(mac), snaplen));
                }
                if next == 0 {
                    break;
                }
                off += next;
            }
            num_pkts as usize
        };
        fence(Ordering::Release);
        // SAFETY: handing the block back to the kernel.
        unsafe { ptr::write_volatile(b.add(8).cast::<u32>(), TP_STATUS_KERNEL) };
        self.next_block = (self.next_block + 1) % BLOCK_NR;
        n
    }
}

/// Frames queued for one output port.
struct TxQueue {
    buf: Vec<u8>,
    lens: Vec<usize>,
}

impl TxQueue {
    fn new() -> Self {
        TxQueue {
            buf: vec![0; TX_BATCH * MAX_FRAME],
            lens: Vec::with_capacity(TX_BATCH),
        }
    }
    fn push(&mut self, frame: &[u8]) -> bool {
        let i = self.lens.len();
        let n = frame.len();
        debug_assert!(n <= MAX_FRAME);
        self.buf[i * MAX_FRAME..i * MAX_FRAME + n].copy_from_slice(frame);
        self.lens.push(n);
        self.lens.len() == TX_BATCH
    }
    fn flush(&mut self, fd: libc::c_int, errors: &mut u64) {
        if self.lens.is_empty() {
            return;
        }
        let mut iov: [libc::iovec; TX_BATCH] = [libc::iovec {
            iov_base: ptr::null_mut(),
            iov_len: 0,
        }; TX_BATCH];
        // SAFETY: zeroed mmsghdr is valid; pointers set below point into self.buf / iov.
        let mut msgs: [libc::mmsghdr; TX_BATCH] = unsafe { std::mem::zeroed() };
        let n = self.lens.len();
        for i in 0..n {
            iov[i].iov_base = self.buf[i * MAX_FRAME..].as_mut_ptr().cast();
            iov[i].iov_len = self.lens[i];
            msgs[i].msg_hdr.msg_iov = &mut iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
        }
        let mut sent = 0;
        while sent < n {
            // SAFETY: msgs[sent..n] are initialised and point to live buffers.
            let r = unsafe { libc::sendmmsg(fd, msgs[sent..].as_mut_ptr(), (n - sent) as u32, 0) };
            if r <= 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                *errors += (n - sent) as u64;
                debug!(fd, error = %e, "sendmmsg");
                break;
            }
            sent += r as usize;
        }
        self.lens.clear();
    }
}

/// Counters of the I/O loop.
#[derive(Debug, Default)]
pub struct IoStats {
    /// Frames received.
    pub rx: std::sync::atomic::AtomicU64,
    /// Frames sent.
    pub tx: std::sync::atomic::AtomicU64,
    /// Frames to ports that do not exist.
    pub tx_no_port: std::sync::atomic::AtomicU64,
    /// Frames not sent: send errors, and frames larger than 9280 bytes (never cut).
    pub tx_errors: std::sync::atomic::AtomicU64,
    /// Frames the kernel dropped because an RX ring was full (the data path fell behind).
    pub rx_ring_drops: std::sync::atomic::AtomicU64,
}

/// Runs the data path over `ports` until `stop` is set. Frames are processed only while `enabled`
/// is set (a forwarding pipeline config is installed), as bmv2 started with `--no-p4` does.
pub fn run(
    pipeline: Arc<Pipeline>,
    mut ports: Vec<Port>,
    digests: Option<DigestSink>,
    enabled: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    stats: Arc<IoStats>,
) {
    let max_port = ports.iter().map(|p| p.number).max().unwrap_or(0) as usize;
    // port number -> index in `ports`
    let mut index = vec![usize::MAX; max_port + 1];
    for (i, p) in ports.iter().enumerate() {
        index[p.number as usize] = i;
    }
    let mut txq: Vec<TxQueue> = ports.iter().map(|_| TxQueue::new()).collect();
    let txfds: Vec<libc::c_int> = ports.iter().map(|p| p.fd.as_raw_fd()).collect();
    let mut pfds: Vec<libc::pollfd> = ports
        .iter()
        .map(|p| libc::pollfd {
            fd: p.fd.as_raw_fd(),
            events: libc::POLLIN | libc::POLLERR,
            revents: 0,
        })
        .collect();
    let mut out = Output::default();
    out.frame.reserve(MAX_FRAME);
    let mut tx_errors = 0u64;
    let mut last_stats = std::time::Instant::now();
    let mut port_error_logged = vec![false; ports.len()];
    while !stop.load(Ordering::Relaxed) {
        if last_stats.elapsed() >= std::time::Duration::from_secs(1) {
            last_stats = std::time::Instant::now();
            let d: u64 = ports.iter().map(|p| p.take_ring_drops()).sum();
            stats.rx_ring_drops.fetch_add(d, Ordering::Relaxed);
        }
        let mut any = false;
        for port in ports.iter_mut() {
            while port.ready() {
                any = true;
                let on = enabled.load(Ordering::Relaxed);
                let tables = pipeline.tables();
                let now = pipeline.now_ns();
                let in_port = port.number;
                let mut sent = 0u64;
                let mut no_port = 0u64;
                let n = {
                    let (txq_ref, out_ref, errs) = (&mut txq, &mut out, &mut tx_errors);
                    let txfds = &txfds;
                    port.drain_block(|frame| {
                        if !on {
                            return;
                        }
                        if let Verdict::Forward(p) =
                            pipeline.process_with(&tables, now, in_port, frame, out_ref)
                        {
                            match index.get(p as usize).copied() {
                                Some(_) if out_ref.frame.len() > MAX_FRAME => {
                                    // A GRO super-frame or jumbo beyond the TX slots: counted, not cut.
                                    *errs += 1;
                                }
                                Some(oi) if oi != usize::MAX => {
                                    if txq_ref[oi].push(&out_ref.frame) {
                                        txq_ref[oi].flush(txfds[oi], errs);
                                    }
                                    sent += 1;
                                }
                                _ => no_port += 1,
                            }
                        }
                    })
                };
                drop(tables);
                for (qi, q) in txq.iter_mut().enumerate() {
                    q.flush(txfds[qi], &mut tx_errors);
                }
                if let Some(d) = &digests
                    && !out.digests.is_empty()
                {
                    d.push(&mut out.digests);
                }
                out.digests.clear();
                stats.rx.fetch_add(n as u64, Ordering::Relaxed);
                stats.tx.fetch_add(sent, Ordering::Relaxed);
                stats.tx_no_port.fetch_add(no_port, Ordering::Relaxed);
                stats.tx_errors.store(tx_errors, Ordering::Relaxed);
            }
        }
        if !any {
            for p in pfds.iter_mut() {
                p.revents = 0;
            }
            // SAFETY: pfds is a valid array of pollfd.
            unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, 100) };
            // An interface that went down (or away) leaves an error on its socket: read it (which
            // clears it), say so once, and do not spin on it.
            let mut errored = false;
            for (i, p) in pfds.iter().enumerate() {
                if p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                    errored = true;
                    let e = ports[i].take_error();
                    if !port_error_logged[i] {
                        warn!(port = ports[i].number, iface = %ports[i].iface, error = ?e, "port error (interface down?)");
                        port_error_logged[i] = true;
                    }
                }
            }
            if errored {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    let d: u64 = ports.iter().map(|p| p.take_ring_drops()).sum();
    stats.rx_ring_drops.fetch_add(d, Ordering::Relaxed);
    info!("data path stopped");
}
