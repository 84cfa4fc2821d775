//! Redis-style glob patterns (`*`, `?`, `[abc]`, `[^a-z]`, `\x`) over
//! bytes, as `KEYS` and ACL key patterns use them.

/// A compiled glob. Matching allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: Box<[u8]>,
    /// The pattern has no special characters: plain comparison.
    literal: bool,
}

impl Glob {
    /// A glob from its pattern text.
    pub fn new(pattern: &[u8]) -> Glob {
        let literal = !pattern
            .iter()
            .any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\'));
        Glob {
            pattern: pattern.into(),
            literal,
        }
    }

    /// The pattern as written.
    pub fn pattern(&self) -> &[u8] {
        &self.pattern
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &[u8]) -> bool {
        if self.literal {
            return *self.pattern == *text;
        }
        glob_match(&self.pattern, text)
    }
}

/// Iterative matcher with single-star backtracking: linear in practice and
/// never recursive, whatever the pattern.
fn glob_match(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    // Collapse runs of stars.
                    while pi < p.len() && p[pi] == b'*' {
                        pi += 1;
                    }
                    if pi == p.len() {
                        return true;
                    }
                    star = Some((pi, ti));
                    continue;
                }
                b'?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(p, pi, t[ti])
                        && matched
                    {
                        pi = next;
                        ti += 1;
                        continue;
                    }
                }
                b'\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == t[ti] {
                        pi += 2;
                        ti += 1;
                        continue;
                    }
                }
                c => {
                    if c == t[ti] {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Matches byte `c` against the class starting at `p[at] == b'['`; returns
/// whether it matched and the index after the class. An unterminated class
/// is taken literally up to the end of the pattern, as Redis does.
fn class(p: &[u8], at: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = at + 1;
    let negate = i < p.len() && p[i] == b'^';
    if negate {
        i += 1;
    }
    let mut matched = false;
    while i < p.len() && p[i] != b']' {
        if p[i] == b'\\' && i + 1 < p.len() {
            matched |= p[i + 1] == c;
            i += 2;
        } else if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            let (lo, hi) = if p[i] <= p[i + 2] {
                (p[i], p[i + 2])
            } else {
                (p[i + 2], p[i])
            };
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= p[i] == c;
            i += 1;
        }
    }
    let next = if i < p.len() { i + 1 } else { i };
    Some((matched != negate, next))
}

#[cfg(test)]
mod tests {
    use super::Glob;

    #[test]
    fn table() {
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
}
