//! Dead consumers (replaced pods) are removed from a group, and only those:
//! a consumer with pending entries, or one that read recently, stays. The
//! group of a destination nobody reads any more is destroyed, and only
//! such a group.

use std::time::Duration;

use crate::common::{add_event, keys, redis};
use fanout_api::RedisConnection;
use fanout_testkit::RedisServer;
use fanout_worker::consumers::{Cleanup, Removed, remove_dead_consumers};
use redis::streams::{StreamInfoConsumersReply, StreamInfoGroupsReply};

/// Creates `group` at `0` and has `consumer` read the first entry, which
/// stays pending.
async fn hold_first(conn: &mut RedisConnection, group: &str, consumer: &str) {
    let stream = keys().events();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&stream)
        .arg(group)
        .arg("0")
        .query_async(conn)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(group)
        .arg(consumer)
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(&stream)
        .arg(">")
        .query_async(conn)
        .await
        .unwrap();
}

/// `consumer` heartbeats the entry `id` it holds, as a live worker does
/// (XCLAIM JUSTID), which makes it not idle.
async fn heartbeat(conn: &mut RedisConnection, group: &str, consumer: &str, id: &str) {
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(keys().events())
        .arg(group)
        .arg(consumer)
        .arg(0)
        .arg(id)
        .arg("JUSTID")
        .query_async(conn)
        .await
        .unwrap();
}

async fn group_names(conn: &mut RedisConnection) -> Vec<String> {
    let info: StreamInfoGroupsReply = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(keys().events())
        .query_async(conn)
        .await
        .unwrap();
    let mut names: Vec<_> = info.groups.into_iter().map(|g| g.name).collect();
    names.sort();
    names
}

#[tokio::test]
async fn only_fanout_groups_holding_the_stream_unread_on_two_passes_are_destroyed() {
    let server = RedisServer::start();
    let mut conn = redis(&server.url()).await;
    let id = add_event(&mut conn, "application/json", b"{}").await;
    // Configured here: kept, whatever its idleness; "ghost", left by a
    // replaced pod with nothing pending, goes.
    hold_first(&mut conn, "d:kept", "ghost").await;
    let _: i64 = redis::cmd("XACK")
        .arg(keys().events())
        .arg("d:kept")
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Removed from the route, its entry pending for ever: destroyed.
    hold_first(&mut conn, "d:removed", "old-pod").await;
    // Not configured here, but another worker heartbeats it: kept.
    hold_first(&mut conn, "d:elsewhere", "other-pod").await;
    // Idle at the first pass, heartbeaten before the second: kept.
    hold_first(&mut conn, "d:revived", "slow-pod").await;
    // Idle, but done with everything: holds nothing back, kept.
    hold_first(&mut conn, "d:done", "quiet-pod").await;
    let _: i64 = redis::cmd("XACK")
        .arg(keys().events())
        .arg("d:done")
        .arg(&id)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Not fanout's: never touched.
    hold_first(&mut conn, "analytics", "theirs").await;

    let idle = Duration::from_millis(200);
    let mut cleanup = Cleanup::new(keys().events(), vec!["d:kept".into()], idle, idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    heartbeat(&mut conn, "d:elsewhere", "other-pod", &id).await;
    let first = cleanup.pass(&mut conn).await.unwrap();
    assert_eq!(
        first,
        Removed {
            consumers: vec![("d:kept".into(), "ghost".into())],
            groups: vec![],
        },
        "one idle pass is not enough to destroy a group"
    );

    heartbeat(&mut conn, "d:elsewhere", "other-pod", &id).await;
    heartbeat(&mut conn, "d:revived", "slow-pod", &id).await;
    let second = cleanup.pass(&mut conn).await.unwrap();
    assert_eq!(second.groups, vec!["d:removed".to_owned()]);
    assert_eq!(
        group_names(&mut conn).await,
        ["analytics", "d:done", "d:elsewhere", "d:kept", "d:revived"]
    );
}
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
