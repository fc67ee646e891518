//! Small helpers around network namespaces: run a command in one (`ip netns exec`), spawn a
//! process in one that is killed when its handle drops, run Rust code on a thread that lives in
//! one (so sockets it creates belong to that namespace), and wait for TCP ports.

use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// True when the process runs with effective uid 0 (needed for namespaces and veths).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a named network namespace exists (`/run/netns/NAME`).
pub fn netns_exists(ns: &str) -> bool {
    Path::new("/run/netns").join(ns).exists()
}

/// Run `argv` (in the current namespace) and return its stdout; an error carries the command,
/// its exit status and stderr.
pub fn run<S: AsRef<OsStr>>(argv: &[S]) -> Result<String> {
    let (prog, args) = argv.split_first().ok_or_else(|| anyhow!("empty command"))?;
    let out = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", show(argv)))?;
    check(argv, out)
}

fn check<S: AsRef<OsStr>>(argv: &[S], out: Output) -> Result<String> {
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            show(argv),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Render a command line for messages.
pub fn show<S: AsRef<OsStr>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `ip ARGS...` in the current (root) namespace.
pub fn ip(args: &[&str]) -> Result<String> {
    let mut argv = vec!["ip"];
    argv.extend_from_slice(args);
    run(&argv)
}

/// The argv that runs `argv` inside namespace `ns` (`ip netns exec NS ...`).
pub fn ns_argv<S: AsRef<OsStr>>(ns: &str, argv: &[S]) -> Vec<String> {
    let mut v = vec![
        "ip".to_string(),
        "netns".to_string(),
        "exec".to_string(),
        ns.to_string(),
    ];
    v.extend(
        argv.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned()),
    );
    v
}

/// Run `argv` inside namespace `ns`, wait for it, return its stdout (error on non-zero exit).
pub fn exec_in<S: AsRef<OsStr>>(ns: &str, argv: &[S]) -> Result<String> {
    run(&ns_argv(ns, argv))
}

/// Run a `sh -c SCRIPT` inside namespace `ns`.
pub fn sh_in(ns: &str, script: &str) -> Result<String> {
    exec_in(ns, &["sh", "-c", script])
}

/// A process started by [`spawn_in`]: sent SIGTERM, then SIGKILL after a grace period, when the
/// handle is dropped (unless it already exited).
#[derive(Debug)]
pub struct NsChild {
    /// What it is (for messages).
    pub label: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
}

