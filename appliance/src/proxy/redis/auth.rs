//! The authentication phase of a Redis session under `auth = "token"`.
//!
//! Until a token is accepted only AUTH, HELLO and QUIT are answered, as a
//! Redis server with `requirepass` does: everything else gets `-NOAUTH`, and
//! nothing reaches the store (the session has no store connection yet). The
//! token is the password: `AUTH <token>`, `AUTH <name> <token>` or
//! `HELLO <protover> AUTH <name> <token>`. An accepted HELLO stays in the
//! buffer and is forwarded (without its AUTH part) as the session's first
//! command, so the client gets the store's own HELLO reply.

use std::net::SocketAddr;

use custos_parsers::resp::{self, Frame, HeadStatus, Limits};
use monoio::io::AsyncWriteRentExt;

use super::session::{ClientRead, ClientWrite};
use crate::identity::{Identity, Reject};
use crate::proxy::auth::verify_token;
use crate::proxy::buffer::ConnBuf;
use crate::runtime::registry::SessionControl;
use crate::runtime::shard::{ShardCtx, TargetCtx};

/// Failed attempts after which the connection is closed.
const ATTEMPTS_MAX: u32 = 10;
/// Longest command read before authentication: a token and some words.
const COMMAND_BYTES_MAX: usize = 128 * 1024;

const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
const NOAUTH_HELLO: &[u8] = b"-NOAUTH HELLO must be called with the client already authenticated, \
otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and \
select the RESP protocol version at the same time\r\n";
const OK: &[u8] = b"+OK\r\n";

/// The `-WRONGPASS` reply for a refused token: the reason class only
/// ([`Reject::class`]), never the token or what is inside it.
pub fn wrongpass(reject: &Reject) -> &'static [u8] {
    match reject {
        Reject::Malformed => b"-WRONGPASS custos: malformed token\r\n",
        Reject::TooLarge => b"-WRONGPASS custos: token too large\r\n",
        Reject::DisallowedAlgorithm(_) => b"-WRONGPASS custos: algorithm not allowed\r\n",
        Reject::UnknownKey(_) => b"-WRONGPASS custos: unknown signing key\r\n",
        Reject::BadSignature => b"-WRONGPASS custos: bad signature\r\n",
        Reject::Expired => b"-WRONGPASS custos: token expired\r\n",
        Reject::NotYetValid => b"-WRONGPASS custos: token not yet valid\r\n",
        Reject::WrongIssuer => b"-WRONGPASS custos: wrong issuer\r\n",
        Reject::WrongAudience => b"-WRONGPASS custos: wrong audience\r\n",
        Reject::MissingClaim(_) => b"-WRONGPASS custos: missing claim\r\n",
        Reject::ClaimMismatch(_) => b"-WRONGPASS custos: claim mismatch\r\n",
        Reject::NoKeys => b"-WRONGPASS custos: no signing keys\r\n",
    }
}

/// The token of an `AUTH` or `HELLO ... AUTH` command (arguments with the
/// command name first), or `None` when the command carries none.
pub fn token_of<'a>(args: &[&'a [u8]]) -> Option<&'a [u8]> {
    let name = args.first()?;
    if name.eq_ignore_ascii_case(b"AUTH") {
        return match args.len() {
            2 => Some(args[1]),
            3 => Some(args[2]),
            _ => None,
        };
    }
    if name.eq_ignore_ascii_case(b"HELLO") {
        let mut i = 2;
        while i < args.len() {
            if args[i].eq_ignore_ascii_case(b"AUTH") && i + 2 < args.len() {
                return Some(args[i + 2]);
            }
            i += 1;
        }
    }
    None
}

