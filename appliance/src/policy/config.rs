//! `[[rule]]` as written, and its validation into a [`Policy`].
//!
//! Every refusal names the key and the line. Match keys that do not apply
//! to the protocol of the rule's target (`keys` on a PostgreSQL target,
//! `statement` on a Redis one) are errors, not silently ignored: a rule
//! that cannot match is a hole in the policy.

use std::collections::HashSet;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::glob::Glob;
use super::redis::{Categories, NAME_BYTES_MAX};
use super::sql::{KindSet, StatementKind};
use super::{
    Action, CommandPattern, DEFAULT_REASON, DEFAULT_RULE_ID, Groups, Matcher, Policy, RULES_MAX,
    RedisMatch, Rule, RuleIndex, SqlMatch, TablePattern, TargetPolicy, UNCLASSIFIED_RULE_ID,
    redis_refusal_text,
};
use crate::config::{ConfigError, Protocol, Target};

/// Longest rule id.
pub const RULE_ID_BYTES_MAX: usize = 64;
/// Longest reason.
pub const REASON_BYTES_MAX: usize = 256;
/// Most entries in one match key.
pub const MATCH_ENTRIES_MAX: usize = 256;

/// One `[[rule]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRule {
    id: Option<Spanned<String>>,
    target: Option<Spanned<String>>,
    groups: Option<Spanned<Vec<String>>>,
    action: Option<Spanned<String>>,
    reason: Option<Spanned<String>>,
    command: Option<Spanned<Vec<String>>>,
    keys: Option<Spanned<Vec<String>>>,
    statement: Option<Spanned<Vec<String>>>,
    tables: Option<Spanned<Vec<String>>>,
    functions: Option<Spanned<Vec<String>>>,
    without_where: Option<Spanned<bool>>,
}

/// Parses a target's `default_action`: `allow` or `block`.
pub fn default_action(
    path: &Path,
    src: &str,
    v: Option<&Spanned<String>>,
) -> Result<Action, ConfigError> {
    match v {
        None => Ok(Action::Allow),
        Some(v) => match v.get_ref().as_str() {
            "allow" => Ok(Action::Allow),
            "block" => Ok(Action::Block),
            other => Err(ConfigError::at(
                path,
                src,
                v.span(),
                "target.default_action",
                format_args!("{other:?}: expected \"allow\" or \"block\""),
            )),
        },
    }
}

struct Ctx<'a> {
    path: &'a Path,
    src: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, key: &str, msg: impl std::fmt::Display) -> ConfigError {
        ConfigError::at(self.path, self.src, span, key, msg)
    }
}

/// Validates the rules against the targets and builds the policy.
pub fn validate(
    path: &Path,
    src: &str,
    raw: &[Spanned<RawRule>],
    targets: &[Target],
) -> Result<Policy, ConfigError> {
    let cx = Ctx { path, src };
    if raw.len() > RULES_MAX {
        return Err(ConfigError::plain(
            path,
            format_args!("more than {RULES_MAX} [[rule]] tables"),
        ));
    }
    let mut rules = Vec::with_capacity(raw.len());
    let mut ids = HashSet::new();
    for r in raw {
        let rule = validate_rule(&cx, r.span(), r.get_ref(), targets)?;
        if !ids.insert(rule.id.clone()) {
            let id = r.get_ref().id.as_ref().expect("validated");
            return Err(cx.err(
                id.span(),
                "rule.id",
                format_args!("duplicate rule id {:?}", &*rule.id),
            ));
        }
        rules.push(rule);
    }
    let targets = targets
        .iter()
        .enumerate()
        .map(|(i, t)| TargetPolicy {
            name: t.name.clone(),
            protocol: t.protocol,
            default_action: t.default_action,
            rules: rules
                .iter()
                .enumerate()
                .filter(|(_, r)| {
                    r.target.is_none_or(|rt| rt == i)
                        && match &r.matcher {
                            Matcher::Any => true,
                            Matcher::Redis(_) => t.protocol == Protocol::Redis,
                            Matcher::Sql(_) => t.protocol == Protocol::Postgres,
                        }
                })
                .map(|(ri, _)| ri as RuleIndex)
                .collect(),
            default_reply: redis_refusal_text(DEFAULT_REASON, DEFAULT_RULE_ID),
        })
        .collect();
    Ok(Policy { rules, targets })
}

fn list<'a>(
    cx: &Ctx<'_>,
    v: &'a Spanned<Vec<String>>,
    key: &str,
) -> Result<&'a [String], ConfigError> {
    let l = v.get_ref();
    if l.is_empty() {
        return Err(cx.err(
            v.span(),
            key,
            "must not be empty (leave the key out to match anything)",
        ));
    }
    if l.len() > MATCH_ENTRIES_MAX {
        return Err(cx.err(
            v.span(),
            key,
            format_args!("more than {MATCH_ENTRIES_MAX} entries"),
        ));
    }
    if l.iter().any(|s| s.is_empty()) {
        return Err(cx.err(v.span(), key, "an entry is empty"));
    }
    Ok(l)
}

