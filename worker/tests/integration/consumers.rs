//! Dead consumers (replaced pods) are removed from a group, and only those:
//! a consumer with pending entries, or one that read recently, stays.

use std::time::Duration;

use crate::common::{add_event, keys, redis};
use fanout_testkit::RedisServer;
use fanout_worker::consumers::remove_dead_consumers;
use redis::streams::StreamInfoConsumersReply;

#[tokio::test]
async fn only_idle_consumers_with_nothing_pending_are_removed() {
    let server = RedisServer::start();
    let mut conn = redis(&server.url()).await;
    let stream = keys().events();
    let group = "d:analytics";
    add_event(&mut conn, "application/json", b"{}").await;
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(group)
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();
    // `holder` reads the event and leaves it pending; `ghost` has nothing.
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg("holder")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&stream)
        .arg(group)
        .arg("ghost")
        .query_async(&mut conn)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // `fresh` has just joined: idle for less than the limit.
    let _: i64 = redis::cmd("XGROUP")
        .arg("CREATECONSUMER")
        .arg(&stream)
        .arg(group)
        .arg("fresh")
        .query_async(&mut conn)
        .await
        .unwrap();

    let removed = remove_dead_consumers(&mut conn, &stream, group, Duration::from_millis(200))
        .await
        .unwrap();

    assert_eq!(removed, vec!["ghost".to_owned()]);
    let left: StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg(&stream)
        .arg(group)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut names: Vec<_> = left.consumers.into_iter().map(|c| c.name).collect();
    names.sort();
    assert_eq!(names, ["fresh", "holder"]);
}
