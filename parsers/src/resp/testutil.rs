//! Shared test material: input tables, a naive reference encoder over an
//! owned model of frames, proptest strategies, and a driver that feeds a
//! [`Scanner`] the way the proxy does.

use super::{Error, Frame, Scanner};
use proptest::prelude::*;
use std::io::Write as _;

/// One whole frame each, valid under `Limits::reply()`.
pub(crate) const VALID_REPLIES: &[&[u8]] = &[
    b"+OK\r\n",
    b"+\r\n",
    b"-ERR unknown command 'FOO'\r\n",
    b":0\r\n",
    b":-1\r\n",
    b":9223372036854775807\r\n",
    b":-9223372036854775808\r\n",
    b"$0\r\n\r\n",
    b"$5\r\nhello\r\n",
    b"$4\r\na\r\nb\r\n",
    b"$-1\r\n",
    b"*-1\r\n",
    b"*0\r\n",
    b"*2\r\n$3\r\nfoo\r\n$-1\r\n",
    b"*3\r\n:1\r\n*2\r\n+a\r\n-b\r\n*-1\r\n",
    b"_\r\n",
    b"#t\r\n",
    b"#f\r\n",
    b",1.5\r\n",
    b",-0\r\n",
    b",10\r\n",
    b",inf\r\n",
    b",-inf\r\n",
    b",nan\r\n",
    b",1e300\r\n",
    b",1.5E-7\r\n",
    b"(3492890328409238509324850943850943825024385\r\n",
    b"(-1\r\n",
    b"!21\r\nSYNTAX invalid syntax\r\n",
    b"!0\r\n\r\n",
    b"=15\r\ntxt:Some string\r\n",
    b"=4\r\nmkd:\r\n",
    b"=6\r\ntxt:\r\n\r\n",
    b"%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n",
    b"%0\r\n",
    b"~3\r\n+a\r\n+b\r\n+c\r\n",
    b"~0\r\n",
    b">3\r\n+message\r\n+channel\r\n$5\r\nhello\r\n",
    b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n",
    b"|0\r\n+value\r\n",
    b"*2\r\n|1\r\n+ttl\r\n:3600\r\n$3\r\nval\r\n:7\r\n",
    b"%1\r\n*1\r\n~1\r\n>0\r\n|1\r\n_\r\n_\r\n#t\r\n",
];

