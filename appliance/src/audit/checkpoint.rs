//! Checkpoints: the signed heads of every chain.
//!
//! Every few seconds (when anything was written), at each rotation and at
//! shutdown the drain thread appends a checkpoint record to every shard's
//! chain. Its `detail` field holds:
//!
//! ```text
//! u64  time, Unix ns
//! u16  appliance id length, then the id
//! u16  number of heads, then per head:
//!      u16 shard, u64 next seq (records the chain held), 32 hash of record next_seq - 1
//! 32   the public key that signed
//! 64   Ed25519 signature of "custos-audit-checkpoint-v1" and every byte above
//! ```
//!
//! A head names the state of a chain just before the checkpoint was
//! appended to it, so each chain's own checkpoint names its predecessor.

use super::segment::Hash;
use super::sign::{self, PUBLIC_KEY_BYTES, SIGNATURE_BYTES, SigningKey};

const CONTEXT: &[u8] = b"custos-audit-checkpoint-v1";

/// One chain's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The shard.
    pub shard: u16,
    /// Records in the chain (the seq of the next one).
    pub next_seq: u64,
    /// Hash of record `next_seq - 1` (zeros when empty).
    pub hash: Hash,
}

/// A decoded checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// When, Unix ns.
    pub time_ns: u64,
    /// The appliance.
    pub appliance_id: String,
    /// The heads.
    pub heads: Vec<Head>,
    /// The signer.
    pub public_key: [u8; PUBLIC_KEY_BYTES],
    /// Whether the signature verified against `public_key`.
    pub signature_ok: bool,
}

/// Encodes and signs a checkpoint's detail.
pub fn encode(
    out: &mut Vec<u8>,
    key: &SigningKey,
    time_ns: u64,
    appliance_id: &str,
    heads: &[Head],
) {
    out.clear();
    out.extend_from_slice(&time_ns.to_le_bytes());
    let id = &appliance_id.as_bytes()[..appliance_id.len().min(1024)];
    out.extend_from_slice(&(id.len() as u16).to_le_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(&(heads.len() as u16).to_le_bytes());
    for h in heads {
        out.extend_from_slice(&h.shard.to_le_bytes());
        out.extend_from_slice(&h.next_seq.to_le_bytes());
        out.extend_from_slice(&h.hash);
    }
    out.extend_from_slice(&key.public());
    let mut msg = Vec::with_capacity(CONTEXT.len() + out.len());
    msg.extend_from_slice(CONTEXT);
    msg.extend_from_slice(out);
    out.extend_from_slice(&key.sign(&msg));
}

/// Decodes a checkpoint's detail and checks its signature against the key
/// it names.
pub fn decode(detail: &[u8]) -> Result<Checkpoint, String> {
    let short = || "checkpoint detail is cut short".to_string();
    let mut at = 0usize;
    let mut take = |n: usize| -> Result<&[u8], String> {
        let s = detail.get(at..at + n).ok_or_else(short)?;
        at += n;
        Ok(s)
    };
    let time_ns = u64::from_le_bytes(take(8)?.try_into().map_err(|_| short())?);
    let id_len = u16::from_le_bytes(take(2)?.try_into().map_err(|_| short())?) as usize;
    let appliance_id = String::from_utf8_lossy(take(id_len)?).into_owned();
    let n = u16::from_le_bytes(take(2)?.try_into().map_err(|_| short())?) as usize;
    let mut heads = Vec::with_capacity(n);
    for _ in 0..n {
        let shard = u16::from_le_bytes(take(2)?.try_into().map_err(|_| short())?);
        let next_seq = u64::from_le_bytes(take(8)?.try_into().map_err(|_| short())?);
        let hash: Hash = take(32)?.try_into().map_err(|_| short())?;
        heads.push(Head {
            shard,
            next_seq,
            hash,
        });
    }
    let public_key: [u8; PUBLIC_KEY_BYTES] =
        take(PUBLIC_KEY_BYTES)?.try_into().map_err(|_| short())?;
    let sig = take(SIGNATURE_BYTES)?.to_vec();
    let signed_len = at - SIGNATURE_BYTES;
    if at != detail.len() {
        return Err("bytes after the checkpoint signature".into());
    }
    let mut msg = Vec::with_capacity(CONTEXT.len() + signed_len);
    msg.extend_from_slice(CONTEXT);
    msg.extend_from_slice(&detail[..signed_len]);
    Ok(Checkpoint {
        time_ns,
        appliance_id,
        heads,
        public_key,
        signature_ok: sign::verify(&public_key, &msg, &sig),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_round_trip_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = SigningKey::load_or_create(&dir.path().join("k")).unwrap();
        let heads = [
            Head {
                shard: 0,
                next_seq: 10,
                hash: [1; 32],
            },
            Head {
                shard: 1,
                next_seq: 0,
                hash: [0; 32],
            },
        ];
        let mut out = Vec::new();
        encode(&mut out, &key, 77, "gw", &heads);
        let c = decode(&out).unwrap();
        assert!(c.signature_ok);
        assert_eq!((c.time_ns, c.appliance_id.as_str()), (77, "gw"));
        assert_eq!(c.heads, heads);
        assert_eq!(c.public_key, key.public());
        let mut bad = out.clone();
        bad[20] ^= 1;
        assert!(!decode(&bad).map(|c| c.signature_ok).unwrap_or(false));
    }
}
