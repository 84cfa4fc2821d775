//! Segment files: the on-disk form of each shard's hash chain.
//!
//! Every shard has its own chain of records, numbered from 0 with no gap,
//! stored in append-only segment files under `audit.dir`, named
//! `shard-<shard, 3 digits>-<first seq, 20 digits>.seg` so that a plain
//! listing sorts them. A segment is rotated when it reaches
//! `segment_bytes_max` or `segment_age_s`; a sealed segment is never
//! written again.
//!
//! # Segment header (little-endian)
//!
//! ```text
//! 0   8   magic "CUSTOSAU"
//! 8   u16 format version (1)
//! 10  u16 shard
//! 12  u32 header bytes (including the CRC at its end)
//! 16  u64 first seq
//! 24  u64 created, Unix ns
//! 32  32  hash of record first_seq - 1 (zeros for seq 0)
//! 64  u16 appliance id length, then the id
//! ..  u32 CRC-32 of every header byte before it
//! ```
//!
//! # Record frame
//!
//! ```text
//! u32 payload length
//! u32 CRC-32 (IEEE) of the payload
//! payload:
//!     u64 seq
//!     32  hash of the previous record of the chain
//!     body (see record.rs)
//! ```
//!
//! A record's hash is the SHA-256 of its payload, so each record commits to
//! all before it in its chain. The CRC finds torn writes and media errors
//! cheaply; the chain finds edits, deletions and reordering; checkpoint
//! records (see `checkpoint.rs`) sign the heads of every
//! chain, so a chain cut short at a record boundary is found by the
//! checkpoints of the others, and altered history cannot be re-chained
//! without the key.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Magic bytes at the start of every segment.
pub const MAGIC: &[u8; 8] = b"CUSTOSAU";
/// Segment format version.
pub const FORMAT: u16 = 1;
/// Bytes of a frame's length and CRC words.
pub const FRAME_HEADER_BYTES: usize = 8;
/// Bytes of a payload before the body.
pub const PAYLOAD_PREFIX_BYTES: usize = 8 + 32;
/// Longest payload a reader accepts; larger lengths are corruption.
pub const PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// A SHA-256.
pub type Hash = [u8; 32];

/// A segment's file name parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentName {
    /// The file.
    pub path: PathBuf,
    /// The shard whose chain it holds.
    pub shard: u16,
    /// The seq its name claims it starts with.
    pub first_seq: u64,
}

/// The file name of shard `shard`'s segment starting at `first_seq`.
pub fn file_name(shard: u16, first_seq: u64) -> String {
    format!("shard-{shard:03}-{first_seq:020}.seg")
}

/// Parses a segment file name.
pub fn parse_name(name: &str) -> Option<(u16, u64)> {
    let rest = name.strip_prefix("shard-")?.strip_suffix(".seg")?;
    let (shard, seq) = rest.split_once('-')?;
    Some((shard.parse().ok()?, seq.parse().ok()?))
}

/// Every segment under `dir`, per shard, in seq order.
pub fn list(dir: &Path) -> std::io::Result<Vec<Vec<SegmentName>>> {
    let mut all: Vec<SegmentName> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((shard, first_seq)) = parse_name(name) {
            all.push(SegmentName {
                path: entry.path(),
                shard,
                first_seq,
            });
        }
    }
    all.sort_by_key(|s| (s.shard, s.first_seq));
    let mut out: Vec<Vec<SegmentName>> = Vec::new();
    for s in all {
        match out.last_mut() {
            Some(v) if v[0].shard == s.shard => v.push(s),
            _ => out.push(vec![s]),
        }
    }
    Ok(out)
}

/// A segment's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Shard.
    pub shard: u16,
    /// First seq.
    pub first_seq: u64,
    /// Created, Unix ns.
    pub created_ns: u64,
    /// Hash of the record before the first.
    pub prev_hash: Hash,
    /// The appliance that wrote it.
    pub appliance_id: String,
}

