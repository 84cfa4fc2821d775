//! Client commands: the first arguments as views, and inline commands.
//!
//! Authorisation needs the command name, often a subcommand (`CONFIG GET`,
//! `CLIENT KILL`) and the first key, not the values that follow, so
//! [`command_head`] reads at most [`HEAD_ARGS`] arguments and never waits
//! for a large one. The rest of the command is delimited by a
//! [`Scanner`](super::Scanner) while it streams to the server.

use super::reader::{Head, Reader};
use super::{Error, Limits};
use crate::BufRef;

/// How many leading arguments [`command_head`] captures: name, subcommand
/// or key, and two more for commands such as `OBJECT ENCODING key`.
pub const HEAD_ARGS: usize = 4;

/// Longest argument [`command_head`] waits for. A longer one (a value, in
/// practice) ends the capture, so that learning the command name never
/// requires buffering a large payload whole.
pub const HEAD_ARG_BYTES_MAX: usize = 64 * 1024;

/// The first arguments of a client command, as views into the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandHead {
    /// Number of arguments in the command, the name included.
    pub argc: usize,
    /// Payload views (without `$n\r\n` and CRLF) of the first `captured`
    /// arguments; the others are empty views.
    pub args: [BufRef; HEAD_ARGS],
    /// How many of `args` are filled: `min(argc, HEAD_ARGS)`, unless an
    /// argument longer than [`HEAD_ARG_BYTES_MAX`] stopped the capture
    /// before it.
    pub captured: usize,
}

impl CommandHead {
    /// The captured arguments' views.
    #[inline]
    pub fn captured_args(&self) -> &[BufRef] {
        &self.args[..self.captured]
    }

    /// The bytes of captured argument `index` within `src`, the buffer the
    /// head was read from.
    #[inline]
    pub fn arg<'a>(&self, src: &'a [u8], index: usize) -> Option<&'a [u8]> {
        self.captured_args().get(index).map(|view| view.slice(src))
    }
}

/// What [`command_head`] found at the start of the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadStatus {
    /// Not enough bytes yet: the array header or one of the arguments to
    /// capture is not wholly buffered.
    Incomplete,
    /// A `*` command. The whole frame may or may not be buffered: the
    /// caller finds its end with a [`Scanner`](super::Scanner).
    Multibulk(CommandHead),
    /// An inline command: `line` is its text without the terminator, `len`
    /// the bytes it occupies including the `\n` or `\r\n`. Split it with
    /// [`split_inline`].
    Inline {
        /// The text of the command.
        line: BufRef,
        /// Bytes including the line terminator.
        len: usize,
    },
    /// `*0`, `*-1` or a blank inline line, `len` bytes long: the server
    /// ignores it.
    Empty {
        /// Bytes of the empty command.
        len: usize,
    },
}

/// Reads the first arguments of the client command at the start of `buf`,
/// without allocation.
///
/// The array header and the captured arguments are validated as the
/// [`Scanner`](super::Scanner) in request mode would: an error here is the
/// error the scanner gives.
pub fn command_head(buf: &[u8], limits: &Limits) -> Result<HeadStatus, Error> {
    let mut r = Reader::new(buf, 0);
    let Some(tag) = r.peek() else {
        return Ok(HeadStatus::Incomplete);
    };
    if tag != b'*' {
        let Some(line) = r.inline_line(limits.line_bytes_max)? else {
            return Ok(HeadStatus::Incomplete);
        };
        return Ok(if is_blank(line.slice(buf)) {
            HeadStatus::Empty { len: r.pos() }
        } else {
            HeadStatus::Inline { line, len: r.pos() }
        });
    }
    let mut r = Reader::new(buf, 1);
    let argc = match r.aggregate_head(tag, limits)? {
        None => return Ok(HeadStatus::Incomplete),
        Some(Head::NullArray) => return Ok(HeadStatus::Empty { len: r.pos() }),
        Some(Head::Array(argc)) => argc,
        // A '*' header is always read as an array.
        Some(_) => return Err(Error::InvalidLength),
    };
    if limits.depth_effective() == 0 {
        return Err(Error::NestingTooDeep { max: 0 });
    }
    if argc == 0 {
        return Ok(HeadStatus::Empty { len: r.pos() });
    }
    // `argc` is at most `limits.elements_max`, a usize.
    let argc = usize::try_from(argc).map_err(|_| Error::InvalidLength)?;
    let mut head = CommandHead {
        argc,
        args: [BufRef::default(); HEAD_ARGS],
        captured: 0,
    };
    for slot in head.args.iter_mut().take(argc) {
        match r.peek() {
            None => return Ok(HeadStatus::Incomplete),
            Some(b'$') => {}
            Some(_) => return Err(Error::ExpectedBulkString),
        }
        let mut arg = Reader::new(buf, r.pos() + 1);
        let len = match arg.blob_head(b'$', limits)? {
            None => return Ok(HeadStatus::Incomplete),
            Some(Head::Bulk(len)) => len,
            // `$-1`: Redis refuses a null argument.
            Some(_) => return Err(Error::InvalidLength),
        };
        if len > HEAD_ARG_BYTES_MAX {
            break;
        }
        let Some(view) = arg.payload(len)? else {
            return Ok(HeadStatus::Incomplete);
        };
        r = arg;
        *slot = view;
        head.captured += 1;
    }
    Ok(HeadStatus::Multibulk(head))
}

