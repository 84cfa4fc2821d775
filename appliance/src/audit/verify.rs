//! `custos audit verify`: checks everything a reader of the trail relies
//! on and stops at the first problem, naming the file and the offset.
//!
//! Per chain: every segment header (magic, CRC, the shard and first seq its
//! name claims), seqs without gap or repeat across segments, every record's
//! CRC, every record naming its predecessor's hash (and each segment header
//! naming the hash of the record before it), every body decoding. Every
//! checkpoint's signature, by the pinned key when one is given, else by
//! the key of the first checkpoint (and the same key throughout). Across
//! chains: every head a checkpoint names exists with that hash, so a chain
//! cut short at a record boundary, or whose last segment was deleted, is
//! found by the checkpoints of the others (and by its own earlier ones). A
//! chain that starts after seq 0 must have a `retention` record saying
//! which segments were removed.
//!
//! What cannot be found: records appended after the last checkpoint and
//! then cut at a record boundary of a single-shard trail, since nothing
//! signed names them yet; the report says how many records are not yet
//! covered by a checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::checkpoint;
use super::record::{Kind, Record};
use super::segment::{self, Hash, Header};
use super::sign::PUBLIC_KEY_BYTES;

/// What a successful verification saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Chains (shards).
    pub chains: usize,
    /// Segment files.
    pub segments: usize,
    /// Records.
    pub records: u64,
    /// Checkpoints (one per chain each time).
    pub checkpoints: u64,
    /// Records after the last checkpoint of their chain.
    pub unsigned_tail: u64,
    /// The key that signed, in text form.
    pub key: Option<String>,
    /// Whether the key was pinned by the caller.
    pub pinned: bool,
}

/// A problem: the file, the offset and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// The offset in it.
    pub offset: usize,
    /// What is wrong.
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: offset {}: {}",
            self.file.display(),
            self.offset,
            self.what
        )
    }
}

struct Claim {
    shard: u16,
    next_seq: u64,
    hash: Hash,
    file: PathBuf,
    offset: usize,
}

struct ChainSeen {
    /// Seq of `hashes[0]`.
    base: u64,
    /// First 8 bytes of each record's hash, by seq - base.
    hashes: Vec<u64>,
    /// The last file and its length, to name in a problem.
    last_file: PathBuf,
}

fn short(h: &Hash) -> u64 {
    u64::from_le_bytes(h[..8].try_into().unwrap_or_default())
}

