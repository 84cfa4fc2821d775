//! Sessions that send one simple command at a time share a store connection
//! per shard; the first pipeline or stateful command moves a session to a
//! connection of its own without reordering its replies.

use custos_tests::resp::{Reply, encode_str};
use custos_tests::{CustosConfig, RawConn, SETTLE_TIMEOUT, redis_behind_custos, wait_until};

const CLIENTS: usize = 8;

/// Client connections the store sees, other than the one asking.
fn store_clients(redis: &custos_tests::RedisServer) -> usize {
    redis.client_list().len()
}

fn one_at_a_time(conns: &mut [RawConn]) {
    for round in 0..20 {
        for (i, c) in conns.iter_mut().enumerate() {
            let key = format!("k{i}");
            let value = format!("v{round}");
            assert_eq!(c.cmd(&["SET", &key, &value]), Reply::Simple("OK".into()));
            assert_eq!(c.cmd(&["GET", &key]), Reply::Bulk(Some(value.into_bytes())));
        }
    }
}

#[test]
fn request_response_clients_share_a_store_connection_per_shard() {
    let (redis, custos) = redis_behind_custos(|c| c);
    let mut conns: Vec<RawConn> = (0..CLIENTS).map(|_| RawConn::open(custos.port())).collect();
    one_at_a_time(&mut conns);
    // Two shards: at most two shared connections, not one per client.
    let seen = store_clients(&redis);
    assert!(
        seen <= 2,
        "store sees {seen} connections for {CLIENTS} request/response clients"
    );
    drop(conns);
}

#[test]
fn inline_commands_share_the_store_connection_too() {
    let (redis, custos) = redis_behind_custos(|c| c);
    let mut conns: Vec<RawConn> = (0..CLIENTS).map(|_| RawConn::open(custos.port())).collect();
    for round in 0..10 {
        for (i, c) in conns.iter_mut().enumerate() {
            // What health checks and `redis-benchmark -t ping_inline` send.
            c.send(b"PING\r\n").unwrap();
            assert_eq!(c.read().unwrap(), Reply::Simple("PONG".into()));
            c.send(format!("SET  k{i}  \"v {round}\"\r\n").as_bytes())
                .unwrap();
            assert_eq!(c.read().unwrap(), Reply::Simple("OK".into()));
            c.send(format!("GET k{i}\r\n").as_bytes()).unwrap();
            assert_eq!(
                c.read().unwrap(),
                Reply::Bulk(Some(format!("v {round}").into_bytes()))
            );
        }
    }
    let seen = store_clients(&redis);
    assert!(
        seen <= 2,
        "store sees {seen} connections for {CLIENTS} clients sending inline commands"
    );
}

#[test]
fn sharing_can_be_turned_off() {
    let (redis, custos) = redis_behind_custos(|mut c: CustosConfig| {
        c.targets[0].extra.push_str("upstream_sharing = false\n");
        c
    });
    let mut conns: Vec<RawConn> = (0..CLIENTS).map(|_| RawConn::open(custos.port())).collect();
    one_at_a_time(&mut conns);
    wait_until(SETTLE_TIMEOUT, "one store connection per client", || {
        store_clients(&redis) == CLIENTS
    });
}

#[test]
fn moving_to_a_dedicated_connection_keeps_replies_in_order() {
    let (redis, custos) = redis_behind_custos(|c| c);
    let mut c = RawConn::open(custos.port());
    assert_eq!(c.cmd(&["SET", "n", "0"]), Reply::Simple("OK".into()));
    // Shared commands still in flight when the stateful ones arrive, each in
    // its own write: the dedicated connection must wait for them.
    c.send(&encode_str(&["INCR", "n"])).unwrap();
    c.send(&encode_str(&["INCR", "n"])).unwrap();
    let mut stateful = encode_str(&["CLIENT", "SETNAME", "moved"]);
    stateful.extend(encode_str(&["INCR", "n"]));
    stateful.extend(encode_str(&["CLIENT", "GETNAME"]));
    stateful.extend(encode_str(&["SELECT", "1"]));
    stateful.extend(encode_str(&["SET", "n", "in-db-1"]));
    c.send(&stateful).unwrap();
    let replies: Vec<Reply> = (0..7).map(|_| c.read().unwrap()).collect();
    assert_eq!(
        replies,
        vec![
            Reply::Int(1),
            Reply::Int(2),
            Reply::Simple("OK".into()),
            Reply::Int(3),
            Reply::Bulk(Some(b"moved".to_vec())),
            Reply::Simple("OK".into()),
            Reply::Simple("OK".into()),
        ]
    );
    // The session kept its own connection and database from then on.
    assert_eq!(c.cmd(&["GET", "n"]), Reply::Bulk(Some(b"in-db-1".to_vec())));
    let mut direct = redis.raw();
    assert_eq!(
        direct.cmd(&["GET", "n"]),
        Reply::Bulk(Some(b"3".to_vec())),
        "db 0 untouched after SELECT"
    );
    let names = redis.client_list().join("\n");
    assert!(
        names.contains("name=moved"),
        "the dedicated connection carries the name: {names}"
    );
}

#[test]
fn client_auth_on_the_shared_connection_is_answered_locally() {
    let (redis, custos) = redis_behind_custos(|c| c);
    let mut c = RawConn::open(custos.port());
    assert_eq!(
        c.cmd(&["AUTH", "alice", "not-a-store-password"]),
        Reply::Simple("OK".into())
    );
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
    let log = redis.cli(&["ACL", "LOG"]).stdout;
    assert!(
        !log.contains("alice"),
        "the client's credential never reached the store: {log}"
    );
}

#[test]
fn a_client_that_stops_reading_cannot_hold_up_the_shared_connection() {
    // One shard, so both sessions share one store connection.
    let (redis, custos) = redis_behind_custos(|c| c.workers(1));
    // Far more than the kernel's socket buffers can hold for a client that
    // does not read, so the appliance has to hold (or drop) the rest.
    let big = vec![b'x'; 48 * 1024 * 1024];
    let mut direct = redis.raw();
    direct
        .send(&custos_tests::resp::encode(&[b"SET", b"big", &big]))
        .unwrap();
    assert_eq!(direct.read().unwrap(), Reply::Simple("OK".into()));

    let mut stuck = RawConn::open(custos.port());
    let mut other = RawConn::open(custos.port());
    assert_eq!(other.cmd(&["PING"]), Reply::Simple("PONG".into()));
    stuck.send(&encode_str(&["GET", "big"])).unwrap();
    // The other session keeps being served (on the same shard or not), and
    // its waiting is what gets the stuck one cut off.
    for i in 0..50 {
        let key = format!("other{i}");
        assert_eq!(other.cmd(&["SET", &key, "1"]), Reply::Simple("OK".into()));
    }
    // The stuck client is cut off rather than buffered without bound.
    wait_until(SETTLE_TIMEOUT, "the stuck session to be closed", || {
        let rss = custos.rss_kib();
        assert!(rss < 200 * 1024, "memory stays bounded, rss {rss} KiB");
        custos
            .metrics()
            .counter("custos_connections_open", &[("target", "cache")])
            <= 1.0
    });
    assert_eq!(
        other.cmd(&["GET", "other49"]),
        Reply::Bulk(Some(b"1".to_vec()))
    );
}
