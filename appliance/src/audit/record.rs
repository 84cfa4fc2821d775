//! The audit record: its fields and its compact binary encoding.
//!
//! A shard encodes a record with [`Encoder`] into a reusable scratch buffer
//! and copies it into its ring: no formatting, no allocation. The drain
//! thread decodes it with [`Record::decode`], masks the command and the
//! reply excerpt, and encodes it again as the body of a segment record
//! (see `segment.rs`). Readers (verify, replay, search, export) decode the
//! same bodies.
//!
//! # Body layout (little-endian)
//!
//! ```text
//! 0   u8   version (2; 1 is still read)
//! 1   u8   kind            (Kind)
//! 2   u8   protocol        (0 none, 1 redis, 2 postgres)
//! 3   u8   decision        (0 none, 1 allow, 2 block, 3 approve)
//! 4   u8   status          (0 none, 1 ok, 2 error, 3 no reply, 4 unknown)
//! 5   u8   flags           (bit 0: args hold one raw RESP command)
//! 6   u16  shard
//! 8   u64  time_ns         (Unix epoch)
//! 16  u64  session
//! 24  u64  cmd_no          (links a reply to its command, per session)
//! 32  u64  latency_us
//! 40  u64  count           (reply rows for PostgreSQL, bytes for Redis)
//! 48  fields, in this order:
//!     subject  u16 len + bytes
//!     groups   u16 count, then u16 len + bytes each
//!     issuer   u16 len + bytes
//!     token_id u16 len + bytes
//!     client   u16 len + bytes   ("ip:port")
//!     target   u16 len + bytes
//!     rule     u16 len + bytes
//!     args     u16 count, then u32 len + bytes each
//!     code     u16 len + bytes   (SQLSTATE, RESP error prefix, command tag)
//!     excerpt  u32 len + bytes   (masked reply excerpt)
//!     detail   u32 len + bytes   (free text: end reason, recovery notes, checkpoint body)
//! ```
//!
//! The six identity and connection fields are the same for every record of
//! a session, so a session encodes them once ([`Context`]) and each record
//! copies them.
//!
//! # Versions
//!
//! Version 2 (written now) has the same layout as version 1; what differs is
//! what the trail holds. Under `durability = "async"` the drain writes one
//! `command` (or `block`, `approval_requested`) record per command that also
//! carries its reply summary: `status`, `code`, `count` (reply rows or bytes),
//! `excerpt` and `latency_us`; a PostgreSQL Execute's bound parameter count
//! moves to its `detail`. A `reply` record is written only for a reply whose
//! command record was already written without it (status `unknown`: a
//! checkpoint, a rotation or the per-session bound came first), for further
//! results of one simple Query (`SELECT 1; SELECT 2`), and under
//! `durability = "sync"`, where a command is written before its reply comes
//! (see `drain.rs`). Version 1 trails always hold a separate `reply` record per
//! reply; readers accept both.

use std::fmt;

/// Encoding version written in every body.
pub const VERSION: u8 = 2;
/// Oldest version still read.
pub const VERSION_MIN: u8 = 1;
/// Bytes of the fixed header.
pub const HEADER_BYTES: usize = 48;