fn validate_rule(
    cx: &Ctx<'_>,
    span: Range<usize>,
    r: &RawRule,
    targets: &[Target],
) -> Result<Rule, ConfigError> {
    let line = crate::config::line_of(cx.src, span.start);
    let id =
        r.id.as_ref()
            .ok_or_else(|| cx.err(span.clone(), "rule.id", "missing"))?;
    let id_s = id.get_ref();
    if id_s.is_empty()
        || id_s.len() > RULE_ID_BYTES_MAX
        || !id_s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(cx.err(
            id.span(),
            "rule.id",
            format_args!("must be 1 to {RULE_ID_BYTES_MAX} letters, digits, '-', '_', '.' or ':'"),
        ));
    }
    if id_s == DEFAULT_RULE_ID || id_s == UNCLASSIFIED_RULE_ID {
        return Err(cx.err(
            id.span(),
            "rule.id",
            format_args!("{id_s:?} is reserved for decisions no rule made; choose another id"),
        ));
    }

    let target_v = r.target.as_ref().ok_or_else(|| {
        cx.err(
            span.clone(),
            "rule.target",
            "missing: a target name or \"*\"",
        )
    })?;
    let target = match target_v.get_ref().as_str() {
        "*" => None,
        name => match targets.iter().position(|t| t.name == name) {
            Some(i) => Some(i),
            None => {
                return Err(cx.err(
                    target_v.span(),
                    "rule.target",
                    format_args!("no [[target]] is named {name:?}"),
                ));
            }
        },
    };

    let groups_v = r.groups.as_ref().ok_or_else(|| {
        cx.err(
            span.clone(),
            "rule.groups",
            "missing: token groups, or [\"*\"] for anyone",
        )
    })?;
    let g = list(cx, groups_v, "rule.groups")?;
    let groups = if g.iter().any(|g| g == "*") {
        if g.len() > 1 {
            return Err(cx.err(
                groups_v.span(),
                "rule.groups",
                "\"*\" already covers anyone; list it alone",
            ));
        }
        Groups::Any
    } else {
        Groups::Some(g.to_vec())
    };

    let action_v = r.action.as_ref().ok_or_else(|| {
        cx.err(
            span.clone(),
            "rule.action",
            "missing: allow, block or approve",
        )
    })?;
    let action = Action::from_name(action_v.get_ref()).ok_or_else(|| {
        cx.err(
            action_v.span(),
            "rule.action",
            format_args!(
                "{:?}: expected \"allow\", \"block\" or \"approve\"",
                action_v.get_ref()
            ),
        )
    })?;
    let reason: Arc<str> = match &r.reason {
        Some(v) => {
            let s = v.get_ref();
            if s.is_empty() || s.len() > REASON_BYTES_MAX || s.chars().any(char::is_control) {
                return Err(cx.err(
                    v.span(),
                    "rule.reason",
                    format_args!(
                        "must be 1 to {REASON_BYTES_MAX} bytes on one line, without control characters"
                    ),
                ));
            }
            s.as_str().into()
        }
        None if action.refuses() => {
            return Err(cx.err(
                span.clone(),
                "rule.reason",
                format_args!("missing: a {} rule tells the client why", action.name()),
            ));
        }
        None => "allowed".into(),
    };

    let redis_keys = r.command.is_some() || r.keys.is_some();
    let sql_keys = r.statement.is_some()
        || r.tables.is_some()
        || r.functions.is_some()
        || r.without_where.is_some();
    if redis_keys && sql_keys {
        let sp = r
            .statement
            .as_ref()
            .map(|v| v.span())
            .or(r.tables.as_ref().map(|v| v.span()))
            .or(r.functions.as_ref().map(|v| v.span()))
            .or(r.without_where.as_ref().map(|v| v.span()))
            .unwrap_or(span.clone());
        return Err(cx.err(
            sp,
            "rule",
            "mixes Redis match keys (command, keys) with PostgreSQL ones (statement, tables, functions, without_where); write two rules",
        ));
    }
    if let Some(t) = target {
        let protocol = targets[t].protocol;
        let wrong: Option<(&str, Range<usize>)> = match protocol {
            Protocol::Redis => r
                .statement
                .as_ref()
                .map(|v| ("rule.statement", v.span()))
                .or(r.tables.as_ref().map(|v| ("rule.tables", v.span())))
                .or(r.functions.as_ref().map(|v| ("rule.functions", v.span())))
                .or(r
                    .without_where
                    .as_ref()
                    .map(|v| ("rule.without_where", v.span()))),
            Protocol::Postgres => r
                .command
                .as_ref()
                .map(|v| ("rule.command", v.span()))
                .or(r.keys.as_ref().map(|v| ("rule.keys", v.span()))),
        };
        if let Some((key, sp)) = wrong {
            return Err(cx.err(
                sp,
                key,
                format_args!(
                    "does not apply to target {:?} (protocol = \"{protocol}\")",
                    targets[t].name
                ),
            ));
        }
    }

    let matcher = if redis_keys {
        let mut m = RedisMatch::default();
        if let Some(v) = &r.command {
            for c in list(cx, v, "rule.command")? {
                m.commands.push(command_pattern(cx, v, c)?);
            }
        }
        if let Some(v) = &r.keys {
            for k in list(cx, v, "rule.keys")? {
                m.keys.push(Glob::new(k.as_bytes()));
            }
        }
        Matcher::Redis(m)
    } else if sql_keys {
        let mut m = SqlMatch::default();
        if let Some(v) = &r.statement {
            let mut kinds = KindSet::EMPTY;
            for st in list(cx, v, "rule.statement")? {
                match st.trim().to_ascii_uppercase().as_str() {
                    "UNKNOWN" => m.unknown = true,
                    "UNPARSEABLE" => m.unparseable = true,
                    _ => match StatementKind::from_name(st) {
                        Some(k) => kinds.insert(k),
                        None => {
                            return Err(cx.err(
                                v.span(),
                                "rule.statement",
                                format_args!(
                                    "{st:?} is not a statement kind; known: {}, UNKNOWN, UNPARSEABLE",
                                    StatementKind::ALL
                                        .iter()
                                        .map(|k| k.name())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            ));
                        }
                    },
                }
            }
            m.statements = (!kinds.is_empty()).then_some(kinds);
        }
        if let Some(v) = &r.tables {
            for t in list(cx, v, "rule.tables")? {
                let parts: Vec<&str> = t.split('.').collect();
                let pattern = match parts[..] {
                    [name] if !name.is_empty() => TablePattern {
                        schema: None,
                        name: Glob::new(name.as_bytes()),
                    },
                    [schema, name] if !schema.is_empty() && !name.is_empty() => TablePattern {
                        schema: Some(Glob::new(schema.as_bytes())),
                        name: Glob::new(name.as_bytes()),
                    },
                    _ => {
                        return Err(cx.err(
                            v.span(),
                            "rule.tables",
                            format_args!(
                                "{t:?}: expected \"table\" or \"schema.table\" (globs allowed)"
                            ),
                        ));
                    }
                };
                m.tables.push(pattern);
            }
        }
        if let Some(v) = &r.functions {
            for f in list(cx, v, "rule.functions")? {
                m.functions
                    .push(Glob::new(f.to_ascii_lowercase().as_bytes()));
            }
        }
        if let Some(v) = &r.without_where {
            if !*v.get_ref() {
                return Err(cx.err(
                    v.span(),
                    "rule.without_where",
                    "only `true` is meaningful; leave the key out otherwise",
                ));
            }
            m.without_where = true;
        }
        Matcher::Sql(m)
    } else {
        Matcher::Any
    };

    Ok(Rule {
        redis_reply: redis_refusal_text(&reason, id_s),
        id: id_s.as_str().into(),
        target,
        groups,
        action,
        reason,
        matcher,
        line,
    })
}