/// C `isspace` in the "C" locale, which `redis-server` uses to skip blanks
/// between inline arguments.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// The server reads inline lines as C strings: a NUL byte ends them.
fn until_nul(line: &[u8]) -> &[u8] {
    line.iter()
        .position(|&b| b == 0)
        .map_or(line, |end| &line[..end])
}

/// Whether an inline line has no arguments, as [`split_inline`] would find.
fn is_blank(line: &[u8]) -> bool {
    until_nul(line).iter().all(|&b| is_c_space(b))
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Splits an inline command line into arguments exactly as `redis-server`
/// does (`sdssplitargs`): blanks separate arguments; `"double quotes"`
/// take `\n \r \t \b \a \\ \" \xHH` escapes (any other escaped byte stands
/// for itself); `'single quotes'` take `\'`; a closing quote must be
/// followed by a blank or the end of the line, else
/// [`Error::UnbalancedQuotes`], as for an unterminated quote. A NUL byte
/// ends the line. Allocates: inline commands are rare (telnet, scripts).
pub fn split_inline(line: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    let line = until_nul(line);
    // The byte at `i`, with the C terminator (0) past the end.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_c_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Ok(args);
        }
        let mut current = Vec::new();
        let (mut in_double, mut in_single) = (false, false);
        loop {
            let c = at(p);
            let mut done = false;
            if in_double {
                let escaped_hex = (hex_value(at(p + 2)), hex_value(at(p + 3)));
                if let (b'\\', b'x', (Some(high), Some(low))) = (c, at(p + 1), escaped_hex) {
                    current.push(high * 16 + low);
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    current.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                        return Err(Error::UnbalancedQuotes);
                    }
                    done = true;
                } else if c == 0 {
                    return Err(Error::UnbalancedQuotes);
                } else {
                    current.push(c);
                }
            } else if in_single {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    current.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_c_space(at(p + 1)) {
                        return Err(Error::UnbalancedQuotes);
                    }
                    done = true;
                } else if c == 0 {
                    return Err(Error::UnbalancedQuotes);
                } else {
                    current.push(c);
                }
            } else {
                match c {
                    // Unquoted arguments end at these only (not at \v, \f).
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_double = true,
                    b'\'' => in_single = true,
                    _ => current.push(c),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
            if done {
                break;
            }
        }
        args.push(current);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::testutil::{encode_command, request_strategy};
    use crate::resp::{Scan, Scanner};
    use proptest::prelude::*;

    fn multibulk(argc: usize, views: &[(usize, usize)]) -> HeadStatus {
        let mut args = [BufRef::default(); HEAD_ARGS];
        for (slot, &(start, end)) in args.iter_mut().zip(views) {
            *slot = BufRef::new(start, end);
        }
        HeadStatus::Multibulk(CommandHead {
            argc,
            args,
            captured: views.len(),
        })
    }

    #[test]
    fn heads_whole_and_every_prefix() {
        let cases: Vec<(&[u8], HeadStatus)> = vec![
            (b"*1\r\n$4\r\nPING\r\n", multibulk(1, &[(8, 12)])),
            (
                b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
                multibulk(2, &[(8, 11), (17, 18)]),
            ),
            (
                b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4\r\na\r\nb\r\n",
                multibulk(3, &[(8, 11), (17, 18), (24, 28)]),
            ),
            (
                b"*5\r\n$4\r\nMSET\r\n$1\r\na\r\n$1\r\n1\r\n$0\r\n\r\n$3\r\nlater",
                multibulk(5, &[(8, 12), (18, 19), (25, 26), (32, 32)]),
            ),
            (b"*0\r\n", HeadStatus::Empty { len: 4 }),
            (b"*-1\r\n", HeadStatus::Empty { len: 5 }),
            (
                b"PING\r\n",
                HeadStatus::Inline {
                    line: BufRef::new(0, 4),
                    len: 6,
                },
            ),
            (
                b"set k v\n",
                HeadStatus::Inline {
                    line: BufRef::new(0, 7),
                    len: 8,
                },
            ),
            (b"\r\n", HeadStatus::Empty { len: 2 }),
            (b"  \t\n", HeadStatus::Empty { len: 4 }),
            (b"\0PING\n", HeadStatus::Empty { len: 6 }),
        ];
        let limits = Limits::request();
        for (input, expected) in cases {
            let name = String::from_utf8_lossy(input);
            assert_eq!(command_head(input, &limits), Ok(expected), "{name}");
            for split in 0..input.len() {
                let got = command_head(&input[..split], &limits);
                // A prefix is incomplete, or already holds every captured
                // argument (the rest streams later).
                assert!(
                    got == Ok(HeadStatus::Incomplete) || got == Ok(expected),
                    "{name} @{split}: {got:?}"
                );
            }
        }
    }

    #[test]
    fn large_arguments_are_not_waited_for() {
        let limits = Limits::request();
        let mut input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1000000\r\n".to_vec();
        let expected = multibulk(3, &[(8, 11), (17, 18)]);
        assert_eq!(command_head(&input, &limits), Ok(expected));
        input.extend_from_slice(&[b'v'; 100]);
        assert_eq!(command_head(&input, &limits), Ok(expected));
        let HeadStatus::Multibulk(head) = expected else {
            unreachable!()
        };
        assert_eq!(head.arg(&input, 0), Some(&b"SET"[..]));
        assert_eq!(head.arg(&input, 1), Some(&b"k"[..]));
        assert_eq!(head.arg(&input, 2), None);
    }

    #[test]
    fn invalid_heads() {
        let limits = Limits::request();
        let cases: &[(&[u8], Error)] = &[
            (b"*1\r\n+PING\r\n", Error::ExpectedBulkString),
            (b"*1\r\n:1\r\n", Error::ExpectedBulkString),
            (b"*1\r\n$-1\r\n", Error::InvalidLength),
            (b"*-2\r\n", Error::InvalidLength),
            (b"*x\r\n", Error::InvalidLength),
            (b"*1\n", Error::MissingCrlf),
            (b"*1\r\n$4\r\nPINGx", Error::MissingCrlf),
            (b"*?\r\n", Error::StreamedTypeUnsupported),
            (
                b"*1\r\n$536870913\r\n",
                Error::BulkLengthTooLarge {
                    len: 536_870_913,
                    max: 512 << 20,
                },
            ),
            (
                b"*16777217\r\n",
                Error::TooManyElements {
                    count: 16_777_217,
                    max: 16 << 20,
                },
            ),
        ];
        for (input, expected) in cases {
            let name = String::from_utf8_lossy(input);
            assert_eq!(
                command_head(input, &limits),
                Err(expected.clone()),
                "{name}"
            );
            // The scanner agrees.
            let mut scanner = Scanner::request(limits);
            assert_eq!(scanner.scan(input), Err(expected.clone()), "{name} scanner");
            for split in 0..input.len() {
                let got = command_head(&input[..split], &limits);
                assert!(
                    got == Ok(HeadStatus::Incomplete) || got == Err(expected.clone()),
                    "{name} @{split}: {got:?}"
                );
            }
        }
        let long = vec![b'a'; limits.line_bytes_max + 2];
        assert_eq!(
            command_head(&long, &limits),
            Err(Error::LineTooLong {
                max: limits.line_bytes_max
            })
        );
        assert_eq!(
            command_head(&long[..limits.line_bytes_max], &limits),
            Ok(HeadStatus::Incomplete)
        );
        let flat_only = Limits {
            depth_max: 0,
            ..limits
        };
        assert_eq!(
            command_head(b"*1\r\n", &flat_only),
            Err(Error::NestingTooDeep { max: 0 })
        );
    }

    #[test]
    fn split_inline_as_the_server_does() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"", &[]),
            (b"   ", &[]),
            (b"PING", &[b"PING"]),
            (b"set key value", &[b"set", b"key", b"value"]),
            (b"  set\t key  \r value ", &[b"set", b"key", b"value"]),
            (b"set \"a b\" c", &[b"set", b"a b", b"c"]),
            (b"\"\"", &[b""]),
            (b"''", &[b""]),
            (b"\"\\x41\\x4a\\x4A\"", &[b"AJJ"]),
            (b"\"\\xZZ\"", &[b"xZZ"]),
            (b"\"\\n\\r\\t\\b\\a\\\\\\\"\\q\"", &[b"\n\r\t\x08\x07\\\"q"]),
            (b"'it\\'s' \"x\"", &[b"it's", b"x"]),
            (b"'a\\nb'", &[b"a\\nb"]),
            (b"foo\"bar\"", &[b"foobar"]),
            (b"a\x0bb", &[b"a\x0bb"]),
            (b"\x0ba", &[b"a"]),
            (b"get k\0 ignored", &[b"get", b"k"]),
        ];
        for (line, expected) in cases {
            let expected: Vec<Vec<u8>> = expected.iter().map(|a| a.to_vec()).collect();
            assert_eq!(
                split_inline(line),
                Ok(expected),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
        let unbalanced: &[&[u8]] = &[
            b"\"abc", b"'abc", b"\"a\"b", b"'a'b", b"set \"k", b"\"\\\"", b"\"a\\x4",
        ];
        for line in unbalanced {
            assert_eq!(
                split_inline(line),
                Err(Error::UnbalancedQuotes),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn scanner_and_head_agree_on_inline_lines() {
        let limits = Limits::request();
        for input in [&b"PING\r\n"[..], b"\n", b"get \"a\"\n"] {
            let mut scanner = Scanner::request(limits);
            let scan = scanner.scan(input).unwrap();
            let len = match command_head(input, &limits).unwrap() {
                HeadStatus::Inline { len, .. } | HeadStatus::Empty { len } => len,
                other => panic!("{other:?}"),
            };
            assert_eq!(
                scan,
                Scan {
                    consumed: len,
                    complete: true
                }
            );
        }
    }

    proptest! {
        #[test]
        fn command_head_returns_the_encoded_args(args in request_strategy()) {
            let mut encoded = Vec::new();
            encode_command(&args, &mut encoded);
            let limits = Limits::request();
            let HeadStatus::Multibulk(head) = command_head(&encoded, &limits).unwrap() else {
                return Err(TestCaseError::fail("not a multibulk"));
            };
            prop_assert_eq!(head.argc, args.len());
            prop_assert_eq!(head.captured, args.len().min(HEAD_ARGS));
            for (i, arg) in args.iter().take(HEAD_ARGS).enumerate() {
                prop_assert_eq!(head.arg(&encoded, i), Some(arg.as_slice()));
            }
        }

        #[test]
        fn split_inline_round_trips_words(
            words in prop::collection::vec("[a-zA-Z0-9_:.-]{1,12}", 0..8),
            gaps in prop::collection::vec("[ \t]{1,3}", 8),
        ) {
            let mut line = String::new();
            for (word, gap) in words.iter().zip(&gaps) {
                line.push_str(gap);
                line.push_str(word);
            }
            let expected: Vec<Vec<u8>> = words.iter().map(|w| w.as_bytes().to_vec()).collect();
            prop_assert_eq!(split_inline(line.as_bytes()), Ok(expected));
        }

        #[test]
        fn split_inline_round_trips_quoted_bytes(
            args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 1..6),
        ) {
            // Quote every byte as \xHH: any argument survives.
            let mut line = Vec::new();
            for arg in &args {
                line.extend_from_slice(b" \"");
                for byte in arg {
                    line.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
                }
                line.push(b'"');
            }
            prop_assert_eq!(split_inline(&line), Ok(args));
        }

        #[test]
        fn split_inline_never_panics(line in prop::collection::vec(any::<u8>(), 0..48)) {
            let _ = split_inline(&line);
        }
    }
}
