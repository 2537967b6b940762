//! The record log: one JSON object per completion record (content excluded), appended to a
//! file — for audits, debugging, and the end-to-end tests.

use tokio::io::AsyncWriteExt;

use crate::record::CompletionRecord;

/// Appends one JSON object per record to a file.
pub(crate) struct RecordLog {
    file: tokio::io::BufWriter<tokio::fs::File>,
    failed: bool,
}

impl RecordLog {
    pub(crate) async fn open(path: &std::path::Path) -> std::io::Result<Self> {
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await?;
        Ok(Self {
            file: tokio::io::BufWriter::new(file),
            failed: false,
        })
    }

    pub(crate) async fn write(&mut self, record: &CompletionRecord) {
        let mut line = match serde_json::to_vec(record) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(error = %e, "cannot serialize completion record");
                return;
            }
        };
        line.push(b'\n');
        if let Err(e) = self.file.write_all(&line).await {
            self.warn_once(&e);
        }
    }

    pub(crate) async fn flush(&mut self) {
        if let Err(e) = self.file.flush().await {
            self.warn_once(&e);
        }
    }

    fn warn_once(&mut self, e: &std::io::Error) {
        if !self.failed {
            self.failed = true;
            tracing::error!(error = %e, "writing broadcast.record_log failed");
        }
    }
}