/// Verifies the trail under `dir`.
pub fn verify(dir: &Path, pinned: Option<[u8; PUBLIC_KEY_BYTES]>) -> Result<Report, Problem> {
    let problem = |file: &Path, offset: usize, what: String| Problem {
        file: file.to_path_buf(),
        offset,
        what,
    };
    let lists = segment::list(dir).map_err(|e| problem(dir, 0, e.to_string()))?;
    if lists.is_empty() {
        return Err(problem(dir, 0, "no audit segments here".into()));
    }
    let mut report = Report {
        pinned: pinned.is_some(),
        ..Report::default()
    };
    let mut key = pinned;
    let mut claims: Vec<Claim> = Vec::new();
    let mut seen: HashMap<u16, ChainSeen> = HashMap::new();

    for list in &lists {
        report.chains += 1;
        let shard = list[0].shard;
        let mut expect: Option<(u64, Hash)> = None;
        let mut chain = ChainSeen {
            base: list[0].first_seq,
            hashes: Vec::new(),
            last_file: list[0].path.clone(),
        };
        let mut retention_ends: Vec<u64> = Vec::new();
        let mut since_checkpoint = 0u64;
        for seg in list {
            report.segments += 1;
            let file = &seg.path;
            chain.last_file = file.clone();
            let data = std::fs::read(file).map_err(|e| problem(file, 0, e.to_string()))?;
            let (header, header_len) = Header::decode(&data).map_err(|e| problem(file, 0, e))?;
            if header.shard != shard || header.first_seq != seg.first_seq {
                return Err(problem(
                    file,
                    0,
                    format!(
                        "header says shard {} seq {} but the file name says shard {shard} seq {} (renamed or swapped segment)",
                        header.shard, header.first_seq, seg.first_seq
                    ),
                ));
            }
            match expect {
                Some((seq, _)) if header.first_seq != seq => {
                    return Err(problem(
                        file,
                        0,
                        format!(
                            "segment starts at seq {} but the chain continues at seq {seq} (a segment is missing, truncated or out of order)",
                            header.first_seq
                        ),
                    ));
                }
                Some((_, hash)) if header.prev_hash != hash => {
                    return Err(problem(
                        file,
                        0,
                        "segment does not continue the chain (the hash it names is not the previous record's)".into(),
                    ));
                }
                _ => {}
            }
            let (mut next, mut prev) = expect.unwrap_or((header.first_seq, header.prev_hash));
            let mut at = header_len;
            loop {
                let f = match segment::read_frame(&data, at) {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) => return Err(problem(file, at, e.to_string())),
                };
                if f.seq != next {
                    return Err(problem(
                        file,
                        at,
                        format!(
                            "record has seq {}, expected {next} (records missing, repeated or reordered)",
                            f.seq
                        ),
                    ));
                }
                if f.prev != prev {
                    return Err(problem(
                        file,
                        at,
                        format!(
                            "record {} does not name its predecessor's hash (chain broken)",
                            f.seq
                        ),
                    ));
                }
                let r = Record::decode(f.body)
                    .map_err(|e| problem(file, at, format!("record {}: {e}", f.seq)))?;
                if r.shard != shard {
                    return Err(problem(
                        file,
                        at,
                        format!(
                            "record {} claims shard {} in shard {shard}'s chain",
                            f.seq, r.shard
                        ),
                    ));
                }
                since_checkpoint += 1;
                match r.kind {
                    Kind::Checkpoint => {
                        let c = checkpoint::decode(r.detail)
                            .map_err(|e| problem(file, at, format!("checkpoint {}: {e}", f.seq)))?;
                        match key {
                            None => key = Some(c.public_key),
                            Some(k) if k != c.public_key => {
                                return Err(problem(
                                    file,
                                    at,
                                    format!(
                                        "checkpoint {} is signed by {}, not by {}",
                                        f.seq,
                                        super::sign::public_text(&c.public_key),
                                        super::sign::public_text(&k)
                                    ),
                                ));
                            }
                            Some(_) => {}
                        }
                        if !c.signature_ok {
                            return Err(problem(
                                file,
                                at,
                                format!("checkpoint {}: bad signature", f.seq),
                            ));
                        }
                        for h in c.heads {
                            claims.push(Claim {
                                shard: h.shard,
                                next_seq: h.next_seq,
                                hash: h.hash,
                                file: file.clone(),
                                offset: at,
                            });
                        }
                        report.checkpoints += 1;
                        since_checkpoint = 0;
                    }
                    Kind::Retention => {
                        if let Some(end) = r
                            .args
                            .iter()
                            .nth(2)
                            .and_then(|v| std::str::from_utf8(v).ok())
                            .and_then(|v| v.parse().ok())
                        {
                            retention_ends.push(end);
                        }
                    }
                    _ => {}
                }
                chain.hashes.push(short(&f.hash));
                report.records += 1;
                prev = f.hash;
                next += 1;
                at = f.end;
            }
            expect = Some((next, prev));
        }
        if chain.base > 0 && !retention_ends.contains(&chain.base) {
            return Err(problem(
                &list[0].path,
                0,
                format!(
                    "shard {shard}'s chain starts at seq {} and no retention record says records before it were removed (a segment was deleted)",
                    chain.base
                ),
            ));
        }
        report.unsigned_tail += since_checkpoint;
        seen.insert(shard, chain);
    }

    for c in &claims {
        if c.next_seq == 0 {
            continue;
        }
        let want = c.next_seq - 1;
        let Some(chain) = seen.get(&c.shard) else {
            return Err(problem(
                &c.file,
                c.offset,
                format!(
                    "checkpoint names shard {} up to seq {want}, but that chain has no segment (deleted)",
                    c.shard
                ),
            ));
        };
        if want < chain.base {
            continue; // removed by retention, which its chain recorded
        }
        match chain.hashes.get((want - chain.base) as usize) {
            None => {
                return Err(problem(
                    &c.file,
                    c.offset,
                    format!(
                        "checkpoint names shard {} up to seq {want}, but that chain ends at seq {} in {} (truncated, or a segment deleted)",
                        c.shard,
                        (chain.base + chain.hashes.len() as u64).saturating_sub(1),
                        chain.last_file.display()
                    ),
                ));
            }
            Some(h) if *h != short(&c.hash) => {
                return Err(problem(
                    &c.file,
                    c.offset,
                    format!(
                        "checkpoint names a different record {want} of shard {} than its chain holds",
                        c.shard
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    report.key = key.map(|k| super::sign::public_text(&k));
    Ok(report)
}
