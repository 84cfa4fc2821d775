//! Writers for the messages the proxy produces itself: errors and notices
//! to clients, the server half of the handshake it terminates, the client
//! half it plays towards the upstream, rewritten rows, and every other
//! message for tests.
//!
//! Each function appends one whole message to a caller-owned `Vec<u8>` and
//! allocates nothing else: the length word is written as a placeholder and
//! patched once the body is in place.
//!
//! Strings are NUL-terminated on the wire, so a NUL inside one would end it
//! early and turn the rest into other fields (a quoted client input could
//! forge an ErrorResponse field). The functions that write strings replace
//! NUL bytes with spaces, as the RESP writers do with CR and LF.
//!
//! # Panics
//!
//! A message longer than `i32::MAX` bytes, or a list of more than 65535
//! values, columns or codes, cannot be expressed in the protocol; the
//! writers panic rather than emit a corrupt stream.

use super::backend::tag as be;
use super::backend::{DataRow, RowField, auth, field};
use super::frontend::tag as fe;
use super::startup::{CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE};

/// Writes the type byte and a length placeholder; returns where the length
/// word starts, for [`end`].
#[inline]
fn begin(out: &mut Vec<u8>, tag: u8) -> usize {
    out.push(tag);
    untagged(out)
}

/// Writes a length placeholder (startup-phase messages have no type byte).
#[inline]
fn untagged(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Patches the length word at `at` to count itself and what follows.
#[inline]
fn end(out: &mut [u8], at: usize) {
    let len = i32::try_from(out.len() - at).expect("message longer than the protocol allows");
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// An Int16 count of `n` items.
#[inline]
fn count(out: &mut Vec<u8>, n: usize) {
    let n = u16::try_from(n).expect("more than 65535 items in one message");
    out.extend_from_slice(&n.to_be_bytes());
}

/// A String: `text` with NUL bytes replaced by spaces, then a NUL.
#[inline]
fn cstr(out: &mut Vec<u8>, text: &[u8]) {
    if text.contains(&0) {
        out.extend(text.iter().map(|&b| if b == 0 { b' ' } else { b }));
    } else {
        out.extend_from_slice(text);
    }
    out.push(0);
}

/// An Int32 length (-1 for NULL) and the value.
#[inline]
fn value(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        Some(bytes) => {
            let len = i32::try_from(bytes.len()).expect("value longer than the protocol allows");
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(bytes);
        }
    }
}

/// A count and the values.
#[inline]
fn values(out: &mut Vec<u8>, list: &[Option<&[u8]>]) {
    count(out, list.len());
    for v in list {
        value(out, *v);
    }
}

/// A count and the format codes.
#[inline]
fn formats(out: &mut Vec<u8>, codes: &[i16]) {
    count(out, codes.len());
    for code in codes {
        out.extend_from_slice(&code.to_be_bytes());
    }
}

/// A message with an empty body.
#[inline]
fn empty(out: &mut Vec<u8>, tag: u8) {
    out.push(tag);
    out.extend_from_slice(&4i32.to_be_bytes());
}

/// Any tagged message: `tag`, length, `body` as given. For tests, and for
/// relaying a body the proxy has rewritten itself.
pub fn message(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    let at = begin(out, tag);
    out.extend_from_slice(body);
    end(out, at);
}

// ---------------------------------------------------------------- startup

/// StartupMessage: version `major.minor` and `(name, value)` parameters.
pub fn startup_message(out: &mut Vec<u8>, major: u16, minor: u16, params: &[(&[u8], &[u8])]) {
    let at = untagged(out);
    out.extend_from_slice(&major.to_be_bytes());
    out.extend_from_slice(&minor.to_be_bytes());
    for (name, value) in params {
        cstr(out, name);
        cstr(out, value);
    }
    out.push(0);
    end(out, at);
}

/// SSLRequest.
pub fn ssl_request(out: &mut Vec<u8>) {
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&SSL_REQUEST_CODE.to_be_bytes());
}

/// GSSENCRequest.
pub fn gssenc_request(out: &mut Vec<u8>) {
    out.extend_from_slice(&8i32.to_be_bytes());
    out.extend_from_slice(&GSSENC_REQUEST_CODE.to_be_bytes());
}

