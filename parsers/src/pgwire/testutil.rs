//! Shared test material: one encoded sample of every message kind with
//! its expected rendering, renderers that walk every lazy view of a parsed
//! message (and check the views agree with each other), streams of many
//! messages, and a driver that walks a stream as the proxy does.

use super::backend::{self, RowField};
use super::frontend;
use super::{Direction, Error, Limits, check, encode, parse_startup, startup_len};
use proptest::sample::Index;

fn b(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

/// What `f` writes into an empty buffer.
pub(crate) fn written(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = Vec::new();
    f(&mut out);
    out
}

/// `[a, NULL, ...]`, checking that spans and values agree.
fn render_values(values: &super::Values<'_>) -> String {
    let msg = values.msg();
    let items: Vec<String> = values
        .iter()
        .zip(values.spans())
        .map(|(value, span)| {
            assert_eq!(value, span.map(|s| &msg[s]));
            value.map_or_else(|| "NULL".to_owned(), b)
        })
        .collect();
    assert_eq!(items.len(), values.len());
    assert_eq!(values.iter().len(), values.len());
    format!("[{}]", items.join(", "))
}

fn render_formats(formats: &super::Formats<'_>) -> String {
    let codes: Vec<i16> = formats.iter().collect();
    assert_eq!(codes.len(), formats.len());
    format!("{codes:?}")
}

/// A client message, every view walked.
pub(crate) fn render_frontend(m: &frontend::Message<'_>) -> String {
    use frontend::Message as M;
    match m {
        M::Query { sql } => format!("Query({})", b(sql)),
        M::Parse {
            statement,
            sql,
            param_types,
        } => format!("Parse({}, {}, {param_types})", b(statement), b(sql)),
        M::Bind(x) => format!(
            "Bind({}, {}, {}, {}, {})",
            b(x.portal),
            b(x.statement),
            render_formats(&x.param_formats),
            render_values(&x.params),
            render_formats(&x.result_formats)
        ),
        M::Describe { kind, name } => format!("Describe({}, {})", char::from(*kind), b(name)),
        M::Execute { portal, max_rows } => format!("Execute({}, {max_rows})", b(portal)),
        M::Sync => "Sync".to_owned(),
        M::Flush => "Flush".to_owned(),
        M::Close { kind, name } => format!("Close({}, {})", char::from(*kind), b(name)),
        M::CopyData(data) => format!("CopyData({})", b(data)),
        M::CopyDone => "CopyDone".to_owned(),
        M::CopyFail { message } => format!("CopyFail({})", b(message)),
        M::FunctionCall {
            oid,
            arg_formats,
            args,
            result_format,
        } => format!(
            "FunctionCall({oid}, {}, {}, {result_format})",
            render_formats(arg_formats),
            render_values(args)
        ),
        M::Terminate => "Terminate".to_owned(),
        M::Password(body) => format!("Password({})", b(body)),
    }
}

/// Walks every view of a client message; for the no-panic properties.
pub(crate) fn visit_frontend(m: &frontend::Message<'_>) {
    let _ = render_frontend(m);
    if let frontend::Message::Password(body) = m {
        let _ = frontend::password(body);
        let _ = frontend::sasl_initial_response(body);
    }
}

/// A server message, every view walked.
pub(crate) fn render_backend(m: &backend::Message<'_>) -> String {
    use backend::{Authentication as A, Message as M};
    let copy = |name: &str, c: &backend::CopyResponse<'_>| {
        format!(
            "{name}({}, {})",
            c.format,
            render_formats(&c.column_formats)
        )
    };
    let fields = |name: &str, f: &backend::Fields<'_>| {
        let items: Vec<String> = f
            .iter()
            .map(|(code, value)| {
                assert_ne!(code, 0);
                format!("{}={}", char::from(code), b(value))
            })
            .collect();
        let _ = (f.severity(), f.code(), f.message(), f.detail(), f.hint());
        format!("{name}({})", items.join(", "))
    };
    match m {
        M::Authentication(a) => {
            let mechanisms: Vec<String> = a.mechanisms().map(b).collect();
            let _ = a.code();
            match a {
                A::Ok => "AuthenticationOk".to_owned(),
                A::CleartextPassword => "AuthenticationCleartextPassword".to_owned(),
                A::Md5Password { salt } => format!("AuthenticationMD5Password({})", b(salt)),
                A::Sasl { .. } => format!("AuthenticationSASL({})", mechanisms.join(", ")),
                A::SaslContinue(data) => format!("AuthenticationSASLContinue({})", b(data)),
                A::SaslFinal(data) => format!("AuthenticationSASLFinal({})", b(data)),
                A::Other(code) => format!("Authentication({code})"),
            }
        }
        M::ParameterStatus { name, value } => {
            format!("ParameterStatus({}, {})", b(name), b(value))
        }
        M::BackendKeyData { pid, secret } => {
            format!("BackendKeyData({pid}, {} bytes)", secret.len())
        }
        M::ReadyForQuery { status } => format!("ReadyForQuery({})", char::from(*status)),
        M::RowDescription(rd) => {
            let items: Vec<String> = rd
                .fields()
                .map(|f| {
                    format!(
                        "{} {}.{} {}/{}/{} {}",
                        b(f.name),
                        f.table_oid,
                        f.column,
                        f.type_oid,
                        f.type_size,
                        f.type_modifier,
                        f.format
                    )
                })
                .collect();
            assert_eq!(items.len(), rd.len());
            format!("RowDescription({})", items.join(", "))
        }
        M::DataRow(row) => {
            assert_eq!(row.values().len(), row.len());
            assert_eq!(row.as_values().msg(), row.msg());
            format!("DataRow{}", render_values(&row.as_values()))
        }
        M::CommandComplete { tag } => format!("CommandComplete({})", b(tag)),
        M::ErrorResponse(f) => fields("ErrorResponse", f),
        M::NoticeResponse(f) => fields("NoticeResponse", f),
        M::NotificationResponse {
            pid,
            channel,
            payload,
        } => format!(
            "NotificationResponse({pid}, {}, {})",
            b(channel),
            b(payload)
        ),
        M::ParameterDescription { types } => format!("ParameterDescription({types})"),
        M::ParseComplete => "ParseComplete".to_owned(),
        M::BindComplete => "BindComplete".to_owned(),
        M::CloseComplete => "CloseComplete".to_owned(),
        M::NoData => "NoData".to_owned(),
        M::PortalSuspended => "PortalSuspended".to_owned(),
        M::EmptyQueryResponse => "EmptyQueryResponse".to_owned(),
        M::CopyInResponse(c) => copy("CopyInResponse", c),
        M::CopyOutResponse(c) => copy("CopyOutResponse", c),
        M::CopyBothResponse(c) => copy("CopyBothResponse", c),
        M::CopyData(data) => format!("CopyData({})", b(data)),
        M::CopyDone => "CopyDone".to_owned(),
        M::NegotiateProtocolVersion {
            newest_minor,
            unrecognized,
        } => format!("NegotiateProtocolVersion({newest_minor}, {unrecognized})"),
        M::FunctionCallResponse { value } => format!(
            "FunctionCallResponse({})",
            value.map_or_else(|| "NULL".to_owned(), b)
        ),
    }
}