impl NsChild {
    /// Wrap an already spawned child.
    pub fn from_child(label: impl Into<String>, child: Child) -> Self {
        NsChild {
            label: label.into(),
            child: Some(child),
            status: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The underlying child (e.g. to take its stdout pipe).
    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Still running?
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// Non-blocking: the exit status when it has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none()
            && let Some(c) = self.child.as_mut()
            && let Ok(Some(st)) = c.try_wait()
        {
            self.status = Some(st);
            crate::signals::unregister_child(c.id());
        }
        self.status
    }

    /// Wait up to `timeout` for it to exit by itself.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Send a signal (e.g. `libc::SIGTERM`, `libc::SIGSTOP`) if it is still running.
    pub fn signal(&mut self, sig: i32) -> Result<()> {
        if self.try_wait().is_some() {
            bail!("{} already exited", self.label);
        }
        let pid = self.pid().ok_or_else(|| anyhow!("no child"))? as libc::pid_t;
        // SAFETY: plain kill(2) on our own child's pid (not yet reaped, so not reused).
        if unsafe { libc::kill(pid, sig) } != 0 {
            bail!(
                "kill({pid}, {sig}) failed: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    /// SIGKILL now and reap (a crash, as far as peers can tell).
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if self.try_wait().is_none()
            && let Some(c) = self.child.as_mut()
        {
            let _ = c.kill();
            if let Ok(st) = c.wait() {
                self.status = Some(st);
                crate::signals::unregister_child(c.id());
            }
        }
        self.status
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL. Returns the exit status.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if self.try_wait().is_some() {
            return self.status;
        }
        let _ = self.signal(libc::SIGTERM);
        if let Some(st) = self.wait_timeout(grace) {
            return Some(st);
        }
        self.kill()
    }

    /// Wait for it to exit (no timeout).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(st) = self.status {
            return Ok(st);
        }
        let c = self.child.as_mut().ok_or_else(|| anyhow!("no child"))?;
        let st = c.wait()?;
        self.status = Some(st);
        crate::signals::unregister_child(c.id());
        Ok(st)
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

/// Spawn `argv` inside namespace `ns` (stdin null, stdout/stderr inherited). The process is
/// stopped when the returned handle drops.
pub fn spawn_in<S: AsRef<OsStr>>(ns: &str, argv: &[S]) -> Result<NsChild> {
    spawn_with(ns, argv, Stdio::inherit(), Stdio::inherit())
}

/// Like [`spawn_in`] with stdout and stderr appended to `log`.
pub fn spawn_in_logged<S: AsRef<OsStr>>(ns: &str, argv: &[S], log: &Path) -> Result<NsChild> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let f = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let f2 = f.try_clone()?;
    spawn_with(ns, argv, Stdio::from(f), Stdio::from(f2))
}

/// Like [`spawn_in`] with stdout piped (read it with `child_mut().stdout.take()`).
pub fn spawn_in_piped<S: AsRef<OsStr>>(ns: &str, argv: &[S]) -> Result<NsChild> {
    spawn_with(ns, argv, Stdio::piped(), Stdio::inherit())
}

fn spawn_with<S: AsRef<OsStr>>(ns: &str, argv: &[S], out: Stdio, err: Stdio) -> Result<NsChild> {
    let full = ns_argv(ns, argv);
    let child = Command::new(&full[0])
        .args(&full[1..])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot spawn {}", show(&full)))?;
    Ok(NsChild::from_child(format!("[{ns}] {}", show(argv)), child))
}

/// Enter namespace `ns` on the calling thread (only this thread; threads it creates later
/// inherit it).
pub fn enter_netns(ns: &str) -> Result<()> {
    let path = Path::new("/run/netns").join(ns);
    let f = File::open(&path).with_context(|| format!("open {}", path.display()))?;
    // SAFETY: setns on a valid namespace fd; affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns({}) failed: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Run `f` on a new thread that lives in namespace `ns`. Sockets it creates belong to `ns` and
/// may be used from any thread afterwards. A tokio runtime built inside `f` runs in `ns` too.
pub fn spawn_thread_in<F, T>(ns: &str, f: F) -> JoinHandle<Result<T>>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    let ns = ns.to_string();
    std::thread::Builder::new()
        .name(format!("netns-{ns}"))
        .spawn(move || {
            enter_netns(&ns)?;
            f()
        })
        .expect("spawn thread")
}

/// Run `f` inside namespace `ns` and wait for its result.
pub fn in_netns<F, T>(ns: &str, f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    spawn_thread_in(ns, f)
        .join()
        .map_err(|_| anyhow!("thread in netns {ns} panicked"))?
}

/// Wait until a TCP connect from namespace `ns` to `addr` succeeds.
pub fn wait_tcp_connect(ns: &str, addr: SocketAddr, timeout: Duration) -> Result<()> {
    let ns2 = ns.to_string();
    in_netns(ns, move || {
        let deadline = Instant::now() + timeout;
        loop {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(500)) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    bail!("no TCP connect from netns {ns2} to {addr} within {timeout:?}: {e}")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    })
}

/// Wait until something listens on TCP `port` inside namespace `ns` (by reading
/// `/proc/net/tcp` from a thread in the namespace; no connection is made).
pub fn wait_tcp_listen(ns: &str, port: u16, timeout: Duration) -> Result<()> {
    let ns2 = ns.to_string();
    in_netns(ns, move || {
        let deadline = Instant::now() + timeout;
        loop {
            if tcp_listening(port)? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("nothing listens on TCP port {port} in netns {ns2} after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}

/// Wait until a TCP port listens on 127.0.0.1 / any address in the current (root) namespace.
pub fn wait_tcp_listen_here(port: u16, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if tcp_listening(port)? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on TCP port {port} after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether a socket in state LISTEN has local port `port` in the calling thread's namespace.
/// `/proc/thread-self/net` follows the thread's namespace, unlike `/proc/net` on older kernels.
fn tcp_listening(port: u16) -> Result<bool> {
    for file in ["/proc/thread-self/net/tcp", "/proc/thread-self/net/tcp6"] {
        let mut s = String::new();
        match File::open(file) {
            Ok(mut f) => {
                f.read_to_string(&mut s)?;
            }
            Err(_) => continue,
        }
        for line in s.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if cols.len() < 4 {
                continue;
            }
            let local = cols[1];
            let st = cols[3];
            if st != "0A" {
                continue;
            }
            if let Some((_, p)) = local.rsplit_once(':')
                && u16::from_str_radix(p, 16).ok() == Some(port)
            {
                return Ok(true);
            }
        }
    }
    Ok(false)
}

/// Raise RLIMIT_NOFILE's soft limit as far as allowed (and the hard limit too when root), so
/// that tens of thousands of sockets fit. Returns the new soft limit.
pub fn raise_nofile(want: u64) -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid struct pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 0;
        }
        if rl.rlim_max < want as libc::rlim_t {
            let try_rl = libc::rlimit {
                rlim_cur: want as libc::rlim_t,
                rlim_max: want as libc::rlim_t,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &try_rl) == 0 {
                return want;
            }
        }
        let cur = (want as libc::rlim_t).min(rl.rlim_max);
        if cur > rl.rlim_cur {
            let new = libc::rlimit {
                rlim_cur: cur,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &new) == 0 {
                return cur;
            }
        }
        rl.rlim_cur
    }
}

/// Turn transmit checksum offload of `ifname` (in the calling thread's namespace) on or off,
/// like `ethtool -K IF tx off`. Off also turns TSO off, so the kernel sends complete,
/// MTU-sized frames with computed checksums: needed on every interface that sends into a
/// software switch reading its ports with AF_PACKET (a veth otherwise hands over frames whose
/// TCP checksum was never filled in, which the switch then forwards as corrupt).
pub fn set_tx_checksum_here(ifname: &str, on: bool) -> Result<()> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_STXCSUM: u32 = 0x17;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [libc::c_char; libc::IFNAMSIZ],
        data: *mut libc::c_void,
        _pad: [u8; 16],
    }
    if ifname.len() >= libc::IFNAMSIZ {
        bail!("interface name {ifname} too long");
    }
    let mut val = EthtoolValue {
        cmd: ETHTOOL_STXCSUM,
        data: on as u32,
    };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        data: &mut val as *mut EthtoolValue as *mut libc::c_void,
        _pad: [0; 16],
    };
    for (d, s) in req.name.iter_mut().zip(ifname.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: a datagram socket used only for the SIOCETHTOOL ioctl with a valid ifreq whose
    // data pointer refers to a live ethtool_value; the socket is closed right after.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            bail!("socket: {}", std::io::Error::last_os_error());
        }
        let rc = libc::ioctl(fd, SIOCETHTOOL as _, &mut req as *mut IfReq);
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if rc != 0 {
            bail!(
                "ethtool tx {} on {ifname}: {err}",
                if on { "on" } else { "off" }
            );
        }
    }
    Ok(())
}