/// CancelRequest for backend `pid` with its `secret` (4 bytes in protocol
/// 3.0, up to 256 in 3.2), written as given.
pub fn cancel_request(out: &mut Vec<u8>, pid: u32, secret: &[u8]) {
    let at = untagged(out);
    out.extend_from_slice(&CANCEL_REQUEST_CODE.to_be_bytes());
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(secret);
    end(out, at);
}

// ---------------------------------------------------- frontend: handshake

/// PasswordMessage with a cleartext (or MD5-hashed) password.
pub fn password_message(out: &mut Vec<u8>, password: &[u8]) {
    let at = begin(out, fe::PASSWORD);
    cstr(out, password);
    end(out, at);
}

/// SASLInitialResponse: the chosen mechanism and the client-first message.
pub fn sasl_initial_response(out: &mut Vec<u8>, mechanism: &str, data: &[u8]) {
    let at = begin(out, fe::PASSWORD);
    cstr(out, mechanism.as_bytes());
    value(out, Some(data));
    end(out, at);
}

/// SASLInitialResponse without an initial response (length -1), for
/// mechanisms where the server speaks first.
pub fn sasl_initial_response_without_data(out: &mut Vec<u8>, mechanism: &str) {
    let at = begin(out, fe::PASSWORD);
    cstr(out, mechanism.as_bytes());
    value(out, None);
    end(out, at);
}

/// SASLResponse: the raw mechanism data.
pub fn sasl_response(out: &mut Vec<u8>, data: &[u8]) {
    message(out, fe::PASSWORD, data);
}

// ------------------------------------------------------ frontend: queries

/// Query.
pub fn query(out: &mut Vec<u8>, sql: &[u8]) {
    let at = begin(out, fe::QUERY);
    cstr(out, sql);
    end(out, at);
}

/// Parse: prepare `sql` as `statement` (empty: the unnamed statement)
/// with the given parameter type OIDs (0: unspecified).
pub fn parse(out: &mut Vec<u8>, statement: &[u8], sql: &[u8], param_types: &[u32]) {
    let at = begin(out, fe::PARSE);
    cstr(out, statement);
    cstr(out, sql);
    count(out, param_types.len());
    for oid in param_types {
        out.extend_from_slice(&oid.to_be_bytes());
    }
    end(out, at);
}

/// Bind `params` (`None`: SQL NULL) to `statement`, making `portal`.
pub fn bind(
    out: &mut Vec<u8>,
    portal: &[u8],
    statement: &[u8],
    param_formats: &[i16],
    params: &[Option<&[u8]>],
    result_formats: &[i16],
) {
    let at = begin(out, fe::BIND);
    cstr(out, portal);
    cstr(out, statement);
    formats(out, param_formats);
    values(out, params);
    formats(out, result_formats);
    end(out, at);
}

/// Describe a statement (`kind` `b'S'`) or portal (`b'P'`).
pub fn describe(out: &mut Vec<u8>, kind: u8, name: &[u8]) {
    let at = begin(out, fe::DESCRIBE);
    out.push(kind);
    cstr(out, name);
    end(out, at);
}

/// Execute `portal`, returning at most `max_rows` rows (0: all).
pub fn execute(out: &mut Vec<u8>, portal: &[u8], max_rows: u32) {
    let at = begin(out, fe::EXECUTE);
    cstr(out, portal);
    out.extend_from_slice(&max_rows.to_be_bytes());
    end(out, at);
}

/// Sync.
pub fn sync(out: &mut Vec<u8>) {
    empty(out, fe::SYNC);
}

/// Flush.
pub fn flush(out: &mut Vec<u8>) {
    empty(out, fe::FLUSH);
}

/// Close a statement (`kind` `b'S'`) or portal (`b'P'`).
pub fn close(out: &mut Vec<u8>, kind: u8, name: &[u8]) {
    let at = begin(out, fe::CLOSE);
    out.push(kind);
    cstr(out, name);
    end(out, at);
}

/// CopyFail with a reason.
pub fn copy_fail(out: &mut Vec<u8>, message: &[u8]) {
    let at = begin(out, fe::COPY_FAIL);
    cstr(out, message);
    end(out, at);
}

