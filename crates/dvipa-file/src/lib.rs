//! The one way dvipa reads a file an operator names (configuration TOML, P4Info, device
//! configs, PEM certificates and keys): [`read_capped`].
//!
//! A path can name anything: `/dev/zero` never ends, a FIFO blocks until a writer appears, a
//! directory is not text, a log file can be gigabytes. So the file must be a regular file,
//! its size is checked before it is opened and again on the open handle, and the read itself
//! stops at `cap + 1` bytes (a file that grows meanwhile is refused too). Errors are
//! `std::io::Error`s whose text says what the path is instead, or how big it is, for the
//! caller to prefix with the path and the setting that named it.

use std::fs::{File, Metadata};
use std::io::{Error, ErrorKind, Read};
use std::path::Path;

/// Reads `path` if it is a regular file of at most `cap` bytes; otherwise the error says what
/// it is instead (`not a regular file (character device)`) or how big it is
/// (`101 bytes, over the limit of 100 bytes`).
pub fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    read(path, cap, None)
}

/// [`read_capped`] for a file of a named format (`"PEM"`): the errors say
/// `not a regular file (character device; a PEM file must be one)` and
/// `… over the PEM limit of … bytes`.
pub fn read_capped_as(path: &Path, cap: u64, format: &str) -> std::io::Result<Vec<u8>> {
    read(path, cap, Some(format))
}

fn read(path: &Path, cap: u64, format: Option<&str>) -> std::io::Result<Vec<u8>> {
    let limit = match format {
        Some(f) => format!("the {f} limit"),
        None => "the limit".to_string(),
    };
    let check = |md: &Metadata| -> std::io::Result<()> {
        if !md.is_file() {
            let must = format
                .map(|f| format!("; a {f} file must be one"))
                .unwrap_or_default();
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!("not a regular file ({}{must})", file_kind(md)),
            ));
        }
        if md.len() > cap {
            return Err(Error::new(
                ErrorKind::InvalidData,
                format!("{} bytes, over {limit} of {cap} bytes", md.len()),
            ));
        }
        Ok(())
    };
    // Look before opening: opening a FIFO for reading would block until a writer appears.
    check(&std::fs::metadata(path)?)?;
    let f = File::open(path)?;
    // The path may have been replaced between the look and the open.
    check(&f.metadata()?)?;
    let mut buf = Vec::new();
    f.take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(Error::new(
            ErrorKind::InvalidData,
            format!("grew over {limit} of {cap} bytes while being read"),
        ));
    }
    Ok(buf)
}

/// What kind of file `md` describes, for messages (`directory`, `character device`, `FIFO` …).
pub fn file_kind(md: &Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_dir() {
        "directory"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else if t.is_file() {
        "regular file"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn devices_directories_and_fifos_are_refused_without_reading() {
        let t = Instant::now();
        let e = read_capped(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (character device)");
        let e = read_capped(Path::new("/"), 1 << 20).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (directory)");
        let dir = std::env::temp_dir().join(format!("dvipa-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read_capped_as(&fifo, 100, "PEM").unwrap_err();
        assert_eq!(
            e.to_string(),
            "not a regular file (FIFO; a PEM file must be one)"
        );
        // Nothing blocked on the FIFO or read /dev/zero to its (missing) end.
        assert!(t.elapsed() < Duration::from_secs(5));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_cap_is_inclusive_and_named() {
        let dir = std::env::temp_dir().join(format!("dvipa-file-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("big");
        std::fs::write(&f, vec![b'#'; 101]).unwrap();
        let e = read_capped(&f, 100).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidData);
        assert_eq!(e.to_string(), "101 bytes, over the limit of 100 bytes");
        let e = read_capped_as(&f, 100, "PEM").unwrap_err().to_string();
        assert_eq!(e, "101 bytes, over the PEM limit of 100 bytes");
        assert_eq!(read_capped(&f, 101).unwrap().len(), 101);
        let e = read_capped(&dir.join("missing"), 1).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        std::fs::remove_dir_all(&dir).ok();
    }

    unsafe extern "C" {
        fn mkfifo(path: *const std::ffi::c_char, mode: u32) -> i32;
    }
}