/// Runs the phase. Returns the identity and the unprocessed input, or
/// `None` when the connection ended here.
pub async fn authenticate(
    shard: &ShardCtx,
    target: &TargetCtx,
    control: &SessionControl,
    peer: SocketAddr,
    cr: &mut ClientRead,
    cw: &mut ClientWrite,
) -> Option<(Identity, ConnBuf)> {
    let limits = Limits::request();
    let mut buf = ConnBuf::new(target.target.buffer_bytes_max.max(COMMAND_BYTES_MAX));
    let mut failures = 0u32;
    loop {
        // Every whole command already buffered.
        loop {
            let data = buf.bytes();
            if data.is_empty() {
                break;
            }
            let (args, len): (Vec<Vec<u8>>, usize) = match resp::command_head(data, &limits) {
                Ok(HeadStatus::Incomplete) => break,
                Ok(HeadStatus::Empty { len }) => {
                    buf.consume(len);
                    continue;
                }
                Ok(HeadStatus::Inline { line, len }) => {
                    match resp::split_inline(line.slice(data)) {
                        Ok(a) => (a, len),
                        Err(e) => return fail(cw, &e.to_string()).await,
                    }
                }
                Ok(HeadStatus::Multibulk(_)) => match resp::parse(data, &limits) {
                    Ok(Some((Frame::Array(items), len))) => (
                        items
                            .iter()
                            .filter_map(|f| f.bytes(data).map(<[u8]>::to_vec))
                            .collect(),
                        len,
                    ),
                    Ok(None) => break,
                    Ok(Some(_)) => return fail(cw, "expected an array of bulk strings").await,
                    Err(e) => return fail(cw, &e.to_string()).await,
                },
                Err(e) => return fail(cw, &e.to_string()).await,
            };
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let Some(name) = refs.first() else {
                buf.consume(len);
                continue;
            };
            let is_hello = name.eq_ignore_ascii_case(b"HELLO");
            let reply: &'static [u8] = if name.eq_ignore_ascii_case(b"AUTH") || is_hello {
                match token_of(&refs) {
                    Some(token) => match verify_token(shard, target, peer, token).await {
                        Ok(identity) => {
                            if is_hello {
                                // Forwarded as the first command; its reply
                                // is the store's.
                                return Some((identity, buf));
                            }
                            buf.consume(len);
                            let (res, _) = cw.write_all(OK).await;
                            res.ok()?;
                            return Some((identity, buf));
                        }
                        Err(reject) => {
                            failures += 1;
                            wrongpass(&reject)
                        }
                    },
                    None if is_hello => NOAUTH_HELLO,
                    None => b"-ERR wrong number of arguments for 'auth' command\r\n",
                }
            } else if name.eq_ignore_ascii_case(b"QUIT") {
                let _ = cw.write_all(OK).await;
                return None;
            } else {
                NOAUTH
            };
            buf.consume(len);
            let (res, _) = cw.write_all(reply).await;
            res.ok()?;
            if failures >= ATTEMPTS_MAX {
                return None;
            }
        }
        if !buf.make_room() {
            return fail(cw, "command too large before authentication").await;
        }
        let n = buf
            .read_or(cr, control.wake_client_side.notified())
            .await
            .ok()?;
        if n == 0 {
            return None;
        }
        target.metrics().client_bytes_received.add(n as u64);
    }
}

async fn fail(cw: &mut ClientWrite, why: &str) -> Option<(Identity, ConnBuf)> {
    let mut reply = b"-ERR custos: protocol error: ".to_vec();
    reply.extend(why.bytes().filter(|b| *b != b'\r' && *b != b'\n'));
    reply.extend_from_slice(b"\r\n");
    let _ = cw.write_all(reply).await;
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrongpass_names_the_class_the_client_is_told() {
        for r in [
            Reject::Malformed,
            Reject::TooLarge,
            Reject::DisallowedAlgorithm("none".into()),
            Reject::UnknownKey(None),
            Reject::BadSignature,
            Reject::Expired,
            Reject::NotYetValid,
            Reject::WrongIssuer,
            Reject::WrongAudience,
            Reject::MissingClaim("exp".into()),
            Reject::ClaimMismatch("tenant".into()),
            Reject::NoKeys,
        ] {
            let want = format!("-WRONGPASS custos: {}\r\n", r.class());
            assert_eq!(wrongpass(&r), want.as_bytes());
        }
    }

    #[test]
    fn tokens_are_found_where_redis_takes_passwords() {
        let t: &[u8] = b"tok";
        assert_eq!(token_of(&[b"AUTH", t]), Some(t));
        assert_eq!(token_of(&[b"auth", b"alice", t]), Some(t));
        assert_eq!(token_of(&[b"AUTH"]), None);
        assert_eq!(token_of(&[b"AUTH", b"a", b"b", b"c"]), None);
        assert_eq!(token_of(&[b"HELLO", b"3", b"AUTH", b"alice", t]), Some(t));
        assert_eq!(
            token_of(&[b"hello", b"3", b"SETNAME", b"x", b"auth", b"alice", t]),
            Some(t)
        );
        assert_eq!(token_of(&[b"HELLO", b"3"]), None);
        assert_eq!(token_of(&[b"HELLO", b"3", b"AUTH", b"alice"]), None);
        assert_eq!(token_of(&[b"GET", b"k"]), None);
    }
}