/// FunctionCall of function `oid`.
pub fn function_call(
    out: &mut Vec<u8>,
    oid: u32,
    arg_formats: &[i16],
    args: &[Option<&[u8]>],
    result_format: i16,
) {
    let at = begin(out, fe::FUNCTION_CALL);
    out.extend_from_slice(&oid.to_be_bytes());
    formats(out, arg_formats);
    values(out, args);
    out.extend_from_slice(&result_format.to_be_bytes());
    end(out, at);
}

/// Terminate.
pub fn terminate(out: &mut Vec<u8>) {
    empty(out, fe::TERMINATE);
}

// ------------------------------------------------------------ both sides

/// CopyData (either direction).
pub fn copy_data(out: &mut Vec<u8>, data: &[u8]) {
    message(out, be::COPY_DATA, data);
}

/// CopyDone (either direction).
pub fn copy_done(out: &mut Vec<u8>) {
    empty(out, be::COPY_DONE);
}

// ----------------------------------------------------- backend: handshake

/// An authentication request with any code and data after it.
pub fn authentication(out: &mut Vec<u8>, code: u32, data: &[u8]) {
    let at = begin(out, be::AUTHENTICATION);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(data);
    end(out, at);
}

/// AuthenticationOk.
pub fn authentication_ok(out: &mut Vec<u8>) {
    authentication(out, auth::OK, &[]);
}

/// AuthenticationCleartextPassword: ask for the password (which is where
/// a bearer token travels).
pub fn authentication_cleartext_password(out: &mut Vec<u8>) {
    authentication(out, auth::CLEARTEXT_PASSWORD, &[]);
}

/// AuthenticationMD5Password with `salt`.
pub fn authentication_md5_password(out: &mut Vec<u8>, salt: [u8; 4]) {
    authentication(out, auth::MD5_PASSWORD, &salt);
}

/// AuthenticationSASL offering `mechanisms` in order of preference.
pub fn authentication_sasl(out: &mut Vec<u8>, mechanisms: &[&str]) {
    let at = begin(out, be::AUTHENTICATION);
    out.extend_from_slice(&auth::SASL.to_be_bytes());
    for mechanism in mechanisms {
        cstr(out, mechanism.as_bytes());
    }
    out.push(0);
    end(out, at);
}

/// AuthenticationSASLContinue with a server challenge.
pub fn authentication_sasl_continue(out: &mut Vec<u8>, data: &[u8]) {
    authentication(out, auth::SASL_CONTINUE, data);
}

/// AuthenticationSASLFinal with the server's outcome data.
pub fn authentication_sasl_final(out: &mut Vec<u8>, data: &[u8]) {
    authentication(out, auth::SASL_FINAL, data);
}

/// ParameterStatus.
pub fn parameter_status(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let at = begin(out, be::PARAMETER_STATUS);
    cstr(out, name);
    cstr(out, value);
    end(out, at);
}

/// BackendKeyData with `secret` written as given (4 bytes for protocol
/// 3.0 clients, up to 256 for 3.2).
pub fn backend_key_data(out: &mut Vec<u8>, pid: u32, secret: &[u8]) {
    let at = begin(out, be::BACKEND_KEY_DATA);
    out.extend_from_slice(&pid.to_be_bytes());
    out.extend_from_slice(secret);
    end(out, at);
}

/// ReadyForQuery with a transaction `status` (`b'I'`, `b'T'`, `b'E'`).
pub fn ready_for_query(out: &mut Vec<u8>, status: u8) {
    let at = begin(out, be::READY_FOR_QUERY);
    out.push(status);
    end(out, at);
}

/// NegotiateProtocolVersion: the newest minor version spoken and the
/// `_pq_.` options not recognised.
pub fn negotiate_protocol_version(out: &mut Vec<u8>, newest_minor: u32, unrecognized: &[&[u8]]) {
    let at = begin(out, be::NEGOTIATE_PROTOCOL_VERSION);
    out.extend_from_slice(&newest_minor.to_be_bytes());
    let n = u32::try_from(unrecognized.len()).expect("more options than the protocol allows");
    out.extend_from_slice(&n.to_be_bytes());
    for option in unrecognized {
        cstr(out, option);
    }
    end(out, at);
}

