//! A small, independent RESP2/RESP3 reply reader and command encoder.
//!
//! The tests check the appliance's parser, so they do not use it: this reader
//! is deliberately naive (whole replies in memory, recursion bounded by the
//! test data) and only has to agree with what Redis itself sends.

use std::io::{self, BufRead};

/// One reply from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+...`
    Simple(String),
    /// `-...` (without the leading dash).
    Error(String),
    /// `:...`
    Int(i64),
    /// `$...`; `None` is the RESP2 null bulk string.
    Bulk(Option<Vec<u8>>),
    /// `*...`; `None` is the RESP2 null array.
    Array(Option<Vec<Reply>>),
    /// RESP3 `_`.
    Null,
    /// RESP3 `,` kept as text.
    Double(String),
    /// RESP3 `#`.
    Bool(bool),
    /// RESP3 `(` kept as text.
    BigNumber(String),
    /// RESP3 `=` (format prefix included).
    Verbatim(Vec<u8>),
    /// RESP3 `%`.
    Map(Vec<(Reply, Reply)>),
    /// RESP3 `~`.
    Set(Vec<Reply>),
    /// RESP3 `>`.
    Push(Vec<Reply>),
    /// RESP3 `!` (without the code split off).
    BlobError(Vec<u8>),
}

impl Reply {
    /// The reply as text when it is a simple string, bulk or verbatim string.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(Some(b)) | Reply::Verbatim(b) => Some(String::from_utf8_lossy(b).into()),
            _ => None,
        }
    }

    /// Whether the reply is a null of any protocol version.
    pub fn is_null(&self) -> bool {
        matches!(self, Reply::Null | Reply::Bulk(None) | Reply::Array(None))
    }

    /// The elements of an array, set or push reply.
    pub fn items(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(Some(v)) | Reply::Set(v) | Reply::Push(v) => Some(v),
            _ => None,
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Encodes a command given as text arguments.
pub fn encode_str(args: &[&str]) -> Vec<u8> {
    let bytes: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    encode(&bytes)
}

fn bad(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

fn read_line(r: &mut impl BufRead) -> io::Result<String> {
    let mut line = Vec::new();
    let n = r.read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "connection closed before a reply",
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(bad(format!(
            "line without CRLF: {:?}",
            String::from_utf8_lossy(&line)
        )));
    }
    line.truncate(line.len() - 2);
    String::from_utf8(line).map_err(|e| bad(e.to_string()))
}

fn read_blob(r: &mut impl BufRead, len: &str) -> io::Result<Vec<u8>> {
    let len: usize = len
        .parse()
        .map_err(|_| bad(format!("bad length {len:?}")))?;
    let mut buf = vec![0u8; len + 2];
    r.read_exact(&mut buf)?;
    if !buf.ends_with(b"\r\n") {
        return Err(bad("blob without trailing CRLF"));
    }
    buf.truncate(len);
    Ok(buf)
}

fn read_count(s: &str) -> io::Result<i64> {
    s.parse().map_err(|_| bad(format!("bad count {s:?}")))
}

fn read_items(r: &mut impl BufRead, n: i64) -> io::Result<Vec<Reply>> {
    (0..n).map(|_| read_reply(r)).collect()
}

/// Reads one complete reply.
pub fn read_reply(r: &mut impl BufRead) -> io::Result<Reply> {
    let line = read_line(r)?;
    let (kind, rest) = line.split_at(line.len().min(1));
    Ok(match kind {
        "+" => Reply::Simple(rest.to_string()),
        "-" => Reply::Error(rest.to_string()),
        ":" => Reply::Int(read_count(rest)?),
        "$" if rest == "-1" => Reply::Bulk(None),
        "$" => Reply::Bulk(Some(read_blob(r, rest)?)),
        "*" if rest == "-1" => Reply::Array(None),
        "*" => Reply::Array(Some(read_items(r, read_count(rest)?)?)),
        "_" => Reply::Null,
        "," => Reply::Double(rest.to_string()),
        "#" => Reply::Bool(rest == "t"),
        "(" => Reply::BigNumber(rest.to_string()),
        "=" => Reply::Verbatim(read_blob(r, rest)?),
        "!" => Reply::BlobError(read_blob(r, rest)?),
        "~" => Reply::Set(read_items(r, read_count(rest)?)?),
        ">" => Reply::Push(read_items(r, read_count(rest)?)?),
        "%" => {
            let n = read_count(rest)?;
            let mut pairs = Vec::new();
            for _ in 0..n {
                let k = read_reply(r)?;
                let v = read_reply(r)?;
                pairs.push((k, v));
            }
            Reply::Map(pairs)
        }
        "|" => {
            // Attributes precede the reply they describe; skip them.
            let n = read_count(rest)?;
            for _ in 0..n * 2 {
                read_reply(r)?;
            }
            read_reply(r)?
        }
        _ => return Err(bad(format!("unknown reply type in line {line:?}"))),
    })
}
