//! Glob patterns with Redis's own syntax (`stringmatchlen` in `util.c`), so
//! that a rule's `keys = ["tenant:*"]` means what it would mean in
//! `KEYS tenant:*` or an ACL key pattern.
//!
//! `*` any run of bytes, `?` one byte, `[abc]`, `[^abc]`, `[a-z]` (a
//! reversed range matches too, as in Redis), and `\x` the byte `x`. Matching
//! is on bytes, case-sensitive, and never allocates. The matcher keeps one
//! backtracking point (the last `*`), so it runs in O(pattern × subject) at
//! worst, where the recursive original can take exponential time.

/// A compiled glob. Patterns are short, so "compiling" keeps the bytes, the
/// shape most key patterns have (a literal, `tenant:*`, `*:password`), and
/// for the rest the literal bytes at either end and the shortest subject
/// that can match, which reject most subjects in a few comparisons before
/// the general matcher runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Box<[u8]>,
    shape: Shape,
    /// Leading literal bytes (before the first special byte).
    prefix: usize,
    /// Trailing literal bytes (after the last `*` or `?`); zero when the
    /// pattern has a class or an escape, whose ends are not literal.
    suffix: usize,
    /// Length of the shortest subject that can match.
    min_len: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// No special byte at all.
    Literal,
    /// Literal bytes then one trailing `*`.
    Prefix,
    /// One leading `*` then literal bytes.
    Suffix,
    /// Anything else.
    General,
}

impl Glob {
    /// Compiles `pattern`.
    pub fn new(pattern: &[u8]) -> Glob {
        let special = |b: &u8| matches!(b, b'*' | b'?' | b'[' | b'\\');
        let prefix = pattern.iter().position(special).unwrap_or(pattern.len());
        // Without classes and escapes every byte but `*` stands for exactly
        // one subject byte, so the literal tail must end the subject.
        let simple = !pattern.iter().any(|&b| b == b'[' || b == b'\\');
        let (suffix, min_len) = if simple {
            let suffix = pattern
                .iter()
                .rev()
                .position(|&b| b == b'*' || b == b'?')
                .unwrap_or(pattern.len());
            (suffix, pattern.iter().filter(|&&b| b != b'*').count())
        } else {
            (0, prefix)
        };
        let shape = if prefix == pattern.len() {
            Shape::Literal
        } else if prefix + 1 == pattern.len() && pattern[prefix] == b'*' {
            Shape::Prefix
        } else if simple && pattern[0] == b'*' && suffix + 1 == pattern.len() {
            Shape::Suffix
        } else {
            Shape::General
        };
        Glob {
            pattern: pattern.into(),
            shape,
            prefix,
            suffix,
            min_len,
        }
    }

    /// The first and the last byte every matching subject has, where the
    /// pattern fixes them (`None`: any byte can be there).
    pub fn end_bytes(&self) -> (Option<u8>, Option<u8>) {
        let p = &self.pattern;
        (
            (self.prefix > 0).then(|| p[0]),
            (self.suffix > 0).then(|| p[p.len() - 1]),
        )
    }

    /// The pattern as written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.pattern
    }

    /// Whether `subject` matches the whole pattern.
    #[inline]
    pub fn matches(&self, subject: &[u8]) -> bool {
        let p = &self.pattern;
        match self.shape {
            Shape::Literal => eq(p, subject),
            Shape::Prefix => {
                subject.len() >= self.prefix && eq(&p[..self.prefix], &subject[..self.prefix])
            }
            Shape::Suffix => {
                subject.len() >= self.suffix && eq(&p[1..], &subject[subject.len() - self.suffix..])
            }
            Shape::General => {
                let (n, pre, suf) = (subject.len(), self.prefix, self.suffix);
                n >= self.min_len
                    && eq(&p[..pre], &subject[..pre])
                    && eq(&p[p.len() - suf..], &subject[n - suf..])
                    && glob_match(&p[pre..p.len() - suf], &subject[pre..n - suf])
            }
        }
    }
}