/// One encoded sample of every client message kind, with its rendering.
pub(crate) fn frontend_samples() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (
            written(|o| encode::query(o, b"SELECT * FROM users WHERE id = 1")),
            "Query(SELECT * FROM users WHERE id = 1)",
        ),
        (
            written(|o| encode::parse(o, b"s1", b"SELECT $1::int", &[23])),
            "Parse(s1, SELECT $1::int, 1)",
        ),
        (
            written(|o| encode::bind(o, b"p1", b"s1", &[1], &[Some(b"\0\0\0\x2a"), None], &[0])),
            "Bind(p1, s1, [1], [\\x00\\x00\\x00*, NULL], [0])",
        ),
        (
            written(|o| encode::describe(o, b'S', b"s1")),
            "Describe(S, s1)",
        ),
        (written(|o| encode::describe(o, b'P', b"")), "Describe(P, )"),
        (
            written(|o| encode::execute(o, b"p1", 100)),
            "Execute(p1, 100)",
        ),
        (written(encode::flush), "Flush"),
        (written(encode::sync), "Sync"),
        (written(|o| encode::close(o, b'P', b"p1")), "Close(P, p1)"),
        (
            written(|o| encode::copy_data(o, b"1\tx\n")),
            "CopyData(1\\tx\\n)",
        ),
        (written(encode::copy_done), "CopyDone"),
        (written(|o| encode::copy_fail(o, b"bad")), "CopyFail(bad)"),
        (
            written(|o| encode::function_call(o, 1234, &[1], &[Some(b"ab")], 1)),
            "FunctionCall(1234, [1], [ab], 1)",
        ),
        (
            written(|o| encode::password_message(o, b"eyJ.token")),
            "Password(eyJ.token\\x00)",
        ),
        (
            written(|o| encode::sasl_initial_response(o, "SCRAM-SHA-256", b"n,,n=,r=x")),
            "Password(SCRAM-SHA-256\\x00\\x00\\x00\\x00\\tn,,n=,r=x)",
        ),
        (written(encode::terminate), "Terminate"),
    ]
}

