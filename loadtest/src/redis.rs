//! The Redis client: connect (TLS optional), authenticate with `AUTH` or
//! `HELLO 3 AUTH` (a bearer token is sent as the password), then pipeline
//! the workload's commands and find each reply's end with the
//! `custos_parsers::resp` [`Scanner`], which keeps constant memory however
//! large a value is.

use std::sync::Arc;

use custos_parsers::resp::{self, Limits, Scanner};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::Error;
use crate::data::{MemoryGen, Rng, ValueSize, key, value_bytes};
use crate::engine::{Client, Codec, Decoded, Reply};
use crate::net::{Endpoint, Stream, connect_tcp};

/// Longest handshake reply read (`HELLO 3` answers with a small map).
const HANDSHAKE_REPLY_BYTES_MAX: usize = 64 * 1024;

/// What the connections send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `GET` and `SET` on `key:N`, `--write-ratio` of them `SET`s.
    GetSet,
    /// `HGET` and `HSET` on fields of `hash:N`.
    Hash,
    /// "Agent memory": store records (`HSET mem:...` with agent, kind,
    /// JSON metadata and text with personal data) and recall them
    /// (`HGETALL`).
    Memory,
    /// `PING` only: the cost of a round trip through the endpoint.
    Ping,
    /// Connection churn: connect, authenticate, `PING`, close.
    Churn,
}

/// Everything a Redis connection needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to connect.
    pub endpoint: Endpoint,
    /// `AUTH` user; `None` sends the one-argument `AUTH password`.
    pub user: Option<String>,
    /// Password or token; `None` skips authentication.
    pub password: Option<String>,
    /// Negotiate RESP3 with `HELLO 3`.
    pub resp3: bool,
    /// The workload.
    pub workload: Workload,
    /// Keys are `key:0 ..= key:(keyspace-1)` (`hash:` for hashes).
    pub keyspace: u64,
    /// Fields per hash in the hash workload.
    pub hash_fields: u64,
    /// Sizes of written values.
    pub value_size: ValueSize,
    /// Share of writes (`SET`, `HSET`, memory stores) among operations.
    pub write_ratio: f64,
    /// Agents the memory records are spread over.
    pub agents: u64,
    /// Base seed; each connection derives its own.
    pub seed: u64,
}

/// The Redis [`Client`].
#[derive(Debug)]
pub struct RedisClient {
    config: Config,
    /// The bytes values are cut from, shared by all connections.
    values: Arc<Vec<u8>>,
}

impl RedisClient {
    /// A client for `config`.
    pub fn new(config: Config) -> Self {
        let values = Arc::new(value_bytes(config.value_size.max(), config.seed));
        Self { config, values }
    }

