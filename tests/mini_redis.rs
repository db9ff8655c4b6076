//! mini-redis (examples/mini_redis) driven by the `redis` crate, a client
//! written by others (a dev-dependency for that reason: a client of our own
//! would only check the server against our own reading of RESP): strings,
//! expiry, pipelining and pub/sub. Byte-level checks and bad input are in
//! `mini_redis_input.rs`.

mod mini_redis_common;

use std::time::{Duration, Instant};

use mini_redis_common::{Server, eventually};
use redis::{Commands, ErrorKind, RedisResult, ServerErrorKind, Value};

#[test]
fn set_then_get_returns_the_value_and_missing_keys_are_nil() {
    let server = Server::start();
    let mut con = server.client();
    let _: () = con.set("greeting", "hello").unwrap();
    assert_eq!(
        con.get::<_, Option<String>>("greeting").unwrap().as_deref(),
        Some("hello")
    );
    assert_eq!(con.get::<_, Option<String>>("nobody").unwrap(), None);
    let _: () = con.set("greeting", "again").unwrap();
    assert_eq!(con.get::<_, String>("greeting").unwrap(), "again");
}

#[test]
fn binary_and_large_values_round_trip_exactly() {
    let server = Server::start();
    let mut con = server.client();
    let binary: Vec<u8> = (0..=255u8)
        .chain(b"\r\n$-1\r\n*3\r\n".iter().copied())
        .collect();
    let _: () = con.set(b"key\r\nwith\0bytes".as_slice(), &binary).unwrap();
    assert_eq!(
        con.get::<_, Vec<u8>>(b"key\r\nwith\0bytes".as_slice())
            .unwrap(),
        binary
    );
    // 3 MiB: many reads on the server side, the input buffer must grow.
    let large: Vec<u8> = (0..3 * 1024 * 1024u32)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let _: () = con.set("large", &large).unwrap();
    assert_eq!(con.get::<_, Vec<u8>>("large").unwrap(), large);
}

#[test]
fn ping_and_config_get_answer_as_redis_does() {
    let server = Server::start();
    let mut con = server.client();
    assert_eq!(
        redis::cmd("PING").query::<String>(&mut con).unwrap(),
        "PONG"
    );
    assert_eq!(
        redis::cmd("PING")
            .arg("hi")
            .query::<String>(&mut con)
            .unwrap(),
        "hi"
    );
    let save: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("save")
        .query(&mut con)
        .unwrap();
    assert_eq!(save, ["save", ""]);
    let all: Vec<String> = redis::cmd("CONFIG")
        .arg("get")
        .arg("*")
        .query(&mut con)
        .unwrap();
    assert_eq!(all, ["save", "", "appendonly", "no"]);
    let none: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory")
        .query(&mut con)
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
}

#[test]
fn errors_come_back_as_redis_errors_and_the_connection_stays_usable() {
    let server = Server::start();
    let mut con = server.client();
    let err = redis::cmd("FLUSHALL").query::<Value>(&mut con).unwrap_err();
    assert_eq!(
        err.kind(),
        ErrorKind::Server(ServerErrorKind::ResponseError),
        "{err}"
    );
    assert!(
        err.to_string().contains("unknown command 'FLUSHALL'"),
        "{err}"
    );
    let err = redis::cmd("GET").query::<Value>(&mut con).unwrap_err();
    assert!(
        err.to_string()
            .contains("wrong number of arguments for 'get'"),
        "{err}"
    );
    let err = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("EX")
        .arg("soon")
        .query::<Value>(&mut con);
    assert!(err.unwrap_err().to_string().contains("not an integer"));
    let err = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("PX")
        .arg("0")
        .query::<Value>(&mut con);
    assert!(err.unwrap_err().to_string().contains("invalid expire time"));
    let err = redis::cmd("SET")
        .arg("k")
        .arg("v")
        .arg("NX")
        .query::<Value>(&mut con);
    assert!(err.unwrap_err().to_string().contains("syntax error"));
    // None of those stored anything, and the connection still works.
    assert_eq!(con.get::<_, Option<String>>("k").unwrap(), None);
    let _: () = con.set("k", "v").unwrap();
    assert_eq!(con.get::<_, String>("k").unwrap(), "v");
}