fn field<'a>(name: &'a [u8], type_oid: u32, type_size: i16) -> RowField<'a> {
    RowField {
        name,
        table_oid: 16_384,
        column: 1,
        type_oid,
        type_size,
        type_modifier: -1,
        format: 0,
    }
}

/// One encoded sample of every server message kind, with its rendering.
pub(crate) fn backend_samples() -> Vec<(Vec<u8>, &'static str)> {
    vec![
        (
            written(|o| encode::authentication_sasl(o, &["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256"])),
            "AuthenticationSASL(SCRAM-SHA-256-PLUS, SCRAM-SHA-256)",
        ),
        (
            written(|o| encode::authentication_sasl_continue(o, b"r=abc,s=salt,i=4096")),
            "AuthenticationSASLContinue(r=abc,s=salt,i=4096)",
        ),
        (
            written(|o| encode::authentication_sasl_final(o, b"v=sig")),
            "AuthenticationSASLFinal(v=sig)",
        ),
        (
            written(encode::authentication_cleartext_password),
            "AuthenticationCleartextPassword",
        ),
        (
            written(|o| encode::authentication_md5_password(o, *b"ab\0d")),
            "AuthenticationMD5Password(ab\\x00d)",
        ),
        (
            written(|o| encode::authentication(o, backend::auth::GSS, b"")),
            "Authentication(7)",
        ),
        (written(encode::authentication_ok), "AuthenticationOk"),
        (
            written(|o| encode::parameter_status(o, b"server_version", b"17.2")),
            "ParameterStatus(server_version, 17.2)",
        ),
        (
            written(|o| encode::backend_key_data(o, 4242, &[9; 32])),
            "BackendKeyData(4242, 32 bytes)",
        ),
        (
            written(|o| encode::ready_for_query(o, b'T')),
            "ReadyForQuery(T)",
        ),
        (
            written(|o| encode::row_description(o, &[field(b"id", 23, 4), field(b"ssn", 25, -1)])),
            "RowDescription(id 16384.1 23/4/-1 0, ssn 16384.1 25/-1/-1 0)",
        ),
        (
            written(|o| encode::data_row(o, &[Some(b"1"), Some(b"123-45-6789"), None, Some(b"")])),
            "DataRow[1, 123-45-6789, NULL, ]",
        ),
        (
            written(|o| encode::command_complete(o, b"SELECT 1")),
            "CommandComplete(SELECT 1)",
        ),
        (
            written(|o| {
                encode::error_response(o, "ERROR", "42501", "denied", Some("rule 7"), None)
            }),
            "ErrorResponse(S=ERROR, V=ERROR, C=42501, M=denied, D=rule 7)",
        ),
        (
            written(|o| encode::notice_response(o, "WARNING", "01000", "careful")),
            "NoticeResponse(S=WARNING, V=WARNING, C=01000, M=careful)",
        ),
        (
            written(|o| encode::notification_response(o, 77, b"jobs", b"{\"id\":1}")),
            "NotificationResponse(77, jobs, {\\\"id\\\":1})",
        ),
        (
            written(|o| encode::parameter_description(o, &[23, 25])),
            "ParameterDescription(2)",
        ),
        (written(encode::parse_complete), "ParseComplete"),
        (written(encode::bind_complete), "BindComplete"),
        (written(encode::close_complete), "CloseComplete"),
        (written(encode::no_data), "NoData"),
        (written(encode::portal_suspended), "PortalSuspended"),
        (written(encode::empty_query_response), "EmptyQueryResponse"),
        (
            written(|o| encode::copy_in_response(o, 0, &[0, 0])),
            "CopyInResponse(0, [0, 0])",
        ),
        (
            written(|o| encode::copy_out_response(o, 1, &[1])),
            "CopyOutResponse(1, [1])",
        ),
        (
            written(|o| encode::copy_both_response(o, 0, &[])),
            "CopyBothResponse(0, [])",
        ),
        (
            written(|o| encode::copy_data(o, b"a,b\n")),
            "CopyData(a,b\\n)",
        ),
        (written(encode::copy_done), "CopyDone"),
        (
            written(|o| encode::negotiate_protocol_version(o, 0, &[b"_pq_.compression"])),
            "NegotiateProtocolVersion(0, 1)",
        ),
        (
            written(|o| encode::function_call_response(o, Some(b"42"))),
            "FunctionCallResponse(42)",
        ),
        (
            written(|o| encode::function_call_response(o, None)),
            "FunctionCallResponse(NULL)",
        ),
    ]
}

