//! The PostgreSQL client: SSLRequest and TLS when asked, StartupMessage,
//! SCRAM-SHA-256 / md5 / cleartext authentication, then the workload's
//! statements, simple (`Query` with literals) or prepared (`Parse` once per
//! connection, then `Bind`/`Execute`/`Sync` per operation), pipelined. One
//! operation ends at its `ReadyForQuery`; messages are framed with
//! `custos_parsers::pgwire::check` and only their type byte is looked at,
//! except for errors.

mod auth;

pub use auth::{ExpectServerFinal, ExpectServerFirst, ScramClient, md5_password};

use std::fmt::Write as _;
use std::sync::Arc;

use custos_parsers::pgwire::{self, Limits, backend, encode};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::Error;
use crate::data::{MemoryGen, Rng, ValueSize, value_bytes};
use crate::engine::{Client, Codec, Decoded, Reply};
use crate::net::{Endpoint, Stream, connect_tcp};

/// Point-select table: `keyspace` rows loaded by the setup.
pub const KV_TABLE: &str = "custos_loadtest_kv";
/// Insert target.
pub const LOG_TABLE: &str = "custos_loadtest_log";
/// Agent memory records.
pub const MEMORY_TABLE: &str = "custos_loadtest_memory";
/// Rows a memory recall returns at most.
const RECALL_ROWS: u32 = 5;

/// What the connections send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Point selects by primary key on the loaded table.
    Select,
    /// Single-row inserts.
    Insert,
    /// Point selects and inserts, `--write-ratio` of them inserts.
    Mix,
    /// "Agent memory": store records (agent, kind, JSON metadata, text
    /// with personal data) and recall an agent's latest ones.
    Memory,
    /// `SELECT 1`: the cost of a round trip through the endpoint.
    Ping,
    /// Connection churn: connect, authenticate, `SELECT 1`, close.
    Churn,
}

/// Simple or extended query protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryMode {
    /// `Query` messages with the values as SQL literals.
    Simple,
    /// Statements prepared once per connection, then bound and executed.
    Prepared,
}

/// Everything a PostgreSQL connection needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to connect (TLS starts with an SSLRequest).
    pub endpoint: Endpoint,
    /// The role.
    pub user: String,
    /// The database.
    pub dbname: String,
    /// Password or token, sent as the method requires.
    pub password: Option<String>,
    /// The workload.
    pub workload: Workload,
    /// Simple or prepared statements.
    pub mode: QueryMode,
    /// Rows of the point-select table.
    pub keyspace: u64,
    /// Sizes of inserted values (and of the loaded rows).
    pub value_size: ValueSize,
    /// Share of writes among operations in `mix` and `memory`.
    pub write_ratio: f64,
    /// Agents the memory records are spread over.
    pub agents: u64,
    /// Base seed; each connection derives its own.
    pub seed: u64,
}

/// The PostgreSQL [`Client`].
#[derive(Debug)]
pub struct PgClient {
    config: Config,
    values: Arc<Vec<u8>>,
}

/// A statement the prepared mode parses once per connection.
struct Statement {
    name: &'static [u8],
    sql: String,
}

impl PgClient {
    /// A client for `config`.
    pub fn new(config: Config) -> Self {
        let values = Arc::new(value_bytes(config.value_size.max(), config.seed));
        Self { config, values }
    }

    /// The statements a workload uses, in prepared form.
    fn statements(&self) -> Vec<Statement> {
        let select = Statement {
            name: b"lt_select",
            sql: format!("SELECT v FROM {KV_TABLE} WHERE k = $1"),
        };
        let insert = Statement {
            name: b"lt_insert",
            sql: format!("INSERT INTO {LOG_TABLE} (k, v) VALUES ($1, $2)"),
        };
        let store = Statement {
            name: b"lt_store",
            sql: format!(
                "INSERT INTO {MEMORY_TABLE} (agent, kind, meta, body) VALUES ($1, $2, $3::jsonb, $4)"
            ),
        };
        let recall = Statement {
            name: b"lt_recall",
            sql: format!(
                "SELECT id, kind, meta, body FROM {MEMORY_TABLE} WHERE agent = $1 \
                 ORDER BY id DESC LIMIT {RECALL_ROWS}"
            ),
        };
        let ping = Statement {
            name: b"lt_ping",
            sql: "SELECT 1".into(),
        };
        match self.config.workload {
            Workload::Select => vec![select],
            Workload::Insert => vec![insert],
            Workload::Mix => vec![select, insert],
            Workload::Memory => vec![store, recall],
            Workload::Ping | Workload::Churn => vec![ping],
        }
    }