/// Inputs refused under `Limits::reply()`, with the error.
pub(crate) const INVALID_REPLIES: &[(&[u8], Error)] = &[
    (b"?x\r\n", Error::InvalidTypeByte(b'?')),
    (b"x\r\n", Error::InvalidTypeByte(b'x')),
    (b"\r\n", Error::InvalidTypeByte(b'\r')),
    (b"*2\r\n:1\r\nPING\r\n", Error::InvalidTypeByte(b'P')),
    (b"$abc\r\n", Error::InvalidLength),
    (b"$\r\n", Error::InvalidLength),
    (b"$-2\r\n", Error::InvalidLength),
    (b"$-0\r\n", Error::InvalidLength),
    (b"$01\r\n", Error::InvalidLength),
    (b"$ 1\r\n", Error::InvalidLength),
    (b"*-2\r\n", Error::InvalidLength),
    (b"%-1\r\n", Error::InvalidLength),
    (b"~-1\r\n", Error::InvalidLength),
    (b">-1\r\n", Error::InvalidLength),
    (b"|-1\r\n", Error::InvalidLength),
    (b"!-1\r\n", Error::InvalidLength),
    (b"=-1\r\n", Error::InvalidLength),
    (b"*99999999999999999999\r\n", Error::InvalidLength),
    (b"$3\r\nfoobar\r\n", Error::MissingCrlf),
    (b"$3\r\nfoo\n", Error::MissingCrlf),
    (b"$3\r\nfoo\rx", Error::MissingCrlf),
    (b"*1\r\n$3\r\nabcd\r\n", Error::MissingCrlf),
    (b"$3\n", Error::MissingCrlf),
    (b"$3\rx", Error::MissingCrlf),
    (b"+OK\n", Error::MissingCrlf),
    (b"+O\rK\r\n", Error::MissingCrlf),
    (b":1\n", Error::MissingCrlf),
    (b":abc\r\n", Error::InvalidInteger),
    (b":\r\n", Error::InvalidInteger),
    (b":01\r\n", Error::InvalidInteger),
    (b":-0\r\n", Error::InvalidInteger),
    (b":+1\r\n", Error::InvalidInteger),
    (b":9223372036854775808\r\n", Error::InvalidInteger),
    (b"(12a\r\n", Error::InvalidInteger),
    (b"(\r\n", Error::InvalidInteger),
    (b",abc\r\n", Error::InvalidDouble),
    (b",\r\n", Error::InvalidDouble),
    (b",1e\r\n", Error::InvalidDouble),
    (b",Infinity\r\n", Error::InvalidDouble),
    (b"#x\r\n", Error::InvalidBoolean),
    (b"#\r\n", Error::InvalidBoolean),
    (b"#tt\r\n", Error::InvalidBoolean),
    (b"_x\r\n", Error::InvalidNull),
    (b"=3\r\ntxt\r\n", Error::InvalidVerbatim),
    (b"=5\r\ntxt-a\r\n", Error::InvalidVerbatim),
    (b"$?\r\n", Error::StreamedTypeUnsupported),
    (b"*?\r\n", Error::StreamedTypeUnsupported),
    (b"%?\r\n", Error::StreamedTypeUnsupported),
    (b"~?\r\n", Error::StreamedTypeUnsupported),
    (b";4\r\nHell\r\n", Error::StreamedTypeUnsupported),
    (b".\r\n", Error::StreamedTypeUnsupported),
    (b"*1\r\n;0\r\n", Error::StreamedTypeUnsupported),
];

/// Request streams valid under `Limits::request()`, with the offset where
/// each command ends.
pub(crate) const VALID_REQUESTS: &[(&[u8], &[usize])] = &[
    (b"*1\r\n$4\r\nPING\r\n", &[14]),
    (b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n", &[26]),
    (b"*2\r\n$3\r\nGET\r\n$5\r\na\r\nbc\r\n", &[24]),
    (b"*0\r\n", &[4]),
    (b"*-1\r\n", &[5]),
    (b"PING\r\n", &[6]),
    (b"PING\n", &[5]),
    (b"\r\n", &[2]),
    (b"\n", &[1]),
    (b"set k \"a b\"\r\n", &[13]),
    (b"$3\r\n", &[4]),
    (
        b"PING\r\n*1\r\n$4\r\nPING\r\nPING\n*0\r\n",
        &[6, 20, 25, 29],
    ),
];

/// Request streams refused under `Limits::request()`, with the error.
pub(crate) const INVALID_REQUESTS: &[(&[u8], Error)] = &[
    (b"*1\r\n+PING\r\n", Error::ExpectedBulkString),
    (b"*1\r\n:1\r\n", Error::ExpectedBulkString),
    (b"*1\r\n*1\r\n$4\r\nPING\r\n", Error::ExpectedBulkString),
    (b"*2\r\n$3\r\nGET\r\n_\r\n", Error::ExpectedBulkString),
    (b"*1\r\n$-1\r\n", Error::InvalidLength),
    (b"*-2\r\n", Error::InvalidLength),
    (b"*x\r\n", Error::InvalidLength),
    (b"*1\n", Error::MissingCrlf),
    (b"*1\r\n$4\r\nPINGx\r\n", Error::MissingCrlf),
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
    (b"*1\r\n$?\r\n", Error::StreamedTypeUnsupported),
];

/// Feeds `chunks` to `scanner` as the proxy does: unconsumed bytes are kept
/// and presented again with the next chunk. Returns the stream offsets at
/// which frames completed.
pub(crate) fn drive(scanner: &mut Scanner, chunks: &[&[u8]]) -> Result<Vec<usize>, Error> {
    let mut pending = Vec::new();
    let mut offset = 0;
    let mut ends = Vec::new();
    for chunk in chunks {
        pending.extend_from_slice(chunk);
        loop {
            let scan = scanner.scan(&pending)?;
            assert!(scan.consumed <= pending.len());
            offset += scan.consumed;
            pending.drain(..scan.consumed);
            if !scan.complete {
                break;
            }
            assert!(scan.consumed > 0, "a complete frame has bytes");
            ends.push(offset);
        }
    }
    Ok(ends)
}

/// Splits `stream` at the given cut points (any order, duplicates allowed).
pub(crate) fn cut<'a>(stream: &'a [u8], cuts: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c.index(stream.len() + 1)).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    points.dedup();
    points.windows(2).map(|w| &stream[w[0]..w[1]]).collect()
}

