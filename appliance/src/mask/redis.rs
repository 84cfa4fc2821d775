//! Masking Redis replies.
//!
//! Every string in a reply (bulk, verbatim, simple, and the elements of
//! arrays, maps, sets, attributes and pushes) is scanned by the session's
//! detectors. Whole values are masked by key and by hash field: the command
//! decides which parts of its reply those are ([`Plan`]), because a reply
//! does not say which key or field it came from.
//!
//! A reply is rewritten only when something in it is masked: a first walk
//! only looks, and a clean reply (the common case) is forwarded from the
//! read buffer as it is.

use custos_parsers::resp::{self, CommandHead, Frame, Limits, encode};

use super::{Outcome, Scratch, SessionMask};

/// Widest positional plan: MGET/HMGET positions past this are masked as
/// if they matched (never less masking than asked for).
pub const POSITIONS_MAX: usize = 64;

/// Which parts of one command's reply are masked whole, beyond what the
/// detectors find.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Plan {
    /// Detectors only.
    #[default]
    Detect,
    /// Every string in the reply, with this rule's style (a value of a
    /// masked key, or a masked field asked for by name).
    Whole(u8),
    /// The top-level elements whose bits are set, with this rule's style
    /// (MGET of some masked keys, HMGET of some masked fields).
    Positional {
        /// The rule whose style masks.
        rule: u8,
        /// Bit `i` for element `i`.
        bits: u64,
    },
    /// Field/value pairs (HGETALL, HRANDFIELD ... WITHVALUES): values of
    /// masked fields.
    Pairs,
    /// `[cursor, [field, value, ...]]` (HSCAN).
    ScanPairs,
}

/// The plan for a command, from its arguments. `args` are the command's
/// arguments (name first) as far as they are known; `argc` is how many
/// there are in all. Arguments not in `args` are assumed to match.
pub fn plan(mask: &SessionMask, args: &[&[u8]], argc: usize) -> Plan {
    if !(mask.has_keys || mask.has_fields) || args.len() < 2 {
        return Plan::Detect;
    }
    let name = args[0];
    let is = |lit: &[u8]| name.eq_ignore_ascii_case(lit);
    let key_rule = mask.rule_for_key(args[1]);
    if is(b"MGET") {
        return positional(mask, args, argc, 1, |m, a| m.rule_for_key(a));
    }
    if let Some(r) = key_rule {
        return Plan::Whole(r as u8);
    }
    if !mask.has_fields {
        return Plan::Detect;
    }
    if is(b"HGET") {
        return match args.get(2) {
            Some(f) => mask
                .rule_for_field(f)
                .map_or(Plan::Detect, |r| Plan::Whole(r as u8)),
            None => first_field_rule(mask).map_or(Plan::Detect, |r| Plan::Whole(r as u8)),
        };
    }
    if is(b"HMGET") {
        return positional(mask, args, argc, 2, |m, a| m.rule_for_field(a));
    }
    if is(b"HGETALL") || is(b"HRANDFIELD") {
        return Plan::Pairs;
    }
    if is(b"HSCAN") {
        return Plan::ScanPairs;
    }
    Plan::Detect
}

fn first_field_rule(mask: &SessionMask) -> Option<usize> {
    mask.rules().iter().position(|r| !r.fields.is_empty())
}

/// Positions `from..argc` of the command map to reply elements
/// `0..argc-from`.
fn positional(
    mask: &SessionMask,
    args: &[&[u8]],
    argc: usize,
    from: usize,
    rule_of: impl Fn(&SessionMask, &[u8]) -> Option<usize>,
) -> Plan {
    let mut bits = 0u64;
    let mut rule = None;
    for i in from..argc {
        let pos = i - from;
        let hit = match args.get(i) {
            Some(a) => rule_of(mask, a),
            // Not buffered: assume the worst.
            None => rule.or_else(|| first_rule_with(mask, from)),
        };
        if let Some(r) = hit {
            if pos >= POSITIONS_MAX {
                return Plan::Whole(rule.unwrap_or(r) as u8);
            }
            rule.get_or_insert(r);
            bits |= 1 << pos;
        }
    }
    match rule {
        Some(r) => Plan::Positional {
            rule: r as u8,
            bits,
        },
        None => Plan::Detect,
    }
}

