//! Masking in the appliance: which `[[mask]]` rules apply to a session, and
//! how replies are rewritten so that sensitive values never reach a client
//! who may not see them.
//!
//! - [`config`]: the `[[mask]]` sections, checked and compiled at start.
//! - [`SessionMask`]: the rules of one target that apply to one identity
//!   (`except_groups` removed), built when the session authenticates and
//!   again when its identity changes.
//! - [`redis`]: replies, by frame: strings anywhere in them, whole values by
//!   key glob (`keys`) and hash field (`fields`).
//! - [`postgres`]: `DataRow` values by column (`columns`, resolved through
//!   `RowDescription`'s table OID and attribute number) and by detector on
//!   text columns; `ErrorResponse`, `NoticeResponse` and `NOTIFY` payloads.
//!
//! The detectors themselves (and their speed) live in `custos-masking`;
//! this module decides where they run. Clean replies are forwarded from the
//! read buffer untouched: a reply is copied only when something in it is
//! masked.

pub mod config;
pub mod postgres;
pub mod redis;

use std::rc::Rc;
use std::sync::Arc;

use custos_masking::{Masked, Masker, Span};

use crate::identity::Identity;
use crate::policy::glob::Glob;

/// One compiled `[[mask]]`.
#[derive(Debug)]
pub struct MaskRule {
    /// Position in the file (for logs and metrics).
    pub index: usize,
    /// The target it is limited to; `None` for every target.
    pub target: Option<String>,
    /// Detectors, keywords and patterns with the rule's style. Also masks
    /// whole values (columns, fields, keys) with the same style.
    pub masker: Masker,
    /// Whether the masker has anything to scan for.
    pub scans: bool,
    /// The custom keywords and patterns, as written (the audit trail's
    /// masker adds them to every built-in detector).
    pub keywords: Vec<String>,
    /// See `keywords`.
    pub patterns: Vec<String>,
    /// PostgreSQL columns masked whole.
    pub columns: Vec<ColumnRef>,
    /// Redis hash fields whose values are masked whole.
    pub fields: Vec<Box<[u8]>>,
    /// Redis keys whose values are masked whole.
    pub keys: Vec<Glob>,
    /// Groups that see clear values.
    pub except_groups: Vec<String>,
}

impl MaskRule {
    fn applies_to_target(&self, target: &str) -> bool {
        self.target.as_deref().is_none_or(|t| t == target)
    }

    fn exempts(&self, identity: &Identity) -> bool {
        identity
            .groups
            .iter()
            .any(|g| self.except_groups.iter().any(|e| e == g))
    }

    /// Whether `field` is one of the rule's hash fields.
    pub fn has_field(&self, field: &[u8]) -> bool {
        self.fields.iter().any(|f| **f == *field)
    }

    /// Whether `key` matches one of the rule's key globs.
    pub fn has_key(&self, key: &[u8]) -> bool {
        self.keys.iter().any(|g| g.matches(key))
    }
}

/// A column as `[[mask]] columns` names it: `column`, `table.column` or
/// `schema.table.column`. Unquoted names fold to lower case, as PostgreSQL
/// folds them; `"Quoted"` names keep their case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnRef {
    /// Schema, when given.
    pub schema: Option<String>,
    /// Table, when given.
    pub table: Option<String>,
    /// Column.
    pub column: String,
}

