//! A private Redis Cluster of primaries on loopback, removed when dropped.
//!
//! Each node is a [`RedisServer`] started with `cluster-enabled yes`. The
//! hash slots are split into equal ranges in node order, so a test knows
//! which node holds a key ([`RedisCluster::node_of`]) and can put two routes
//! on different nodes.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use crate::RedisServer;

/// Number of hash slots in Redis Cluster.
const SLOTS: u32 = 16384;

/// A running cluster of `redis-server` primaries, no replicas.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `primaries` nodes (at least 3, as `redis-cli --cluster
    /// create` would ask), gives each an equal range of slots, joins them
    /// and waits until every node reports `cluster_state:ok`.
    pub fn start(primaries: usize) -> Self {
        Self::start_with(primaries, &[])
    }

    /// [`RedisCluster::start`] with extra configuration for every node (for
    /// example `["--maxmemory", "10mb"]`).
    pub fn start_with(primaries: usize, args: &[&str]) -> Self {
        Self::start_nodes(primaries, args, None)
    }

    /// A cluster on these loopback ports (at least 3), for a test that must
    /// know the address before the cluster exists.
    pub fn start_on(ports: &[u16]) -> Self {
        Self::start_nodes(ports.len(), &[], Some(ports))
    }

    fn start_nodes(primaries: usize, args: &[&str], ports: Option<&[u16]>) -> Self {
        assert!(primaries >= 3, "a Redis Cluster needs at least 3 primaries");
        let mut node_args = vec![
            "--save",
            "",
            "--appendonly",
            "no",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            "5000",
        ];
        node_args.extend_from_slice(args);
        let nodes: Vec<RedisServer> = (0..primaries)
            .map(|i| match ports {
                Some(ports) => RedisServer::start_on(ports[i], &node_args),
                None => RedisServer::start_with(&node_args),
            })
            .collect();
        let cluster = Self { nodes };
        for (index, node) in cluster.nodes.iter().enumerate() {
            let (first, last) = cluster.slot_range(index);
            cli(
                node.port(),
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            );
        }
        let first_port = cluster.nodes[0].port().to_string();
        for node in &cluster.nodes[1..] {
            cli(node.port(), &["CLUSTER", "MEET", "127.0.0.1", &first_port]);
        }
        cluster.wait_ok(Duration::from_secs(30));
        cluster
    }

    /// `redis://127.0.0.1:<port>` of the first node: any node will do to
    /// discover the others.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// The nodes, in slot order.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// The node that holds `key` (hash tags honoured).
    pub fn node_of(&self, key: &str) -> &RedisServer {
        let slot: u32 = cli(self.nodes[0].port(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        let index = (0..self.nodes.len())
            .find(|&i| {
                let (first, last) = self.slot_range(i);
                (first..=last).contains(&slot)
            })
            .expect("every slot is assigned");
        &self.nodes[index]
    }

    /// The first name of `route-0`, `route-1`, ... whose key (`key_of`
    /// the name) is on another node than `name`'s, so that a test can put
    /// two routes on two nodes.
    pub fn name_on_another_node(&self, name: &str, key_of: impl Fn(&str) -> String) -> String {
        let taken = self.node_of(&key_of(name)).port();
        (0..)
            .map(|i| format!("route-{i}"))
            .find(|candidate| self.node_of(&key_of(candidate)).port() != taken)
            .expect("a cluster of 3 or more nodes holds names on each")
    }

    fn slot_range(&self, index: usize) -> (u32, u32) {
        let n = self.nodes.len() as u32;
        let i = index as u32;
        (i * SLOTS / n, (i + 1) * SLOTS / n - 1)
    }

    fn wait_ok(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let ok = self.nodes.iter().all(|node| {
                let info = cli(node.port(), &["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
            });
            if ok {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "the Redis Cluster did not reach cluster_state:ok within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Runs one command with `redis-cli` against the node on `port` and returns
/// its output; panics when the command fails.
fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("cannot run redis-cli: install redis-server (it brings redis-tools)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success() && !text.starts_with("ERR") && !text.starts_with("(error)"),
        "redis-cli {args:?} on port {port} failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}