/// [`set_tx_checksum_here`] for an interface inside namespace `ns` (`None` = this namespace).
pub fn set_tx_checksum(ns: Option<&str>, ifname: &str, on: bool) -> Result<()> {
    match ns {
        None => set_tx_checksum_here(ifname, on),
        Some(ns) => {
            let ifname = ifname.to_string();
            in_netns(ns, move || set_tx_checksum_here(&ifname, on))
        }
    }
}

/// A TCP port that is free on every address right now, for a process started later to listen
/// on. It is drawn below the kernel's ephemeral range (`ip_local_port_range`): a port the kernel
/// hands out (port 0) can be taken meanwhile by any outgoing connection as its local port — a
/// CI run saw gobgpd's BGP session to BIRD take the controller's agent port on the same
/// address. Distinct within one process (a sequence number spreads the draws).
pub fn free_local_port() -> Result<u16> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let ephemeral_lo = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (lo, hi) = (10_000u16, ephemeral_lo.max(10_001));
    let span = u64::from(hi - lo);
    let mut x = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
    for _ in 0..1000 {
        x = x
            .wrapping_add(SEQ.fetch_add(1, Ordering::Relaxed))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let port = lo + ((x >> 33) % span) as u16;
        if std::net::TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)).is_ok() {
            return Ok(port);
        }
    }
    // Fall back to the kernel's choice.
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}