impl ColumnRef {
    /// Parses the configuration form.
    pub fn parse(s: &str) -> Result<ColumnRef, String> {
        let mut parts = Vec::new();
        let mut rest = s;
        loop {
            let (part, after) = if let Some(q) = rest.strip_prefix('"') {
                let mut out = String::new();
                let mut chars = q.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    if c == '"' {
                        if q[i + 1..].starts_with('"') {
                            out.push('"');
                            chars.next();
                        } else {
                            end = Some(i + 1);
                            break;
                        }
                    } else {
                        out.push(c);
                    }
                }
                let end = end.ok_or_else(|| format!("{s:?}: unterminated quoted name"))?;
                (out, &q[end..])
            } else {
                let end = rest.find('.').unwrap_or(rest.len());
                let name = &rest[..end];
                if name.is_empty() || name.contains(['"', ' ']) {
                    return Err(format!(
                        "{s:?}: expected column, table.column or schema.table.column"
                    ));
                }
                (name.to_lowercase(), &rest[end..])
            };
            parts.push(part);
            if after.is_empty() {
                break;
            }
            rest = after
                .strip_prefix('.')
                .ok_or_else(|| format!("{s:?}: expected `.` between names"))?;
        }
        let mut it = parts.into_iter().rev();
        let column = it.next().unwrap_or_default();
        let table = it.next();
        let schema = it.next();
        if it.next().is_some() || column.is_empty() {
            return Err(format!(
                "{s:?}: expected column, table.column or schema.table.column"
            ));
        }
        Ok(ColumnRef {
            schema,
            table,
            column,
        })
    }
}

/// Every compiled `[[mask]]` of the configuration.
#[derive(Debug, Default)]
pub struct Masks {
    rules: Vec<Arc<MaskRule>>,
}

impl Masks {
    /// Wraps compiled rules.
    pub fn new(rules: Vec<MaskRule>) -> Masks {
        Masks {
            rules: rules.into_iter().map(Arc::new).collect(),
        }
    }

    /// Whether any rule exists.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The masker of the audit trail: every built-in detector plus every
    /// rule's keywords and patterns, values redacted. The trail holds what
    /// every session did, so no group is exempt there.
    pub fn audit_masker(&self) -> Masker {
        let mut b =
            custos_masking::Scanner::builder().detectors(&custos_masking::Detector::BUILT_IN);
        for r in &self.rules {
            for k in &r.keywords {
                b = b.keyword(k);
            }
            for p in &r.patterns {
                b = b.pattern(p.clone());
            }
        }
        // Each keyword and pattern compiled once already, alone; together
        // they can only fail on the overall limits, which config checks.
        let scanner = b.build().unwrap_or_default();
        Masker::new(
            scanner,
            custos_masking::Style::Redact { keep_length: false },
        )
        .unwrap_or_else(|_| unreachable!("redaction needs no key"))
    }

    /// Whether any rule applies to `target` (for some identity).
    pub fn apply_to(&self, target: &str) -> bool {
        self.rules.iter().any(|r| r.applies_to_target(target))
    }

    /// The rules that apply to `target` for `identity`; `None` when no rule
    /// does (the session forwards replies untouched).
    /// A session's view is its own (`Rc`): reading it per reply costs no
    /// atomic operation.
    pub fn for_session(&self, target: &str, identity: &Identity) -> Option<Rc<SessionMask>> {
        let rules: Vec<Arc<MaskRule>> = self
            .rules
            .iter()
            .filter(|r| r.applies_to_target(target) && !r.exempts(identity))
            .cloned()
            .collect();
        if rules.is_empty() {
            return None;
        }
        Some(Rc::new(SessionMask::new(rules)))
    }
}

/// The mask rules that apply to one session.
#[derive(Debug)]
pub struct SessionMask {
    rules: Vec<Arc<MaskRule>>,
    /// Indices of rules with detectors, keywords or patterns.
    scanning: Vec<usize>,
    /// Some rule has `keys`.
    pub has_keys: bool,
    /// Some rule has `fields`.
    pub has_fields: bool,
    /// Some rule has `columns`.
    pub has_columns: bool,
}

/// Buffers a session reuses for masking, so that steady state allocates
/// nothing.
#[derive(Debug, Default)]
pub struct Scratch {
    spans: Vec<Span>,
    a: Vec<u8>,
    b: Vec<u8>,
}