/// An owned frame, to generate inputs and compare parsed results with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Model {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Integer(i64),
    Bulk(Vec<u8>),
    NullBulk,
    NullArray,
    Null,
    Boolean(bool),
    Double(String),
    BigNumber(String),
    BulkError(Vec<u8>),
    Verbatim([u8; 3], Vec<u8>),
    Array(Vec<Model>),
    Map(Vec<(Model, Model)>),
    Set(Vec<Model>),
    Attribute(Vec<(Model, Model)>, Box<Model>),
    Push(Vec<Model>),
}

/// The reference encoder: straight from the RESP3 specification, with
/// `format!`, independent of [`super::encode`].
pub(crate) fn encode_model(model: &Model, out: &mut Vec<u8>) {
    let blob = |out: &mut Vec<u8>, tag: char, payload: &[u8]| {
        write!(out, "{tag}{}\r\n", payload.len()).unwrap();
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
    };
    let text = |out: &mut Vec<u8>, tag: char, text: &[u8]| {
        write!(out, "{tag}").unwrap();
        out.extend_from_slice(text);
        out.extend_from_slice(b"\r\n");
    };
    match model {
        Model::Simple(t) => text(out, '+', t),
        Model::Error(t) => text(out, '-', t),
        Model::Integer(n) => write!(out, ":{n}\r\n").unwrap(),
        Model::Bulk(p) => blob(out, '$', p),
        Model::NullBulk => out.extend_from_slice(b"$-1\r\n"),
        Model::NullArray => out.extend_from_slice(b"*-1\r\n"),
        Model::Null => out.extend_from_slice(b"_\r\n"),
        Model::Boolean(b) => write!(out, "#{}\r\n", if *b { 't' } else { 'f' }).unwrap(),
        Model::Double(t) => write!(out, ",{t}\r\n").unwrap(),
        Model::BigNumber(t) => write!(out, "({t}\r\n").unwrap(),
        Model::BulkError(p) => blob(out, '!', p),
        Model::Verbatim(format, t) => {
            let mut payload = format.to_vec();
            payload.push(b':');
            payload.extend_from_slice(t);
            blob(out, '=', &payload);
        }
        Model::Array(items) | Model::Set(items) | Model::Push(items) => {
            let tag = match model {
                Model::Array(_) => '*',
                Model::Set(_) => '~',
                _ => '>',
            };
            write!(out, "{tag}{}\r\n", items.len()).unwrap();
            items.iter().for_each(|item| encode_model(item, out));
        }
        Model::Map(pairs) => {
            write!(out, "%{}\r\n", pairs.len()).unwrap();
            for (k, v) in pairs {
                encode_model(k, out);
                encode_model(v, out);
            }
        }
        Model::Attribute(pairs, value) => {
            write!(out, "|{}\r\n", pairs.len()).unwrap();
            for (k, v) in pairs {
                encode_model(k, out);
                encode_model(v, out);
            }
            encode_model(value, out);
        }
    }
}

