//! One Redis connection type for a single server and for Redis Cluster.
//!
//! Ingest, worker and operator talk to Redis through [`RedisConnection`],
//! which is a reconnecting multiplexed connection to one server or a
//! cluster connection that follows the slot map (MOVED/ASK, failover). Every
//! key of a route shares one hash tag ([`crate::keys`]), so a route lives in
//! one slot and each command, pipeline, MULTI/EXEC and script of the data
//! plane goes to one node whichever the mode. What differs is said here
//! once: how to connect, and how to ask every primary (for `INFO memory`).
//!
//! Which mode is used is configuration ([`RedisTarget`]), not detection: a
//! cluster is named with `--redis-cluster`, as with other Redis clients.
//! Connections are lazy, so a service starts (not ready) while Redis is
//! still down. `rediss://` URLs use TLS (rustls), verifying the server
//! against the system's CA certificates, or only against the CA given with
//! [`RedisTarget::with_ca_file`] (`--redis-ca-file`), for a private CA.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use redis::{
    Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture, TlsCertificates, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    cluster::{ClusterClient, ClusterConfig},
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, ResponsePolicy, RoutingInfo},
};

/// The Redis flags every fanout binary takes (flattened into its own).
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Redis URL: `redis[s]://[user:password@]host:port[/db]`, `rediss` for
    /// TLS.
    #[arg(
        long,
        env = "FANOUT_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// The Redis URL names one node of a Redis Cluster (the others are
    /// discovered from it).
    #[arg(long, env = "FANOUT_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// PEM file of the private CA that signed the Redis server's
    /// certificate (`rediss://` only); trusted instead of the system's CAs
    /// for Redis alone (https destinations still use the system's).
    #[arg(long, env = "FANOUT_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
}

impl RedisArgs {
    /// The target these flags describe, checked.
    pub fn target(&self) -> Result<RedisTarget, RedisTargetError> {
        match &self.redis_ca_file {
            Some(ca_file) => {
                RedisTarget::with_ca_file(&self.redis_url, self.redis_cluster, ca_file)
            }
            None => RedisTarget::new(&self.redis_url, self.redis_cluster),
        }
    }
}

/// Why a Redis target is unusable.
#[derive(Debug, thiserror::Error)]
#[error("invalid Redis URL {url:?}: {reason}")]
pub struct RedisTargetError {
    /// The URL as given, password hidden.
    pub url: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Where Redis is and whether it is a cluster, checked when built.
#[derive(Clone)]
pub struct RedisTarget {
    url: String,
    client: Client,
}

#[derive(Clone)]
// Made once per process and then only cloned: the boxes just keep clippy's
// variant-size check quiet whichever client the TLS feature makes larger.
enum Client {
    Single(Box<redis::Client>),
    Cluster(Box<ClusterClient>),
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &redact(&self.url))
            .field("cluster", &self.is_cluster())
            .finish()
    }
}

impl RedisTarget {
    /// A single server (`cluster` false) or a cluster reached through any of
    /// its nodes (`cluster` true) at `url`
    /// (`redis[s]://[user:password@]host:port[/db]`, `rediss` for TLS).
    pub fn new(url: &str, cluster: bool) -> Result<Self, RedisTargetError> {
        Self::build(url, cluster, None)
    }