/// Where each field of the fixed header starts (all integers little-endian).
pub mod offset {
    /// Record format version (`u8`).
    pub const VERSION: usize = 0;
    /// Kind (`u8`).
    pub const KIND: usize = 1;
    /// Protocol (`u8`).
    pub const PROTOCOL: usize = 2;
    /// Decision (`u8`).
    pub const DECISION: usize = 3;
    /// Reply status (`u8`).
    pub const STATUS: usize = 4;
    /// Flags (`u8`).
    pub const FLAGS: usize = 5;
    /// Shard (`u16`).
    pub const SHARD: usize = 6;
    /// Unix time in ns (`u64`).
    pub const TIME: usize = 8;
    /// Session id (`u64`).
    pub const SESSION: usize = 16;
    /// Command number in the session (`u64`).
    pub const CMD_NO: usize = 24;
    /// Latency in µs (`u64`).
    pub const LATENCY: usize = 32;
    /// Rows or bytes (`u64`).
    pub const COUNT: usize = 40;
}
/// Flag: `args` holds one raw RESP command (possibly cut short), to be
/// split into arguments by the drain thread.
pub const FLAG_RAW_RESP: u8 = 1;
/// Longest short field (u16 length).
pub const SHORT_FIELD_BYTES_MAX: usize = u16::MAX as usize;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A client connected and was authenticated (or is anonymous).
    SessionStart = 1,
    /// A token was accepted.
    AuthOk = 2,
    /// A token was refused.
    AuthFail = 3,
    /// A command or statement was forwarded.
    Command = 4,
    /// A command or statement was refused by policy.
    Block = 5,
    /// A command waits for a human approval.
    ApprovalRequested = 6,
    /// The approval was granted.
    ApprovalGranted = 7,
    /// The approval was denied.
    ApprovalDenied = 8,
    /// The session ended.
    SessionEnd = 9,
    /// The reply to a command whose record was written without it
    /// (status, size, masked excerpt); see the module docs.
    Reply = 10,
    /// Signed heads of every chain.
    Checkpoint = 11,
    /// A torn tail was cut at start, or records could not be written.
    Recovery = 12,
    /// Segments were removed by the retention policy.
    Retention = 13,
}

impl Kind {
    /// Every kind, in code order.
    pub const ALL: [Kind; 13] = [
        Kind::SessionStart,
        Kind::AuthOk,
        Kind::AuthFail,
        Kind::Command,
        Kind::Block,
        Kind::ApprovalRequested,
        Kind::ApprovalGranted,
        Kind::ApprovalDenied,
        Kind::SessionEnd,
        Kind::Reply,
        Kind::Checkpoint,
        Kind::Recovery,
        Kind::Retention,
    ];

    /// The name used in exports and filters.
    pub fn name(self) -> &'static str {
        match self {
            Kind::SessionStart => "session_start",
            Kind::AuthOk => "auth_ok",
            Kind::AuthFail => "auth_fail",
            Kind::Command => "command",
            Kind::Block => "block",
            Kind::ApprovalRequested => "approval_requested",
            Kind::ApprovalGranted => "approval_granted",
            Kind::ApprovalDenied => "approval_denied",
            Kind::SessionEnd => "session_end",
            Kind::Reply => "reply",
            Kind::Checkpoint => "checkpoint",
            Kind::Recovery => "recovery",
            Kind::Retention => "retention",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn from_u8(v: u8) -> Option<Kind> {
        Kind::ALL.get(v.checked_sub(1)? as usize).copied()
    }
}

/// What policy decided about a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Decision {
    /// Forwarded.
    Allow = 1,
    /// Refused.
    Block = 2,
    /// Held for a human approval.
    Approve = 3,
}

impl Decision {
    /// The name used in exports and filters.
    pub fn name(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Block => "block",
            Decision::Approve => "approve",
        }
    }

    /// The decision named `name`.
    pub fn from_name(name: &str) -> Option<Decision> {
        [Decision::Allow, Decision::Block, Decision::Approve]
            .into_iter()
            .find(|d| d.name() == name)
    }

    fn from_u8(v: u8) -> Result<Option<Decision>, DecodeError> {
        Ok(match v {
            0 => None,
            1 => Some(Decision::Allow),
            2 => Some(Decision::Block),
            3 => Some(Decision::Approve),
            _ => return Err(DecodeError::BadValue("decision")),
        })
    }
}

/// How a reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Status {
    /// No reply summary: not a command or reply record, or a command
    /// record written before its reply came under `durability = "sync"`.
    #[default]
    None = 0,
    /// Success.
    Ok = 1,
    /// An error reply.
    Error = 2,
    /// The session (or the appliance) ended before the reply came.
    NoReply = 3,
    /// The command record was written before its reply came (a checkpoint,
    /// a segment rotation or too many commands waiting); the reply, if
    /// one comes, is a `reply` record with the same `cmd_no`.
    Unknown = 4,
}

