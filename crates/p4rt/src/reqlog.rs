//! Request log: every request sent to one switch, appended in protobuf text format to one file
//! (the format the p4lang tutorials' `--log-file` produces, so P4 users can diff them).
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};

/// Appends requests in text format to a file.
#[derive(Debug)]
pub struct RequestLog {
    path: PathBuf,
    file: Mutex<File>,
    pool: DescriptorPool,
}

impl RequestLog {
    /// Creates (truncates) the log file.
    pub fn create(path: impl AsRef<Path>) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path)?;
        let pool = DescriptorPool::decode(p4rt_proto::FILE_DESCRIPTOR_SET)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(RequestLog {
            path,
            file: Mutex::new(file),
            pool,
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one request. `type_name` is the full protobuf name (`p4.v1.WriteRequest`).
    /// Logging failures are reported through `tracing` and never fail the request.
    pub fn log(&self, rpc: &str, type_name: &str, msg: &impl Message) {
        let text = match self.pool.get_message_by_name(type_name) {
            Some(desc) => match DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()) {
                Ok(d) => d.to_text_format_with_options(
                    &prost_reflect::text_format::FormatOptions::new().pretty(true),
                ),
                Err(e) => format!("# undecodable: {e}"),
            },
            None => format!("# unknown message type {type_name}"),
        };
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let entry = format!(
            "[{}.{:06}] {rpc}\n{}\n\n",
            ts.as_secs(),
            ts.subsec_micros(),
            text.trim_end()
        );
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(entry.as_bytes()) {
            tracing::warn!(path = %self.path.display(), error = %e, "request log write failed");
        }
    }
}