/// Byte equality for the short slices of key patterns: the last byte first
/// (key names share prefixes more often than endings), then a plain loop
/// the compiler keeps inline, where a slice comparison calls `memcmp`.
#[inline]
fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    match (a.last(), b.last()) {
        (Some(x), Some(y)) if x != y => false,
        _ if a.len() > 32 => a == b,
        _ => a.iter().zip(b).all(|(x, y)| x == y),
    }
}

/// Redis glob matching on bytes.
pub fn glob_match(pattern: &[u8], subject: &[u8]) -> bool {
    let (mut p, mut s) = (0usize, 0usize);
    // Where to resume after the last `*`: pattern index after it, and the
    // subject index it has swallowed up to.
    let mut star: Option<(usize, usize)> = None;
    loop {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    while p < pattern.len() && pattern[p] == b'*' {
                        p += 1;
                    }
                    if p == pattern.len() {
                        return true;
                    }
                    star = Some((p, s));
                    continue;
                }
                _ if s < subject.len() => {
                    if let Some(used) = one(&pattern[p..], subject[s]) {
                        p += used;
                        s += 1;
                        continue;
                    }
                }
                _ => {}
            }
        } else if s == subject.len() {
            return true;
        }
        // Mismatch: let the last `*` swallow one more byte, if it can.
        match star {
            Some((sp, ss)) if ss < subject.len() => {
                star = Some((sp, ss + 1));
                p = sp;
                s = ss + 1;
            }
            _ => return false,
        }
    }
}

/// Matches one subject byte against the pattern element at the start of
/// `pat` (not `*`); the pattern bytes the element used, or `None`.
fn one(pat: &[u8], c: u8) -> Option<usize> {
    match pat[0] {
        b'?' => Some(1),
        b'\\' if pat.len() >= 2 => (pat[1] == c).then_some(2),
        b'[' => class(pat, c),
        b => (b == c).then_some(1),
    }
}