impl Status {
    /// The name used in exports.
    pub fn name(self) -> &'static str {
        match self {
            Status::None => "",
            Status::Ok => "ok",
            Status::Error => "error",
            Status::NoReply => "no_reply",
            Status::Unknown => "unknown",
        }
    }

    fn from_u8(v: u8) -> Result<Status, DecodeError> {
        Ok(match v {
            0 => Status::None,
            1 => Status::Ok,
            2 => Status::Error,
            3 => Status::NoReply,
            4 => Status::Unknown,
            _ => return Err(DecodeError::BadValue("status")),
        })
    }
}

/// The wire protocol of the session a record belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum Proto {
    /// Not a session record.
    #[default]
    None = 0,
    /// Redis.
    Redis = 1,
    /// PostgreSQL.
    Postgres = 2,
}

impl Proto {
    /// The name used in exports.
    pub fn name(self) -> &'static str {
        match self {
            Proto::None => "",
            Proto::Redis => "redis",
            Proto::Postgres => "postgres",
        }
    }

    fn from_u8(v: u8) -> Result<Proto, DecodeError> {
        Ok(match v {
            0 => Proto::None,
            1 => Proto::Redis,
            2 => Proto::Postgres,
            _ => return Err(DecodeError::BadValue("protocol")),
        })
    }
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body ends inside a field.
    #[error("record body ends inside {0}")]
    Short(&'static str),
    /// An unknown version.
    #[error("record version {0} is not supported")]
    Version(u8),
    /// An enum field holds an unknown value.
    #[error("record field {0} holds an unknown value")]
    BadValue(&'static str),
    /// Bytes follow the last field.
    #[error("{0} bytes after the last field")]
    Trailing(usize),
}

/// A list of byte strings as encoded in a body (groups or args).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct List<'a> {
    raw: &'a [u8],
    count: usize,
    wide: bool,
}

impl<'a> List<'a> {
    /// An empty list.
    pub const EMPTY: List<'static> = List {
        raw: &[],
        count: 0,
        wide: false,
    };

    /// Number of items.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there is no item.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The items.
    pub fn iter(&self) -> ListIter<'a> {
        ListIter {
            raw: self.raw,
            left: self.count,
            wide: self.wide,
        }
    }
}

impl fmt::Debug for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

/// Iterator over a [`List`].
pub struct ListIter<'a> {
    raw: &'a [u8],
    left: usize,
    wide: bool,
}

impl<'a> Iterator for ListIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let mut r = Reader { buf: self.raw };
        // Validated by decode.
        let item = if self.wide {
            r.bytes32("list")
        } else {
            r.bytes16("list")
        }
        .ok()?;
        self.raw = r.buf;
        Some(item)
    }
}

/// One decoded record, as views into its body.
#[derive(Debug, Clone, Copy)]
pub struct Record<'a> {
    /// What happened.
    pub kind: Kind,
    /// The session's protocol.
    pub protocol: Proto,
    /// Policy's decision, for commands.
    pub decision: Option<Decision>,
    /// For replies: how the reply ended.
    pub status: Status,
    /// Flags ([`FLAG_RAW_RESP`]).
    pub flags: u8,
    /// The shard that wrote it.
    pub shard: u16,
    /// Unix time in nanoseconds.
    pub time_ns: u64,
    /// The session id (0 for records of no session).
    pub session: u64,
    /// Command number within the session.
    pub cmd_no: u64,
    /// Time from forwarding to the end of the reply.
    pub latency_us: u64,
    /// Reply rows (PostgreSQL) or bytes (Redis).
    pub count: u64,
    /// Subject of the identity.
    pub subject: &'a [u8],
    /// Groups of the identity.
    pub groups: List<'a>,
    /// Issuer of the token.
    pub issuer: &'a [u8],
    /// `jti` of the token.
    pub token_id: &'a [u8],
    /// Client address.
    pub client: &'a [u8],
    /// Target name.
    pub target: &'a [u8],
    /// The rule that decided.
    pub rule: &'a [u8],
    /// The command's arguments (Redis) or the statement (PostgreSQL).
    pub args: List<'a>,
    /// Error code or command tag.
    pub code: &'a [u8],
    /// Masked reply excerpt.
    pub excerpt: &'a [u8],
    /// Free text.
    pub detail: &'a [u8],
    /// Offset of the `rule` field: the header and context before it can be
    /// copied as they are.
    pub context_end: usize,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Short(what));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn bytes16(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u16(what)? as usize;
        self.take(n, what)
    }
    fn bytes32(&mut self, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32(what)? as usize;
        self.take(n, what)
    }
    fn list(&mut self, wide: bool, what: &'static str) -> Result<List<'a>, DecodeError> {
        let count = self.u16(what)? as usize;
        let start = self.buf;
        for _ in 0..count {
            if wide {
                self.bytes32(what)?;
            } else {
                self.bytes16(what)?;
            }
        }
        let used = start.len() - self.buf.len();
        Ok(List {
            raw: &start[..used],
            count,
            wide,
        })
    }
}