fn first_rule_with(mask: &SessionMask, from: usize) -> Option<usize> {
    mask.rules().iter().position(|r| {
        if from == 1 {
            !r.keys.is_empty()
        } else {
            !r.fields.is_empty()
        }
    })
}

/// The plan for the command whose head is `head` in `buf`: parses the whole
/// command when it is buffered (only sessions with key or field masks get
/// here), else plans from the captured head.
pub fn plan_for_command(mask: &SessionMask, buf: &[u8], head: &CommandHead) -> Plan {
    if let Ok(Some((Frame::Array(items), _))) = resp::parse(buf, &Limits::request()) {
        let args: Vec<&[u8]> = items.iter().filter_map(|f| f.bytes(buf)).collect();
        if args.len() == items.len() {
            return plan(mask, &args, args.len());
        }
    }
    let mut args: [&[u8]; resp::HEAD_ARGS] = [&[]; resp::HEAD_ARGS];
    for (i, a) in head.captured_args().iter().enumerate() {
        args[i] = a.slice(buf);
    }
    plan(mask, &args[..head.captured], head.argc)
}

/// How one node of a reply is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Detect,
    Whole(usize),
}

/// Masks one whole reply frame. Returns `Ok(true)` with the rewritten frame
/// appended to `out`, `Ok(false)` when the frame goes out as it is.
pub fn mask_reply(
    mask: &SessionMask,
    plan: Plan,
    frame: &[u8],
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> Result<bool, resp::Error> {
    // The common reply, a single bulk string: no tree, no allocation.
    if plan == Plan::Detect && frame.first() == Some(&b'$') {
        let Some((Frame::Bulk(view), _)) = resp::parse(frame, &Limits::reply())? else {
            return Ok(false);
        };
        let payload = view.slice(frame);
        if !mask.dirty(payload, scratch) {
            return Ok(false);
        }
        encode_masked_bulk(mask, payload, scratch, out);
        return Ok(true);
    }
    let Some((tree, _)) = resp::parse(frame, &Limits::reply())? else {
        return Ok(false);
    };
    let w = Walker {
        mask,
        src: frame,
        plan,
    };
    if !w.dirty_top(&tree, scratch) {
        return Ok(false);
    }
    w.emit_top(&tree, scratch, out);
    Ok(true)
}

/// Writes a top-level bulk string whose payload a detector matched.
fn encode_masked_bulk(
    mask: &SessionMask,
    payload: &[u8],
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) {
    let mut tmp = Vec::with_capacity(payload.len());
    match mask.detect(payload, scratch, &mut tmp) {
        Outcome::Clean => encode::bulk(out, payload),
        Outcome::Rewritten => encode::bulk(out, &tmp),
        Outcome::Null => encode::null_bulk(out),
    }
}

struct Walker<'a> {
    mask: &'a SessionMask,
    src: &'a [u8],
    plan: Plan,
}

/// Children modes of the top-level frame under a plan.
enum Top {
    All(Mode),
    Positional { rule: usize, bits: u64 },
    Pairs,
    ScanPairs,
}