    /// [`RedisTarget::new`] for a `rediss://` URL whose server certificate
    /// is signed by the CA in the PEM file `ca_file` (`--redis-ca-file`):
    /// that CA is then the only one trusted for Redis; the system's CAs
    /// still serve everything else (https destinations).
    pub fn with_ca_file(
        url: &str,
        cluster: bool,
        ca_file: &Path,
    ) -> Result<Self, RedisTargetError> {
        let refuse = |reason: String| RedisTargetError {
            url: redact(url),
            reason,
        };
        if !url.starts_with("rediss://") {
            return Err(refuse(format!(
                "a CA file ({}) is for TLS: the URL must start with rediss://",
                ca_file.display()
            )));
        }
        let pem = std::fs::read(ca_file)
            .map_err(|e| refuse(format!("cannot read CA file {}: {e}", ca_file.display())))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(refuse(format!(
                "CA file {} holds no PEM certificate",
                ca_file.display()
            )));
        }
        Self::build(url, cluster, Some(pem))
    }

    fn build(url: &str, cluster: bool, ca: Option<Vec<u8>>) -> Result<Self, RedisTargetError> {
        let refuse = |reason: String| RedisTargetError {
            url: redact(url),
            reason,
        };
        let certificates = ca.map(|pem| TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        });
        let info = url
            .into_connection_info()
            .map_err(|e| refuse(e.to_string()))?;
        if url.starts_with("rediss://") {
            // The one TLS stack of the workspace: rustls with ring. Already
            // installed (by the worker, for deliveries) is fine too.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = if cluster {
            if info.redis_settings().db() != 0 {
                return Err(refuse("Redis Cluster has only database 0".into()));
            }
            let mut builder = ClusterClient::builder([info])
                .retries(3)
                .min_retry_wait(50)
                .max_retry_wait(1_000);
            if let Some(certificates) = certificates {
                builder = builder.certs(certificates);
            }
            Client::Cluster(Box::new(
                builder.build().map_err(|e| refuse(e.to_string()))?,
            ))
        } else {
            let client = match certificates {
                Some(certificates) => redis::Client::build_with_tls(info, certificates),
                None => redis::Client::open(info),
            };
            Client::Single(Box::new(client.map_err(|e| refuse(e.to_string()))?))
        };
        Ok(Self {
            url: url.to_owned(),
            client,
        })
    }

    /// Whether this is a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(_))
    }

    /// The URL with its password replaced by `***`, for logs.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    /// A new connection, independent of every other one (its own sockets),
    /// that connects on first use and reconnects after failures. A command
    /// fails after `response` without an answer; a connection attempt after
    /// `connect`.
    pub fn connect(&self, connect: Duration, response: Duration) -> RedisConnection {
        match &self.client {
            Client::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect))
                    .set_response_timeout(Some(response))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(1));
                // Lazy: only a malformed URL fails here, and that was checked in `new`.
                let manager = ConnectionManager::new_lazy_with_config((**client).clone(), config)
                    .expect("URL checked in RedisTarget::new");
                RedisConnection::Single(manager)
            }
            Client::Cluster(client) => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(connect)
                    .set_response_timeout(response);
                RedisConnection::Cluster(client.get_pending_async_connection_with_config(config))
            }
        }
    }
}

/// A connection to a single Redis server or to a Redis Cluster; cheap to
/// clone (clones share the sockets), and usable wherever redis-rs takes an
/// async connection.
#[derive(Clone)]
pub enum RedisConnection {
    /// A single server, through a reconnecting multiplexed connection.
    Single(ConnectionManager),
    /// A cluster, through a connection per node that follows the slot map.
    Cluster(ClusterConnection),
}

impl std::fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Single(_) => "RedisConnection::Single",
            Self::Cluster(_) => "RedisConnection::Cluster",
        })
    }
}

impl RedisConnection {
    /// `INFO <section>` of every primary: one text for a single server, one
    /// per primary for a cluster.
    pub async fn info_of_primaries(&mut self, section: &str) -> Result<Vec<String>, RedisError> {
        let mut info = redis::cmd("INFO");
        info.arg(section);
        match self {
            Self::Single(conn) => Ok(vec![info.query_async(conn).await?]),
            Self::Cluster(conn) => {
                let every_primary = RoutingInfo::MultiNode((
                    MultipleNodeRoutingInfo::AllMasters,
                    Some(ResponsePolicy::Special),
                ));
                let answers = conn.route_command(info, every_primary).await?;
                // One (node address, answer) pair per primary.
                let pairs: Vec<(String, String)> = redis::from_redis_value(answers)?;
                Ok(pairs.into_iter().map(|(_, text)| text).collect())
            }
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// `url` with the password of its user info replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(redact("redis://:pw@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact("redis://u:pw@h"), "redis://u:***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
    }

    #[test]
    fn targets_are_checked_when_built() {
        assert!(
            !RedisTarget::new("redis://127.0.0.1:6379", false)
                .unwrap()
                .is_cluster()
        );
        assert!(
            RedisTarget::new("redis://127.0.0.1:6379", true)
                .unwrap()
                .is_cluster()
        );
        let bad = RedisTarget::new("http://u:secret@h", false).unwrap_err();
        assert!(!bad.to_string().contains("secret"), "{bad}");
        let db = RedisTarget::new("redis://h:6379/2", true).unwrap_err();
        assert!(db.reason.contains("database 0"), "{db}");
        let debug = format!("{:?}", RedisTarget::new("redis://:pw@h:1", false).unwrap());
        assert!(!debug.contains("pw"), "{debug}");
    }
}