/// The `u64` at byte `i` of `b`.
pub fn u64_at(b: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[i..i + 8]);
    u64::from_le_bytes(w)
}

impl<'a> Record<'a> {
    /// Decodes a body; refuses trailing bytes.
    pub fn decode(body: &'a [u8]) -> Result<Record<'a>, DecodeError> {
        if body.len() < HEADER_BYTES {
            return Err(DecodeError::Short("header"));
        }
        if !(VERSION_MIN..=VERSION).contains(&body[offset::VERSION]) {
            return Err(DecodeError::Version(body[offset::VERSION]));
        }
        let kind = Kind::from_u8(body[offset::KIND]).ok_or(DecodeError::BadValue("kind"))?;
        let protocol = Proto::from_u8(body[offset::PROTOCOL])?;
        let decision = Decision::from_u8(body[offset::DECISION])?;
        let status = Status::from_u8(body[offset::STATUS])?;
        let mut r = Reader {
            buf: &body[HEADER_BYTES..],
        };
        let subject = r.bytes16("subject")?;
        let groups = r.list(false, "groups")?;
        let issuer = r.bytes16("issuer")?;
        let token_id = r.bytes16("token_id")?;
        let client = r.bytes16("client")?;
        let target = r.bytes16("target")?;
        let context_end = body.len() - r.buf.len();
        let rec = Record {
            kind,
            protocol,
            decision,
            status,
            flags: body[offset::FLAGS],
            shard: u16::from_le_bytes([body[offset::SHARD], body[offset::SHARD + 1]]),
            time_ns: u64_at(body, offset::TIME),
            session: u64_at(body, offset::SESSION),
            cmd_no: u64_at(body, offset::CMD_NO),
            latency_us: u64_at(body, offset::LATENCY),
            count: u64_at(body, offset::COUNT),
            subject,
            groups,
            issuer,
            token_id,
            client,
            target,
            context_end,
            rule: r.bytes16("rule")?,
            args: r.list(true, "args")?,
            code: r.bytes16("code")?,
            excerpt: r.bytes32("excerpt")?,
            detail: r.bytes32("detail")?,
        };
        if !r.buf.is_empty() {
            return Err(DecodeError::Trailing(r.buf.len()));
        }
        Ok(rec)
    }
}

/// Offset of the `code` field in a body whose `code`, `excerpt` and
/// `detail` are as given: the reply summary of a command is written from
/// there on.
pub fn reply_fields_at(body_len: usize, r: &Record<'_>) -> usize {
    body_len - (2 + r.code.len() + 4 + r.excerpt.len() + 4 + r.detail.len())
}

/// A command's body `command` (up to `reply_at`, see [`reply_fields_at`])
/// with its reply summary, appended to `out`: the header's status, latency
/// and count are set, then the code, the excerpt and the detail that
/// `excerpt` and `detail` append.
pub fn append_with_reply(
    out: &mut Vec<u8>,
    command: &[u8],
    reply_at: usize,
    summary: (Status, u64, u64, &[u8]),
    excerpt: impl FnOnce(&mut Vec<u8>),
    detail: impl FnOnce(&mut Vec<u8>),
) {
    let (status, latency_us, count, code) = summary;
    let base = out.len();
    out.extend_from_slice(&command[..reply_at]);
    let h = &mut out[base..base + HEADER_BYTES];
    h[offset::VERSION] = VERSION;
    h[offset::STATUS] = status as u8;
    h[offset::LATENCY..offset::LATENCY + 8].copy_from_slice(&latency_us.to_le_bytes());
    h[offset::COUNT..offset::COUNT + 8].copy_from_slice(&count.to_le_bytes());
    put16(out, code);
    put32_with(out, excerpt);
    put32_with(out, detail);
}

/// The kind, session and command number of an encoded body, without
/// decoding the rest.
#[inline]
pub fn peek(body: &[u8]) -> Option<(Kind, u64, u64)> {
    if body.len() < HEADER_BYTES || !(VERSION_MIN..=VERSION).contains(&body[offset::VERSION]) {
        return None;
    }
    Some((
        Kind::from_u8(body[offset::KIND])?,
        u64_at(body, offset::SESSION),
        u64_at(body, offset::CMD_NO),
    ))
}

/// The per-session fields, encoded once per session (and again when the
/// identity changes).
#[derive(Debug, Clone, Default)]
pub struct Context {
    bytes: Vec<u8>,
}

impl Context {
    /// Encodes the identity and connection fields.
    pub fn new(
        subject: &[u8],
        groups: &[impl AsRef<[u8]>],
        issuer: &[u8],
        token_id: &[u8],
        client: &[u8],
        target: &[u8],
    ) -> Context {
        let mut bytes = Vec::with_capacity(64 + subject.len() + issuer.len());
        put16(&mut bytes, subject);
        let groups = &groups[..groups.len().min(u16::MAX as usize)];
        bytes.extend_from_slice(&(groups.len() as u16).to_le_bytes());
        for g in groups {
            put16(&mut bytes, g.as_ref());
        }
        put16(&mut bytes, issuer);
        put16(&mut bytes, token_id);
        put16(&mut bytes, client);
        put16(&mut bytes, target);
        Context { bytes }
    }

