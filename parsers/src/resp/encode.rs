//! Writers for the frames the appliance produces itself: error replies,
//! handshake commands, synthetic replies.
//!
//! Each function appends to a caller-owned `Vec<u8>` and allocates nothing
//! else; numbers are formatted on the stack. Simple strings and errors
//! cannot carry CR or LF on the wire, so [`simple`] and [`error`] replace
//! those bytes with spaces rather than let a message (which may quote client
//! input) inject a second reply.

use std::io::Write as _;

const CRLF: &[u8] = b"\r\n";

/// Longest decimal `u64`.
const U64_DIGITS_MAX: usize = 20;

/// Appends the decimal digits of `n`.
#[inline]
fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; U64_DIGITS_MAX];
    let mut i = U64_DIGITS_MAX;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends `n` in decimal, with a leading `-` when negative.
#[inline]
fn push_i64(out: &mut Vec<u8>, n: i64) {
    if n < 0 {
        out.push(b'-');
    }
    push_u64(out, n.unsigned_abs());
}

/// `tag`, `n`, CRLF: the header of a blob or aggregate.
#[inline]
fn header(out: &mut Vec<u8>, tag: u8, n: usize) {
    out.push(tag);
    push_u64(out, n as u64);
    out.extend_from_slice(CRLF);
}

/// `tag`, `text`, CRLF, with CR and LF in `text` replaced by spaces.
#[inline]
fn sanitized_line(out: &mut Vec<u8>, tag: u8, text: &[u8]) {
    out.push(tag);
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        out.extend(
            text.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        out.extend_from_slice(text);
    }
    out.extend_from_slice(CRLF);
}

/// `tag`, `text`, CRLF, as given: for text already known to be a valid
/// line (re-encoding parsed doubles and big numbers).
#[inline]
pub(crate) fn line(out: &mut Vec<u8>, tag: u8, text: &[u8]) {
    out.push(tag);
    out.extend_from_slice(text);
    out.extend_from_slice(CRLF);
}

/// `tag`, length, CRLF, payload, CRLF.
#[inline]
fn blob(out: &mut Vec<u8>, tag: u8, payload: &[u8]) {
    header(out, tag, payload.len());
    out.extend_from_slice(payload);
    out.extend_from_slice(CRLF);
}

/// `+text`. CR and LF in `text` become spaces.
#[inline]
pub fn simple(out: &mut Vec<u8>, text: &[u8]) {
    sanitized_line(out, b'+', text);
}

/// `-text` (e.g. `ERR ...`, `NOPERM ...`). CR and LF in `text` become
/// spaces.
#[inline]
pub fn error(out: &mut Vec<u8>, text: &[u8]) {
    sanitized_line(out, b'-', text);
}

/// `:n`
#[inline]
pub fn integer(out: &mut Vec<u8>, n: i64) {
    out.push(b':');
    push_i64(out, n);
    out.extend_from_slice(CRLF);
}

/// `$len`, payload: any bytes.
#[inline]
pub fn bulk(out: &mut Vec<u8>, payload: &[u8]) {
    blob(out, b'$', payload);
}

/// `!len`, payload: a RESP3 bulk error.
#[inline]
pub fn bulk_error(out: &mut Vec<u8>, payload: &[u8]) {
    blob(out, b'!', payload);
}

/// `=len`, `format:text`: a RESP3 verbatim string (`format` is e.g. `txt`).
#[inline]
pub fn verbatim(out: &mut Vec<u8>, format: &[u8; 3], text: &[u8]) {
    verbatim_raw(out, format, text);
}

/// [`verbatim`] for a format view already known to be 3 bytes long.
#[inline]
pub(crate) fn verbatim_raw(out: &mut Vec<u8>, format: &[u8], text: &[u8]) {
    header(out, b'=', format.len() + 1 + text.len());
    out.extend_from_slice(format);
    out.push(b':');
    out.extend_from_slice(text);
    out.extend_from_slice(CRLF);
}

/// `$-1`, the RESP2 null.
#[inline]
pub fn null_bulk(out: &mut Vec<u8>) {
    out.extend_from_slice(b"$-1\r\n");
}

/// `*-1`, the RESP2 null array.
#[inline]
pub fn null_array(out: &mut Vec<u8>) {
    out.extend_from_slice(b"*-1\r\n");
}

/// `_`, the RESP3 null.
#[inline]
pub fn null(out: &mut Vec<u8>) {
    out.extend_from_slice(b"_\r\n");
}

/// `#t` / `#f`
#[inline]
pub fn boolean(out: &mut Vec<u8>, value: bool) {
    out.extend_from_slice(if value { b"#t\r\n" } else { b"#f\r\n" });
}

/// `,value`: `inf`, `-inf`, `nan`, or the shortest decimal that reads back
/// as `value`, in exponent form when very large or small.
pub fn double(out: &mut Vec<u8>, value: f64) {
    out.push(b',');
    if value.is_nan() {
        out.extend_from_slice(b"nan");
    } else if value.is_infinite() {
        out.extend_from_slice(if value > 0.0 { b"inf" } else { b"-inf" });
    } else {
        let magnitude = value.abs();
        // Writing into a Vec cannot fail.
        let _ = if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
            write!(out, "{value:e}")
        } else {
            write!(out, "{value}")
        };
    }
    out.extend_from_slice(CRLF);
}