    /// Creates the workload's tables (if missing) and loads the
    /// point-select table, over one connection of its own. Idempotent, so
    /// repeated runs and several endpoints in front of one store share it.
    pub async fn setup(&self) -> Result<(), Error> {
        let mut conn = self.open().await?;
        let c = &self.config;
        let mut sql = String::new();
        match c.workload {
            Workload::Select | Workload::Mix => {
                // Rows of the configured value size, made by the server.
                let len = c.value_size.max().max(1);
                let _ = write!(
                    sql,
                    "CREATE TABLE IF NOT EXISTS {KV_TABLE} (k integer PRIMARY KEY, v text NOT NULL);\
                     INSERT INTO {KV_TABLE} SELECT g, left(repeat(md5(g::text), {reps}), {len}) \
                     FROM generate_series(0, {last}) AS g ON CONFLICT (k) DO NOTHING;",
                    reps = len.div_ceil(32),
                    last = c.keyspace.max(1) - 1,
                );
            }
            _ => {}
        }
        if matches!(c.workload, Workload::Insert | Workload::Mix) {
            let _ = write!(
                sql,
                "CREATE TABLE IF NOT EXISTS {LOG_TABLE} (id bigserial PRIMARY KEY, k integer NOT NULL, \
                 v text NOT NULL, at timestamptz NOT NULL DEFAULT now());"
            );
        }
        if c.workload == Workload::Memory {
            let _ = write!(
                sql,
                "CREATE TABLE IF NOT EXISTS {MEMORY_TABLE} (id bigserial PRIMARY KEY, \
                 agent text NOT NULL, kind text NOT NULL, meta jsonb NOT NULL, body text NOT NULL, \
                 at timestamptz NOT NULL DEFAULT now());\
                 CREATE INDEX IF NOT EXISTS {MEMORY_TABLE}_agent ON {MEMORY_TABLE} (agent, id);"
            );
        }
        if sql.is_empty() {
            return Ok(());
        }
        let mut out = Vec::new();
        encode::query(&mut out, sql.as_bytes());
        conn.stream.write_all(&out).await?;
        match conn.until_ready().await? {
            None => Ok(()),
            Some(e) => Err(Error::Server(format!("setting up the tables: {e}"))),
        }
    }

    /// Connects, starts TLS if configured, and authenticates.
    async fn open(&self) -> Result<PgConn, Error> {
        let c = &self.config;
        let ep = &c.endpoint;
        let mut tcp = connect_tcp(&ep.addr)
            .await
            .map_err(|source| Error::Connect {
                addr: ep.addr.clone(),
                source,
            })?;
        let stream = match &ep.tls {
            Some(tls) => {
                let mut req = Vec::with_capacity(8);
                encode::ssl_request(&mut req);
                tcp.write_all(&req).await?;
                let mut answer = [0u8; 1];
                tcp.read_exact(&mut answer).await?;
                match answer[0] {
                    b'S' => tls.wrap(tcp).await.map_err(|e| Error::Tls(e.to_string()))?,
                    b'N' => {
                        return Err(Error::Tls(format!(
                            "{} does not accept TLS (it answered the SSLRequest with N)",
                            ep.addr
                        )));
                    }
                    other => {
                        return Err(Error::Protocol(format!(
                            "unexpected answer to the SSLRequest: {other:#04x}"
                        )));
                    }
                }
            }
            None => Stream::Plain(tcp),
        };
        let mut conn = PgConn {
            stream,
            buf: Vec::with_capacity(8192),
        };
        conn.startup(c).await?;
        Ok(conn)
    }
}

