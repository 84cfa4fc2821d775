//! Which client commands the Redis proxy must treat specially.
//!
//! Almost every command is forwarded untouched and answered by exactly one
//! reply. The few listed here change the connection itself (its protocol,
//! its user, its reply stream), so the proxy intercepts, rewrites or refuses
//! them. Matching is on the length first, then a case-insensitive compare,
//! so an ordinary GET or SET costs two comparisons.

use custos_parsers::resp::CommandHead;

/// The families of pub/sub subscriptions Redis counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubKind {
    /// SUBSCRIBE / UNSUBSCRIBE.
    Channel,
    /// PSUBSCRIBE / PUNSUBSCRIBE.
    Pattern,
    /// SSUBSCRIBE / SUNSUBSCRIBE (sharded channels).
    Shard,
}

/// What the proxy does with a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Forward; one reply.
    Plain,
    /// `AUTH`: answered by the appliance, never forwarded.
    Auth,
    /// `HELLO`: forwarded without its `AUTH` part; may switch the protocol.
    Hello,
    /// `RESET`: forwarded, then the appliance's credential is presented again.
    Reset,
    /// `QUIT`: forwarded; the connection ends after its reply.
    Quit,
    /// A subscribe command: one reply per channel named.
    Subscribe(SubKind),
    /// An unsubscribe command: one reply per channel named, or per channel
    /// subscribed when none is named.
    Unsubscribe(SubKind),
    /// A command whose replies cannot be matched to requests through a proxy
    /// (MONITOR, SYNC, PSYNC, CLIENT REPLY): refused with this message.
    Refused(&'static [u8]),
}

/// Classifies the command whose first arguments are in `head` (views into `buf`).
#[inline]
pub fn classify(buf: &[u8], head: &CommandHead) -> Class {
    if head.captured == 0 {
        return Class::Plain;
    }
    let name = head.args[0].slice(buf);
    let is = |lit: &[u8]| name.eq_ignore_ascii_case(lit);
    match name.len() {
        4 if is(b"AUTH") => Class::Auth,
        4 if is(b"QUIT") => Class::Quit,
        4 if is(b"SYNC") => {
            Class::Refused(b"-ERR custos: SYNC is not available through the appliance\r\n")
        }
        5 if is(b"HELLO") => Class::Hello,
        5 if is(b"RESET") => Class::Reset,
        5 if is(b"PSYNC") => {
            Class::Refused(b"-ERR custos: PSYNC is not available through the appliance\r\n")
        }
        6 if is(b"CLIENT") => {
            if head.captured >= 2 && head.args[1].slice(buf).eq_ignore_ascii_case(b"REPLY") {
                Class::Refused(
                    b"-ERR custos: CLIENT REPLY is not available through the appliance\r\n",
                )
            } else {
                Class::Plain
            }
        }
        7 if is(b"MONITOR") => {
            Class::Refused(b"-ERR custos: MONITOR is not available through the appliance\r\n")
        }
        9 if is(b"SUBSCRIBE") => Class::Subscribe(SubKind::Channel),
        10 if is(b"PSUBSCRIBE") => Class::Subscribe(SubKind::Pattern),
        10 if is(b"SSUBSCRIBE") => Class::Subscribe(SubKind::Shard),
        11 if is(b"UNSUBSCRIBE") => Class::Unsubscribe(SubKind::Channel),
        12 if is(b"PUNSUBSCRIBE") => Class::Unsubscribe(SubKind::Pattern),
        12 if is(b"SUNSUBSCRIBE") => Class::Unsubscribe(SubKind::Shard),
        _ => Class::Plain,
    }
}

/// What the first element of a pub/sub frame from the store says it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PubsubWord {
    /// `message`, `pmessage`, `smessage`: a delivery, not a reply.
    Message,
    /// `subscribe`, `psubscribe`, `ssubscribe`: a confirmation.
    Subscribed(SubKind),
    /// `unsubscribe`, `punsubscribe`, `sunsubscribe`: a confirmation.
    Unsubscribed(SubKind),
    /// Anything else (`pong` in RESP2 subscribed mode, `invalidate`, ...).
    Other,
}

/// Classifies the first element of a pub/sub frame.
pub fn pubsub_word(w: &[u8]) -> PubsubWord {
    let is = |lit: &[u8]| w.eq_ignore_ascii_case(lit);
    match w.len() {
        7 if is(b"message") => PubsubWord::Message,
        8 if is(b"pmessage") => PubsubWord::Message,
        8 if is(b"smessage") => PubsubWord::Message,
        9 if is(b"subscribe") => PubsubWord::Subscribed(SubKind::Channel),
        10 if is(b"psubscribe") => PubsubWord::Subscribed(SubKind::Pattern),
        10 if is(b"ssubscribe") => PubsubWord::Subscribed(SubKind::Shard),
        11 if is(b"unsubscribe") => PubsubWord::Unsubscribed(SubKind::Channel),
        12 if is(b"punsubscribe") => PubsubWord::Unsubscribed(SubKind::Pattern),
        12 if is(b"sunsubscribe") => PubsubWord::Unsubscribed(SubKind::Shard),
        _ => PubsubWord::Other,
    }
}

/// The first element of an aggregate frame (`*` or `>`) at the start of
/// `buf`, if it is a bulk or simple string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstWord<'a> {
    /// Not all of the header and first element are buffered yet.
    Incomplete,
    /// The first element's bytes.
    Word(&'a [u8]),
    /// Empty aggregate, or a first element that is not a string.
    None,
}

