//! `<state_dir>/owners.toml`: the routing switch of each DVIPA, persisted across controller
//! restarts ([`OwnerStore`]).

use crate::shared::Shared;
use dvipa_core::config::{OWNERS_FILE, OwnerState};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How soon a failed write of the owners file is retried (until it succeeds).
pub const PERSIST_RETRY: Duration = Duration::from_millis(500);

/// `<state_dir>/owners.toml`: the routing switch of each DVIPA, written atomically (temporary
/// file, fsync, rename, fsync of the directory) when it differs from what was last written.
#[derive(Debug)]
pub struct OwnerStore {
    path: PathBuf,
    last: parking_lot::Mutex<Option<Vec<(Ipv4Addr, String, bool)>>>,
}

impl OwnerStore {
    /// The store in `dir` (created on the first write).
    pub fn new(dir: &Path) -> OwnerStore {
        OwnerStore {
            path: dir.join(OWNERS_FILE),
            last: parking_lot::Mutex::new(None),
        }
    }

    /// The state file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The persisted state; `Ok(None)` when there is no file yet.
    pub fn load(&self) -> Result<Option<OwnerState>, String> {
        let name = self.path.display().to_string();
        match dvipa_core::validate::read_capped(&self.path, dvipa_core::validate::TOML_CAP) {
            Ok(bytes) => {
                let text = dvipa_core::validate::utf8(&name, bytes)?;
                OwnerState::parse(&name, &text)
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", self.path.display())),
        }
    }

    /// Writes `ownership` unless it is what was last written; true when written.
    pub fn save(&self, ownership: Vec<(Ipv4Addr, String, bool)>) -> std::io::Result<bool> {
        let mut last = self.last.lock();
        if last.as_ref() == Some(&ownership) {
            return Ok(false);
        }
        let text = OwnerState::from_ownership(&ownership).to_toml();
        write_atomic(&self.path, text.as_bytes())?;
        *last = Some(ownership);
        Ok(true)
    }

    /// Persists the core's current ownership; false when the write failed (logged and
    /// counted; the caller retries).
    pub fn persist(&self, shared: &Shared) -> bool {
        let own = shared.with_core(|c| c.ownership());
        match self.save(own.clone()) {
            Ok(true) => {
                shared.stats.add("owner_state_written", 1);
                tracing::info!(path = %self.path.display(), owners = ?own, "DVIPA owners persisted");
                true
            }
            Ok(false) => true,
            Err(e) => {
                shared.stats.add("owner_state_write_failed", 1);
                // retried on every change: one line per 30 s (all counted)
                match p4rt::ratelimit::check("cannot persist the DVIPA owners") {
                    Some(suppressed) => {
                        tracing::warn!(path = %self.path.display(), error = %e, suppressed, "cannot persist the DVIPA owners")
                    }
                    None => {
                        tracing::debug!(path = %self.path.display(), error = %e, "cannot persist the DVIPA owners")
                    }
                }
                false
            }
        }
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(name);
    let r = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}
