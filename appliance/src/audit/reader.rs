//! Reading the trail back for the command line: each shard's chain in seq
//! order, and all chains merged in time order.
//!
//! Readers check each record's CRC but not the chain (that is `verify`'s
//! job). A record cut short at the very end of a chain's newest segment is
//! where a running appliance is writing: it ends the chain for now.

use std::path::{Path, PathBuf};

use super::record::Record;
use super::segment::{self, FrameError, Header, SegmentName};

/// One record read back.
#[derive(Debug, Clone)]
pub struct Item {
    /// The chain.
    pub shard: u16,
    /// The segment file.
    pub file: PathBuf,
    /// The frame's offset in the file.
    pub offset: usize,
    /// The record's seq.
    pub seq: u64,
    /// Its body.
    pub body: Vec<u8>,
}

impl Item {
    /// The decoded record.
    pub fn record(&self) -> Result<Record<'_>, String> {
        Record::decode(&self.body)
            .map_err(|e| format!("{}: offset {}: {e}", self.file.display(), self.offset))
    }

    fn time_ns(&self) -> u64 {
        self.body
            .get(8..16)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes)
    }
}

/// One shard's chain.
pub struct ChainReader {
    segments: Vec<SegmentName>,
    next_segment: usize,
    data: Vec<u8>,
    file: PathBuf,
    pos: usize,
    done: bool,
}

impl ChainReader {
    /// Reads the given segments (one shard's, in seq order).
    pub fn new(segments: Vec<SegmentName>) -> ChainReader {
        ChainReader {
            segments,
            next_segment: 0,
            data: Vec::new(),
            file: PathBuf::new(),
            pos: 0,
            done: false,
        }
    }

    fn open_next(&mut self) -> Result<bool, String> {
        let Some(seg) = self.segments.get(self.next_segment) else {
            return Ok(false);
        };
        self.next_segment += 1;
        self.data = std::fs::read(&seg.path).map_err(|e| format!("{}: {e}", seg.path.display()))?;
        self.file = seg.path.clone();
        let (_, len) = Header::decode(&self.data)
            .map_err(|e| format!("{}: offset 0: {e}", seg.path.display()))?;
        self.pos = len;
        Ok(true)
    }
}

impl Iterator for ChainReader {
    type Item = Result<Item, String>;

    fn next(&mut self) -> Option<Result<Item, String>> {
        if self.done {
            return None;
        }
        loop {
            if self.pos == 0 || self.pos >= self.data.len() {
                match self.open_next() {
                    Ok(true) => continue,
                    Ok(false) => {
                        self.done = true;
                        return None;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            return match segment::read_frame(&self.data, self.pos) {
                Ok(Some(f)) => {
                    let item = Item {
                        shard: self.segments[0].shard,
                        file: self.file.clone(),
                        offset: f.offset,
                        seq: f.seq,
                        body: f.body.to_vec(),
                    };
                    self.pos = f.end;
                    Some(Ok(item))
                }
                Ok(None) => {
                    self.pos = self.data.len();
                    continue;
                }
                Err(FrameError::Torn) if self.next_segment == self.segments.len() => {
                    self.done = true;
                    None
                }
                Err(e) => {
                    self.done = true;
                    Some(Err(format!(
                        "{}: offset {}: {e}",
                        self.file.display(),
                        self.pos
                    )))
                }
            };
        }
    }
}

/// Every chain under `dir`, merged by record time.
pub struct Merged {
    chains: Vec<std::iter::Peekable<ChainReader>>,
}

impl Merged {
    /// Opens every chain under `dir`.
    pub fn open(dir: &Path) -> Result<Merged, String> {
        let lists = segment::list(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Merged {
            chains: lists
                .into_iter()
                .map(|l| ChainReader::new(l).peekable())
                .collect(),
        })
    }
}

impl Iterator for Merged {
    type Item = Result<Item, String>;

    fn next(&mut self) -> Option<Result<Item, String>> {
        let mut best: Option<(usize, u64)> = None;
        for (i, c) in self.chains.iter_mut().enumerate() {
            match c.peek() {
                None => {}
                Some(Err(_)) => return c.next(),
                Some(Ok(item)) => {
                    let t = item.time_ns();
                    if best.is_none_or(|(_, bt)| t < bt) {
                        best = Some((i, t));
                    }
                }
            }
        }
        let (i, _) = best?;
        self.chains[i].next()
    }
}