/// Longest first element looked at; pub/sub kind words are short.
const FIRST_WORD_MAX: usize = 64;

/// Reads the first element of the aggregate at the start of `buf` without
/// allocating. Only used on frames that may be pub/sub traffic.
pub fn first_word(buf: &[u8]) -> FirstWord<'_> {
    let Some((count, rest)) = header_number(buf.get(1..).unwrap_or_default()) else {
        return if buf.len() > 32 {
            FirstWord::None
        } else {
            FirstWord::Incomplete
        };
    };
    if count <= 0 {
        return FirstWord::None;
    }
    match rest.first() {
        None => FirstWord::Incomplete,
        Some(b'$') => match header_number(&rest[1..]) {
            None if rest.len() > 32 => FirstWord::None,
            None => FirstWord::Incomplete,
            Some((len, payload)) => {
                if len < 0 || len as usize > FIRST_WORD_MAX {
                    return FirstWord::None;
                }
                let len = len as usize;
                if payload.len() < len {
                    return FirstWord::Incomplete;
                }
                FirstWord::Word(&payload[..len])
            }
        },
        Some(b'+') => match rest[1..].iter().position(|&b| b == b'\r') {
            Some(end) if end <= FIRST_WORD_MAX => FirstWord::Word(&rest[1..1 + end]),
            Some(_) => FirstWord::None,
            None if rest.len() > FIRST_WORD_MAX + 2 => FirstWord::None,
            None => FirstWord::Incomplete,
        },
        Some(_) => FirstWord::None,
    }
}

/// Parses `<digits>\r\n` at the start of `b`; the number and what follows.
fn header_number(b: &[u8]) -> Option<(i64, &[u8])> {
    let end = b.iter().take(24).position(|&c| c == b'\r')?;
    if b.get(end + 1) != Some(&b'\n') {
        return None;
    }
    let s = std::str::from_utf8(&b[..end]).ok()?;
    Some((s.parse().ok()?, &b[end + 2..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use custos_parsers::resp::{HeadStatus, Limits, command_head};

    fn class_of(cmd: &[u8]) -> Class {
        match command_head(cmd, &Limits::request()).unwrap() {
            HeadStatus::Multibulk(h) => classify(cmd, &h),
            other => panic!("not multibulk: {:?}", std::mem::discriminant(&other)),
        }
    }

    #[test]
    fn classifies_case_insensitively() {
        let table: &[(&[u8], Class)] = &[
            (b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", Class::Plain),
            (b"*2\r\n$4\r\nauth\r\n$1\r\np\r\n", Class::Auth),
            (b"*1\r\n$4\r\nQuIt\r\n", Class::Quit),
            (b"*2\r\n$5\r\nhello\r\n$1\r\n3\r\n", Class::Hello),
            (b"*1\r\n$5\r\nRESET\r\n", Class::Reset),
            (
                b"*2\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n",
                Class::Subscribe(SubKind::Channel),
            ),
            (
                b"*2\r\n$10\r\nPSUBSCRIBE\r\n$1\r\nc\r\n",
                Class::Subscribe(SubKind::Pattern),
            ),
            (
                b"*2\r\n$10\r\nssubscribe\r\n$1\r\nc\r\n",
                Class::Subscribe(SubKind::Shard),
            ),
            (
                b"*1\r\n$11\r\nunsubscribe\r\n",
                Class::Unsubscribe(SubKind::Channel),
            ),
            (
                b"*1\r\n$12\r\nPUNSUBSCRIBE\r\n",
                Class::Unsubscribe(SubKind::Pattern),
            ),
            (
                b"*1\r\n$12\r\nsunsubscribe\r\n",
                Class::Unsubscribe(SubKind::Shard),
            ),
            (b"*2\r\n$6\r\nclient\r\n$7\r\nsetname\r\n", Class::Plain),
        ];
        for (cmd, want) in table {
            assert_eq!(class_of(cmd), *want, "{}", String::from_utf8_lossy(cmd));
        }
        assert!(matches!(
            class_of(b"*1\r\n$7\r\nmonitor\r\n"),
            Class::Refused(_)
        ));
        assert!(matches!(
            class_of(b"*3\r\n$6\r\nCLIENT\r\n$5\r\nreply\r\n$3\r\nOFF\r\n"),
            Class::Refused(_)
        ));
    }

    #[test]
    fn first_word_of_pubsub_frames() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n";
        assert_eq!(first_word(msg), FirstWord::Word(b"message"));
        for cut in 0..15 {
            assert_eq!(first_word(&msg[..cut]), FirstWord::Incomplete, "cut {cut}");
        }
        assert_eq!(
            first_word(b">3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n"),
            FirstWord::Word(b"subscribe")
        );
        assert_eq!(
            first_word(b"*2\r\n+pong\r\n$0\r\n\r\n"),
            FirstWord::Word(b"pong")
        );
        assert_eq!(first_word(b"*0\r\n"), FirstWord::None);
        assert_eq!(first_word(b"*2\r\n:1\r\n:2\r\n"), FirstWord::None);
        assert_eq!(pubsub_word(b"pmessage"), PubsubWord::Message);
        assert_eq!(
            pubsub_word(b"sunsubscribe"),
            PubsubWord::Unsubscribed(SubKind::Shard)
        );
        assert_eq!(pubsub_word(b"pong"), PubsubWord::Other);
    }
}