/// `*n`: `n` frames follow.
#[inline]
pub fn array_header(out: &mut Vec<u8>, n: usize) {
    header(out, b'*', n);
}

/// `%n`: `n` key/value pairs (2n frames) follow.
#[inline]
pub fn map_header(out: &mut Vec<u8>, n: usize) {
    header(out, b'%', n);
}

/// `~n`: `n` frames follow.
#[inline]
pub fn set_header(out: &mut Vec<u8>, n: usize) {
    header(out, b'~', n);
}

/// `>n`: `n` frames of out-of-band data follow.
#[inline]
pub fn push_header(out: &mut Vec<u8>, n: usize) {
    header(out, b'>', n);
}

/// `|n`: `n` attribute pairs follow, then the value they annotate.
#[inline]
pub fn attribute_header(out: &mut Vec<u8>, n: usize) {
    header(out, b'|', n);
}

/// A command as clients send it: an array of bulk strings.
pub fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    array_header(out, args.len());
    for arg in args {
        bulk(out, arg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{Frame, Limits, parse};
    use proptest::prelude::*;

    fn written(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut out = Vec::new();
        f(&mut out);
        out
    }

    #[test]
    fn every_writer() {
        let cases: Vec<(Vec<u8>, &[u8])> = vec![
            (written(|o| simple(o, b"OK")), b"+OK\r\n"),
            (written(|o| simple(o, b"a\r\nb")), b"+a  b\r\n"),
            (written(|o| error(o, b"ERR x\ny")), b"-ERR x y\r\n"),
            (written(|o| integer(o, 0)), b":0\r\n"),
            (written(|o| integer(o, -7)), b":-7\r\n"),
            (
                written(|o| integer(o, i64::MIN)),
                b":-9223372036854775808\r\n",
            ),
            (
                written(|o| integer(o, i64::MAX)),
                b":9223372036854775807\r\n",
            ),
            (written(|o| bulk(o, b"a\r\nb")), b"$4\r\na\r\nb\r\n"),
            (written(|o| bulk(o, b"")), b"$0\r\n\r\n"),
            (
                written(|o| bulk_error(o, b"SYNTAX x")),
                b"!8\r\nSYNTAX x\r\n",
            ),
            (written(|o| verbatim(o, b"txt", b"hi")), b"=6\r\ntxt:hi\r\n"),
            (written(null_bulk), b"$-1\r\n"),
            (written(null_array), b"*-1\r\n"),
            (written(null), b"_\r\n"),
            (written(|o| boolean(o, true)), b"#t\r\n"),
            (written(|o| boolean(o, false)), b"#f\r\n"),
            (written(|o| double(o, 1.5)), b",1.5\r\n"),
            (written(|o| double(o, -0.0)), b",-0\r\n"),
            (written(|o| double(o, 3.0)), b",3\r\n"),
            (written(|o| double(o, 1e300)), b",1e300\r\n"),
            (written(|o| double(o, 1.5e-7)), b",1.5e-7\r\n"),
            (written(|o| double(o, f64::INFINITY)), b",inf\r\n"),
            (written(|o| double(o, f64::NEG_INFINITY)), b",-inf\r\n"),
            (written(|o| double(o, f64::NAN)), b",nan\r\n"),
            (written(|o| array_header(o, 3)), b"*3\r\n"),
            (written(|o| map_header(o, 2)), b"%2\r\n"),
            (written(|o| set_header(o, 0)), b"~0\r\n"),
            (written(|o| push_header(o, 12)), b">12\r\n"),
            (written(|o| attribute_header(o, 1)), b"|1\r\n"),
            (
                written(|o| command(o, &[b"GET", b"k"])),
                b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
            ),
            (written(|o| command(o, &[])), b"*0\r\n"),
        ];
        for (out, expected) in cases {
            assert_eq!(out, expected, "{:?}", String::from_utf8_lossy(expected));
        }
    }

    #[test]
    fn writers_append() {
        let mut out = b"prefix".to_vec();
        integer(&mut out, 10);
        assert_eq!(out, b"prefix:10\r\n");
    }

    proptest! {
        #[test]
        fn integers_round_trip(n in any::<i64>()) {
            let out = written(|o| integer(o, n));
            prop_assert_eq!(parse(&out, &Limits::reply()), Ok(Some((Frame::Integer(n), out.len()))));
            prop_assert_eq!(out, format!(":{n}\r\n").into_bytes());
        }

        #[test]
        fn doubles_round_trip(value in any::<f64>()) {
            let out = written(|o| double(o, value));
            let (frame, _) = parse(&out, &Limits::reply()).unwrap().unwrap();
            let text = std::str::from_utf8(frame.bytes(&out).unwrap()).unwrap();
            let back: f64 = text.parse().unwrap();
            prop_assert!(back == value || (back.is_nan() && value.is_nan()), "{} -> {}", value, text);
        }

        #[test]
        fn simple_strings_never_split(text in prop::collection::vec(any::<u8>(), 0..32)) {
            let out = written(|o| simple(o, &text));
            prop_assert_eq!(parse(&out, &Limits::reply()).unwrap().unwrap().1, out.len());
        }
    }
}
