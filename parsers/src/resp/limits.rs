//! The bounds every RESP parser enforces before it buffers, allocates or
//! recurses.
//!
//! A client or a compromised upstream controls every length in the stream;
//! without these bounds one header line (`*4294967295\r\n`) could make the
//! proxy allocate gigabytes or recurse until the stack overflows.

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Bounds on what a RESP stream may declare. All parsers ([`Scanner`],
/// [`check`], [`parse`], [`command_head`]) apply the same limits in the same
/// way, so they agree on which inputs are refused.
///
/// [`Scanner`]: super::Scanner
/// [`check`]: super::check
/// [`parse`]: super::parse
/// [`command_head`]: super::command_head
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest bulk string, bulk error or verbatim string payload.
    pub bulk_bytes_max: usize,
    /// Most frames directly inside one aggregate; a map or attribute of `n`
    /// pairs holds `2n` frames.
    pub elements_max: usize,
    /// Deepest nesting of aggregates: a top-level array is at depth 1.
    /// Values above [`Limits::DEPTH_CAP`] act as `DEPTH_CAP`.
    pub depth_max: usize,
    /// Longest line (simple string, error, number, inline command),
    /// excluding its terminator. Also bounds how many bytes are buffered
    /// while waiting for a line terminator.
    pub line_bytes_max: usize,
}

impl Limits {
    /// Hard ceiling on nesting depth: the [`Scanner`](super::Scanner) keeps
    /// one counter per open aggregate in a fixed array of this size so that
    /// it never allocates. Real replies nest a handful of levels.
    pub const DEPTH_CAP: usize = 64;

    /// Limits for client commands, mirroring a default `redis-server`:
    /// `proto-max-bulk-len` (512 MiB) and `PROTO_INLINE_MAX_SIZE` (64 KiB);
    /// commands are flat arrays of bulk strings (depth 1), and the element
    /// count leaves room for large `MSET`/`DEL` batches.
    pub const fn request() -> Self {
        Self {
            bulk_bytes_max: 512 * MIB,
            elements_max: 16 * MIB,
            depth_max: 1,
            line_bytes_max: 64 * KIB,
        }
    }

    /// Limits for upstream replies: any element count a server can produce,
    /// nesting far beyond what commands return, and long status lines.
    pub const fn reply() -> Self {
        Self {
            bulk_bytes_max: 512 * MIB,
            elements_max: u32::MAX as usize,
            depth_max: 32,
            line_bytes_max: MIB,
        }
    }

    /// `depth_max` as enforced, capped at [`Limits::DEPTH_CAP`].
    #[inline]
    pub const fn depth_effective(&self) -> usize {
        if self.depth_max < Self::DEPTH_CAP {
            self.depth_max
        } else {
            Self::DEPTH_CAP
        }
    }
}

impl Default for Limits {
    /// [`Limits::reply`]: the permissive side, for code that reads
    /// server output.
    fn default() -> Self {
        Self::reply()
    }
}

#[cfg(test)]
mod tests {
    use super::Limits;

    #[test]
    fn presets_match_redis_defaults() {
        let request = Limits::request();
        assert_eq!(request.bulk_bytes_max, 512 * 1024 * 1024);
        assert_eq!(request.line_bytes_max, 64 * 1024);
        assert_eq!(request.depth_max, 1);
        assert_eq!(Limits::default(), Limits::reply());
        assert_eq!(Limits::reply().depth_effective(), 32);
    }

    #[test]
    fn depth_is_capped() {
        let limits = Limits {
            depth_max: 1000,
            ..Limits::reply()
        };
        assert_eq!(limits.depth_effective(), Limits::DEPTH_CAP);
    }
}