    /// The context of records that belong to no session.
    pub fn none() -> Context {
        Context::new(b"", &[] as &[&[u8]], b"", b"", b"", b"")
    }

    /// The encoded bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

fn put16(out: &mut Vec<u8>, v: &[u8]) {
    let v = &v[..v.len().min(SHORT_FIELD_BYTES_MAX)];
    out.extend_from_slice(&(v.len() as u16).to_le_bytes());
    out.extend_from_slice(v);
}

fn put32(out: &mut Vec<u8>, v: &[u8]) {
    let v = &v[..v.len().min(u32::MAX as usize)];
    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    out.extend_from_slice(v);
}

/// A `u32`-length field whose bytes `write` appends.
fn put32_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    write(out);
    let len = (out.len() - at - 4).min(u32::MAX as usize);
    out.truncate(at + 4 + len);
    out[at..at + 4].copy_from_slice(&(len as u32).to_le_bytes());
}

/// The fixed-size part of a record.
#[derive(Debug, Clone, Copy, Default)]
pub struct Head {
    /// What happened.
    pub kind: Option<Kind>,
    /// The session's protocol.
    pub protocol: Proto,
    /// Policy's decision.
    pub decision: Option<Decision>,
    /// Reply status.
    pub status: Status,
    /// Flags.
    pub flags: u8,
    /// Shard.
    pub shard: u16,
    /// Unix time, ns.
    pub time_ns: u64,
    /// Session id.
    pub session: u64,
    /// Command number.
    pub cmd_no: u64,
    /// Latency, µs.
    pub latency_us: u64,
    /// Rows or bytes.
    pub count: u64,
}

/// Encodes a body field by field into a caller's buffer; with a reused
/// buffer nothing is allocated once it has grown. [`start`](Self::start)
/// clears the buffer first; [`append_raw`](Self::append_raw) encodes after
/// what it holds (the drain builds bodies in place, after their frame
/// header).
pub struct Encoder<'b> {
    out: &'b mut Vec<u8>,
    args_at: usize,
    args: u16,
}