/// `GET`, `config set`, `CONFIG|SET` or `@dangerous`.
fn command_pattern(
    cx: &Ctx<'_>,
    v: &Spanned<Vec<String>>,
    c: &str,
) -> Result<CommandPattern, ConfigError> {
    if let Some(cat) = c.strip_prefix('@') {
        return match Categories::bit(cat.as_bytes()) {
            Some(bit) => Ok(CommandPattern::Category(bit)),
            None => Err(cx.err(
                v.span(),
                "rule.command",
                format_args!(
                    "{c:?} is not an ACL category; known: {}",
                    super::redis::CATEGORIES
                        .iter()
                        .map(|c| format!("@{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        };
    }
    let words: Vec<&str> = c.split([' ', '|']).filter(|w| !w.is_empty()).collect();
    let ok = |w: &str| {
        !w.is_empty()
            && w.len() <= NAME_BYTES_MAX
            && w.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'|' && b != b'@')
    };
    if words.is_empty() || words.len() > 2 || !words.iter().all(|w| ok(w)) {
        return Err(cx.err(
            v.span(),
            "rule.command",
            format_args!("{c:?}: expected a command, \"COMMAND SUBCOMMAND\" or \"@category\""),
        ));
    }
    Ok(CommandPattern::Name(
        words.join("|").to_ascii_uppercase().into_bytes().into(),
    ))
}
