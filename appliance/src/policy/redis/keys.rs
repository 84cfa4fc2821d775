//! Finding a command's keys among its arguments with the store's own key
//! specifications, as `getKeysUsingKeySpecs` in Redis's `db.c` does: an
//! index or a keyword to begin at, then a range (`MSET`'s step 2,
//! `XREAD ... STREAMS`' half of the rest) or a count read from the
//! arguments (`EVAL script numkeys ...`).

use custos_parsers::resp;

/// The arguments of one command, the name at index 0.
pub trait Args {
    /// Number of arguments, the name included.
    fn count(&self) -> usize;
    /// Argument `i` (`i < count()`).
    fn arg(&self, i: usize) -> &[u8];
}

impl Args for [&[u8]] {
    #[inline]
    fn count(&self) -> usize {
        self.len()
    }
    #[inline]
    fn arg(&self, i: usize) -> &[u8] {
        self[i]
    }
}

impl Args for [Vec<u8>] {
    #[inline]
    fn count(&self) -> usize {
        self.len()
    }
    #[inline]
    fn arg(&self, i: usize) -> &[u8] {
        &self[i]
    }
}

/// Where the search for keys begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// At this argument.
    Index(i32),
    /// After this keyword (upper case), searched from `start_from`
    /// (negative: from the end, backwards).
    Keyword {
        /// The keyword.
        keyword: Box<[u8]>,
        /// Where the search starts.
        start_from: i32,
    },
}

/// How keys follow the beginning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Find {
    /// Keys up to `last_key` (relative to the first; negative: from the
    /// end, or a fraction of the rest with `limit`), every `step`.
    Range {
        /// Last key.
        last_key: i32,
        /// Distance between keys.
        step: i32,
        /// With a negative `last_key`: only `1/limit` of the rest.
        limit: i32,
    },
    /// The argument at `keynum_index` (relative to the beginning) counts
    /// the keys, which start `first_key` after the beginning.
    Keynum {
        /// Where the count is.
        keynum_index: i32,
        /// Where the keys start.
        first_key: i32,
        /// Distance between keys.
        step: i32,
    },
}

/// One key specification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Where to begin.
    pub begin: Begin,
    /// How to find the keys from there.
    pub find: Find,
}

/// How a command's keys are found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyFinder {
    /// The command takes no keys.
    None,
    /// By these specifications.
    Specs(Box<[KeySpec]>),
    /// The store says it cannot tell exactly (`SORT ... BY`, `MIGRATE ...
    /// KEYS`, a module command without specifications).
    Unknown,
}

/// What a key search found out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keys {
    /// Every key was visited.
    Known,
    /// The keys cannot be determined from the arguments.
    Unknown,
}

impl KeyFinder {
    /// Calls `f` with each key of the command whose arguments are `args`,
    /// until `f` returns `true`. No allocation.
    pub fn for_each<'a, A: Args + ?Sized>(
        &self,
        args: &'a A,
        f: impl FnMut(&'a [u8]) -> bool,
    ) -> Keys {
        match self {
            KeyFinder::None => Keys::Known,
            KeyFinder::Unknown => Keys::Unknown,
            KeyFinder::Specs(specs) => {
                if for_each_key(specs, args, f) {
                    Keys::Known
                } else {
                    Keys::Unknown
                }
            }
        }
    }
}

/// Visits the keys `specs` find in `args`; `false` when a specification
/// cannot be followed (a key count that is not a number, say).
pub fn for_each_key<'a, A: Args + ?Sized>(
    specs: &[KeySpec],
    args: &'a A,
    mut f: impl FnMut(&'a [u8]) -> bool,
) -> bool {
    let argc = args.count() as i64;
    for spec in specs {
        let mut first: i64 = match &spec.begin {
            Begin::Index(i) => i64::from(*i),
            Begin::Keyword {
                keyword,
                start_from,
            } => {
                let start_from = i64::from(*start_from);
                let (start, end) = if start_from > 0 {
                    (start_from, argc - 1)
                } else {
                    (argc + start_from, 0)
                };
                let mut found = 0;
                let mut i = start;
                while i != end {
                    if i >= argc || i < 1 {
                        break;
                    }
                    if args.arg(i as usize).eq_ignore_ascii_case(keyword) {
                        found = i + 1;
                        break;
                    }
                    i += if start <= end { 1 } else { -1 };
                }
                if found == 0 {
                    // The keyword is absent: this specification finds no key.
                    continue;
                }
                found
            }
        };
        let (last, step) = match spec.find {
            Find::Range {
                last_key,
                step,
                limit,
            } => {
                let last_key = i64::from(last_key);
                let last = if last_key >= 0 {
                    first + last_key
                } else if limit == 0 {
                    argc + last_key
                } else {
                    first + ((argc - first) / i64::from(limit) + last_key)
                };
                (last, i64::from(step))
            }
            Find::Keynum {
                keynum_index,
                first_key,
                step,
            } => {
                let at = first + i64::from(keynum_index);
                if at < 0 || at >= argc {
                    return false;
                }
                let Some(n) = std::str::from_utf8(args.arg(at as usize))
                    .ok()
                    .and_then(|s| s.parse::<i64>().ok())
                    .filter(|n| *n >= 0)
                else {
                    return false;
                };
                first += i64::from(first_key);
                let step = i64::from(step);
                (first + (n - 1).saturating_mul(step), step)
            }
        };
        if first < 1 {
            return false;
        }
        let mut i = first;
        while i <= last {
            // Past the end: the store refuses the command for its arity, as
            // Redis does for commands of variable arity.
            if i >= argc {
                break;
            }
            if f(args.arg(i as usize)) {
                return true;
            }
            i += step.max(1);
        }
    }
    true
}