impl Walker<'_> {
    fn top(&self) -> Top {
        match self.plan {
            Plan::Detect => Top::All(Mode::Detect),
            Plan::Whole(r) => Top::All(Mode::Whole(r as usize)),
            Plan::Positional { rule, bits } => Top::Positional {
                rule: rule as usize,
                bits,
            },
            Plan::Pairs => Top::Pairs,
            Plan::ScanPairs => Top::ScanPairs,
        }
    }

    fn field_mode(&self, field: &Frame) -> Mode {
        match field
            .bytes(self.src)
            .and_then(|f| self.mask.rule_for_field(f))
        {
            Some(r) => Mode::Whole(r),
            None => Mode::Detect,
        }
    }

    // ---- looking ----

    fn dirty_top(&self, f: &Frame, s: &mut Scratch) -> bool {
        match (self.top(), f) {
            (Top::All(mode), _) => self.dirty(f, mode, s),
            (Top::Positional { rule, bits }, Frame::Array(items) | Frame::Set(items)) => {
                items.iter().enumerate().any(|(i, item)| {
                    let mode = if i < POSITIONS_MAX && bits & (1 << i) != 0 {
                        Mode::Whole(rule)
                    } else {
                        Mode::Detect
                    };
                    self.dirty(item, mode, s)
                })
            }
            (Top::Pairs, _) => self.dirty_pairs(f, s),
            (Top::ScanPairs, Frame::Array(items)) if items.len() == 2 => {
                self.dirty(&items[0], Mode::Detect, s) || self.dirty_pairs(&items[1], s)
            }
            (_, _) => self.dirty(f, Mode::Detect, s),
        }
    }

    fn dirty_pairs(&self, f: &Frame, s: &mut Scratch) -> bool {
        match f {
            Frame::Map(pairs) => pairs.iter().any(|(k, v)| {
                self.dirty(k, Mode::Detect, s) || self.dirty(v, self.field_mode(k), s)
            }),
            Frame::Array(items)
                if items
                    .iter()
                    .all(|i| matches!(i, Frame::Array(p) if p.len() == 2))
                    && !items.is_empty() =>
            {
                items.iter().any(|p| self.dirty_pairs(p, s))
            }
            Frame::Array(items) => items.chunks(2).any(|c| match c {
                [k, v] => self.dirty(k, Mode::Detect, s) || self.dirty(v, self.field_mode(k), s),
                [k] => self.dirty(k, Mode::Detect, s),
                _ => false,
            }),
            other => self.dirty(other, Mode::Detect, s),
        }
    }

    fn dirty(&self, f: &Frame, mode: Mode, s: &mut Scratch) -> bool {
        match f {
            Frame::Simple(v) | Frame::Error(v) | Frame::Bulk(v) | Frame::BulkError(v) => match mode
            {
                Mode::Whole(_) => true,
                Mode::Detect => self.mask.dirty(v.slice(self.src), s),
            },
            Frame::Verbatim { text, .. } => match mode {
                Mode::Whole(_) => true,
                Mode::Detect => self.mask.dirty(text.slice(self.src), s),
            },
            Frame::Array(items) | Frame::Set(items) | Frame::Push(items) => {
                items.iter().any(|i| self.dirty(i, mode, s))
            }
            Frame::Map(pairs) => pairs
                .iter()
                .any(|(k, v)| self.dirty(k, mode, s) || self.dirty(v, mode, s)),
            Frame::Attribute { attrs, value } => {
                attrs
                    .iter()
                    .any(|(k, v)| self.dirty(k, Mode::Detect, s) || self.dirty(v, Mode::Detect, s))
                    || self.dirty(value, mode, s)
            }
            Frame::Integer(_)
            | Frame::NullBulk
            | Frame::NullArray
            | Frame::Null
            | Frame::Boolean(_)
            | Frame::Double(_)
            | Frame::BigNumber(_) => false,
        }
    }

    // ---- writing ----

    fn emit_top(&self, f: &Frame, s: &mut Scratch, out: &mut Vec<u8>) {
        match (self.top(), f) {
            (Top::All(mode), _) => self.emit(f, mode, s, out),
            (Top::Positional { rule, bits }, Frame::Array(items) | Frame::Set(items)) => {
                if matches!(f, Frame::Set(_)) {
                    encode::set_header(out, items.len());
                } else {
                    encode::array_header(out, items.len());
                }
                for (i, item) in items.iter().enumerate() {
                    let mode = if i < POSITIONS_MAX && bits & (1 << i) != 0 {
                        Mode::Whole(rule)
                    } else {
                        Mode::Detect
                    };
                    self.emit(item, mode, s, out);
                }
            }
            (Top::Pairs, _) => self.emit_pairs(f, s, out),
            (Top::ScanPairs, Frame::Array(items)) if items.len() == 2 => {
                encode::array_header(out, 2);
                self.emit(&items[0], Mode::Detect, s, out);
                self.emit_pairs(&items[1], s, out);
            }
            (_, _) => self.emit(f, Mode::Detect, s, out),
        }
    }

    fn emit_pairs(&self, f: &Frame, s: &mut Scratch, out: &mut Vec<u8>) {
        match f {
            Frame::Map(pairs) => {
                encode::map_header(out, pairs.len());
                for (k, v) in pairs {
                    self.emit(k, Mode::Detect, s, out);
                    self.emit(v, self.field_mode(k), s, out);
                }
            }
            Frame::Array(items)
                if !items.is_empty()
                    && items
                        .iter()
                        .all(|i| matches!(i, Frame::Array(p) if p.len() == 2)) =>
            {
                encode::array_header(out, items.len());
                for p in items {
                    self.emit_pairs(p, s, out);
                }
            }
            Frame::Array(items) => {
                encode::array_header(out, items.len());
                for c in items.chunks(2) {
                    match c {
                        [k, v] => {
                            self.emit(k, Mode::Detect, s, out);
                            self.emit(v, self.field_mode(k), s, out);
                        }
                        [k] => self.emit(k, Mode::Detect, s, out),
                        _ => {}
                    }
                }
            }
            other => self.emit(other, Mode::Detect, s, out),
        }
    }

    /// Appends the masked form of string `value` (or `None` when the
    /// value is to become null) through `write`.
    fn masked<'s>(
        &self,
        value: &'s [u8],
        mode: Mode,
        s: &mut Scratch,
        tmp: &'s mut Vec<u8>,
    ) -> Option<&'s [u8]> {
        tmp.clear();
        let outcome = match mode {
            Mode::Whole(r) => self.mask.whole(r, value, tmp),
            Mode::Detect => self.mask.detect(value, s, tmp),
        };
        match outcome {
            Outcome::Clean => Some(value),
            Outcome::Rewritten => Some(tmp.as_slice()),
            Outcome::Null => None,
        }
    }

    fn emit(&self, f: &Frame, mode: Mode, s: &mut Scratch, out: &mut Vec<u8>) {
        let mut tmp = Vec::new();
        match f {
            Frame::Bulk(v) => match self.masked(v.slice(self.src), mode, s, &mut tmp) {
                Some(m) => encode::bulk(out, m),
                None => encode::null_bulk(out),
            },
            Frame::BulkError(v) => match self.masked(v.slice(self.src), mode, s, &mut tmp) {
                Some(m) => encode::bulk_error(out, m),
                None => encode::bulk_error(out, b"****"),
            },
            Frame::Simple(v) => match self.masked(v.slice(self.src), mode, s, &mut tmp) {
                Some(m) => encode::simple(out, m),
                None => encode::null_bulk(out),
            },
            Frame::Error(v) => match self.masked(v.slice(self.src), mode, s, &mut tmp) {
                Some(m) => encode::error(out, m),
                None => encode::error(out, b"ERR ****"),
            },
            Frame::Verbatim { format, text } => {
                let fmt: [u8; 3] = format.slice(self.src).try_into().unwrap_or(*b"txt");
                match self.masked(text.slice(self.src), mode, s, &mut tmp) {
                    Some(m) => encode::verbatim(out, &fmt, m),
                    None => encode::null_bulk(out),
                }
            }
            Frame::Array(items) => {
                encode::array_header(out, items.len());
                items.iter().for_each(|i| self.emit(i, mode, s, out));
            }
            Frame::Set(items) => {
                encode::set_header(out, items.len());
                items.iter().for_each(|i| self.emit(i, mode, s, out));
            }
            Frame::Push(items) => {
                encode::push_header(out, items.len());
                items.iter().for_each(|i| self.emit(i, mode, s, out));
            }
            Frame::Map(pairs) => {
                encode::map_header(out, pairs.len());
                for (k, v) in pairs {
                    self.emit(k, mode, s, out);
                    self.emit(v, mode, s, out);
                }
            }
            Frame::Attribute { attrs, value } => {
                encode::attribute_header(out, attrs.len());
                for (k, v) in attrs {
                    self.emit(k, Mode::Detect, s, out);
                    self.emit(v, Mode::Detect, s, out);
                }
                self.emit(value, mode, s, out);
            }
            other => other.encode(self.src, out),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::identity::Identity;
    use crate::mask::Masks;

    fn session(toml: &str) -> std::rc::Rc<SessionMask> {
        #[derive(serde::Deserialize)]
        struct File {
            mask: Vec<toml::Spanned<crate::mask::config::RawMask>>,
        }
        let f: File = toml::from_str(toml).unwrap();
        let rules =
            crate::mask::config::validate(Path::new("t.toml"), toml, Path::new("."), &f.mask, &[])
                .unwrap();
        Masks::new(rules)
            .for_session("cache", &Identity::anonymous())
            .unwrap()
    }

    const MASK: &str = r#"
[[mask]]
detectors = ["credit_card", "email"]
keys = ["secret:*"]
fields = ["ssn"]
"#;

    fn masked(mask: &SessionMask, plan: Plan, frame: &[u8]) -> Option<String> {
        let mut out = Vec::new();
        let changed = mask_reply(mask, plan, frame, &mut Scratch::default(), &mut out).unwrap();
        changed.then(|| String::from_utf8(out).unwrap())
    }

    #[test]
    fn plans_follow_the_command() {
        let m = session(MASK);
        let p = |args: &[&str]| {
            let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
            plan(&m, &a, a.len())
        };
        assert_eq!(p(&["GET", "plain"]), Plan::Detect);
        assert_eq!(p(&["get", "secret:x"]), Plan::Whole(0));
        assert_eq!(
            p(&["MGET", "a", "secret:1", "b", "secret:2"]),
            Plan::Positional {
                rule: 0,
                bits: 0b1010
            }
        );
        assert_eq!(p(&["HGET", "h", "ssn"]), Plan::Whole(0));
        assert_eq!(p(&["HGET", "h", "name"]), Plan::Detect);
        assert_eq!(
            p(&["HMGET", "h", "name", "ssn"]),
            Plan::Positional {
                rule: 0,
                bits: 0b10
            }
        );
        assert_eq!(p(&["HGETALL", "h"]), Plan::Pairs);
        assert_eq!(p(&["HSCAN", "h", "0"]), Plan::ScanPairs);
        // Arguments not seen (a command larger than what was captured)
        // count as masked.
        let a: Vec<&[u8]> = vec![b"MGET", b"a"];
        assert_eq!(
            plan(&m, &a, 3),
            Plan::Positional {
                rule: 0,
                bits: 0b10
            }
        );
    }

    #[test]
    fn replies_are_rewritten_only_when_something_is_masked() {
        let m = session(MASK);
        let card = "4111 1111 1111 1111";
        assert_eq!(masked(&m, Plan::Detect, b"$5\r\nhello\r\n"), None);
        assert_eq!(
            masked(
                &m,
                Plan::Detect,
                format!("${}\r\n{card}\r\n", card.len()).as_bytes()
            ),
            Some("$4\r\n****\r\n".into())
        );
        assert_eq!(
            masked(&m, Plan::Whole(0), b"$6\r\nsecret\r\n"),
            Some("$4\r\n****\r\n".into())
        );
        // Positional: only element 1, and nulls stay nulls.
        assert_eq!(
            masked(
                &m,
                Plan::Positional {
                    rule: 0,
                    bits: 0b110
                },
                b"*3\r\n$1\r\na\r\n$1\r\nb\r\n$-1\r\n"
            ),
            Some("*3\r\n$1\r\na\r\n$4\r\n****\r\n$-1\r\n".into())
        );
        // Pairs, RESP2 flat and RESP3 map.
        assert_eq!(
            masked(
                &m,
                Plan::Pairs,
                b"*4\r\n$4\r\nname\r\n$4\r\nJane\r\n$3\r\nssn\r\n$3\r\n123\r\n"
            ),
            Some("*4\r\n$4\r\nname\r\n$4\r\nJane\r\n$3\r\nssn\r\n$4\r\n****\r\n".into())
        );
        assert_eq!(
            masked(&m, Plan::Pairs, b"%1\r\n$3\r\nssn\r\n$3\r\n123\r\n"),
            Some("%1\r\n$3\r\nssn\r\n$4\r\n****\r\n".into())
        );
        assert_eq!(
            masked(&m, Plan::Pairs, b"%1\r\n$4\r\nname\r\n$3\r\nBob\r\n"),
            None
        );
        // Nested aggregates, verbatim strings, push messages.
        let push = b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$17\r\nmail a@example.io\r\n";
        assert_eq!(
            masked(&m, Plan::Detect, push),
            Some(">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$9\r\nmail ****\r\n".into())
        );
        let verbatim = b"=21\r\ntxt:mail a@example.io\r\n";
        assert_eq!(
            masked(&m, Plan::Detect, verbatim),
            Some("=13\r\ntxt:mail ****\r\n".into())
        );
        // Integers and other scalars are never touched.
        assert_eq!(masked(&m, Plan::Whole(0), b":4111111111111111\r\n"), None);
    }
}
