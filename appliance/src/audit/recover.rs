//! Crash recovery: each shard's last segment is checked at start.
//!
//! A crash (or `kill -9`, or a power cut under `async`) can leave the last
//! record of a segment half written. Its CRC or its length gives it away;
//! it is cut off, the chain continues from the last whole record, and the
//! drain appends a `recovery` record saying what was cut, where. A segment
//! whose header itself is incomplete (the crash came while it was being
//! created) holds no record and is removed, also noted.
//!
//! Only the tail is examined here; `custos audit verify` checks everything.

use std::path::Path;

use super::segment::{self, Hash, Header, SegmentName, SegmentWriter};

/// Where a chain continues.
pub struct Recovered {
    /// The last segment, opened for appending; `None` to start a new one.
    pub writer: Option<SegmentWriter>,
    /// Seq of the next record.
    pub next_seq: u64,
    /// Hash of the last record.
    pub head: Hash,
    /// What was repaired, for the `recovery` record.
    pub note: Option<String>,
}

/// Checks the tail of one shard's chain (`segments` in seq order).
pub fn recover(dir: &Path, segments: &[SegmentName]) -> Result<Recovered, String> {
    let mut notes: Vec<String> = Vec::new();
    let mut segments = segments;
    loop {
        let Some(last) = segments.last() else {
            return Ok(Recovered {
                writer: None,
                next_seq: 0,
                head: [0; 32],
                note: join(notes),
            });
        };
        let name = last
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let data =
            std::fs::read(&last.path).map_err(|e| format!("{}: {e}", last.path.display()))?;
        let (header, header_len) = match Header::decode(&data) {
            Ok(h) => h,
            Err(e) if data.len() < 1100 => {
                // Created but never completed: it cannot hold a record.
                std::fs::remove_file(&last.path)
                    .map_err(|e| format!("{}: {e}", last.path.display()))?;
                segment::sync_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
                notes.push(format!(
                    "removed {name}: its header was never completed ({e}; {} bytes)",
                    data.len()
                ));
                segments = &segments[..segments.len() - 1];
                continue;
            }
            Err(e) => {
                return Err(format!(
                    "{}: {e}; refusing to append to a damaged trail (run `custos audit verify`)",
                    last.path.display()
                ));
            }
        };
        let mut at = header_len;
        let mut next_seq = header.first_seq;
        let mut head = header.prev_hash;
        let mut cut: Option<(usize, segment::FrameError)> = None;
        loop {
            match segment::read_frame(&data, at) {
                Ok(Some(f)) => {
                    next_seq = f.seq + 1;
                    head = f.hash;
                    at = f.end;
                }
                Ok(None) => break,
                Err(e) => {
                    cut = Some((at, e));
                    break;
                }
            }
        }
        if let Some((offset, why)) = &cut {
            notes.push(format!(
                "cut {} bytes at offset {offset} of {name} ({why}); the chain continues from seq {}",
                data.len() - offset,
                next_seq.saturating_sub(1)
            ));
        }
        let writer = SegmentWriter::reopen(&last.path, at as u64, header.created_ns)
            .map_err(|e| format!("{}: {e}", last.path.display()))?;
        if cut.is_some() {
            writer_sync(&writer)?;
        }
        return Ok(Recovered {
            writer: Some(writer),
            next_seq,
            head,
            note: join(notes),
        });
    }
}

fn writer_sync(w: &SegmentWriter) -> Result<(), String> {
    std::fs::File::open(&w.path)
        .and_then(|f| f.sync_all())
        .map_err(|e| format!("{}: {e}", w.path.display()))
}

fn join(notes: Vec<String>) -> Option<String> {
    if notes.is_empty() {
        None
    } else {
        Some(notes.join("; "))
    }
}