/// Arguments kept inline by [`FrameArgs`] before it spills to the heap.
const FRAME_ARGS_INLINE: usize = 32;

/// The arguments of one whole RESP command (`*n` of `$len` bulk strings)
/// as views into its buffer; no allocation for up to 32 arguments.
pub struct FrameArgs<'a> {
    buf: &'a [u8],
    /// Start and end of each argument in `buf` (a command is far below
    /// 4 GiB: the request limits cap it).
    inline: [(u32, u32); FRAME_ARGS_INLINE],
    spill: Vec<(u32, u32)>,
    len: usize,
}

impl<'a> FrameArgs<'a> {
    /// Reads the command at the start of `frame`, which the caller has
    /// checked is whole and valid; `None` if it is not an array of bulk
    /// strings.
    pub fn parse(frame: &'a [u8]) -> Option<FrameArgs<'a>> {
        if frame.first() != Some(&b'*') || frame.len() > u32::MAX as usize {
            return None;
        }
        let line = |at: usize| resp::length_line(frame, at).ok().flatten();
        let (n, mut at) = line(0)?;
        let mut out = FrameArgs {
            buf: frame,
            inline: [(0, 0); FRAME_ARGS_INLINE],
            spill: Vec::new(),
            len: 0,
        };
        for i in 0..usize::try_from(n).ok()? {
            if frame.get(at) != Some(&b'$') {
                return None;
            }
            let (len, start) = line(at)?;
            let span = (start, start.checked_add(usize::try_from(len).ok()?)?);
            if span.1 + 2 > frame.len() {
                return None;
            }
            at = span.1 + 2;
            let span = (span.0 as u32, span.1 as u32);
            if i < FRAME_ARGS_INLINE {
                out.inline[i] = span;
            } else {
                out.spill.push(span);
            }
            out.len += 1;
        }
        Some(out)
    }
}

impl Args for FrameArgs<'_> {
    #[inline]
    fn count(&self) -> usize {
        self.len
    }
    #[inline]
    fn arg(&self, i: usize) -> &[u8] {
        let (a, b) = if i < FRAME_ARGS_INLINE {
            self.inline[i]
        } else {
            self.spill[i - FRAME_ARGS_INLINE]
        };
        &self.buf[a as usize..b as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::super::CommandTable;
    use super::*;

    fn keys_of(table: &CommandTable, line: &str) -> Option<Vec<String>> {
        let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
        let id = table.lookup(args[0], args.get(1).copied()).unwrap();
        let mut out = Vec::new();
        match table.get(id).keys.for_each(&args[..], |k| {
            out.push(String::from_utf8_lossy(k).into_owned());
            false
        }) {
            Keys::Known => Some(out),
            Keys::Unknown => None,
        }
    }

    #[test]
    fn keys_follow_the_stores_specifications() {
        let t = CommandTable::builtin();
        let cases: &[(&str, Option<&[&str]>)] = &[
            ("GET a", Some(&["a"])),
            ("get a", Some(&["a"])),
            ("SET a 1 EX 10", Some(&["a"])),
            ("MSET a 1 b 2 c 3", Some(&["a", "b", "c"])),
            ("MGET a b c", Some(&["a", "b", "c"])),
            ("DEL a b", Some(&["a", "b"])),
            ("RENAME a b", Some(&["a", "b"])),
            ("EVAL return 2 k1 k2 arg", Some(&["k1", "k2"])),
            ("EVAL return 0 arg", Some(&[])),
            ("EVALSHA abc 1 k1 arg", Some(&["k1"])),
            ("FCALL f 1 k1 arg", Some(&["k1"])),
            ("EVAL return x k1", None),
            ("XREAD COUNT 2 STREAMS s1 s2 0 0", Some(&["s1", "s2"])),
            ("XREADGROUP GROUP g c STREAMS s1 >", Some(&["s1"])),
            ("ZUNIONSTORE dst 2 a b", Some(&["dst", "a", "b"])),
            ("BLPOP a b 0", Some(&["a", "b"])),
            ("LMPOP 2 a b LEFT", Some(&["a", "b"])),
            ("OBJECT ENCODING k", Some(&["k"])),
            ("PING", Some(&[])),
            ("FLUSHALL", Some(&[])),
            ("SORT l BY w_*", None),
            ("MIGRATE h 1 \"\" 0 5000 KEYS a b", None),
        ];
        for (line, want) in cases {
            let got = keys_of(&t, line);
            let want = want.map(|w| w.iter().map(|s| s.to_string()).collect::<Vec<_>>());
            assert_eq!(got, want, "{line}");
        }
    }
}
