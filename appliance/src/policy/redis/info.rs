//! Parsing the reply of `COMMAND` (the entries of `COMMAND INFO`).
//!
//! Each entry is an array: name, arity, flags, first key, last key, key
//! step, ACL categories, tips, key specifications, subcommands (Redis 7;
//! older servers stop after the categories or the step). Key
//! specifications are maps, written as flat arrays in RESP2.

use custos_parsers::resp::{self, Frame, Limits};

use super::keys::{Begin, Find, KeyFinder, KeySpec};
use super::{COMMANDS_MAX, Categories, CommandId, CommandInfo, NAME_BYTES_MAX};

/// Why a `COMMAND` reply could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// The reply is not a whole, valid RESP frame.
    #[error("the reply to COMMAND is not valid RESP: {0}")]
    Resp(String),
    /// The reply is an error (an ACL without `+command`, say).
    #[error("the store refused COMMAND: {0}")]
    Refused(String),
    /// The reply does not have the documented shape.
    #[error("the reply to COMMAND is malformed: {0}")]
    Shape(&'static str),
    /// More entries than [`COMMANDS_MAX`].
    #[error("the store lists more than {COMMANDS_MAX} commands")]
    TooMany,
}

/// Most key specifications kept per command.
const KEY_SPECS_MAX: usize = 16;

/// Parses a whole `COMMAND` reply into entries; subcommands follow their
/// container.
pub(super) fn parse(reply: &[u8]) -> Result<Vec<CommandInfo>, TableError> {
    let (frame, _) = resp::parse(reply, &Limits::reply())
        .map_err(|e| TableError::Resp(e.to_string()))?
        .ok_or(TableError::Resp("incomplete".into()))?;
    let entries = match &frame {
        Frame::Array(items) | Frame::Set(items) => items,
        Frame::Error(m) | Frame::BulkError(m) => {
            return Err(TableError::Refused(
                String::from_utf8_lossy(m.slice(reply)).into_owned(),
            ));
        }
        _ => return Err(TableError::Shape("not an array")),
    };
    let mut out = Vec::with_capacity(entries.len() * 2);
    for e in entries {
        // A null entry stands for an unknown name in `COMMAND INFO a b`.
        if matches!(e, Frame::NullBulk | Frame::NullArray | Frame::Null) {
            continue;
        }
        entry(reply, e, None, &mut out)?;
    }
    Ok(out)
}

fn entry(
    src: &[u8],
    e: &Frame,
    parent: Option<CommandId>,
    out: &mut Vec<CommandInfo>,
) -> Result<(), TableError> {
    let Frame::Array(f) = e else {
        return Err(TableError::Shape("an entry is not an array"));
    };
    if f.len() < 6 {
        return Err(TableError::Shape("an entry has fewer than 6 fields"));
    }
    if out.len() >= COMMANDS_MAX {
        return Err(TableError::TooMany);
    }
    let name = f[0]
        .bytes(src)
        .filter(|n| !n.is_empty() && n.len() <= NAME_BYTES_MAX * 2 + 1)
        .ok_or(TableError::Shape("a name is missing or too long"))?;
    let name = String::from_utf8_lossy(name).to_ascii_uppercase();
    let Frame::Integer(arity) = f[1] else {
        return Err(TableError::Shape("an arity is not an integer"));
    };
    let flags: Vec<&[u8]> = match &f[2] {
        Frame::Array(items) | Frame::Set(items) => {
            items.iter().filter_map(|i| i.bytes(src)).collect()
        }
        _ => return Err(TableError::Shape("flags are not an array")),
    };
    let int = |fr: &Frame| match fr {
        Frame::Integer(n) => Ok(*n),
        _ => Err(TableError::Shape("a key position is not an integer")),
    };
    let (first, last, step) = (int(&f[3])?, int(&f[4])?, int(&f[5])?);
    let mut categories = Categories::default();
    if let Some(Frame::Array(items) | Frame::Set(items)) = f.get(6) {
        for c in items.iter().filter_map(|i| i.bytes(src)) {
            // Categories a rule cannot name are of no use to policy.
            if let Some(bit) = Categories::bit(c.strip_prefix(b"@").unwrap_or(c)) {
                categories.insert(bit);
            }
        }
    }
    let movable = flags.iter().any(|f| f.eq_ignore_ascii_case(b"movablekeys"));
    let keys = match f.get(8) {
        Some(Frame::Array(specs) | Frame::Set(specs)) if !specs.is_empty() => key_specs(src, specs),
        // Redis before 7.0, or a command without keys: the legacy triple.
        _ => legacy(first, last, step, movable),
    };
    let id = out.len() as CommandId;
    let has_subs = matches!(f.get(9), Some(Frame::Array(s) | Frame::Set(s)) if !s.is_empty());
    out.push(CommandInfo {
        name: name.into(),
        arity: arity.clamp(i32::MIN as i64, i32::MAX as i64) as i32,
        categories,
        keys,
        parent,
        container: has_subs,
    });
    if let Some(Frame::Array(subs) | Frame::Set(subs)) = f.get(9)
        && !subs.is_empty()
    {
        if parent.is_some() {
            return Err(TableError::Shape("subcommands nested more than one level"));
        }
        for s in subs {
            entry(src, s, Some(id), out)?;
        }
    }
    Ok(())
}