/// A `[...]` class at the start of `pat`. Like Redis, an unterminated class
/// runs to the end of the pattern.
fn class(pat: &[u8], c: u8) -> Option<usize> {
    let mut i = 1;
    let not = pat.get(i) == Some(&b'^');
    if not {
        i += 1;
    }
    let mut hit = false;
    loop {
        match pat.get(i) {
            None => {
                // Redis steps back onto the last byte of the pattern.
                break;
            }
            Some(b']') => {
                i += 1;
                break;
            }
            Some(b'\\') if i + 1 < pat.len() => {
                hit |= pat[i + 1] == c;
                i += 2;
            }
            Some(&lo) if pat.get(i + 1) == Some(&b'-') && i + 2 < pat.len() => {
                let hi = pat[i + 2];
                let (a, b) = if lo <= hi { (lo, hi) } else { (hi, lo) };
                hit |= (a..=b).contains(&c);
                i += 3;
            }
            Some(&b) => {
                hit |= b == c;
                i += 1;
            }
        }
    }
    (hit != not).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mask_key_patterns_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("secret:*", "secret:a", true),
            ("secret:*", "secret:", true),
            ("secret:*", "secrets:a", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("h?llo", "hello", true),
            ("h?llo", "hllo", false),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hallo", true),
            ("h[^e]llo", "hello", false),
            ("h[a-c]llo", "hbllo", true),
            ("h[a-c]llo", "hdllo", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("user:*:ssn", "user:42:ssn", true),
            ("user:*:ssn", "user:42:name", false),
            ("**x", "abx", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ];
        for (p, t, want) in cases {
            assert_eq!(
                Glob::new(p.as_bytes()).matches(t.as_bytes()),
                *want,
                "{p} ~ {t}"
            );
        }
    }

    /// Every string over `alphabet` up to `max` bytes long.
    fn all_strings(alphabet: &[u8], max: usize) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new()];
        let mut last = vec![Vec::new()];
        for _ in 0..max {
            last = last
                .iter()
                .flat_map(|s| {
                    alphabet.iter().map(move |&b| {
                        let mut t = s.clone();
                        t.push(b);
                        t
                    })
                })
                .collect();
            out.extend(last.iter().cloned());
        }
        out
    }

    /// The compiled shapes (literal ends, shortest length) decide exactly
    /// as the general matcher on the whole pattern, for every pattern and
    /// subject up to five bytes over a small alphabet, and for patterns
    /// with classes and escapes.
    #[test]
    fn compiled_shapes_agree_with_the_general_matcher() {
        let subjects = all_strings(b"ab*", 5);
        let mut patterns = all_strings(b"ab*?", 5);
        for extra in [
            "[ab]*", "*[^a]", "a[a-b]?b", "\\**", "*\\*", "a\\?", "[*]b*", "*a[b]",
        ] {
            patterns.push(extra.as_bytes().to_vec());
        }
        for p in &patterns {
            let g = Glob::new(p);
            for t in &subjects {
                assert_eq!(
                    g.matches(t),
                    glob_match(p, t),
                    "{:?} ~ {:?}",
                    String::from_utf8_lossy(p),
                    String::from_utf8_lossy(t)
                );
            }
        }
    }

    /// Every subject a pattern matches has the end bytes it reports.
    #[test]
    fn end_bytes_hold_for_every_match() {
        let subjects = all_strings(b"ab*", 4);
        let mut patterns = all_strings(b"ab*?", 4);
        for extra in ["[ab]*", "*[^a]", "\\**", "*\\*", "a\\?"] {
            patterns.push(extra.as_bytes().to_vec());
        }
        for p in &patterns {
            let g = Glob::new(p);
            let (first, last) = g.end_bytes();
            for t in subjects.iter().filter(|t| g.matches(t)) {
                assert!(first.is_none_or(|f| t.first() == Some(&f)), "{p:?} {t:?}");
                assert!(last.is_none_or(|l| t.last() == Some(&l)), "{p:?} {t:?}");
            }
        }
        assert_eq!(Glob::new(b"secret:*").end_bytes(), (Some(b's'), None));
        assert_eq!(Glob::new(b"*:password").end_bytes(), (None, Some(b'd')));
        assert_eq!(Glob::new(b"t:*:ssn").end_bytes(), (Some(b't'), Some(b'n')));
    }

    #[test]
    fn pathological_patterns_stay_fast() {
        let p = Glob::new(b"*a*a*a*a*a*a*a*a*b");
        let t = vec![b'a'; 10_000];
        assert!(!p.matches(&t));
    }

    #[test]
    fn redis_glob_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("tenant:*", "tenant:1", true),
            ("tenant:*", "tenant:", true),
            ("tenant:*", "tenants:1", false),
            ("tenant:*", "xtenant:1", false),
            ("user:?", "user:1", true),
            ("user:?", "user:12", false),
            ("h[ae]llo", "hello", true),
            ("h[ae]llo", "hallo", true),
            ("h[ae]llo", "hillo", false),
            ("h[^e]llo", "hello", false),
            ("h[^e]llo", "hallo", true),
            ("h[a-b]llo", "hbllo", true),
            ("h[b-a]llo", "hallo", true),
            ("h[a-b]llo", "hcllo", false),
            ("a\\*b", "a*b", true),
            ("a\\*b", "axb", false),
            ("*:secret:*", "a:secret:b", true),
            ("*:secret:*", "a:secre:b", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
            ("literal", "literal", true),
            ("literal", "Literal", false),
            ("", "", true),
            ("", "x", false),
        ];
        for &(p, s, want) in cases {
            assert_eq!(
                Glob::new(p.as_bytes()).matches(s.as_bytes()),
                want,
                "{p} vs {s}"
            );
            assert_eq!(glob_match(p.as_bytes(), s.as_bytes()), want, "{p} vs {s}");
        }
    }
}