// ------------------------------------------------ backend: errors, notices

/// Fields with a zero code would end the list early; they are skipped.
fn fields(out: &mut Vec<u8>, tag: u8, list: &[(u8, &[u8])]) {
    let at = begin(out, tag);
    for (code, text) in list.iter().filter(|(code, _)| *code != 0) {
        out.push(*code);
        cstr(out, text);
    }
    out.push(0);
    end(out, at);
}

/// ErrorResponse with severity (`"ERROR"`, `"FATAL"`), SQLSTATE `code`,
/// message and optional detail and hint. The severity is written both as
/// `S` and as the non-localized `V`, as servers since 9.6 do.
pub fn error_response(
    out: &mut Vec<u8>,
    severity: &str,
    code: &str,
    message: &str,
    detail: Option<&str>,
    hint: Option<&str>,
) {
    let mut list: [(u8, &[u8]); 6] = [
        (field::SEVERITY, severity.as_bytes()),
        (field::SEVERITY_NONLOCALIZED, severity.as_bytes()),
        (field::CODE, code.as_bytes()),
        (field::MESSAGE, message.as_bytes()),
        (0, b""),
        (0, b""),
    ];
    let mut n = 4;
    for (code, text) in [(field::DETAIL, detail), (field::HINT, hint)] {
        if let Some(text) = text {
            list[n] = (code, text.as_bytes());
            n += 1;
        }
    }
    fields(out, be::ERROR_RESPONSE, &list[..n]);
}

/// NoticeResponse with severity (`"WARNING"`, `"NOTICE"`), SQLSTATE `code`
/// and message.
pub fn notice_response(out: &mut Vec<u8>, severity: &str, code: &str, message: &str) {
    fields(
        out,
        be::NOTICE_RESPONSE,
        &[
            (field::SEVERITY, severity.as_bytes()),
            (field::SEVERITY_NONLOCALIZED, severity.as_bytes()),
            (field::CODE, code.as_bytes()),
            (field::MESSAGE, message.as_bytes()),
        ],
    );
}

/// ErrorResponse with any `(code, value)` fields, in order.
pub fn error_response_fields(out: &mut Vec<u8>, list: &[(u8, &[u8])]) {
    fields(out, be::ERROR_RESPONSE, list);
}

/// NoticeResponse with any `(code, value)` fields, in order.
pub fn notice_response_fields(out: &mut Vec<u8>, list: &[(u8, &[u8])]) {
    fields(out, be::NOTICE_RESPONSE, list);
}

// ---------------------------------------------------- backend: query flow

/// RowDescription.
pub fn row_description(out: &mut Vec<u8>, columns: &[RowField<'_>]) {
    let at = begin(out, be::ROW_DESCRIPTION);
    count(out, columns.len());
    for f in columns {
        cstr(out, f.name);
        out.extend_from_slice(&f.table_oid.to_be_bytes());
        out.extend_from_slice(&f.column.to_be_bytes());
        out.extend_from_slice(&f.type_oid.to_be_bytes());
        out.extend_from_slice(&f.type_size.to_be_bytes());
        out.extend_from_slice(&f.type_modifier.to_be_bytes());
        out.extend_from_slice(&f.format.to_be_bytes());
    }
    end(out, at);
}

/// DataRow (`None`: SQL NULL).
pub fn data_row(out: &mut Vec<u8>, row: &[Option<&[u8]>]) {
    let at = begin(out, be::DATA_ROW);
    values(out, row);
    end(out, at);
}

/// What a [`data_row_rewrite`] callback did with one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    /// Keep the original value. Anything the callback appended is
    /// discarded.
    Keep,
    /// Replace the value with SQL NULL. Anything the callback appended is
    /// discarded.
    Null,
    /// The bytes the callback appended to `out` are the new value (they
    /// may be empty: the empty string).
    Replaced,
}