/// Keys from the legacy (first, last, step) triple.
fn legacy(first: i64, last: i64, step: i64, movable: bool) -> KeyFinder {
    if movable {
        return KeyFinder::Unknown;
    }
    if first <= 0 {
        return KeyFinder::None;
    }
    let spec = KeySpec {
        begin: Begin::Index(first.min(i32::MAX as i64) as i32),
        find: Find::Range {
            // Legacy `last` is absolute (negative from the end); a spec's
            // is relative to the first key.
            last_key: if last < 0 {
                last.max(i32::MIN as i64) as i32
            } else {
                (last - first).clamp(0, i32::MAX as i64) as i32
            },
            step: step.clamp(1, i32::MAX as i64) as i32,
            limit: 0,
        },
    };
    KeyFinder::Specs(vec![spec].into())
}

/// A map, RESP3 `%` or a RESP2 flat array, as (key, value) pairs.
fn pairs<'f>(src: &[u8], f: &'f Frame) -> Vec<(&'f Frame, &'f Frame)> {
    let _ = src;
    match f {
        Frame::Map(p) => p.iter().map(|(k, v)| (k, v)).collect(),
        Frame::Array(items) => items.chunks_exact(2).map(|c| (&c[0], &c[1])).collect(),
        _ => Vec::new(),
    }
}

fn get<'f>(src: &[u8], f: &'f Frame, key: &[u8]) -> Option<&'f Frame> {
    pairs(src, f)
        .into_iter()
        .find(|(k, _)| k.bytes(src).is_some_and(|k| k.eq_ignore_ascii_case(key)))
        .map(|(_, v)| v)
}

fn get_int(src: &[u8], f: &Frame, key: &[u8]) -> Option<i32> {
    match get(src, f, key)? {
        Frame::Integer(n) => i32::try_from(*n).ok(),
        _ => None,
    }
}

/// Key specifications; any that cannot be followed exactly (type
/// `unknown`, flag `INCOMPLETE`, or a shape not understood) makes the keys
/// of the command unknown, which policy treats with suspicion.
fn key_specs(src: &[u8], specs: &[Frame]) -> KeyFinder {
    if specs.len() > KEY_SPECS_MAX {
        return KeyFinder::Unknown;
    }
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        match key_spec(src, s) {
            Some(spec) => out.push(spec),
            None => return KeyFinder::Unknown,
        }
    }
    KeyFinder::Specs(out.into())
}

