//! Masking PostgreSQL replies.
//!
//! - `DataRow` values: whole by column (`columns`), by detector on text
//!   columns. A row does not say which columns it carries, so the session
//!   follows the reply stream ([`Tracker`]): a simple query's rows follow its
//!   `RowDescription`; an extended-protocol `Execute`'s rows follow the
//!   `RowDescription` of a `Describe` of its portal. When the client did not
//!   describe the portal itself, the appliance sends that `Describe` in front
//!   of the `Execute` and keeps the answer to itself, so every row's shape is
//!   known, whatever the driver does.
//! - Columns are resolved to table OIDs and attribute numbers once per
//!   session, from the store's catalog ([`catalog_query`]): an alias does
//!   not hide a masked column. Unqualified names also match by result
//!   column name, which covers expressions and views named like the column.
//! - `ErrorResponse` and `NoticeResponse` fields (a unique violation's
//!   DETAIL repeats the value) and `NOTIFY` payloads go through the
//!   detectors.

use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use custos_parsers::pgwire::backend::{self, RowDescription};
use custos_parsers::pgwire::encode::{self, Rewrite};
use custos_parsers::pgwire::frontend;

use super::{ColumnRef, Outcome, Scratch, SessionMask};

/// Portal shapes remembered at once; a client that describes more portals
/// before executing them gets the oldest forgotten (and described again by
/// the appliance on Execute).
pub const PORTALS_MAX: usize = 64;
/// Reply-stream entries tracked at once; beyond this the tracker stops
/// trusting its state and masks every value of unknown rows by detector.
pub const TRACKED_MAX: usize = 1 << 16;
/// Prepared statements whose row plans are remembered at once; past it the
/// remembered ones are forgotten (and learnt again from the next Describe).
pub const STATEMENTS_MAX: usize = 1024;

/// Built-in type OIDs whose values are text (`pg_type.typcategory` 'S'
/// and the JSON, XML and unknown types), in either format.
const TEXT_TYPES: [u32; 9] = [
    25,   // text
    1043, // varchar
    1042, // bpchar
    19,   // name
    18,   // "char"
    114,  // json
    3802, // jsonb (binary: a version byte, then the text)
    142,  // xml
    705,  // unknown (string literals)
];
/// Arrays of those, in text format only.
const TEXT_ARRAY_TYPES: [u32; 6] = [1009, 1015, 1014, 1003, 199, 3807];
/// Types created in a database get OIDs from here on (citext, domains,
/// enums, composites): their text form may carry anything.
const FIRST_USER_OID: u32 = 16384;

/// How one column of a row is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    /// Forwarded as is (numbers, dates, binary non-text values).
    Keep,
    /// Scanned by the detectors.
    Detect,
    /// Masked whole with this rule's style.
    Whole(usize),
}

/// The masking plan of one row shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    cols: Vec<Col>,
}

impl Shape {
    /// Whether no column needs looking at.
    pub fn is_clean(&self) -> bool {
        self.cols.iter().all(|c| *c == Col::Keep)
    }

    /// The plan of each column.
    pub fn cols(&self) -> &[Col] {
        &self.cols
    }
}

/// Masked columns resolved to `(table OID, attribute number)`.
#[derive(Debug, Default, Clone)]
pub struct ColumnIndex {
    by_attr: HashMap<(u32, i16), usize>,
}

impl ColumnIndex {
    /// Number of resolved columns.
    pub fn len(&self) -> usize {
        self.by_attr.len()
    }