/// Appends a copy of `row` with some values rewritten, with correct length
/// words and message length, and returns how many values changed (0: the
/// output is byte for byte the original message).
///
/// `rewrite` is called once per column, in order, with the column index,
/// the original value (`None` for SQL NULL) and `out`, positioned where
/// the new value's bytes go: a masker writes its output straight into the
/// message (`Masker::mask_into` style), so nothing is allocated per value.
/// The callback must only append to `out`.
///
/// # Panics
///
/// If the callback shortens `out`, or a value grows beyond `i32::MAX`
/// bytes.
pub fn data_row_rewrite<F>(out: &mut Vec<u8>, row: &DataRow<'_>, mut rewrite: F) -> usize
where
    F: FnMut(usize, Option<&[u8]>, &mut Vec<u8>) -> Rewrite,
{
    let at = begin(out, be::DATA_ROW);
    count(out, row.len());
    let mut changed = 0;
    for (index, original) in row.values().enumerate() {
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let start = out.len();
        match rewrite(index, original, out) {
            Rewrite::Keep => {
                out.truncate(len_at);
                value(out, original);
            }
            Rewrite::Null => {
                out.truncate(len_at);
                value(out, None);
                changed += usize::from(original.is_some());
            }
            Rewrite::Replaced => {
                assert!(
                    out.len() >= start,
                    "a rewrite callback shortened the output"
                );
                let len = out.len() - start;
                let word = i32::try_from(len).expect("value longer than the protocol allows");
                out[len_at..start].copy_from_slice(&word.to_be_bytes());
                changed += usize::from(original != Some(&out[start..]));
            }
        }
    }
    end(out, at);
    changed
}

/// CommandComplete with a command tag (`SELECT 3`).
pub fn command_complete(out: &mut Vec<u8>, tag: &[u8]) {
    let at = begin(out, be::COMMAND_COMPLETE);
    cstr(out, tag);
    end(out, at);
}

/// NotificationResponse.
pub fn notification_response(out: &mut Vec<u8>, pid: u32, channel: &[u8], payload: &[u8]) {
    let at = begin(out, be::NOTIFICATION_RESPONSE);
    out.extend_from_slice(&pid.to_be_bytes());
    cstr(out, channel);
    cstr(out, payload);
    end(out, at);
}

/// ParameterDescription with the parameters' type OIDs.
pub fn parameter_description(out: &mut Vec<u8>, types: &[u32]) {
    let at = begin(out, be::PARAMETER_DESCRIPTION);
    count(out, types.len());
    for oid in types {
        out.extend_from_slice(&oid.to_be_bytes());
    }
    end(out, at);
}

/// ParseComplete.
pub fn parse_complete(out: &mut Vec<u8>) {
    empty(out, be::PARSE_COMPLETE);
}

/// BindComplete.
pub fn bind_complete(out: &mut Vec<u8>) {
    empty(out, be::BIND_COMPLETE);
}

/// CloseComplete.
pub fn close_complete(out: &mut Vec<u8>) {
    empty(out, be::CLOSE_COMPLETE);
}

/// NoData.
pub fn no_data(out: &mut Vec<u8>) {
    empty(out, be::NO_DATA);
}

/// PortalSuspended.
pub fn portal_suspended(out: &mut Vec<u8>) {
    empty(out, be::PORTAL_SUSPENDED);
}

/// EmptyQueryResponse.
pub fn empty_query_response(out: &mut Vec<u8>) {
    empty(out, be::EMPTY_QUERY_RESPONSE);
}

fn copy_response(out: &mut Vec<u8>, tag: u8, format: u8, column_formats: &[i16]) {
    let at = begin(out, tag);
    out.push(format);
    formats(out, column_formats);
    end(out, at);
}

/// CopyInResponse: overall `format` (0 text, 1 binary) and per-column codes.
pub fn copy_in_response(out: &mut Vec<u8>, format: u8, column_formats: &[i16]) {
    copy_response(out, be::COPY_IN_RESPONSE, format, column_formats);
}

/// CopyOutResponse: overall `format` (0 text, 1 binary) and per-column codes.
pub fn copy_out_response(out: &mut Vec<u8>, format: u8, column_formats: &[i16]) {
    copy_response(out, be::COPY_OUT_RESPONSE, format, column_formats);
}

/// CopyBothResponse: overall `format` (0 text, 1 binary) and per-column codes.
pub fn copy_both_response(out: &mut Vec<u8>, format: u8, column_formats: &[i16]) {
    copy_response(out, be::COPY_BOTH_RESPONSE, format, column_formats);
}

/// FunctionCallResponse (`None`: SQL NULL).
pub fn function_call_response(out: &mut Vec<u8>, result: Option<&[u8]>) {
    let at = begin(out, be::FUNCTION_CALL_RESPONSE);
    value(out, result);
    end(out, at);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgwire::backend::{self, Message};
    use crate::pgwire::testutil::written;
    use crate::pgwire::{Limits, check};
    use proptest::prelude::*;

    /// Each writer against the bytes the protocol documentation gives.
    #[test]
    fn writers_match_the_documented_layout() {
        let cases: Vec<(Vec<u8>, &[u8])> = vec![
            (written(authentication_ok), b"R\0\0\0\x08\0\0\0\0"),
            (
                written(authentication_cleartext_password),
                b"R\0\0\0\x08\0\0\0\x03",
            ),
            (
                written(|o| authentication_md5_password(o, *b"salt")),
                b"R\0\0\0\x0c\0\0\0\x05salt",
            ),
            (
                written(|o| authentication_sasl(o, &["SCRAM-SHA-256"])),
                b"R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0",
            ),
            (
                written(|o| authentication_sasl_continue(o, b"r=1")),
                b"R\0\0\0\x0b\0\0\0\x0br=1",
            ),
            (
                written(|o| authentication_sasl_final(o, b"v=2")),
                b"R\0\0\0\x0b\0\0\0\x0cv=2",
            ),
            (
                written(|o| parameter_status(o, b"TimeZone", b"UTC")),
                b"S\0\0\0\x11TimeZone\0UTC\0",
            ),
            (
                written(|o| backend_key_data(o, 7, b"\x01\x02\x03\x04")),
                b"K\0\0\0\x0c\0\0\0\x07\x01\x02\x03\x04",
            ),
            (written(|o| ready_for_query(o, b'I')), b"Z\0\0\0\x05I"),
            (
                written(|o| negotiate_protocol_version(o, 0, &[b"_pq_.a"])),
                b"v\0\0\0\x13\0\0\0\0\0\0\0\x01_pq_.a\0",
            ),
            (
                written(|o| error_response(o, "FATAL", "28000", "no", None, Some("h"))),
                b"E\0\0\0\x21SFATAL\0VFATAL\0C28000\0Mno\0Hh\0\0",
            ),
            (
                written(|o| notice_response(o, "NOTICE", "00000", "hi")),
                b"N\0\0\0\x20SNOTICE\0VNOTICE\0C00000\0Mhi\0\0",
            ),
            (
                written(|o| startup_message(o, 3, 0, &[(b"user", b"u")])),
                b"\0\0\0\x10\0\x03\0\0user\0u\0\0",
            ),
            (written(ssl_request), b"\0\0\0\x08\x04\xd2\x16\x2f"),
            (written(gssenc_request), b"\0\0\0\x08\x04\xd2\x16\x30"),
            (
                written(|o| cancel_request(o, 1, b"abcd")),
                b"\0\0\0\x10\x04\xd2\x16\x2e\0\0\0\x01abcd",
            ),
            (written(|o| password_message(o, b"pw")), b"p\0\0\0\x07pw\0"),
            (
                written(|o| sasl_initial_response(o, "M", b"xy")),
                b"p\0\0\0\x0cM\0\0\0\0\x02xy",
            ),
            (written(|o| sasl_response(o, b"xy")), b"p\0\0\0\x06xy"),
            (written(terminate), b"X\0\0\0\x04"),
            (written(|o| query(o, b"SELECT 1")), b"Q\0\0\0\x0dSELECT 1\0"),
            (written(sync), b"S\0\0\0\x04"),
            (written(|o| message(o, b'?', b"ab")), b"?\0\0\0\x06ab"),
            (
                written(|o| data_row(o, &[Some(b"1"), None])),
                b"D\0\0\0\x0f\0\x02\0\0\0\x011\xff\xff\xff\xff",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got, want, "{}", String::from_utf8_lossy(want));
        }
    }

    #[test]
    fn strings_cannot_smuggle_fields() {
        let out = written(|o| error_response(o, "ERROR", "42000", "a\0Mforged", None, None));
        let Ok(Message::ErrorResponse(f)) = backend::parse(&out) else {
            panic!()
        };
        assert_eq!(f.message(), Some(&b"a Mforged"[..]));
        assert_eq!(f.iter().count(), 4);
        // Zero codes would close the list.
        let out = written(|o| error_response_fields(o, &[(0, b"x"), (b'M', b"m")]));
        let Ok(Message::ErrorResponse(f)) = backend::parse(&out) else {
            panic!()
        };
        assert_eq!(f.iter().collect::<Vec<_>>(), [(b'M', &b"m"[..])]);
    }

    #[test]
    fn writers_append() {
        let mut out = b"prefix".to_vec();
        sync(&mut out);
        query(&mut out, b"x");
        assert_eq!(out, b"prefixS\0\0\0\x04Q\0\0\0\x06x\0");
        assert_eq!(check(&out[6..], &Limits::frontend()), Ok(Some(5)));
    }

    fn row_of(msg: &[u8]) -> backend::DataRow<'_> {
        match backend::parse(msg) {
            Ok(Message::DataRow(row)) => row,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn data_row_rewrite_replaces_nulls_and_keeps() {
        let original =
            written(|o| data_row(o, &[Some(b"alice"), Some(b"123-45-6789"), None, Some(b"x")]));
        let row = row_of(&original);
        let mut out = b"before".to_vec();
        let changed = data_row_rewrite(&mut out, &row, |i, value, out| match i {
            0 => Rewrite::Keep,
            1 => {
                out.extend_from_slice(b"***-**-");
                out.extend_from_slice(&value.unwrap()[7..]);
                Rewrite::Replaced
            }
            2 => {
                out.extend_from_slice(b"was null");
                Rewrite::Replaced
            }
            _ => {
                out.extend_from_slice(b"discarded");
                Rewrite::Null
            }
        });
        assert_eq!(changed, 3);
        assert_eq!(&out[..6], b"before");
        let expected = written(|o| {
            data_row(
                o,
                &[
                    Some(b"alice"),
                    Some(b"***-**-6789"),
                    Some(b"was null"),
                    None,
                ],
            )
        });
        assert_eq!(&out[6..], expected);
        assert_eq!(
            check(&out[6..], &Limits::backend()),
            Ok(Some(expected.len()))
        );
    }

    #[test]
    fn data_row_rewrite_of_nothing_is_the_original() {
        let original = written(|o| data_row(o, &[Some(b"a"), None, Some(b"")]));
        let row = row_of(&original);
        let mut out = Vec::new();
        let changed = data_row_rewrite(&mut out, &row, |_, value, out| match value {
            // Writing the same bytes back is not a change.
            Some(v) => {
                out.extend_from_slice(v);
                Rewrite::Replaced
            }
            None => Rewrite::Null,
        });
        assert_eq!((changed, &out[..]), (0, &original[..]));
        let empty = written(|o| data_row(o, &[]));
        let mut out = Vec::new();
        assert_eq!(
            data_row_rewrite(&mut out, &row_of(&empty), |_, _, _| Rewrite::Keep),
            0
        );
        assert_eq!(out, empty);
    }

    proptest! {
        #[test]
        fn data_row_rewrite_matches_building_the_row(
            cells in prop::collection::vec((
                prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
                0u8..3,
                prop::collection::vec(any::<u8>(), 0..20),
            ), 0..12)
        ) {
            let originals: Vec<Option<&[u8]>> = cells.iter().map(|(v, _, _)| v.as_deref()).collect();
            let msg = written(|o| data_row(o, &originals));
            let row = row_of(&msg);
            let mut out = Vec::new();
            data_row_rewrite(&mut out, &row, |i, _, out| match cells[i].1 {
                0 => Rewrite::Keep,
                1 => Rewrite::Null,
                _ => {
                    out.extend_from_slice(&cells[i].2);
                    Rewrite::Replaced
                }
            });
            let wanted: Vec<Option<&[u8]>> = cells
                .iter()
                .map(|(v, action, new)| match action {
                    0 => v.as_deref(),
                    1 => None,
                    _ => Some(new.as_slice()),
                })
                .collect();
            prop_assert_eq!(out, written(|o| data_row(o, &wanted)));
        }
    }
}