impl Head {
    /// The fixed header, encoded.
    #[inline]
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[offset::VERSION] = VERSION;
        b[offset::KIND] = self.kind.map_or(0, |k| k as u8);
        b[offset::PROTOCOL] = self.protocol as u8;
        b[offset::DECISION] = self.decision.map_or(0, |d| d as u8);
        b[offset::STATUS] = self.status as u8;
        b[offset::FLAGS] = self.flags;
        b[offset::SHARD..offset::SHARD + 2].copy_from_slice(&self.shard.to_le_bytes());
        b[offset::TIME..offset::TIME + 8].copy_from_slice(&self.time_ns.to_le_bytes());
        b[offset::SESSION..offset::SESSION + 8].copy_from_slice(&self.session.to_le_bytes());
        b[offset::CMD_NO..offset::CMD_NO + 8].copy_from_slice(&self.cmd_no.to_le_bytes());
        b[offset::LATENCY..offset::LATENCY + 8].copy_from_slice(&self.latency_us.to_le_bytes());
        b[offset::COUNT..offset::COUNT + 8].copy_from_slice(&self.count.to_le_bytes());
        b
    }
}

impl<'b> Encoder<'b> {
    /// Starts a body: the header and the identity context.
    #[inline]
    pub fn start(out: &'b mut Vec<u8>, head: &Head, context: &Context) -> Encoder<'b> {
        out.clear();
        Encoder::append(out, head, context)
    }

    /// Starts a body after the bytes `out` already holds.
    #[inline]
    pub fn append(out: &'b mut Vec<u8>, head: &Head, context: &Context) -> Encoder<'b> {
        out.reserve(HEADER_BYTES + context.bytes().len() + 64);
        out.extend_from_slice(&head.encode());
        out.extend_from_slice(context.bytes());
        Encoder {
            out,
            args_at: 0,
            args: 0,
        }
    }

    /// Starts a body from the header and context bytes of another
    /// (`body[..Record::context_end]`), with new flags.
    #[inline]
    pub fn start_raw(out: &'b mut Vec<u8>, prefix: &[u8], flags: u8) -> Encoder<'b> {
        out.clear();
        Encoder::append_raw(out, prefix, flags)
    }

    /// [`start_raw`](Self::start_raw) after the bytes `out` already holds.
    #[inline]
    pub fn append_raw(out: &'b mut Vec<u8>, prefix: &[u8], flags: u8) -> Encoder<'b> {
        let base = out.len();
        out.extend_from_slice(prefix);
        out[base + offset::FLAGS] = flags;
        Encoder {
            out,
            args_at: 0,
            args: 0,
        }
    }

    /// Bytes the buffer holds so far.
    #[inline]
    pub fn position(&self) -> usize {
        self.out.len()
    }

    /// The rule id; starts the argument list.
    #[inline]
    pub fn rule(self, rule: &[u8]) -> Self {
        put16(self.out, rule);
        let args_at = self.out.len();
        self.out.extend_from_slice(&[0, 0]);
        Encoder {
            out: self.out,
            args_at,
            args: 0,
        }
    }

    /// One argument (call after [`rule`](Self::rule)).
    #[inline]
    pub fn arg(mut self, arg: &[u8]) -> Self {
        if self.args < u16::MAX {
            put32(self.out, arg);
            self.args += 1;
        }
        self
    }

    /// One argument that `write` appends to the buffer itself (call after
    /// [`rule`](Self::rule)); it is cut to `u32::MAX` bytes.
    #[inline]
    pub fn arg_with(mut self, write: impl FnOnce(&mut Vec<u8>)) -> Self {
        if self.args < u16::MAX {
            put32_with(self.out, write);
            self.args += 1;
        }
        self
    }

    /// The code, excerpt and detail; ends the body.
    #[inline]
    pub fn finish(self, code: &[u8], excerpt: &[u8], detail: &[u8]) {
        self.finish_with(code, |out| out.extend_from_slice(excerpt), detail);
    }

    /// [`finish`](Self::finish) with an excerpt that `excerpt` appends to
    /// the buffer itself.
    #[inline]
    pub fn finish_with(self, code: &[u8], excerpt: impl FnOnce(&mut Vec<u8>), detail: &[u8]) {
        self.out[self.args_at..self.args_at + 2].copy_from_slice(&self.args.to_le_bytes());
        put16(self.out, code);
        put32_with(self.out, excerpt);
        put32(self.out, detail);
    }
}

impl Record<'_> {
    /// The record's fixed part.
    pub fn head(&self) -> Head {
        Head {
            kind: Some(self.kind),
            protocol: self.protocol,
            decision: self.decision,
            status: self.status,
            flags: self.flags,
            shard: self.shard,
            time_ns: self.time_ns,
            session: self.session,
            cmd_no: self.cmd_no,
            latency_us: self.latency_us,
            count: self.count,
        }
    }

    /// The identity and connection fields re-encoded.
    pub fn context(&self) -> Context {
        let groups: Vec<&[u8]> = self.groups.iter().collect();
        Context::new(
            self.subject,
            &groups,
            self.issuer,
            self.token_id,
            self.client,
            self.target,
        )
    }
}

/// Unix time in nanoseconds.
#[inline]
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(out: &mut Vec<u8>) {
        let ctx = Context::new(
            b"alice",
            &["ops", "dev"],
            b"https://idp/",
            b"jti-1",
            b"127.0.0.1:5000",
            b"cache",
        );
        let head = Head {
            kind: Some(Kind::Command),
            protocol: Proto::Redis,
            decision: Some(Decision::Allow),
            shard: 3,
            time_ns: 42,
            session: 7,
            cmd_no: 9,
            ..Head::default()
        };
        Encoder::start(out, &head, &ctx)
            .rule(b"r1")
            .arg(b"SET")
            .arg(b"k")
            .arg(b"v")
            .finish(b"", b"", b"");
    }

    #[test]
    fn round_trip() {
        let mut out = Vec::new();
        sample(&mut out);
        let r = Record::decode(&out).unwrap();
        assert_eq!(r.kind, Kind::Command);
        assert_eq!(r.decision, Some(Decision::Allow));
        assert_eq!((r.shard, r.time_ns, r.session, r.cmd_no), (3, 42, 7, 9));
        assert_eq!(r.subject, b"alice");
        assert_eq!(r.groups.iter().collect::<Vec<_>>(), [&b"ops"[..], b"dev"]);
        assert_eq!(r.rule, b"r1");
        assert_eq!(r.args.iter().collect::<Vec<_>>(), [&b"SET"[..], b"k", b"v"]);
        assert_eq!(r.target, b"cache");
        // Re-encoding from the decoded view gives the same bytes.
        let mut again = Vec::new();
        let mut e = Encoder::start(&mut again, &r.head(), &r.context()).rule(r.rule);
        for a in r.args.iter() {
            e = e.arg(a);
        }
        e.finish(r.code, r.excerpt, r.detail);
        assert_eq!(again, out);
        let mut raw = Vec::new();
        let mut e = Encoder::start_raw(&mut raw, &out[..r.context_end], 0).rule(r.rule);
        for a in r.args.iter() {
            e = e.arg(a);
        }
        e.finish(r.code, r.excerpt, r.detail);
        assert_eq!(raw, out);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut out = Vec::new();
        sample(&mut out);
        for cut in 0..out.len() {
            assert!(Record::decode(&out[..cut]).is_err(), "cut at {cut}");
        }
        out.push(0);
        assert_eq!(Record::decode(&out).unwrap_err(), DecodeError::Trailing(1));
    }

    #[test]
    fn kinds_round_trip_by_name_and_code() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
            assert_eq!(Kind::from_u8(k as u8), Some(k));
        }
        assert_eq!(Kind::from_u8(0), None);
        assert_eq!(Kind::from_u8(14), None);
    }
}