fn key_spec(src: &[u8], s: &Frame) -> Option<KeySpec> {
    if let Some(Frame::Array(flags) | Frame::Set(flags)) = get(src, s, b"flags")
        && flags
            .iter()
            .filter_map(|f| f.bytes(src))
            .any(|f| f.eq_ignore_ascii_case(b"incomplete"))
    {
        return None;
    }
    let bs = get(src, s, b"begin_search")?;
    let bs_type = get(src, bs, b"type")?.bytes(src)?;
    let bs_spec = get(src, bs, b"spec")?;
    let begin = if bs_type.eq_ignore_ascii_case(b"index") {
        Begin::Index(get_int(src, bs_spec, b"index")?)
    } else if bs_type.eq_ignore_ascii_case(b"keyword") {
        let kw = get(src, bs_spec, b"keyword")?.bytes(src)?;
        if kw.is_empty() || kw.len() > NAME_BYTES_MAX {
            return None;
        }
        Begin::Keyword {
            keyword: kw.to_ascii_uppercase().into(),
            start_from: get_int(src, bs_spec, b"startfrom")?,
        }
    } else {
        return None;
    };
    let fk = get(src, s, b"find_keys")?;
    let fk_type = get(src, fk, b"type")?.bytes(src)?;
    let fk_spec = get(src, fk, b"spec")?;
    let find = if fk_type.eq_ignore_ascii_case(b"range") {
        Find::Range {
            last_key: get_int(src, fk_spec, b"lastkey")?,
            step: get_int(src, fk_spec, b"keystep")?.max(1),
            limit: get_int(src, fk_spec, b"limit")?.max(0),
        }
    } else if fk_type.eq_ignore_ascii_case(b"keynum") {
        Find::Keynum {
            keynum_index: get_int(src, fk_spec, b"keynumidx")?,
            first_key: get_int(src, fk_spec, b"firstkey")?,
            step: get_int(src, fk_spec, b"keystep")?.max(1),
        }
    } else {
        return None;
    };
    Some(KeySpec { begin, find })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_capture_parses_with_key_specs() {
        let cmds = parse(include_bytes!("builtin_commands.resp")).unwrap();
        let find = |n: &str| cmds.iter().find(|c| &*c.name == n).unwrap();
        assert!(matches!(find("GET").keys, KeyFinder::Specs(_)));
        assert!(matches!(find("PING").keys, KeyFinder::None));
        assert!(matches!(find("SORT").keys, KeyFinder::Unknown));
        assert!(find("CONFIG").container);
        assert!(find("CONFIG|SET").parent.is_some());
    }

    #[test]
    fn errors_and_garbage_are_refused() {
        assert!(matches!(
            parse(b"-NOPERM no\r\n"),
            Err(TableError::Refused(_))
        ));
        assert!(matches!(parse(b":1\r\n"), Err(TableError::Shape(_))));
        assert!(matches!(parse(b"*1\r\n"), Err(TableError::Resp(_))));
        assert!(matches!(
            parse(b"*1\r\n*2\r\n$3\r\nget\r\n:2\r\n"),
            Err(TableError::Shape(_))
        ));
    }

    #[test]
    fn a_pre_7_entry_uses_the_legacy_triple() {
        let reply = b"*1\r\n*6\r\n$4\r\nmset\r\n:-3\r\n*1\r\n+write\r\n:1\r\n:-1\r\n:2\r\n";
        let cmds = parse(reply).unwrap();
        let KeyFinder::Specs(specs) = &cmds[0].keys else {
            panic!("{:?}", cmds[0].keys)
        };
        let args: [&[u8]; 5] = [b"MSET", b"a", b"1", b"b", b"2"];
        let mut keys = Vec::new();
        let known = super::super::keys::for_each_key(specs, &args[..], |k| {
            keys.push(k.to_vec());
            false
        });
        assert!(known);
        assert_eq!(keys, [b"a".to_vec(), b"b".to_vec()]);
    }
}