impl Header {
    /// The encoded header.
    pub fn encode(&self) -> Vec<u8> {
        let id = &self.appliance_id.as_bytes()[..self.appliance_id.len().min(1024)];
        let len = 64 + 2 + id.len() + 4;
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT.to_le_bytes());
        out.extend_from_slice(&self.shard.to_le_bytes());
        out.extend_from_slice(&(len as u32).to_le_bytes());
        out.extend_from_slice(&self.first_seq.to_le_bytes());
        out.extend_from_slice(&self.created_ns.to_le_bytes());
        out.extend_from_slice(&self.prev_hash);
        out.extend_from_slice(&(id.len() as u16).to_le_bytes());
        out.extend_from_slice(id);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decodes the header at the start of `data`; returns it and its length.
    pub fn decode(data: &[u8]) -> Result<(Header, usize), String> {
        if data.len() < 70 {
            return Err("segment header is cut short".into());
        }
        if &data[..8] != MAGIC {
            return Err("not a custos audit segment (bad magic)".into());
        }
        let format = u16::from_le_bytes([data[8], data[9]]);
        if format != FORMAT {
            return Err(format!("segment format {format} is not supported"));
        }
        let len = u32::from_le_bytes(data[12..16].try_into().unwrap_or_default()) as usize;
        if !(70..=70 + 1024).contains(&len) || data.len() < len {
            return Err("segment header length is invalid or cut short".into());
        }
        let crc = u32::from_le_bytes(data[len - 4..len].try_into().unwrap_or_default());
        if crc32fast::hash(&data[..len - 4]) != crc {
            return Err("segment header CRC mismatch".into());
        }
        let id_len = u16::from_le_bytes([data[64], data[65]]) as usize;
        if 66 + id_len + 4 != len {
            return Err("segment header length does not match its id".into());
        }
        let mut prev_hash = [0u8; 32];
        prev_hash.copy_from_slice(&data[32..64]);
        Ok((
            Header {
                shard: u16::from_le_bytes([data[10], data[11]]),
                first_seq: u64::from_le_bytes(data[16..24].try_into().unwrap_or_default()),
                created_ns: u64::from_le_bytes(data[24..32].try_into().unwrap_or_default()),
                prev_hash,
                appliance_id: String::from_utf8_lossy(&data[66..66 + id_len]).into_owned(),
            },
            len,
        ))
    }
}

/// SHA-256 of a payload.
pub fn hash(payload: &[u8]) -> Hash {
    let d = ring::digest::digest(&ring::digest::SHA256, payload);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Appends one framed record to `out`; returns its hash.
pub fn frame(out: &mut Vec<u8>, seq: u64, prev: &Hash, body: &[u8]) -> Hash {
    frame_with(out, seq, prev, |out| out.extend_from_slice(body))
}

/// Appends one framed record whose body `body` appends to `out` itself,
/// after the frame header: the body is built where it will be written, and
/// its bytes are read once more, for the CRC and the hash.
#[inline]
pub fn frame_with(
    out: &mut Vec<u8>,
    seq: u64,
    prev: &Hash,
    body: impl FnOnce(&mut Vec<u8>),
) -> Hash {
    let start = out.len();
    let mut prefix = [0u8; FRAME_HEADER_BYTES + PAYLOAD_PREFIX_BYTES];
    prefix[8..16].copy_from_slice(&seq.to_le_bytes());
    prefix[16..48].copy_from_slice(prev);
    out.extend_from_slice(&prefix);
    body(out);
    let payload = &out[start + FRAME_HEADER_BYTES..];
    let len = payload.len() as u32;
    let crc = crc32fast::hash(payload);
    let h = hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    h
}

/// One record read back from a segment.
#[derive(Debug, Clone, Copy)]
pub struct Framed<'a> {
    /// Offset of its frame in the file.
    pub offset: usize,
    /// Its seq.
    pub seq: u64,
    /// The hash it names as its predecessor's.
    pub prev: Hash,
    /// Its own hash.
    pub hash: Hash,
    /// Its body.
    pub body: &'a [u8],
    /// Offset just past it.
    pub end: usize,
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The file ends inside the frame (a torn write).
    Torn,
    /// The length word is impossible.
    BadLength(usize),
    /// The CRC does not match.
    Crc,
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Torn => f.write_str("record cut short (torn write or truncated file)"),
            FrameError::BadLength(n) => write!(f, "impossible record length {n}"),
            FrameError::Crc => f.write_str("record CRC mismatch (altered or damaged bytes)"),
        }
    }
}