/// Reference encoding of a client command.
pub(crate) fn encode_command(args: &[Vec<u8>], out: &mut Vec<u8>) {
    write!(out, "*{}\r\n", args.len()).unwrap();
    for arg in args {
        write!(out, "${}\r\n", arg.len()).unwrap();
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// The owned model of a parsed frame whose views point into `src`.
pub(crate) fn to_model(frame: &Frame, src: &[u8]) -> Model {
    let owned = |view: &crate::BufRef| view.slice(src).to_vec();
    let text = |view: &crate::BufRef| String::from_utf8(owned(view)).unwrap();
    let list = |items: &[Frame]| items.iter().map(|f| to_model(f, src)).collect();
    let pairs = |pairs: &[(Frame, Frame)]| {
        pairs
            .iter()
            .map(|(k, v)| (to_model(k, src), to_model(v, src)))
            .collect()
    };
    match frame {
        Frame::Simple(v) => Model::Simple(owned(v)),
        Frame::Error(v) => Model::Error(owned(v)),
        Frame::Integer(n) => Model::Integer(*n),
        Frame::Bulk(v) => Model::Bulk(owned(v)),
        Frame::NullBulk => Model::NullBulk,
        Frame::NullArray => Model::NullArray,
        Frame::Null => Model::Null,
        Frame::Boolean(b) => Model::Boolean(*b),
        Frame::Double(v) => Model::Double(text(v)),
        Frame::BigNumber(v) => Model::BigNumber(text(v)),
        Frame::BulkError(v) => Model::BulkError(owned(v)),
        Frame::Verbatim { format, text } => {
            Model::Verbatim(format.slice(src).try_into().unwrap(), owned(text))
        }
        Frame::Array(items) => Model::Array(list(items)),
        Frame::Set(items) => Model::Set(list(items)),
        Frame::Push(items) => Model::Push(list(items)),
        Frame::Map(p) => Model::Map(pairs(p)),
        Frame::Attribute { attrs, value } => {
            Model::Attribute(pairs(attrs), Box::new(to_model(value, src)))
        }
    }
}

fn line_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..24).prop_map(|v| {
        v.into_iter()
            .filter(|&b| b != b'\r' && b != b'\n')
            .collect()
    })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![any::<u8>(), Just(b'\r'), Just(b'\n')], 0..40)
}

fn double_text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| format!("{v}")),
        any::<f64>()
            .prop_filter("finite", |v| v.is_finite())
            .prop_map(|v| format!("{v:e}")),
        Just("inf".to_owned()),
        Just("-inf".to_owned()),
        Just("nan".to_owned()),
        "-?[0-9]{1,5}\\.[0-9]{1,5}([eE][+-]?[0-9]{1,3})?",
    ]
}

fn big_number_text() -> impl Strategy<Value = String> {
    prop_oneof![Just("0".to_owned()), "-?[1-9][0-9]{0,60}"]
}

/// Arbitrary frame trees of every type, at most a few levels deep.
pub(crate) fn frame_strategy() -> impl Strategy<Value = Model> {
    let leaf = prop_oneof![
        line_bytes().prop_map(Model::Simple),
        line_bytes().prop_map(Model::Error),
        any::<i64>().prop_map(Model::Integer),
        payload().prop_map(Model::Bulk),
        Just(Model::NullBulk),
        Just(Model::NullArray),
        Just(Model::Null),
        any::<bool>().prop_map(Model::Boolean),
        double_text().prop_map(Model::Double),
        big_number_text().prop_map(Model::BigNumber),
        payload().prop_map(Model::BulkError),
        (any::<[u8; 3]>(), payload()).prop_map(|(f, t)| Model::Verbatim(f, t)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let pairs = prop::collection::vec((inner.clone(), inner.clone()), 0..4);
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Model::Array),
            pairs.clone().prop_map(Model::Map),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Model::Set),
            prop::collection::vec(inner.clone(), 0..6).prop_map(Model::Push),
            (pairs, inner).prop_map(|(attrs, value)| Model::Attribute(attrs, Box::new(value))),
        ]
    })
}

/// Arbitrary client commands: one or more arguments of any bytes.
pub(crate) fn request_strategy() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(payload(), 1..7)
}
