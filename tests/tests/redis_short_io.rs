//! Short reads and writes on both sides of the appliance, and a store that
//! dies in the middle of a reply.
//!
//! A relay between custos and a real redis-server hands every byte on in its
//! own write, and the client writes its pipeline one byte at a time: every
//! frame in both directions arrives split at every possible point. The
//! replies must be exactly those the store gives a direct client.

use custos_tests::resp::{Reply, encode_str};
use custos_tests::{
    Custos, CustosConfig, Faults, RawConn, RedisServer, Relay, SETTLE_TIMEOUT, wait_until,
};
use std::io::{Read, Write};

/// A scripted session touching every reply shape: RESP3 maps and sets,
/// pushes, nested arrays, errors, nulls, an inline command, subscriptions.
fn script() -> Vec<Vec<u8>> {
    let cmds: &[&[&str]] = &[
        &["HELLO", "3"],
        &["SET", "k", "v-with-some-length"],
        &["GET", "k"],
        &["GET", "missing"],
        &["HSET", "h", "a", "1", "b", "2"],
        &["HGETALL", "h"],
        &["SADD", "s", "x"],
        &["SMEMBERS", "s"],
        &["RPUSH", "l", "x", "y", "z"],
        &["LRANGE", "l", "0", "-1"],
        &["INCRBYFLOAT", "f", "1.5"],
        &["NOSUCHCOMMAND"],
        &["XADD", "st", "1-1", "f", "v"],
        &["XRANGE", "st", "-", "+"],
        &["SUBSCRIBE", "c1", "c2"],
        &["PING"],
        &["UNSUBSCRIBE"],
        &["GET", "k"],
    ];
    let mut out: Vec<Vec<u8>> = cmds.iter().map(|c| encode_str(c)).collect();
    out.insert(4, b"EXISTS k\r\n".to_vec()); // inline
    out
}

/// Replies to the script, minus AUTH's and HELLO's (HELLO names the
/// connection id). The store's own credential is sent first: the store needs
/// it, and the appliance answers a client's AUTH itself without using it.
fn run_script(port: u16, byte_at_a_time: bool, user: &str, password: &str) -> Vec<Reply> {
    let mut conn = RawConn::open(port);
    let mut script = script();
    script.insert(0, encode_str(&["AUTH", user, password]));
    // SUBSCRIBE c1 c2 gets two confirmations, UNSUBSCRIBE (all) two.
    let expected_replies = script.len() + 2;
    let bytes: Vec<u8> = script.concat();
    if byte_at_a_time {
        let mut s = conn.stream().try_clone().expect("clone");
        for b in &bytes {
            s.write_all(std::slice::from_ref(b))
                .expect("write one byte");
        }
    } else {
        conn.send(&bytes).expect("send script");
    }
    let mut replies: Vec<Reply> = (0..expected_replies)
        .map(|i| conn.read().unwrap_or_else(|e| panic!("reply {i}: {e}")))
        .collect();
    assert_eq!(replies[0], Reply::Simple("OK".into()), "AUTH");
    replies.drain(..2);
    normalize_unsubscribe_all(&mut replies);
    replies
}

/// UNSUBSCRIBE without arguments confirms channels in the store's hash
/// order, which differs between two servers; keep the channel names, sorted,
/// and drop the running counts.
fn normalize_unsubscribe_all(replies: &mut [Reply]) {
    let is_unsub = |r: &Reply| matches!(r, Reply::Push(items) if items.first() == Some(&Reply::Bulk(Some(b"unsubscribe".to_vec()))));
    let Some(start) = replies.iter().position(is_unsub) else {
        return;
    };
    let end = start + replies[start..].iter().take_while(|r| is_unsub(r)).count();
    for r in &mut replies[start..end] {
        if let Reply::Push(items) = r {
            items.truncate(2);
        }
    }
    replies[start..end].sort_by_key(|r| format!("{r:?}"));
}

fn fresh_pair(faults: Faults) -> (RedisServer, Relay, Custos) {
    let redis = RedisServer::start();
    let relay = Relay::start(redis.port(), faults);
    let mut config = CustosConfig::redis(&redis);
    config.targets[0].upstream_port = relay.port();
    let custos = Custos::start(config);
    (redis, relay, custos)
}

#[test]
fn every_frame_split_at_every_byte_gives_the_stores_own_replies() {
    let direct_store = RedisServer::start();
    let direct = run_script(
        direct_store.port(),
        false,
        direct_store.user(),
        direct_store.password(),
    );
    assert!(
        direct.iter().any(|r| matches!(r, Reply::Map(_))),
        "script exercises RESP3 maps"
    );
    assert!(
        direct.iter().any(|r| matches!(r, Reply::Push(_))),
        "script exercises pushes"
    );

    let (redis, _relay, custos) = fresh_pair(Faults {
        chunk_bytes: 1,
        cut_after_upstream_bytes: None,
    });
    let through = run_script(custos.port(), true, redis.user(), redis.password());
    assert_eq!(through.len(), direct.len());
    for (i, (t, d)) in through.iter().zip(&direct).enumerate() {
        assert_eq!(t, d, "reply {i} differs through the appliance");
    }
}

#[test]
fn store_dying_mid_reply_closes_only_that_session() {
    // The cut falls inside the bulk payload of the 4 KiB value below.
    let (redis, _relay, custos) = fresh_pair(Faults {
        chunk_bytes: 64 * 1024,
        cut_after_upstream_bytes: Some(1000),
    });
    let mut direct = redis.connection();
    let value = "v".repeat(4096);
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut direct)
        .expect("seed");

    let mut victim = RawConn::open(custos.port());
    victim.send(&encode_str(&["GET", "big"])).expect("send");
    // The reply was cut inside a frame: what arrived is a prefix of it, and
    // nothing may be appended (an error there would corrupt the stream); the
    // connection just closes.
    let mut got = Vec::new();
    let _ = victim.reader().read_to_end(&mut got);
    let whole = format!("${}\r\n{value}\r\n", value.len());
    assert!(
        !got.is_empty() && got.len() < whole.len(),
        "a cut prefix arrived ({} bytes)",
        got.len()
    );
    assert_eq!(
        &got[..],
        &whole.as_bytes()[..got.len()],
        "only the store's own bytes, nothing appended"
    );

    // Other and later sessions are unaffected: each gets its own relay connection.
    let mut other = RawConn::open(custos.port());
    assert_eq!(other.cmd(&["PING"]), Reply::Simple("PONG".into()));
    wait_until(SETTLE_TIMEOUT, "the lost upstream to be counted", || {
        custos.metrics().counter(
            "custos_errors_total",
            &[("target", "cache"), ("kind", "upstream_unavailable")],
        ) >= 1.0
    });
}