impl Client for PgClient {
    type Codec = PgCodec;

    async fn connect(&self, id: u64) -> Result<(Stream, PgCodec), Error> {
        let mut conn = self.open().await?;
        if self.config.mode == QueryMode::Prepared {
            let mut out = Vec::new();
            for s in self.statements() {
                encode::parse(&mut out, s.name, s.sql.as_bytes(), &[]);
            }
            encode::sync(&mut out);
            conn.stream.write_all(&out).await?;
            if let Some(e) = conn.until_ready().await? {
                return Err(Error::Server(format!("preparing the statements: {e}")));
            }
        }
        // Bytes after the last ReadyForQuery would belong to no operation;
        // the server sends none before it is asked.
        if !conn.buf.is_empty() {
            return Err(Error::Protocol(
                "the server sent messages after ReadyForQuery unasked".into(),
            ));
        }
        let codec = PgCodec::new(&self.config, self.values.clone(), id);
        Ok((conn.stream, codec))
    }

    fn churn(&self) -> bool {
        self.config.workload == Workload::Churn
    }
}

/// A connection during its handshake, with the bytes read but not yet used.
struct PgConn {
    stream: Stream,
    buf: Vec<u8>,
}

impl PgConn {
    /// The next whole backend message, as owned bytes (handshakes only).
    async fn message(&mut self) -> Result<Vec<u8>, Error> {
        loop {
            if let Some(len) = pgwire::check(&self.buf, &Limits::backend())
                .map_err(|e| Error::Protocol(e.to_string()))?
            {
                return Ok(self.buf.drain(..len).collect());
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(Error::Protocol("the server closed the connection".into()));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// StartupMessage and authentication, up to the first ReadyForQuery.
    async fn startup(&mut self, c: &Config) -> Result<(), Error> {
        let mut out = Vec::new();
        encode::startup_message(
            &mut out,
            3,
            0,
            &[
                (b"user", c.user.as_bytes()),
                (b"database", c.dbname.as_bytes()),
                (b"application_name", b"custos-loadtest"),
                (b"client_encoding", b"UTF8"),
            ],
        );
        self.stream.write_all(&out).await?;
        let password = || {
            c.password.as_deref().ok_or_else(|| {
                Error::Auth("the server asks for a password and none was given".into())
            })
        };
        let mut scram_first: Option<ExpectServerFirst> = None;
        let mut scram_final: Option<ExpectServerFinal> = None;
        loop {
            let msg = self.message().await?;
            let parsed = backend::parse(&msg).map_err(|e| Error::Protocol(e.to_string()))?;
            out.clear();
            match parsed {
                backend::Message::Authentication(a) => match a {
                    backend::Authentication::Ok => {
                        if scram_first.is_some() {
                            return Err(Error::Auth(
                                "the server ended SCRAM before its first message".into(),
                            ));
                        }
                    }
                    backend::Authentication::CleartextPassword => {
                        encode::password_message(&mut out, password()?.as_bytes());
                    }
                    backend::Authentication::Md5Password { salt } => {
                        let answer = md5_password(&c.user, password()?, salt);
                        encode::password_message(&mut out, answer.as_bytes());
                    }
                    backend::Authentication::Sasl { .. } => {
                        if !a.mechanisms().any(|m| m == auth::SCRAM_SHA_256.as_bytes()) {
                            return Err(Error::Auth(
                                "the server offers no SASL mechanism this client speaks (SCRAM-SHA-256)"
                                    .into(),
                            ));
                        }
                        let (first, state) = ScramClient::start(password()?.as_bytes())?;
                        encode::sasl_initial_response(&mut out, auth::SCRAM_SHA_256, &first);
                        scram_first = Some(state);
                    }
                    backend::Authentication::SaslContinue(data) => {
                        let state = scram_first.take().ok_or_else(|| {
                            Error::Auth("SASL continue without a SASL start".into())
                        })?;
                        let (answer, next) = state.handle(data)?;
                        encode::sasl_response(&mut out, &answer);
                        scram_final = Some(next);
                    }
                    backend::Authentication::SaslFinal(data) => {
                        let state = scram_final.take().ok_or_else(|| {
                            Error::Auth("SASL final before the client's final message".into())
                        })?;
                        state.handle(data)?;
                    }
                    backend::Authentication::Other(code) => {
                        return Err(Error::Auth(format!(
                            "unsupported authentication request (code {code})"
                        )));
                    }
                },
                backend::Message::ErrorResponse(fields) => {
                    return Err(Error::Auth(error_text(fields.code(), fields.message())));
                }
                backend::Message::ReadyForQuery { .. } => {
                    if scram_final.is_some() {
                        return Err(Error::Auth(
                            "the server skipped the SCRAM final message".into(),
                        ));
                    }
                    return Ok(());
                }
                // ParameterStatus, BackendKeyData, NoticeResponse,
                // NegotiateProtocolVersion: nothing to do.
                _ => {}
            }
            if !out.is_empty() {
                self.stream.write_all(&out).await?;
            }
        }
    }

    /// Reads up to ReadyForQuery; the first error's text if there was one.
    async fn until_ready(&mut self) -> Result<Option<String>, Error> {
        let mut error = None;
        loop {
            let msg = self.message().await?;
            match backend::parse(&msg).map_err(|e| Error::Protocol(e.to_string()))? {
                backend::Message::ErrorResponse(f) => {
                    error.get_or_insert_with(|| error_text(f.code(), f.message()));
                }
                backend::Message::ReadyForQuery { .. } => return Ok(error),
                _ => {}
            }
        }
    }
}

fn error_text(code: Option<&[u8]>, message: Option<&[u8]>) -> String {
    let code = String::from_utf8_lossy(code.unwrap_or(b"?"));
    let message = String::from_utf8_lossy(message.unwrap_or(b"(no message)"));
    format!("{message} (SQLSTATE {code})")
}

/// One connection's statement generator and reply counter.
#[derive(Debug)]
pub struct PgCodec {
    workload: Workload,
    mode: QueryMode,
    keyspace: u64,
    value_size: ValueSize,
    write_ratio: f64,
    values: Arc<Vec<u8>>,
    rng: Rng,
    memory: MemoryGen,
    /// Set when the operation being read had an ErrorResponse.
    error: Option<String>,
    /// SQL text of the simple mode, reused.
    sql: String,
}

impl PgCodec {
    fn new(config: &Config, values: Arc<Vec<u8>>, id: u64) -> Self {
        Self {
            workload: config.workload,
            mode: config.mode,
            keyspace: config.keyspace.max(1),
            value_size: config.value_size,
            write_ratio: config.write_ratio,
            values,
            rng: Rng::new(config.seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            memory: MemoryGen::new(config.agents),
            error: None,
            sql: String::with_capacity(256),
        }
    }

    fn value_range(&mut self) -> std::ops::Range<usize> {
        let len = self.value_size.sample(&mut self.rng);
        let at = self.rng.below((self.values.len() - len) as u64 + 1) as usize;
        at..at + len
    }

    /// Bind + Execute + Sync of a prepared statement with text parameters.
    fn bound(out: &mut Vec<u8>, statement: &[u8], params: &[Option<&[u8]>]) {
        encode::bind(out, b"", statement, &[], params, &[]);
        encode::execute(out, b"", 0);
        encode::sync(out);
    }

    fn select(&mut self, out: &mut Vec<u8>) {
        let k = self.rng.below(self.keyspace);
        match self.mode {
            QueryMode::Prepared => {
                let mut num = [0u8; 48];
                let k = crate::data::key(&mut num, "", k);
                Self::bound(out, b"lt_select", &[Some(k)]);
            }
            QueryMode::Simple => {
                self.sql.clear();
                let _ = write!(self.sql, "SELECT v FROM {KV_TABLE} WHERE k = {k}");
                encode::query(out, self.sql.as_bytes());
            }
        }
    }

    fn insert(&mut self, out: &mut Vec<u8>) {
        let k = self.rng.below(self.keyspace);
        let range = self.value_range();
        match self.mode {
            QueryMode::Prepared => {
                let mut num = [0u8; 48];
                let k = crate::data::key(&mut num, "", k);
                let v = &self.values[range];
                encode::bind(out, b"", b"lt_insert", &[], &[Some(k), Some(v)], &[]);
                encode::execute(out, b"", 0);
                encode::sync(out);
            }
            QueryMode::Simple => {
                // The values are alphanumeric: no quoting needed.
                let v = String::from_utf8_lossy(&self.values[range]);
                self.sql.clear();
                let _ = write!(
                    self.sql,
                    "INSERT INTO {LOG_TABLE} (k, v) VALUES ({k}, '{v}')"
                );
                encode::query(out, self.sql.as_bytes());
            }
        }
    }

    fn memory(&mut self, out: &mut Vec<u8>) {
        if self.rng.chance(self.write_ratio) {
            let rec = self.memory.record(&mut self.rng);
            match self.mode {
                QueryMode::Prepared => Self::bound(
                    out,
                    b"lt_store",
                    &[
                        Some(rec.agent.as_bytes()),
                        Some(rec.kind.as_bytes()),
                        Some(rec.meta.as_bytes()),
                        Some(rec.text.as_bytes()),
                    ],
                ),
                QueryMode::Simple => {
                    self.sql.clear();
                    let _ = write!(
                        self.sql,
                        "INSERT INTO {MEMORY_TABLE} (agent, kind, meta, body) VALUES ({}, {}, {}::jsonb, {})",
                        literal(&rec.agent),
                        literal(rec.kind),
                        literal(&rec.meta),
                        literal(&rec.text)
                    );
                    encode::query(out, self.sql.as_bytes());
                }
            }
        } else {
            let agent = self.memory.agent(&mut self.rng);
            match self.mode {
                QueryMode::Prepared => Self::bound(out, b"lt_recall", &[Some(agent.as_bytes())]),
                QueryMode::Simple => {
                    self.sql.clear();
                    let _ = write!(
                        self.sql,
                        "SELECT id, kind, meta, body FROM {MEMORY_TABLE} WHERE agent = {} \
                         ORDER BY id DESC LIMIT {RECALL_ROWS}",
                        literal(&agent)
                    );
                    encode::query(out, self.sql.as_bytes());
                }
            }
        }
    }

    fn encode_one(&mut self, out: &mut Vec<u8>) {
        match self.workload {
            Workload::Select => self.select(out),
            Workload::Insert => self.insert(out),
            Workload::Mix => {
                if self.rng.chance(self.write_ratio) {
                    self.insert(out);
                } else {
                    self.select(out);
                }
            }
            Workload::Memory => self.memory(out),
            Workload::Ping | Workload::Churn => match self.mode {
                QueryMode::Prepared => Self::bound(out, b"lt_ping", &[]),
                QueryMode::Simple => encode::query(out, b"SELECT 1"),
            },
        }
    }
}

/// A SQL string literal (standard-conforming strings, PostgreSQL's
/// default since 9.1): quotes doubled.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Codec for PgCodec {
    fn encode(&mut self, n: usize, out: &mut Vec<u8>) {
        for _ in 0..n {
            self.encode_one(out);
        }
    }

    fn goodbye(&self, out: &mut Vec<u8>) {
        encode::terminate(out);
    }

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded, Error> {
        let limits = Limits::backend();
        let mut at = 0;
        loop {
            let Some(len) =
                pgwire::check(&buf[at..], &limits).map_err(|e| Error::Protocol(e.to_string()))?
            else {
                return Ok(Decoded {
                    consumed: at,
                    reply: None,
                });
            };
            let msg = &buf[at..at + len];
            at += len;
            match msg[0] {
                backend::tag::READY_FOR_QUERY => {
                    let reply = match self.error.take() {
                        Some(e) => Reply::Error(e),
                        None => Reply::Ok,
                    };
                    return Ok(Decoded {
                        consumed: at,
                        reply: Some(reply),
                    });
                }
                backend::tag::ERROR_RESPONSE if self.error.is_none() => {
                    let text = match backend::parse(msg) {
                        Ok(backend::Message::ErrorResponse(f)) => error_text(f.code(), f.message()),
                        _ => "malformed ErrorResponse".into(),
                    };
                    self.error = Some(text);
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use custos_parsers::pgwire::frontend;

    fn codec(workload: Workload, mode: QueryMode) -> PgCodec {
        let config = Config {
            endpoint: Endpoint {
                addr: "127.0.0.1:5432".into(),
                tls: None,
            },
            user: "u".into(),
            dbname: "d".into(),
            password: None,
            workload,
            mode,
            keyspace: 50,
            value_size: ValueSize::Fixed(16),
            write_ratio: 0.5,
            agents: 4,
            seed: 9,
        };
        PgCodec::new(&config, Arc::new(value_bytes(16, 9)), 3)
    }

    /// The frontend messages in `out`, by tag.
    fn tags(out: &[u8]) -> Vec<u8> {
        let limits = Limits::frontend();
        let mut at = 0;
        let mut tags = Vec::new();
        while at < out.len() {
            let len = pgwire::check(&out[at..], &limits).unwrap().unwrap();
            frontend::parse(&out[at..at + len]).expect("valid frontend message");
            tags.push(out[at]);
            at += len;
        }
        tags
    }

    #[test]
    fn each_operation_ends_with_one_sync_or_query() {
        for workload in [
            Workload::Select,
            Workload::Insert,
            Workload::Mix,
            Workload::Memory,
            Workload::Ping,
        ] {
            for mode in [QueryMode::Simple, QueryMode::Prepared] {
                let mut c = codec(workload, mode);
                let mut out = Vec::new();
                c.encode(20, &mut out);
                let tags = tags(&out);
                let ends = tags.iter().filter(|&&t| t == b'S' || t == b'Q').count();
                assert_eq!(ends, 20, "{workload:?} {mode:?}");
                if mode == QueryMode::Prepared {
                    assert_eq!(tags.iter().filter(|&&t| t == b'B').count(), 20);
                }
            }
        }
    }

    #[test]
    fn simple_memory_statements_quote_their_literals() {
        let mut c = codec(Workload::Memory, QueryMode::Simple);
        for _ in 0..50 {
            let mut out = Vec::new();
            c.encode(1, &mut out);
            let sql = String::from_utf8_lossy(&out[5..out.len() - 1]).into_owned();
            assert!(
                sql.starts_with("INSERT INTO custos_loadtest_memory")
                    || sql.starts_with("SELECT id, kind"),
                "{sql}"
            );
            // Every quote is part of a literal: an even count.
            assert_eq!(sql.matches('\'').count() % 2, 0, "{sql}");
        }
        assert_eq!(literal("O'Brien"), "'O''Brien'");
    }

    #[test]
    fn decode_ends_operations_at_ready_for_query_at_every_split() {
        let mut stream = Vec::new();
        // An operation with a row, then a failed one, then an empty one.
        encode::message(&mut stream, b'T', &[0, 0]);
        encode::message(&mut stream, b'D', &[0, 0]);
        encode::message(&mut stream, b'C', b"SELECT 1\0");
        encode::message(&mut stream, b'Z', b"I");
        encode::message(&mut stream, b'E', b"SERROR\0C42P01\0Mno such table\0\0");
        encode::message(&mut stream, b'Z', b"I");
        encode::message(&mut stream, b'C', b"INSERT 0 1\0");
        encode::message(&mut stream, b'Z', b"I");
        let want = vec![
            Reply::Ok,
            Reply::Error("no such table (SQLSTATE 42P01)".into()),
            Reply::Ok,
        ];
        for split in 0..=stream.len() {
            let mut c = codec(Workload::Select, QueryMode::Simple);
            let mut got = Vec::new();
            let mut buf = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                buf.extend_from_slice(chunk);
                loop {
                    let d = c.decode(&buf).unwrap();
                    buf.drain(..d.consumed);
                    match d.reply {
                        Some(r) => got.push(r),
                        None => break,
                    }
                }
            }
            assert_eq!(got, want, "split at {split}");
        }
    }
}
