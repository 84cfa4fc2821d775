//! Glob patterns with Redis's own syntax (`stringmatchlen` in `util.c`), so
//! that a rule's `keys = ["tenant:*"]` means what it would mean in
//! `KEYS tenant:*` or an ACL key pattern.
//!
//! `*` any run of bytes, `?` one byte, `[abc]`, `[^abc]`, `[a-z]` (a
//! reversed range matches too, as in Redis), and `\x` the byte `x`. Matching
//! is on bytes, case-sensitive, and never allocates. The matcher keeps one
//! backtracking point (the last `*`), so it runs in O(pattern × subject) at
//! worst, where the recursive original can take exponential time.

/// A compiled glob. Patterns are short, so "compiling" only keeps the bytes
/// and whether the pattern is a literal or a plain prefix, which most key
/// patterns are (`tenant:*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Box<[u8]>,
    shape: Shape,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// No special byte at all.
    Literal,
    /// Literal bytes then one trailing `*`.
    Prefix,
    /// Anything else.
    General,
}

impl Glob {
    /// Compiles `pattern`.
    pub fn new(pattern: &[u8]) -> Glob {
        let special = |b: &u8| matches!(b, b'*' | b'?' | b'[' | b'\\');
        let shape = match pattern.iter().position(special) {
            None => Shape::Literal,
            Some(i) if i + 1 == pattern.len() && pattern[i] == b'*' => Shape::Prefix,
            Some(_) => Shape::General,
        };
        Glob {
            pattern: pattern.into(),
            shape,
        }
    }

    /// The pattern as written.
    pub fn as_bytes(&self) -> &[u8] {
        &self.pattern
    }

    /// Whether `subject` matches the whole pattern.
    #[inline]
    pub fn matches(&self, subject: &[u8]) -> bool {
        match self.shape {
            Shape::Literal => *self.pattern == *subject,
            Shape::Prefix => subject.starts_with(&self.pattern[..self.pattern.len() - 1]),
            Shape::General => glob_match(&self.pattern, subject),
        }
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