#[test]
fn a_key_expires_at_its_deadline_and_not_before() {
    let server = Server::start();
    let mut con = server.client();
    let set_at = Instant::now();
    let _: () = redis::cmd("SET")
        .arg("short")
        .arg("lived")
        .arg("PX")
        .arg(300)
        .query(&mut con)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("long")
        .arg("lived")
        .arg("EX")
        .arg(3600)
        .query(&mut con)
        .unwrap();
    // Before the deadline it is there (if this machine is so slow that 300 ms
    // passed already, only the later checks mean anything).
    let early: Option<String> = con.get("short").unwrap();
    if set_at.elapsed() < Duration::from_millis(250) {
        assert_eq!(early.as_deref(), Some("lived"));
    } else {
        eprintln!("a_key_expires...: too slow to check the key before its deadline");
    }
    // The expiry coroutine deletes it (not just GET hiding it) ...
    assert!(
        eventually(|| server.shared.db.stored_keys() == 1),
        "short-lived key never deleted"
    );
    // ... and not before its deadline.
    assert!(
        set_at.elapsed() >= Duration::from_millis(300),
        "deleted after {:?}",
        set_at.elapsed()
    );
    assert_eq!(con.get::<_, Option<String>>("short").unwrap(), None);
    assert_eq!(
        con.get::<_, Option<String>>("long").unwrap().as_deref(),
        Some("lived")
    );
}

#[test]
fn an_earlier_deadline_wakes_the_expiry_coroutine() {
    let server = Server::start();
    let mut con = server.client();
    // The expiry coroutine goes to sleep until this far deadline ...
    let _: () = redis::cmd("SET")
        .arg("far")
        .arg("1")
        .arg("EX")
        .arg(3600)
        .query(&mut con)
        .unwrap();
    assert!(eventually(|| server.shared.db.stored_keys() == 1));
    // ... and must wake for this one, not an hour later.
    let _: () = redis::cmd("SET")
        .arg("near")
        .arg("2")
        .arg("PX")
        .arg(50)
        .query(&mut con)
        .unwrap();
    assert!(
        eventually(
            || server.shared.db.stored_keys() == 1 && server.shared.db.get(b"near").is_none()
        ),
        "the key with the earlier deadline was not deleted"
    );
    assert_eq!(server.shared.db.get(b"far"), Some(b"1".to_vec()));
}

#[test]
fn set_without_ttl_clears_an_earlier_deadline() {
    let server = Server::start();
    let mut con = server.client();
    let _: () = redis::cmd("SET")
        .arg("k")
        .arg("old")
        .arg("PX")
        .arg(30)
        .query(&mut con)
        .unwrap();
    let _: () = con.set("k", "new").unwrap();
    // A key set later with a short deadline shows when the expiry coroutine
    // has run past the first deadline.
    let _: () = redis::cmd("SET")
        .arg("marker")
        .arg("x")
        .arg("PX")
        .arg(60)
        .query(&mut con)
        .unwrap();
    assert!(eventually(
        || server.shared.db.get(b"marker").is_none() && server.shared.db.stored_keys() == 1
    ));
    assert_eq!(con.get::<_, String>("k").unwrap(), "new");
}

#[test]
fn a_pipeline_of_a_thousand_commands_is_answered_in_order() {
    let server = Server::start();
    let mut con = server.client();
    let mut pipe = redis::pipe();
    for i in 0..500 {
        pipe.set(format!("key{i}"), format!("value{i}")).ignore();
        pipe.get(format!("key{}", i / 2));
    }
    let values: Vec<String> = pipe.query(&mut con).unwrap();
    let expected: Vec<String> = (0..500).map(|i| format!("value{}", i / 2)).collect();
    assert_eq!(values, expected);
}