    /// Whether nothing was resolved.
    pub fn is_empty(&self) -> bool {
        self.by_attr.is_empty()
    }
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The catalog query that resolves the session's masked columns: one row
/// per column, `rule index, table OID, attribute number`. `None` when the
/// session masks no column.
pub fn catalog_query(mask: &SessionMask) -> Option<String> {
    let mut arms = Vec::new();
    for (i, rule) in mask.rules().iter().enumerate() {
        for ColumnRef {
            schema,
            table,
            column,
        } in &rule.columns
        {
            let mut cond = format!("a.attname = {}", quote_literal(column));
            if let Some(t) = table {
                cond.push_str(&format!(" AND c.relname = {}", quote_literal(t)));
            }
            if let Some(s) = schema {
                cond.push_str(&format!(" AND n.nspname = {}", quote_literal(s)));
            }
            arms.push(format!(
                "SELECT {i}, c.oid, a.attnum FROM pg_catalog.pg_attribute a \
                 JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 WHERE a.attnum > 0 AND NOT a.attisdropped AND {cond}"
            ));
        }
    }
    if arms.is_empty() {
        return None;
    }
    Some(arms.join(" UNION ALL "))
}

/// Adds one row of the [`catalog_query`] result (text format).
pub fn add_catalog_row(index: &mut ColumnIndex, values: &[Option<&[u8]>]) {
    let num = |v: Option<&Option<&[u8]>>| -> Option<i64> {
        std::str::from_utf8(v?.as_ref()?).ok()?.parse().ok()
    };
    if let (Some(rule), Some(oid), Some(attnum)) =
        (num(values.first()), num(values.get(1)), num(values.get(2)))
    {
        // The first rule naming a column wins, as rules apply in order.
        index
            .by_attr
            .entry((oid as u32, attnum as i16))
            .or_insert(rule as usize);
    }
}

/// The plan for rows described by `rd`.
pub fn shape(mask: &SessionMask, columns: &ColumnIndex, rd: &RowDescription<'_>) -> Shape {
    shape_as(mask, columns, rd, None)
}

/// The plan for rows described by `rd` with every column in `format`
/// (`None`: each in the format `rd` gives).
fn shape_as(
    mask: &SessionMask,
    columns: &ColumnIndex,
    rd: &RowDescription<'_>,
    format: Option<i16>,
) -> Shape {
    let cols = rd
        .fields()
        .map(|f| {
            if let Some(&rule) = columns.by_attr.get(&(f.table_oid, f.column)) {
                return Col::Whole(rule);
            }
            if mask.has_columns
                && let Some(rule) = mask.rules().iter().position(|r| {
                    r.columns
                        .iter()
                        .any(|c| c.table.is_none() && c.column.as_bytes() == f.name)
                })
            {
                return Col::Whole(rule);
            }
            if !mask.scans() {
                return Col::Keep;
            }
            let text = TEXT_TYPES.contains(&f.type_oid);
            let detect = match format.unwrap_or(f.format) {
                0 => text || TEXT_ARRAY_TYPES.contains(&f.type_oid) || f.type_oid >= FIRST_USER_OID,
                _ => text,
            };
            if detect { Col::Detect } else { Col::Keep }
        })
        .collect();
    Shape { cols }
}

/// Masks one `DataRow`. `shape` is `None` when the row's description is
/// unknown: every value is then scanned by the detectors. Returns `true`
/// with the rewritten message appended to `out`.
pub fn mask_data_row(
    mask: &SessionMask,
    shape: Option<&Shape>,
    msg: &[u8],
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> bool {
    let Ok(backend::Message::DataRow(row)) = backend::parse(msg) else {
        return false;
    };
    let col = |i: usize| match shape {
        Some(s) => s.cols.get(i).copied().unwrap_or(Col::Detect),
        None if mask.scans() => Col::Detect,
        None => Col::Keep,
    };
    // Look first: most rows are clean and go out from the read buffer.
    let dirty = row.values().enumerate().any(|(i, v)| match (col(i), v) {
        (_, None) | (Col::Keep, _) => false,
        (Col::Whole(_), Some(_)) => true,
        (Col::Detect, Some(v)) => mask.dirty(v, scratch),
    });
    if !dirty {
        return false;
    }
    let start = out.len();
    let changed = encode::data_row_rewrite(out, &row, |i, v, out| {
        let Some(v) = v else { return Rewrite::Keep };
        let outcome = match col(i) {
            Col::Keep => return Rewrite::Keep,
            Col::Whole(rule) => mask.whole(rule, v, out),
            Col::Detect => mask.detect(v, scratch, out),
        };
        match outcome {
            Outcome::Clean => Rewrite::Keep,
            Outcome::Rewritten => Rewrite::Replaced,
            Outcome::Null => Rewrite::Null,
        }
    });
    if changed == 0 {
        out.truncate(start);
        return false;
    }
    true
}

/// Masks the fields of an `ErrorResponse` or `NoticeResponse` (message,
/// detail, hint, context, query text: every field but the codes).
pub fn mask_fields(
    mask: &SessionMask,
    msg: &[u8],
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> bool {
    if !mask.scans() {
        return false;
    }
    let fields = match backend::parse(msg) {
        Ok(backend::Message::ErrorResponse(f) | backend::Message::NoticeResponse(f)) => f,
        _ => return false,
    };
    // Severity, SQLSTATE, position, line and routine are not data.
    let data_field = |code: u8| !matches!(code, b'S' | b'V' | b'C' | b'P' | b'p' | b'L' | b'R');
    if !fields
        .iter()
        .any(|(code, v)| data_field(code) && mask.dirty(v, scratch))
    {
        return false;
    }
    let at = begin(out, msg[0]);
    for (code, v) in fields.iter() {
        out.push(code);
        if data_field(code) {
            detected_text(mask, v, scratch, out)
        } else {
            out.extend_from_slice(v);
        }
        out.push(0);
    }
    out.push(0);
    end(out, at);
    true
}

/// Masks the payload of a `NotificationResponse`.
pub fn mask_notification(
    mask: &SessionMask,
    msg: &[u8],
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> bool {
    if !mask.scans() {
        return false;
    }
    let Ok(backend::Message::NotificationResponse {
        pid,
        channel,
        payload,
    }) = backend::parse(msg)
    else {
        return false;
    };
    if !mask.dirty(payload, scratch) {
        return false;
    }
    let at = begin(out, backend::tag::NOTIFICATION_RESPONSE);
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(channel);
    out.push(0);
    detected_text(mask, payload, scratch, out);
    out.push(0);
    end(out, at);
    true
}

/// Masks one `CopyData` row of a text or CSV `COPY ... TO STDOUT` with the
/// detectors (a COPY row does not say which columns it carries).
pub fn mask_copy_data(
    mask: &SessionMask,
    msg: &[u8],
    scratch: &mut Scratch,
    out: &mut Vec<u8>,
) -> bool {
    if !mask.scans() || msg.len() < 5 {
        return false;
    }
    let payload = &msg[5..];
    if !mask.dirty(payload, scratch) {
        return false;
    }
    let at = begin(out, msg[0]);
    detected_text(mask, payload, scratch, out);
    end(out, at);
    true
}

/// Appends `text` with what the detectors find masked, for message fields
/// that have no null (a null-style match becomes `****`).
fn detected_text(mask: &SessionMask, text: &[u8], scratch: &mut Scratch, out: &mut Vec<u8>) {
    match mask.detect(text, scratch, out) {
        Outcome::Clean => out.extend_from_slice(text),
        Outcome::Rewritten => {}
        Outcome::Null => out.extend_from_slice(b"****"),
    }
}

fn begin(out: &mut Vec<u8>, tag: u8) -> usize {
    out.push(tag);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

fn end(out: &mut [u8], at: usize) {
    let len = u32::try_from(out.len() - at).unwrap_or(u32::MAX);
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// A request whose replies the tracker waits for, in stream order.
#[derive(Debug)]
enum Awaited {
    /// A simple Query (or FunctionCall): rows follow its own descriptions;
    /// done at ReadyForQuery.
    Simple,
    /// Describe of a statement: its RowDescription is not a row shape.
    DescribeStatement,
    /// Describe of a portal; `injected` when the appliance sent it and the
    /// client must not see the answer; `statement` when the answer also
    /// describes the named statement the portal was bound from (see
    /// [`Tracker::statements`]), with the statements epoch of the Describe.
    DescribePortal {
        name: Box<[u8]>,
        injected: bool,
        statement: Option<(Box<[u8]>, u64)>,
    },
    /// Execute of a portal; `shape` when its rows' plan was known at its
    /// Bind (from its statement's), so no Describe was needed.
    Execute {
        name: Box<[u8]>,
        shape: Option<Option<Rc<Shape>>>,
    },
    /// Sync: done at ReadyForQuery.
    Sync,
}

/// What to do with one message from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// Forward it (masked if it is a row, an error or a notification).
    Forward,
    /// The answer to a Describe the appliance sent: not for the client.
    Swallow,
    /// A row of this shape (`None`: unknown).
    Row(Option<Rc<Shape>>),
}

/// A portal name and the shape of its rows (`None`: it returns none).
type DescribedPortal = (Box<[u8]>, Option<Rc<Shape>>);

/// The row plans of a prepared statement's portals, by result format
/// (`None`: the statement returns no rows).
#[derive(Debug, Clone)]
struct StatementRows(Option<[Rc<Shape>; 2]>);

impl StatementRows {
    /// The plan of a portal bound with `formats` (Bind's result format
    /// codes); `None` when a code is missing or unknown (the store refuses
    /// such a Bind; its Execute is described as usual).
    fn portal(&self, formats: &custos_parsers::pgwire::Formats<'_>) -> Option<Option<Rc<Shape>>> {
        let Some([text, binary]) = &self.0 else {
            return Some(None);
        };
        let pick = |f: i16| match f {
            0 => Some(text),
            1 => Some(binary),
            _ => None,
        };
        if formats.len() <= 1 {
            return pick(formats.format_of(0)?).map(|s| Some(s.clone()));
        }
        let cols = (0..text.cols.len())
            .map(|i| Some(pick(formats.format_of(i)?)?.cols[i]))
            .collect::<Option<Vec<Col>>>()?;
        Some(Some(Rc::new(Shape { cols })))
    }
}

/// The last Bind of a named statement. Its buffers are reused from Bind to
/// Bind, so following Binds allocates nothing.
#[derive(Debug, Default)]
struct Bound {
    /// Whether the fields below describe the last Bind (not after a Bind
    /// of the unnamed statement, nor once statements were forgotten).
    live: bool,
    portal: Vec<u8>,
    statement: Vec<u8>,
    /// The statements epoch at the Bind.
    epoch: u64,
    /// The portal's plan, when its statement's was known at the Bind.
    shape: Option<Option<Rc<Shape>>>,
}

impl Bound {
    fn clear(&mut self) {
        self.live = false;
        self.shape = None;
    }

    /// The portal's plan known since its Bind, if `portal` is that portal.
    fn shape_of(&self, portal: &[u8]) -> Option<Option<Rc<Shape>>> {
        if self.live && self.portal == portal {
            self.shape.clone()
        } else {
            None
        }
    }
}

/// Follows both directions of a masked session to know each row's shape.
#[derive(Debug, Default)]
pub struct Tracker {
    awaited: VecDeque<Awaited>,
    /// Shape of the current simple-query result.
    simple: Option<Rc<Shape>>,
    /// Shapes of described portals, newest last.
    portals: VecDeque<DescribedPortal>,
    /// The portal the client described since its last Bind or Execute.
    described: Option<Box<[u8]>>,
    /// Row plans of named prepared statements, learnt from the answer to
    /// the first Describe of a portal bound from each: a later Bind of the
    /// same statement knows its portal's plan (the statement's, in the
    /// Bind's result formats), so its Execute needs no Describe. A
    /// statement's result columns cannot change while it exists (the store
    /// refuses to run it if they would), and every way of redefining one
    /// (Parse, Close, SQL PREPARE or DEALLOCATE in a simple query) goes
    /// through this tracker first.
    statements: HashMap<Box<[u8]>, StatementRows>,
    /// Bumped by every message that may redefine a statement: an answer to
    /// a Describe sent before it is not learnt from.
    epoch: u64,
    /// The last Bind of a named statement.
    bound: Bound,
    /// The awaited list overflowed: shapes are unknown until the next
    /// ReadyForQuery with nothing awaited.
    lost: bool,
}

impl Tracker {
    fn push(&mut self, a: Awaited) {
        if self.awaited.len() >= TRACKED_MAX {
            self.lost = true;
            return;
        }
        self.awaited.push_back(a);
    }

    /// Notes a whole client message before it is forwarded. Returns the
    /// portal to describe in front of it (an Execute of a portal the client
    /// did not describe since binding it).
    pub fn frontend(&mut self, msg: &[u8]) -> Option<Box<[u8]>> {
        use frontend::tag;
        match msg.first().copied() {
            Some(tag::QUERY) => {
                // SQL PREPARE and DEALLOCATE name statements too.
                self.forget_statements();
                self.push(Awaited::Simple);
            }
            Some(tag::FUNCTION_CALL) => self.push(Awaited::Simple),
            Some(tag::SYNC) => self.push(Awaited::Sync),
            Some(tag::PARSE | tag::CLOSE) => match frontend::parse(msg) {
                Ok(
                    frontend::Message::Parse {
                        statement: name, ..
                    }
                    | frontend::Message::Close {
                        kind: frontend::KIND_STATEMENT,
                        name,
                    },
                ) => {
                    self.epoch += 1;
                    self.statements.remove(name);
                }
                Ok(_) => {}
                Err(_) => self.forget_statements(),
            },
            Some(tag::BIND) => {
                self.described = None;
                self.bound.clear();
                if let Ok(frontend::Message::Bind(b)) = frontend::parse(msg)
                    && !b.statement.is_empty()
                {
                    let bound = &mut self.bound;
                    bound.shape = self
                        .statements
                        .get(b.statement)
                        .and_then(|rows| rows.portal(&b.result_formats));
                    bound.portal.clear();
                    bound.portal.extend_from_slice(b.portal);
                    bound.statement.clear();
                    bound.statement.extend_from_slice(b.statement);
                    bound.epoch = self.epoch;
                    bound.live = true;
                }
            }
            Some(tag::DESCRIBE) => match frontend::parse(msg) {
                Ok(frontend::Message::Describe { kind, name }) if kind == frontend::KIND_PORTAL => {
                    self.described = Some(name.into());
                    let statement = self.learns(name);
                    self.push(Awaited::DescribePortal {
                        name: name.into(),
                        injected: false,
                        statement,
                    });
                }
                _ => self.push(Awaited::DescribeStatement),
            },
            Some(tag::EXECUTE) => {
                let Ok(frontend::Message::Execute { portal, .. }) = frontend::parse(msg) else {
                    return None;
                };
                let known = self.bound.shape_of(portal);
                let inject = known.is_none() && self.described.as_deref() != Some(portal);
                self.described = None;
                if inject {
                    let statement = self.learns(portal);
                    self.push(Awaited::DescribePortal {
                        name: portal.into(),
                        injected: true,
                        statement,
                    });
                }
                self.push(Awaited::Execute {
                    name: portal.into(),
                    shape: known,
                });
                if inject {
                    return Some(portal.into());
                }
            }
            _ => {}
        }
        None
    }

    /// The statement whose plan the answer to a Describe of `portal` sent
    /// now gives: the one its last Bind named, if nothing may have
    /// redefined statements since; with the epoch, which must not have
    /// moved either when the answer comes.
    fn learns(&self, portal: &[u8]) -> Option<(Box<[u8]>, u64)> {
        let b = &self.bound;
        (b.live && b.portal == portal && b.epoch == self.epoch)
            .then(|| (b.statement.as_slice().into(), b.epoch))
    }

    fn forget_statements(&mut self) {
        self.epoch += 1;
        self.statements.clear();
        self.bound.clear();
    }

    /// Remembers the plans of `statement` from a Describe of one of its
    /// portals.
    fn learn(
        &mut self,
        statement: Box<[u8]>,
        rd: Option<&RowDescription<'_>>,
        mask: &SessionMask,
        columns: &ColumnIndex,
    ) {
        if self.statements.len() >= STATEMENTS_MAX {
            self.statements.clear();
        }
        let rows = rd.map(|rd| {
            [
                Rc::new(shape_as(mask, columns, rd, Some(0))),
                Rc::new(shape_as(mask, columns, rd, Some(1))),
            ]
        });
        self.statements.insert(statement, StatementRows(rows));
    }

    /// Notes a client message that streams (too large to hold whole).
    pub fn frontend_streamed(&mut self, tag: u8) {
        use frontend::tag;
        match tag {
            tag::QUERY => {
                self.forget_statements();
                self.push(Awaited::Simple);
            }
            tag::FUNCTION_CALL => self.push(Awaited::Simple),
            // Which statement it names is not known.
            tag::PARSE | tag::CLOSE => self.forget_statements(),
            tag::BIND => {
                self.described = None;
                self.bound.clear();
            }
            // An Execute or Describe too large to read: its rows' shape is
            // unknown, and they are scanned by every detector.
            tag::EXECUTE | tag::DESCRIBE => self.lost = true,
            _ => {}
        }
    }

    fn portal_shape(&self, name: &[u8]) -> Option<Rc<Shape>> {
        self.portals
            .iter()
            .rev()
            .find(|(n, _)| **n == *name)
            .and_then(|(_, s)| s.clone())
    }

    /// Notes a whole message from the store and says what to do with it.
    pub fn backend(&mut self, msg: &[u8], mask: &SessionMask, columns: &ColumnIndex) -> Seen {
        use backend::tag;
        match msg.first().copied() {
            Some(tag::ROW_DESCRIPTION) => {
                let rd = match backend::parse(msg) {
                    Ok(backend::Message::RowDescription(rd)) => Some(rd),
                    _ => None,
                };
                let shape = rd.as_ref().map(|rd| Rc::new(shape(mask, columns, rd)));
                match self.awaited.front() {
                    Some(Awaited::Simple) => self.simple = shape,
                    Some(Awaited::DescribeStatement) => {
                        self.awaited.pop_front();
                    }
                    Some(Awaited::DescribePortal { .. }) => {
                        let Some(Awaited::DescribePortal {
                            name,
                            injected,
                            statement,
                        }) = self.awaited.pop_front()
                        else {
                            unreachable!("front checked above")
                        };
                        if let (Some((statement, epoch)), Some(rd)) = (statement, &rd)
                            && epoch == self.epoch
                        {
                            self.learn(statement, Some(rd), mask, columns);
                        }
                        self.remember(name, shape);
                        if injected {
                            return Seen::Swallow;
                        }
                    }
                    _ => {}
                }
                Seen::Forward
            }
            Some(tag::NO_DATA) => match self.awaited.front() {
                Some(Awaited::DescribeStatement) => {
                    self.awaited.pop_front();
                    Seen::Forward
                }
                Some(Awaited::DescribePortal { .. }) => {
                    let Some(Awaited::DescribePortal {
                        name,
                        injected,
                        statement,
                    }) = self.awaited.pop_front()
                    else {
                        unreachable!("front checked above")
                    };
                    if let Some((statement, epoch)) = statement
                        && epoch == self.epoch
                    {
                        self.learn(statement, None, mask, columns);
                    }
                    self.remember(name, None);
                    if injected {
                        Seen::Swallow
                    } else {
                        Seen::Forward
                    }
                }
                _ => Seen::Forward,
            },
            Some(tag::DATA_ROW) => {
                if self.lost {
                    return Seen::Row(None);
                }
                match self.awaited.front() {
                    Some(Awaited::Simple) => Seen::Row(self.simple.clone()),
                    Some(Awaited::Execute {
                        shape: Some(shape), ..
                    }) => Seen::Row(shape.clone()),
                    Some(Awaited::Execute { name, .. }) => Seen::Row(self.portal_shape(name)),
                    _ => Seen::Row(None),
                }
            }
            Some(tag::COMMAND_COMPLETE | tag::PORTAL_SUSPENDED | tag::EMPTY_QUERY_RESPONSE) => {
                match self.awaited.front() {
                    Some(Awaited::Execute { .. }) => {
                        self.awaited.pop_front();
                    }
                    Some(Awaited::Simple) => self.simple = None,
                    _ => {}
                }
                Seen::Forward
            }
            Some(tag::ERROR_RESPONSE) => {
                match self.awaited.front() {
                    Some(Awaited::Simple) => self.simple = None,
                    // The store skips to the next Sync; so do its replies.
                    _ => {
                        while let Some(a) = self.awaited.front() {
                            if matches!(a, Awaited::Sync | Awaited::Simple) {
                                break;
                            }
                            self.awaited.pop_front();
                        }
                    }
                }
                Seen::Forward
            }
            Some(tag::READY_FOR_QUERY) => {
                while let Some(a) = self.awaited.pop_front() {
                    if matches!(a, Awaited::Sync | Awaited::Simple) {
                        break;
                    }
                }
                self.simple = None;
                if self.awaited.is_empty() {
                    self.lost = false;
                }
                Seen::Forward
            }
            _ => Seen::Forward,
        }
    }

    fn remember(&mut self, name: Box<[u8]>, shape: Option<Rc<Shape>>) {
        self.portals.retain(|(n, _)| *n != name);
        if self.portals.len() >= PORTALS_MAX {
            self.portals.pop_front();
        }
        self.portals.push_back((name, shape));
    }
}

/// The Describe the appliance sends in front of an Execute.
pub fn describe_portal(out: &mut Vec<u8>, portal: &[u8]) {
    encode::describe(out, frontend::KIND_PORTAL, portal);
}

#[cfg(test)]
mod tests {
    use custos_parsers::pgwire::encode as enc;

    use super::*;
    use crate::identity::Identity;
    use crate::mask::Masks;

    fn session() -> Rc<SessionMask> {
        #[derive(serde::Deserialize)]
        struct File {
            mask: Vec<toml::Spanned<crate::mask::config::RawMask>>,
        }
        let src = "[[mask]]\ndetectors = [\"email\"]\ncolumns = [\"t.secret\", \"nick\"]\n";
        let f: File = toml::from_str(src).unwrap();
        let rules = crate::mask::config::validate(
            std::path::Path::new("t.toml"),
            src,
            std::path::Path::new("."),
            &f.mask,
            &[],
        )
        .unwrap();
        Masks::new(rules)
            .for_session("pg", &Identity::anonymous())
            .unwrap()
    }

    fn row_description(fields: &[(&str, u32, i16, u32, i16)]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(fields.len() as u16).to_be_bytes());
        for (name, table, attnum, type_oid, format) in fields {
            body.extend_from_slice(name.as_bytes());
            body.push(0);
            body.extend_from_slice(&table.to_be_bytes());
            body.extend_from_slice(&attnum.to_be_bytes());
            body.extend_from_slice(&type_oid.to_be_bytes());
            body.extend_from_slice(&(-1i16).to_be_bytes());
            body.extend_from_slice(&(-1i32).to_be_bytes());
            body.extend_from_slice(&format.to_be_bytes());
        }
        let mut out = vec![b'T'];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend(body);
        out
    }

    fn data_row(values: &[Option<&str>]) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&(values.len() as u16).to_be_bytes());
        for v in values {
            match v {
                Some(v) => {
                    body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    body.extend_from_slice(v.as_bytes());
                }
                None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        let mut out = vec![b'D'];
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend(body);
        out
    }

    fn values(msg: &[u8]) -> Vec<Option<String>> {
        let Ok(backend::Message::DataRow(r)) = backend::parse(msg) else {
            panic!("not a DataRow")
        };
        r.values()
            .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
            .collect()
    }

    #[test]
    fn rows_are_masked_by_resolved_column_by_name_and_by_detector_on_text_only() {
        let m = session();
        let mut cols = ColumnIndex::default();
        add_catalog_row(&mut cols, &[Some(b"0"), Some(b"16500"), Some(b"3")]);
        let rd = row_description(&[
            ("alias", 16500, 3, 25, 0), // t.secret under another name
            ("nick", 0, 0, 25, 0),      // matched by name
            ("mail", 16500, 1, 25, 0),  // detector
            ("n", 16500, 2, 20, 0),     // int8: never scanned
        ]);
        let Ok(backend::Message::RowDescription(rd)) = backend::parse(&rd) else {
            panic!()
        };
        let sh = shape(&m, &cols, &rd);
        assert_eq!(
            sh.cols(),
            [Col::Whole(0), Col::Whole(0), Col::Detect, Col::Keep]
        );
        let row = data_row(&[Some("s3cret"), Some("JJ"), Some("x a@b.io"), Some("42")]);
        let mut out = Vec::new();
        assert!(mask_data_row(
            &m,
            Some(&sh),
            &row,
            &mut Scratch::default(),
            &mut out
        ));
        assert_eq!(
            values(&out),
            [
                Some("****".into()),
                Some("****".into()),
                Some("x ****".into()),
                Some("42".into())
            ]
        );
        // A clean row is not rewritten; NULLs stay NULL.
        let row = data_row(&[None, None, Some("plain"), Some("1")]);
        out.clear();
        assert!(!mask_data_row(
            &m,
            Some(&sh),
            &row,
            &mut Scratch::default(),
            &mut out
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn the_tracker_describes_undescribed_portals_and_hides_the_answer() {
        let m = session();
        let cols = ColumnIndex::default();
        let mut t = Tracker::default();
        let mut execute = Vec::new();
        enc::describe(&mut execute, b'S', b"s1");
        assert_eq!(t.frontend(&execute), None);
        let mut msg = Vec::new();
        msg.extend_from_slice(b"B\0\0\0\x0c\0s1\0\0\0\0\0\0");
        assert_eq!(t.frontend(&msg), None);
        let exec = b"E\0\0\0\x09\0\0\0\0\0";
        assert_eq!(t.frontend(exec).as_deref(), Some(&b""[..]));
        assert_eq!(t.frontend(b"S\0\0\0\x04"), None);
        // Replies: ParameterDescription + RowDescription for Describe S
        // (forwarded), BindComplete, then the injected Describe's answer
        // (swallowed), then a row of that shape.
        let rd = row_description(&[("nick", 0, 0, 25, 0)]);
        assert_eq!(t.backend(&rd, &m, &cols), Seen::Forward);
        assert_eq!(t.backend(b"2\0\0\0\x04", &m, &cols), Seen::Forward);
        assert_eq!(t.backend(&rd, &m, &cols), Seen::Swallow);
        let row = data_row(&[Some("JJ")]);
        match t.backend(&row, &m, &cols) {
            Seen::Row(Some(shape)) => assert_eq!(shape.cols(), [Col::Whole(0)]),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.backend(b"C\0\0\0\x0dSELECT 1\0", &m, &cols),
            Seen::Forward
        );
        assert_eq!(t.backend(b"Z\0\0\0\x05I", &m, &cols), Seen::Forward);
        assert!(t.awaited.is_empty());
    }

    fn bind(portal: &[u8], statement: &[u8], result_formats: &[i16]) -> Vec<u8> {
        let mut out = Vec::new();
        enc::bind(&mut out, portal, statement, &[], &[], result_formats);
        out
    }

    fn execute(portal: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        enc::execute(&mut out, portal, 0);
        out
    }

    fn row_cols(t: &mut Tracker, m: &SessionMask, cols: &ColumnIndex, row: &[u8]) -> Vec<Col> {
        match t.backend(row, m, cols) {
            Seen::Row(Some(shape)) => shape.cols().to_vec(),
            other => panic!("{other:?}"),
        }
    }

    /// `nick` is masked whole by name; type 16500 (a type made in the
    /// database) is scanned in text format and kept in binary.
    fn described() -> Vec<u8> {
        row_description(&[("nick", 0, 0, 25, 0), ("x", 0, 0, 16500, 0)])
    }

    /// Replies of a Bind, an Execute with one row and a Sync; `injected`
    /// when the appliance described the portal in between.
    fn answer_one_row(
        t: &mut Tracker,
        m: &SessionMask,
        cols: &ColumnIndex,
        injected: bool,
    ) -> Vec<Col> {
        assert_eq!(t.backend(b"2\0\0\0\x04", m, cols), Seen::Forward);
        if injected {
            assert_eq!(t.backend(&described(), m, cols), Seen::Swallow);
        }
        let got = row_cols(t, m, cols, &data_row(&[Some("JJ"), Some("v")]));
        assert_eq!(t.backend(b"C\0\0\0\x0dSELECT 1\0", m, cols), Seen::Forward);
        assert_eq!(t.backend(b"Z\0\0\0\x05I", m, cols), Seen::Forward);
        assert!(t.awaited.is_empty());
        got
    }

    #[test]
    fn a_statement_described_once_is_not_described_again() {
        let (m, cols) = (session(), ColumnIndex::default());
        let mut t = Tracker::default();
        assert_eq!(t.frontend(&bind(b"", b"s1", &[])), None);
        assert!(
            t.frontend(&execute(b"")).is_some(),
            "first Execute: described"
        );
        t.frontend(b"S\0\0\0\x04");
        assert_eq!(
            answer_one_row(&mut t, &m, &cols, true),
            [Col::Whole(0), Col::Detect]
        );
        // Later Binds of s1 know their portal's plan, in their own formats.
        for (formats, want) in [
            (&[][..], [Col::Whole(0), Col::Detect]),
            (&[0][..], [Col::Whole(0), Col::Detect]),
            (&[1][..], [Col::Whole(0), Col::Keep]),
            (&[1, 0][..], [Col::Whole(0), Col::Detect]),
            (&[0, 1][..], [Col::Whole(0), Col::Keep]),
        ] {
            assert_eq!(t.frontend(&bind(b"", b"s1", formats)), None);
            assert_eq!(
                t.frontend(&execute(b"")),
                None,
                "{formats:?}: not described"
            );
            t.frontend(b"S\0\0\0\x04");
            assert_eq!(
                answer_one_row(&mut t, &m, &cols, false),
                want,
                "{formats:?}"
            );
        }
        // Another statement, and the unnamed one, are described as before.
        assert_eq!(t.frontend(&bind(b"", b"s2", &[])), None);
        assert!(t.frontend(&execute(b"")).is_some());
        let mut unnamed = Vec::new();
        enc::parse(&mut unnamed, b"", b"SELECT 1", &[]);
        t.frontend(&unnamed);
        assert_eq!(t.frontend(&bind(b"", b"", &[])), None);
        assert!(t.frontend(&execute(b"")).is_some());
    }

    #[test]
    fn a_redefined_statement_is_described_again() {
        let (m, cols) = (session(), ColumnIndex::default());
        let learnt = || {
            let mut t = Tracker::default();
            t.frontend(&bind(b"", b"s1", &[]));
            assert!(t.frontend(&execute(b"")).is_some());
            t.frontend(b"S\0\0\0\x04");
            answer_one_row(&mut t, &m, &cols, true);
            assert_eq!(t.frontend(&bind(b"", b"s1", &[])), None);
            assert_eq!(t.frontend(&execute(b"")), None);
            t.frontend(b"S\0\0\0\x04");
            answer_one_row(&mut t, &m, &cols, false);
            t
        };
        let mut parse = Vec::new();
        enc::parse(&mut parse, b"s1", b"SELECT secret FROM t", &[]);
        let mut close = Vec::new();
        enc::close(&mut close, b'S', b"s1");
        let mut query = Vec::new();
        enc::query(&mut query, b"DEALLOCATE s1; PREPARE s1 AS SELECT 2");
        for redefine in [&parse, &close, &query] {
            let mut t = learnt();
            t.frontend(redefine);
            t.frontend(&bind(b"", b"s1", &[]));
            assert!(
                t.frontend(&execute(b"")).is_some(),
                "described after {:?}",
                redefine[0]
            );
        }
        // An answer to a Describe sent before the statement was redefined
        // teaches nothing: the old plan would be wrong for the new one.
        let mut t = Tracker::default();
        t.frontend(&bind(b"", b"s1", &[]));
        assert!(t.frontend(&execute(b"")).is_some());
        t.frontend(b"S\0\0\0\x04");
        t.frontend(&close);
        t.frontend(&parse);
        answer_one_row(&mut t, &m, &cols, true);
        t.frontend(&bind(b"", b"s1", &[]));
        assert!(t.frontend(&execute(b"")).is_some());
    }

    /// Pipelined Executes of the reused unnamed portal each get their own
    /// statement's plan, whichever way it was found.
    #[test]
    fn pipelined_portals_keep_their_own_plans() {
        let (m, cols) = (session(), ColumnIndex::default());
        let mut t = Tracker::default();
        t.frontend(&bind(b"", b"s1", &[]));
        assert!(t.frontend(&execute(b"")).is_some());
        t.frontend(b"S\0\0\0\x04");
        answer_one_row(&mut t, &m, &cols, true);
        // s1 (known, binary) then s2 (unknown: described) in one batch.
        assert_eq!(t.frontend(&bind(b"", b"s1", &[1])), None);
        assert_eq!(t.frontend(&execute(b"")), None);
        assert_eq!(t.frontend(&bind(b"", b"s2", &[])), None);
        assert!(t.frontend(&execute(b"")).is_some());
        t.frontend(b"S\0\0\0\x04");
        assert_eq!(t.backend(b"2\0\0\0\x04", &m, &cols), Seen::Forward);
        let row = data_row(&[Some("JJ"), Some("v")]);
        assert_eq!(
            row_cols(&mut t, &m, &cols, &row),
            [Col::Whole(0), Col::Keep]
        );
        assert_eq!(
            t.backend(b"C\0\0\0\x0dSELECT 1\0", &m, &cols),
            Seen::Forward
        );
        assert_eq!(t.backend(b"2\0\0\0\x04", &m, &cols), Seen::Forward);
        let s2 = row_description(&[("body", 0, 0, 25, 0)]);
        assert_eq!(t.backend(&s2, &m, &cols), Seen::Swallow);
        assert_eq!(
            row_cols(&mut t, &m, &cols, &data_row(&[Some("a")])),
            [Col::Detect]
        );
        assert_eq!(
            t.backend(b"C\0\0\0\x0dSELECT 1\0", &m, &cols),
            Seen::Forward
        );
        assert_eq!(t.backend(b"Z\0\0\0\x05I", &m, &cols), Seen::Forward);
        assert!(t.awaited.is_empty());
    }

    #[test]
    fn an_error_skips_to_the_sync() {
        let m = session();
        let cols = ColumnIndex::default();
        let mut t = Tracker::default();
        assert!(t.frontend(b"E\0\0\0\x09\0\0\0\0\0").is_some());
        t.frontend(b"S\0\0\0\x04");
        let mut err = Vec::new();
        enc::error_response(&mut err, "ERROR", "42P01", "no such table", None, None);
        assert_eq!(t.backend(&err, &m, &cols), Seen::Forward);
        assert_eq!(t.backend(b"Z\0\0\0\x05I", &m, &cols), Seen::Forward);
        assert!(t.awaited.is_empty());
    }

    #[test]
    fn catalog_query_quotes_names() {
        let m = session();
        let q = catalog_query(&m).unwrap();
        assert!(
            q.contains("a.attname = 'secret' AND c.relname = 't'"),
            "{q}"
        );
        assert!(q.contains("a.attname = 'nick'"), "{q}");
    }
}