/// What masking did to one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing found: forward the value as it is.
    Clean,
    /// The masked value was appended to the output.
    Rewritten,
    /// A rule with style `null` matched: the value becomes the protocol's
    /// null (PostgreSQL); nothing was appended.
    Null,
}

impl SessionMask {
    fn new(rules: Vec<Arc<MaskRule>>) -> SessionMask {
        let scanning = (0..rules.len()).filter(|&i| rules[i].scans).collect();
        SessionMask {
            has_keys: rules.iter().any(|r| !r.keys.is_empty()),
            has_fields: rules.iter().any(|r| !r.fields.is_empty()),
            has_columns: rules.iter().any(|r| !r.columns.is_empty()),
            scanning,
            rules,
        }
    }

    /// The rules, in file order.
    pub fn rules(&self) -> &[Arc<MaskRule>] {
        &self.rules
    }

    /// Whether any rule scans values for detectors.
    pub fn scans(&self) -> bool {
        !self.scanning.is_empty()
    }

    /// Whether a detector finds something in `value`.
    pub fn dirty(&self, value: &[u8], scratch: &mut Scratch) -> bool {
        self.scanning.iter().any(|&i| {
            self.rules[i].masker.find(value, &mut scratch.spans);
            !scratch.spans.is_empty()
        })
    }

    /// Runs every scanning rule over `value`, in file order, each over the
    /// previous one's output. On [`Outcome::Rewritten`] the masked value was
    /// appended to `out`; otherwise `out` is untouched.
    pub fn detect(&self, value: &[u8], scratch: &mut Scratch, out: &mut Vec<u8>) -> Outcome {
        let Scratch { spans, a, b } = scratch;
        let mut rewritten = false;
        for &i in &self.scanning {
            let src: &[u8] = if rewritten { a } else { value };
            b.clear();
            match self.rules[i].masker.mask_into_with(src, b, spans) {
                Masked::Unchanged => {}
                Masked::Null { .. } => return Outcome::Null,
                Masked::Rewritten { .. } => {
                    std::mem::swap(a, b);
                    rewritten = true;
                }
            }
        }
        if rewritten {
            out.extend_from_slice(a);
            Outcome::Rewritten
        } else {
            Outcome::Clean
        }
    }

    /// Masks `value` whole with rule `rule`'s style.
    pub fn whole(&self, rule: usize, value: &[u8], out: &mut Vec<u8>) -> Outcome {
        let m = &self.rules[rule].masker;
        if m.is_null() {
            return Outcome::Null;
        }
        m.mask_value(value, out);
        Outcome::Rewritten
    }

    /// The first rule whose `keys` match `key`.
    pub fn rule_for_key(&self, key: &[u8]) -> Option<usize> {
        self.rules.iter().position(|r| r.has_key(key))
    }

    /// The first rule whose `fields` contain `field`.
    pub fn rule_for_field(&self, field: &[u8]) -> Option<usize> {
        self.rules.iter().position(|r| r.has_field(field))
    }
}

#[cfg(test)]
mod tests {
    use super::ColumnRef;

    #[test]
    fn column_refs_fold_like_postgresql() {
        let c = ColumnRef::parse("Users.SSN").unwrap();
        assert_eq!(
            (c.schema, c.table.as_deref(), c.column.as_str()),
            (None, Some("users"), "ssn")
        );
        let c = ColumnRef::parse("app.\"Users\".\"Card No\"").unwrap();
        assert_eq!(
            (c.schema.as_deref(), c.table.as_deref(), c.column.as_str()),
            (Some("app"), Some("Users"), "Card No")
        );
        let c = ColumnRef::parse("email").unwrap();
        assert_eq!((c.table, c.column.as_str()), (None, "email"));
        for bad in ["", "a..b", "a.b.c.d", "\"open", "a b", "a.\"x\"y"] {
            assert!(ColumnRef::parse(bad).is_err(), "{bad:?}");
        }
    }
}
