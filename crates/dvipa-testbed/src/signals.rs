//! Cleanup when the process is interrupted (Ctrl-C, SIGTERM, SIGHUP): `Drop` does not run then,
//! so [`cleanup_on_signals`] installs handlers that kill the root-namespace children spawned
//! through this crate (switches) and remove every live testbed, then exit with 130.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static LIVE_PREFIXES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static ROOT_CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static INSTALLED: AtomicBool = AtomicBool::new(false);
static PIPE_WR: AtomicI32 = AtomicI32::new(-1);

pub(crate) fn register_prefix(p: &str) {
    LIVE_PREFIXES.lock().expect("lock").push(p.to_string());
}

pub(crate) fn unregister_prefix(p: &str) {
    LIVE_PREFIXES.lock().expect("lock").retain(|x| x != p);
}

pub(crate) fn register_child(pid: u32) {
    ROOT_CHILDREN.lock().expect("lock").push(pid);
}

pub(crate) fn unregister_child(pid: u32) {
    ROOT_CHILDREN.lock().expect("lock").retain(|x| *x != pid);
}

extern "C" fn on_signal(_sig: libc::c_int) {
    let fd = PIPE_WR.load(Ordering::Relaxed);
    if fd >= 0 {
        let b = 1u8;
        // SAFETY: write(2) is async-signal-safe; one byte from a live stack variable.
        unsafe {
            libc::write(fd, &b as *const u8 as *const libc::c_void, 1);
        }
    }
}

/// Install SIGINT/SIGTERM/SIGHUP handlers (once per process) that, on the first signal, SIGKILL
/// the switches started with [`crate::topo::Testbed::spawn_switch`] /
/// [`crate::topo::spawn_root_logged`], tear down every testbed still alive in this process
/// (its namespaces' processes included), and exit with status 130. For the demo and for
/// hand-run scenarios; tests do not need it (their `Drop`s run on failure). Installing a
/// runtime's own handler for the same signals afterwards replaces these.
pub fn cleanup_on_signals() -> anyhow::Result<()> {
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 with a valid 2-int array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        anyhow::bail!("pipe2: {}", std::io::Error::last_os_error());
    }
    PIPE_WR.store(fds[1], Ordering::SeqCst);
    let rd = fds[0];
    std::thread::Builder::new()
        .name("dvipa-testbed-signals".into())
        .spawn(move || {
            let mut b = 0u8;
            // SAFETY: blocking read of one byte from our pipe.
            let n = unsafe { libc::read(rd, &mut b as *mut u8 as *mut libc::c_void, 1) };
            if n != 1 {
                return;
            }
            eprintln!("dvipa-testbed: interrupted; cleaning up");
            for pid in ROOT_CHILDREN.lock().map(|v| v.clone()).unwrap_or_default() {
                // SAFETY: kill(2) on a child this process spawned and has not reaped.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            for p in LIVE_PREFIXES.lock().map(|v| v.clone()).unwrap_or_default() {
                if let Err(e) = crate::topo::cleanup(&p) {
                    eprintln!("dvipa-testbed: cleanup {p}: {e:#}");
                }
            }
            std::process::exit(130);
        })?;
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing a handler that only calls write(2).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                anyhow::bail!("sigaction: {}", std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}