#[test]
fn several_clients_pipelining_at_once_each_get_their_own_answers() {
    let server = Server::start();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let mut con = server.client();
            std::thread::spawn(move || -> RedisResult<()> {
                for round in 0..20 {
                    let mut pipe = redis::pipe();
                    for i in 0..50 {
                        pipe.set(format!("c{t}:{i}"), format!("{round}:{i}"))
                            .ignore();
                        pipe.get(format!("c{t}:{i}"));
                    }
                    let got: Vec<String> = pipe.query(&mut con)?;
                    let want: Vec<String> = (0..50).map(|i| format!("{round}:{i}")).collect();
                    assert_eq!(got, want);
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap().unwrap();
    }
}

#[test]
fn publish_reaches_every_subscriber_in_order() {
    let server = Server::start();
    let mut subscribers: Vec<redis::Connection> = (0..3).map(|_| server.client()).collect();
    let mut subs: Vec<redis::PubSub> = subscribers.iter_mut().map(|c| c.as_pubsub()).collect();
    for sub in &mut subs {
        sub.subscribe("news").unwrap();
    }
    subs[2].subscribe("other").unwrap();
    let mut publisher = server.client();
    for i in 0..100 {
        let receivers: usize = publisher.publish("news", format!("item {i}")).unwrap();
        assert_eq!(receivers, 3);
    }
    let receivers: usize = publisher.publish("other", "just one").unwrap();
    assert_eq!(receivers, 1);
    assert_eq!(
        publisher
            .publish::<_, _, usize>("nobody-listens", "x")
            .unwrap(),
        0
    );
    for sub in &mut subs {
        for i in 0..100 {
            let msg = sub.get_message().unwrap();
            assert_eq!(msg.get_channel_name(), "news");
            assert_eq!(msg.get_payload::<String>().unwrap(), format!("item {i}"));
        }
    }
    let msg = subs[2].get_message().unwrap();
    assert_eq!(
        (
            msg.get_channel_name(),
            msg.get_payload::<String>().unwrap().as_str()
        ),
        ("other", "just one")
    );
}

#[test]
fn unsubscribing_and_disconnecting_stop_delivery() {
    let server = Server::start();
    let mut first = server.client();
    let mut second = server.client();
    let mut publisher = server.client();
    let mut sub1 = first.as_pubsub();
    sub1.subscribe("ch").unwrap();
    {
        let mut sub2 = second.as_pubsub();
        sub2.subscribe("ch").unwrap();
        assert_eq!(publisher.publish::<_, _, usize>("ch", "both").unwrap(), 2);
        sub2.unsubscribe("ch").unwrap();
        assert_eq!(
            publisher
                .publish::<_, _, usize>("ch", "first only")
                .unwrap(),
            1
        );
        let msg = sub2.get_message().unwrap();
        assert_eq!(msg.get_payload::<String>().unwrap(), "both");
    }
    // Out of pub/sub mode (the crate sent UNSUBSCRIBE and PUNSUBSCRIBE on
    // drop), the second connection runs plain commands again.
    let _: () = second.set("after", "pubsub").unwrap();
    assert_eq!(second.get::<_, String>("after").unwrap(), "pubsub");
    assert_eq!(
        sub1.get_message().unwrap().get_payload::<String>().unwrap(),
        "both"
    );
    assert_eq!(
        sub1.get_message().unwrap().get_payload::<String>().unwrap(),
        "first only"
    );
    drop(sub1);
    drop(first);
    assert!(eventually(|| server.shared.pubsub.subscribers(b"ch") == 0));
    assert_eq!(publisher.publish::<_, _, usize>("ch", "nobody").unwrap(), 0);
}

#[test]
fn publishers_on_many_threads_reach_subscribers_with_nothing_lost() {
    let server = Server::start();
    let mut subscribers: Vec<redis::Connection> = (0..4).map(|_| server.client()).collect();
    let mut subs: Vec<redis::PubSub> = subscribers.iter_mut().map(|c| c.as_pubsub()).collect();
    for sub in &mut subs {
        sub.subscribe("fan").unwrap();
    }
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let mut con = server.client();
            std::thread::spawn(move || {
                for i in 0..250 {
                    let n: usize = con.publish("fan", format!("{p}:{i}")).unwrap();
                    assert_eq!(n, 4);
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.join().unwrap();
    }
    for sub in &mut subs {
        // Every message once; each publisher's messages in its order.
        let mut next = [0; 4];
        for _ in 0..1000 {
            let payload: String = sub.get_message().unwrap().get_payload().unwrap();
            let (p, i) = payload.split_once(':').unwrap();
            let (p, i): (usize, usize) = (p.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[p], "publisher {p} out of order");
            next[p] += 1;
        }
        assert_eq!(next, [250; 4]);
    }
}

#[test]
fn get_hides_a_key_past_its_deadline_before_the_expiry_coroutine_runs() {
    // No expiry coroutine at all: GET alone must not return the value late.
    let db = mini_redis_common::mini_redis::db::Db::new();
    let deadline = Instant::now() + Duration::from_millis(20);
    db.set(b"k", b"v", Some(deadline));
    let mut out = Vec::new();
    db.get_into(b"k", &mut out);
    if Instant::now() < deadline {
        assert_eq!(out, b"$1\r\nv\r\n");
    }
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    out.clear();
    db.get_into(b"k", &mut out);
    assert_eq!(out, b"$-1\r\n");
    assert_eq!(db.stored_keys(), 0, "GET deletes the expired key it found");
}