    async fn handshake(&self, stream: &mut Stream) -> Result<(), Error> {
        let c = &self.config;
        let mut out = Vec::new();
        let password = c.password.as_deref();
        if c.resp3 {
            let user = c.user.as_deref().unwrap_or("default");
            match password {
                Some(p) => resp::encode::command(
                    &mut out,
                    &[b"HELLO", b"3", b"AUTH", user.as_bytes(), p.as_bytes()],
                ),
                None => resp::encode::command(&mut out, &[b"HELLO", b"3"]),
            }
        } else if let Some(p) = password {
            match c.user.as_deref() {
                Some(u) => resp::encode::command(&mut out, &[b"AUTH", u.as_bytes(), p.as_bytes()]),
                None => resp::encode::command(&mut out, &[b"AUTH", p.as_bytes()]),
            }
        } else {
            return Ok(());
        }
        stream.write_all(&out).await?;
        let mut buf = Vec::with_capacity(1024);
        loop {
            if let Some((frame, _)) = resp::parse(&buf, &Limits::reply())
                .map_err(|e| Error::Protocol(format!("handshake reply: {e}")))?
            {
                return match frame {
                    resp::Frame::Error(text) | resp::Frame::BulkError(text) => Err(Error::Auth(
                        String::from_utf8_lossy(text.slice(&buf)).into_owned(),
                    )),
                    _ => Ok(()),
                };
            }
            if buf.len() >= HANDSHAKE_REPLY_BYTES_MAX {
                return Err(Error::Protocol("handshake reply too long".into()));
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(Error::Auth(
                    "the server closed the connection during authentication".into(),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Client for RedisClient {
    type Codec = RedisCodec;

    async fn connect(&self, id: u64) -> Result<(Stream, RedisCodec), Error> {
        let ep = &self.config.endpoint;
        let tcp = connect_tcp(&ep.addr)
            .await
            .map_err(|source| Error::Connect {
                addr: ep.addr.clone(),
                source,
            })?;
        let mut stream = match &ep.tls {
            Some(tls) => tls.wrap(tcp).await.map_err(|e| Error::Tls(e.to_string()))?,
            None => Stream::Plain(tcp),
        };
        self.handshake(&mut stream).await?;
        let codec = RedisCodec::new(&self.config, self.values.clone(), id);
        Ok((stream, codec))
    }

    fn churn(&self) -> bool {
        self.config.workload == Workload::Churn
    }
}

/// One connection's command generator and reply scanner.
#[derive(Debug)]
pub struct RedisCodec {
    workload: Workload,
    keyspace: u64,
    hash_fields: u64,
    value_size: ValueSize,
    write_ratio: f64,
    values: Arc<Vec<u8>>,
    rng: Rng,
    memory: MemoryGen,
    /// The memory records this connection stored: `mem:<id>:0..stored`.
    stored: u64,
    conn_id: u64,
    scanner: Scanner,
    /// Whether the reply being scanned is an error.
    reply_is_error: bool,
    /// The start of an error reply, kept for the report.
    error_text: Vec<u8>,
}

/// Bytes of an error reply kept for the report.
const ERROR_TEXT_BYTES_MAX: usize = 200;

impl RedisCodec {
    fn new(config: &Config, values: Arc<Vec<u8>>, id: u64) -> Self {
        Self {
            workload: config.workload,
            keyspace: config.keyspace.max(1),
            hash_fields: config.hash_fields.max(1),
            value_size: config.value_size,
            write_ratio: config.write_ratio,
            values,
            rng: Rng::new(config.seed ^ id.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            memory: MemoryGen::new(config.agents),
            stored: 0,
            conn_id: id,
            scanner: Scanner::new(Limits::reply()),
            reply_is_error: false,
            error_text: Vec::new(),
        }
    }

    fn encode_one(&mut self, out: &mut Vec<u8>) {
        let mut kbuf = [0u8; 48];
        let mut fbuf = [0u8; 48];
        match self.workload {
            Workload::GetSet => {
                let k = self.rng.below(self.keyspace);
                let write = self.rng.chance(self.write_ratio);
                let key = key(&mut kbuf, "key:", k);
                if write {
                    let len = self.value_size.sample(&mut self.rng);
                    let spare = self.values.len() - len;
                    let at = self.rng.below(spare as u64 + 1) as usize;
                    resp::encode::command(out, &[b"SET", key, &self.values[at..at + len]]);
                } else {
                    resp::encode::command(out, &[b"GET", key]);
                }
            }
            Workload::Hash => {
                let k = self.rng.below(self.keyspace);
                let f = self.rng.below(self.hash_fields);
                let write = self.rng.chance(self.write_ratio);
                let key = key(&mut kbuf, "hash:", k);
                let field = crate::data::key(&mut fbuf, "f", f);
                if write {
                    let len = self.value_size.sample(&mut self.rng);
                    let spare = self.values.len() - len;
                    let at = self.rng.below(spare as u64 + 1) as usize;
                    resp::encode::command(out, &[b"HSET", key, field, &self.values[at..at + len]]);
                } else {
                    resp::encode::command(out, &[b"HGET", key, field]);
                }
            }
            Workload::Memory => {
                if self.stored == 0 || self.rng.chance(self.write_ratio) {
                    let rec = self.memory.record(&mut self.rng);
                    let key = format!("mem:{}:{}", self.conn_id, self.stored);
                    self.stored += 1;
                    resp::encode::command(
                        out,
                        &[
                            b"HSET",
                            key.as_bytes(),
                            b"agent",
                            rec.agent.as_bytes(),
                            b"kind",
                            rec.kind.as_bytes(),
                            b"meta",
                            rec.meta.as_bytes(),
                            b"text",
                            rec.text.as_bytes(),
                        ],
                    );
                } else {
                    let n = self.rng.below(self.stored);
                    let key = format!("mem:{}:{n}", self.conn_id);
                    resp::encode::command(out, &[b"HGETALL", key.as_bytes()]);
                }
            }
            Workload::Ping | Workload::Churn => resp::encode::command(out, &[b"PING"]),
        }
    }
}

impl Codec for RedisCodec {
    fn encode(&mut self, n: usize, out: &mut Vec<u8>) {
        for _ in 0..n {
            self.encode_one(out);
        }
    }

    fn decode(&mut self, buf: &[u8]) -> Result<Decoded, Error> {
        let starting = !self.scanner.in_frame();
        if starting {
            let Some(&first) = buf.first() else {
                return Ok(Decoded {
                    consumed: 0,
                    reply: None,
                });
            };
            self.reply_is_error = matches!(first, b'-' | b'!');
            self.error_text.clear();
        }
        let scan = self
            .scanner
            .scan(buf)
            .map_err(|e| Error::Protocol(format!("reply: {e}")))?;
        if self.reply_is_error {
            let room = ERROR_TEXT_BYTES_MAX.saturating_sub(self.error_text.len());
            let take = scan.consumed.min(room);
            self.error_text.extend_from_slice(&buf[..take]);
        }
        let reply = scan.complete.then(|| {
            if self.reply_is_error {
                Reply::Error(error_message(&self.error_text))
            } else {
                Reply::Ok
            }
        });
        Ok(Decoded {
            consumed: scan.consumed,
            reply,
        })
    }
}

/// The text of a `-ERR ...` or `!n\r\n...` reply, without framing.
fn error_message(raw: &[u8]) -> String {
    let body = match raw.first() {
        Some(b'-') => &raw[1..],
        // A bulk error: skip its length line.
        Some(b'!') => raw
            .iter()
            .position(|&b| b == b'\n')
            .map_or(&raw[..0], |i| &raw[i + 1..]),
        _ => raw,
    };
    let text = String::from_utf8_lossy(body);
    text.trim_end_matches(['\r', '\n']).to_owned()
}

impl RedisCodec {
    /// A codec on its own, for tests of the command stream.
    #[cfg(test)]
    fn for_test(workload: Workload) -> Self {
        let config = Config {
            endpoint: Endpoint {
                addr: "127.0.0.1:6379".into(),
                tls: None,
            },
            user: None,
            password: None,
            resp3: false,
            workload,
            keyspace: 100,
            hash_fields: 4,
            value_size: ValueSize::Fixed(8),
            write_ratio: 0.5,
            agents: 3,
            seed: 1,
        };
        let values = Arc::new(value_bytes(config.value_size.max(), 1));
        Self::new(&config, values, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use custos_parsers::resp::{CommandHead, HeadStatus, command_head};

    fn heads(workload: Workload, n: usize) -> Vec<Vec<Vec<u8>>> {
        let mut codec = RedisCodec::for_test(workload);
        let mut out = Vec::new();
        codec.encode(n, &mut out);
        let mut cmds = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let (frame, len) = resp::parse(&out[at..], &Limits::request())
                .expect("valid")
                .expect("whole");
            let resp::Frame::Array(items) = frame else {
                panic!("not an array")
            };
            cmds.push(
                items
                    .iter()
                    .map(|f| f.bytes(&out[at..]).expect("bulk").to_vec())
                    .collect(),
            );
            at += len;
        }
        // The proxy's own command reader agrees on the first command.
        match command_head(&out, &Limits::request()).expect("valid") {
            HeadStatus::Multibulk(CommandHead { .. }) => {}
            other => panic!("{other:?}"),
        }
        cmds
    }

    #[test]
    fn get_set_mixes_both_within_the_keyspace() {
        let cmds = heads(Workload::GetSet, 400);
        assert_eq!(cmds.len(), 400);
        let sets = cmds.iter().filter(|c| c[0] == b"SET").count();
        let gets = cmds.iter().filter(|c| c[0] == b"GET").count();
        assert_eq!(sets + gets, 400);
        assert!((120..280).contains(&sets), "{sets} SETs of 400");
        for c in &cmds {
            let k: u64 = std::str::from_utf8(&c[1][4..]).unwrap().parse().unwrap();
            assert!(k < 100);
            if c[0] == b"SET" {
                assert_eq!(c[2].len(), 8);
            }
        }
    }

    #[test]
    fn hash_commands_name_a_field() {
        for c in heads(Workload::Hash, 100) {
            assert!(c[0] == b"HSET" || c[0] == b"HGET");
            assert!(c[1].starts_with(b"hash:"));
            assert!(c[2].starts_with(b"f"));
        }
    }

    #[test]
    fn memory_recalls_only_what_it_stored() {
        let cmds = heads(Workload::Memory, 200);
        assert_eq!(cmds[0][0], b"HSET", "the first operation must store");
        let mut stored = 0u64;
        for c in &cmds {
            let n: u64 = std::str::from_utf8(c[1].rsplit(|&b| b == b':').next().unwrap())
                .unwrap()
                .parse()
                .unwrap();
            if c[0] == b"HSET" {
                assert_eq!(n, stored);
                stored += 1;
                let text = c.iter().position(|a| a == b"text").unwrap() + 1;
                assert!(String::from_utf8_lossy(&c[text]).contains("@example.org"));
            } else {
                assert_eq!(c[0], b"HGETALL");
                assert!(n < stored);
            }
        }
    }

    #[test]
    fn decode_counts_replies_at_every_split() {
        let stream: &[u8] =
            b"+OK\r\n$5\r\nhello\r\n-ERR wrong\r\n*2\r\n$1\r\na\r\n$-1\r\n!5\r\nOOPS!\r\n:7\r\n";
        let want = [
            Reply::Ok,
            Reply::Ok,
            Reply::Error("ERR wrong".into()),
            Reply::Ok,
            Reply::Error("OOPS!".into()),
            Reply::Ok,
        ];
        for split in 0..=stream.len() {
            let mut codec = RedisCodec::for_test(Workload::Ping);
            let mut got = Vec::new();
            let mut buf: Vec<u8> = Vec::new();
            for chunk in [&stream[..split], &stream[split..]] {
                buf.extend_from_slice(chunk);
                loop {
                    let d = codec.decode(&buf).unwrap();
                    buf.drain(..d.consumed);
                    match d.reply {
                        Some(r) => got.push(r),
                        None if d.consumed == 0 => break,
                        None => {}
                    }
                }
            }
            assert_eq!(got, want, "split at {split}");
        }
    }
}