/// Reads the frame at `offset` of `data`; `Ok(None)` at the end.
pub fn read_frame(data: &[u8], offset: usize) -> Result<Option<Framed<'_>>, FrameError> {
    let rest = &data[offset..];
    if rest.is_empty() {
        return Ok(None);
    }
    if rest.len() < FRAME_HEADER_BYTES {
        return Err(FrameError::Torn);
    }
    let len = u32::from_le_bytes(rest[..4].try_into().unwrap_or_default()) as usize;
    if !(PAYLOAD_PREFIX_BYTES..=PAYLOAD_BYTES_MAX).contains(&len) {
        return Err(FrameError::BadLength(len));
    }
    if rest.len() < FRAME_HEADER_BYTES + len {
        return Err(FrameError::Torn);
    }
    let crc = u32::from_le_bytes(rest[4..8].try_into().unwrap_or_default());
    let payload = &rest[FRAME_HEADER_BYTES..FRAME_HEADER_BYTES + len];
    if crc32fast::hash(payload) != crc {
        return Err(FrameError::Crc);
    }
    let mut prev = [0u8; 32];
    prev.copy_from_slice(&payload[8..40]);
    Ok(Some(Framed {
        offset,
        seq: u64::from_le_bytes(payload[..8].try_into().unwrap_or_default()),
        prev,
        hash: hash(payload),
        body: &payload[PAYLOAD_PREFIX_BYTES..],
        end: offset + FRAME_HEADER_BYTES + len,
    }))
}

/// The segment being appended to.
pub struct SegmentWriter {
    file: File,
    /// Its path.
    pub path: PathBuf,
    /// Bytes in the file.
    pub len: u64,
    /// When it was created (for age rotation), Unix ns.
    pub created_ns: u64,
    /// Bytes before this offset are durable and out of the page cache.
    released: u64,
}

/// Page size assumed when releasing synced bytes from the page cache (a
/// smaller real page only leaves a little more cached).
const PAGE_BYTES: u64 = 4096;

impl SegmentWriter {
    /// Creates a new segment and makes its name durable.
    pub fn create(dir: &Path, header: &Header) -> std::io::Result<SegmentWriter> {
        let path = dir.join(file_name(header.shard, header.first_seq));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let bytes = header.encode();
        if let Err(e) = file.write_all(&bytes).and_then(|()| file.sync_data()) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        sync_dir(dir)?;
        Ok(SegmentWriter {
            file,
            path,
            len: bytes.len() as u64,
            created_ns: header.created_ns,
            released: 0,
        })
    }

    /// Opens an existing segment to append after its first `len` bytes
    /// (anything after them is cut off).
    pub fn reopen(path: &Path, len: u64, created_ns: u64) -> std::io::Result<SegmentWriter> {
        let file = std::fs::OpenOptions::new().write(true).open(path)?;
        file.set_len(len)?;
        let mut w = SegmentWriter {
            file,
            path: path.to_path_buf(),
            len,
            created_ns,
            released: 0,
        };
        w.seek_end()?;
        Ok(w)
    }

    fn seek_end(&mut self) -> std::io::Result<()> {
        use std::io::Seek as _;
        self.file.seek(std::io::SeekFrom::Start(self.len))?;
        Ok(())
    }

    /// Appends `bytes`; on error the file is cut back to where it was, so
    /// a failed write never leaves a partial record behind.
    pub fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.file.write_all(bytes) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                let _ = self.file.set_len(self.len);
                let _ = self.seek_end();
                Err(e)
            }
        }
    }

    /// Makes what was appended durable, then lets the kernel drop the
    /// synced whole pages from its cache.
    ///
    /// The trail is written once and read only by audits, so its pages in
    /// the cache would only evict what the machine does use, and every new
    /// page would be a fresh allocation (on a new virtual machine, memory
    /// the hypervisor backs on first touch: measured at 2.5 ns a byte, more
    /// than the drain's own work per record). Released clean pages are
    /// reused by the next writes.
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()?;
        let end = self.len & !(PAGE_BYTES - 1);
        if end > self.released {
            use std::os::fd::AsRawFd as _;
            // SAFETY: posix_fadvise only reads its arguments; the
            // descriptor is owned by `self.file` and open. Advice is a
            // hint: an error changes nothing written, so it is ignored.
            unsafe {
                libc::posix_fadvise(
                    self.file.as_raw_fd(),
                    self.released as libc::off_t,
                    (end - self.released) as libc::off_t,
                    libc::POSIX_FADV_DONTNEED,
                );
            }
            self.released = end;
        }
        Ok(())
    }
}