/// A client's stream: a StartupMessage, then one of every message, with
/// the offsets at which each ends.
pub(crate) fn frontend_stream() -> (Vec<u8>, Vec<usize>, Direction) {
    let mut stream = Vec::new();
    encode::startup_message(
        &mut stream,
        3,
        0,
        &[(b"user", b"alice"), (b"database", b"shop")],
    );
    let mut ends = vec![stream.len()];
    for (bytes, _) in frontend_samples() {
        stream.extend_from_slice(&bytes);
        ends.push(stream.len());
    }
    (stream, ends, Direction::Frontend)
}

/// A server's stream: one of every message, with the offsets at which
/// each ends.
pub(crate) fn backend_stream() -> (Vec<u8>, Vec<usize>, Direction) {
    let mut stream = Vec::new();
    let mut ends = Vec::new();
    for (bytes, _) in backend_samples() {
        stream.extend_from_slice(&bytes);
        ends.push(stream.len());
    }
    (stream, ends, Direction::Backend)
}

/// Walks the whole messages at the start of `stream` as the proxy does
/// (a startup-phase message first, from a client): returns the offset at
/// which each ends and its rendering, stopping at the first incomplete one.
pub(crate) fn walk(stream: &[u8], limits: &Limits) -> Result<Vec<(usize, String)>, Error> {
    let mut seen = Vec::new();
    let mut pos = 0;
    if limits.direction == Direction::Frontend {
        let Some(len) = startup_len(stream, limits)? else {
            return Ok(seen);
        };
        let startup = parse_startup(&stream[..len])?;
        pos = len;
        seen.push((pos, format!("{startup:?}")));
    }
    while let Some(len) = check(&stream[pos..], limits)? {
        let msg = &stream[pos..pos + len];
        let text = match limits.direction {
            Direction::Frontend => render_frontend(&frontend::parse_with(msg, limits)?),
            Direction::Backend => render_backend(&backend::parse_with(msg, limits)?),
        };
        pos += len;
        seen.push((pos, text));
    }
    Ok(seen)
}

/// Overwrites one byte of one client sample and parses the result; only
/// a panic fails.
pub(crate) fn mutate_and_parse_frontend(which: Index, at: Index, byte: u8) {
    let samples = frontend_samples();
    let mut msg = samples[which.index(samples.len())].0.clone();
    let i = at.index(msg.len());
    msg[i] = byte;
    let limits = Limits::frontend();
    if let Ok(Some(len)) = check(&msg, &limits)
        && let Ok(m) = frontend::parse_with(&msg[..len], &limits)
    {
        visit_frontend(&m);
    }
    if let Ok(m) = frontend::parse(&msg) {
        visit_frontend(&m);
    }
}

/// Overwrites one byte of one server sample and parses the result; only
/// a panic fails.
pub(crate) fn mutate_and_parse_backend(which: Index, at: Index, byte: u8) {
    let samples = backend_samples();
    let mut msg = samples[which.index(samples.len())].0.clone();
    let i = at.index(msg.len());
    msg[i] = byte;
    let limits = Limits::backend();
    if let Ok(Some(len)) = check(&msg, &limits)
        && let Ok(m) = backend::parse_with(&msg[..len], &limits)
    {
        render_backend(&m);
    }
    if let Ok(m) = backend::parse(&msg) {
        render_backend(&m);
    }
}
