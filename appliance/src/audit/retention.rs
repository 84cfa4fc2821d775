//! Retention: sealed segments older than `retention_days` are removed,
//! oldest first, and each removal is recorded in the same chain (a
//! `retention` record naming the file and the seq range it held), so that
//! `verify` can tell a chain shortened by policy from one cut by hand.
//!
//! The age of a segment is the time it was last written (its mtime): a
//! sealed segment is never written again, so that is when it was sealed.
//! The segment being written and the newest segment of a chain are never
//! removed.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::segment;

/// One removed segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Its file name.
    pub name: String,
    /// The seq of its first record.
    pub first_seq: u64,
    /// The seq of the first record after it (the next segment's first).
    pub end_seq: u64,
}

/// Removes shard `shard`'s expired sealed segments under `dir`.
pub fn remove_expired(
    dir: &Path,
    shard: u16,
    current: Option<&Path>,
    keep: Duration,
) -> std::io::Result<Vec<Removed>> {
    let all = segment::list(dir)?;
    let Some(mine) = all.into_iter().find(|v| v[0].shard == shard) else {
        return Ok(Vec::new());
    };
    let now = SystemTime::now();
    let mut removed = Vec::new();
    // Only a prefix goes: a chain keeps no holes.
    for pair in mine.windows(2) {
        let (seg, next) = (&pair[0], &pair[1]);
        if current == Some(seg.path.as_path()) {
            break;
        }
        let modified = std::fs::metadata(&seg.path)?.modified()?;
        if now.duration_since(modified).unwrap_or_default() < keep {
            break;
        }
        std::fs::remove_file(&seg.path)?;
        removed.push(Removed {
            name: seg
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            first_seq: seg.first_seq,
            end_seq: next.first_seq,
        });
    }
    if !removed.is_empty() {
        segment::sync_dir(dir)?;
    }
    Ok(removed)
}