/// fsync of a folder, so that a new file's name survives a crash.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip_and_damage() {
        let h = Header {
            shard: 2,
            first_seq: 99,
            created_ns: 5,
            prev_hash: [7; 32],
            appliance_id: "gw-1".into(),
        };
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes).unwrap(), (h, bytes.len()));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 1;
            assert!(Header::decode(&b).is_err(), "flip at {i}");
        }
    }

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let mut out = Vec::new();
        let h0 = frame(&mut out, 0, &[0; 32], b"first");
        let at1 = out.len();
        let h1 = frame(&mut out, 1, &h0, b"second");
        let a = read_frame(&out, 0).unwrap().unwrap();
        assert_eq!((a.seq, a.hash, a.body, a.end), (0, h0, &b"first"[..], at1));
        let b = read_frame(&out, a.end).unwrap().unwrap();
        assert_eq!((b.seq, b.prev, b.hash, b.body), (1, h0, h1, &b"second"[..]));
        assert!(read_frame(&out, b.end).unwrap().is_none());
        for cut in at1 + 1..out.len() {
            assert!(read_frame(&out[..cut], at1).is_err());
        }
        for i in at1 + 4..out.len() {
            let mut d = out.clone();
            d[i] ^= 0x10;
            assert_eq!(
                read_frame(&d, at1).unwrap_err(),
                FrameError::Crc,
                "flip {i}"
            );
        }
    }

    /// Pages of `file` in the page cache, by `mincore` over a mapping.
    fn resident_pages(file: &File, len: usize) -> usize {
        use std::os::fd::AsRawFd as _;
        let page = 4096;
        let pages = len.div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: a fresh read-only shared mapping of `len` bytes of an open
        // file, inspected with mincore into a vector of one byte per page
        // and unmapped before returning; nothing reads the mapped bytes.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED, "mmap");
            assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0, "mincore");
            libc::munmap(addr, len);
        }
        vec.iter().filter(|&&b| b & 1 == 1).count()
    }

    /// Synced whole pages leave the page cache; the bytes stay in the file
    /// and a later append carries on after them.
    #[test]
    fn synced_pages_leave_the_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        // tmpfs keeps files in the page cache by nature: nothing to see.
        // SAFETY: statfs fills the zeroed struct for a valid C path.
        let on_tmpfs = unsafe {
            let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
            let mut st: libc::statfs = std::mem::zeroed();
            libc::statfs(path.as_ptr(), &mut st) == 0 && st.f_type == libc::TMPFS_MAGIC
        };
        let header = Header {
            shard: 0,
            first_seq: 0,
            created_ns: 1,
            prev_hash: [0; 32],
            appliance_id: "gw".into(),
        };
        let mut w = SegmentWriter::create(dir.path(), &header).unwrap();
        let chunk = vec![0x5au8; 64 * 1024 + 100];
        w.append(&chunk).unwrap();
        let len = w.len as usize;
        let reader = File::open(&w.path).unwrap();
        let before = resident_pages(&reader, len);
        w.sync().unwrap();
        let after = resident_pages(&reader, len);
        // Where written pages are not cached to begin with, there is
        // nothing to release.
        if !on_tmpfs && before >= 16 {
            assert!(
                after <= 1,
                "only the partial last page stays cached: {after} of {before}"
            );
        }
        w.append(b"tail").unwrap();
        w.sync().unwrap();
        let bytes = std::fs::read(&w.path).unwrap();
        assert_eq!(bytes.len(), len + 4);
        assert_eq!(&bytes[len - chunk.len()..len], &chunk[..]);
        assert_eq!(&bytes[len..], b"tail");
    }

    #[test]
    fn names_sort_and_parse() {
        assert_eq!(parse_name(&file_name(3, 12)), Some((3, 12)));
        assert_eq!(parse_name("shard-x-1.seg"), None);
        assert!(file_name(1, 9) < file_name(1, 10));
    }
}
