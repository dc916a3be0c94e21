//! Redis as the benchmark needs it: a private redis-server with the
//! production durability settings (AOF, fsync every second), the XADD
//! ceiling measured by `redis-benchmark`, and the few commands used to
//! observe a run (stream length, server CPU time).

use std::time::Duration;

use fanout_api::entry::{FIELD_BODY, FIELD_CONTENT_TYPE, JSON_CONTENT_TYPE};
use fanout_testkit::RedisServer;
use redis::aio::MultiplexedConnection;

/// Why a Redis step failed.
#[derive(Debug, thiserror::Error)]
pub enum RedisToolError {
    /// A Redis command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// `redis-benchmark` could not be run.
    #[error("cannot run redis-benchmark (apt-get install redis-tools): {0}")]
    Spawn(std::io::Error),
    /// `redis-benchmark` printed no result.
    #[error("redis-benchmark printed no requests-per-second figure: {0}")]
    NoFigure(String),
}

/// The redis-server settings of every benchmark server: what a production
/// route store runs with (the chart's default), and no RDB snapshots in the
/// middle of a run.
pub const AOF_EVERYSEC: [&str; 6] = [
    "--appendonly",
    "yes",
    "--appendfsync",
    "everysec",
    "--save",
    "",
];

/// Starts a private redis-server with [`AOF_EVERYSEC`].
pub fn start_aof_server() -> RedisServer {
    RedisServer::start_with(&AOF_EVERYSEC)
}

/// A connection for observing a run.
pub async fn connect(url: &str) -> Result<MultiplexedConnection, RedisToolError> {
    let client = redis::Client::open(url)?;
    Ok(client.get_multiplexed_async_connection().await?)
}

/// The length of a stream (0 when it does not exist).
pub async fn xlen(conn: &mut MultiplexedConnection, key: &str) -> Result<u64, RedisToolError> {
    Ok(redis::cmd("XLEN").arg(key).query_async(conn).await?)
}

/// Deletes a key.
pub async fn del(conn: &mut MultiplexedConnection, key: &str) -> Result<(), RedisToolError> {
    let _: i64 = redis::cmd("DEL").arg(key).query_async(conn).await?;
    Ok(())
}

/// CPU time (user + system) the server has used so far.
pub async fn server_cpu(conn: &mut MultiplexedConnection) -> Result<Duration, RedisToolError> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(conn).await?;
    let seconds = info_field(&info, "used_cpu_user").unwrap_or(0.0)
        + info_field(&info, "used_cpu_sys").unwrap_or(0.0);
    Ok(Duration::from_secs_f64(seconds))
}

/// The redis-server version, as `redis-server --version` prints it.
pub fn server_version() -> String {
    std::process::Command::new("redis-server")
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| {
            text.split_whitespace()
                .find_map(|word| word.strip_prefix("v="))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".into())
}

/// How `redis-benchmark` measures the XADD ceiling.
#[derive(Clone, Debug)]
pub struct XaddCeiling {
    /// The server's port on 127.0.0.1.
    pub port: u16,
    /// XADD commands in total.
    pub requests: u64,
    /// Client connections.
    pub clients: u32,
    /// Commands pipelined per connection.
    pub pipeline: u32,
}

impl XaddCeiling {
    /// The redis-benchmark arguments: XADD of an entry shaped like the ones
    /// ingest writes (content type and body fields, same body).
    pub fn args(&self, body: &str) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-h".into(),
            "127.0.0.1".into(),
            "-p".into(),
            self.port.to_string(),
            "-P".into(),
            self.pipeline.to_string(),
            "-c".into(),
            self.clients.to_string(),
            "-n".into(),
            self.requests.to_string(),
            "-q".into(),
        ];
        let command = [
            "XADD",
            "benchstream",
            "*",
            FIELD_CONTENT_TYPE,
            JSON_CONTENT_TYPE,
            FIELD_BODY,
        ];
        args.extend(command.iter().map(|s| s.to_string()));
        args.push(body.into());
        args
    }

    /// Runs redis-benchmark and returns XADD commands per second.
    pub async fn measure(&self, body: &str) -> Result<f64, RedisToolError> {
        let out = tokio::process::Command::new("redis-benchmark")
            .args(self.args(body))
            .kill_on_drop(true)
            .output()
            .await
            .map_err(RedisToolError::Spawn)?;
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        requests_per_second(&text).ok_or_else(|| {
            RedisToolError::NoFigure(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
        })
    }
}

/// The last "N requests per second" figure of redis-benchmark's output.
fn requests_per_second(output: &str) -> Option<f64> {
    output
        .split(['\r', '\n'])
        .filter_map(|line| {
            let before = line.split(" requests per second").next()?;
            if before.len() == line.len() {
                return None;
            }
            before.rsplit(' ').next()?.parse().ok()
        })
        .next_back()
}

fn info_field(info: &str, name: &str) -> Option<f64> {
    info.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|value| value.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_benchmark_quiet_output() {
        let out = "XADD benchstream * b {\"k\":1}: rps=0.0 (overall: nan) avg_msec=nan\r\
                   XADD benchstream * b {\"k\":1}: 512032.78 requests per second, p50=5.967 msec\n\n";
        assert_eq!(requests_per_second(out), Some(512_032.78));
        assert_eq!(requests_per_second("nothing"), None);
    }

    #[test]
    fn reads_info_fields() {
        let info = "# CPU\r\nused_cpu_sys:1.5\r\nused_cpu_user:2.25\r\nused_cpu_sys_children:9\r\n";
        assert_eq!(info_field(info, "used_cpu_sys"), Some(1.5));
        assert_eq!(info_field(info, "used_cpu_user"), Some(2.25));
        assert_eq!(info_field(info, "missing"), None);
    }

    #[test]
    fn xadd_command_writes_the_ingest_entry_shape() {
        let args = XaddCeiling {
            port: 1,
            requests: 10,
            clients: 2,
            pipeline: 64,
        }
        .args("{}");
        let tail: Vec<&str> = args[args.len() - 7..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "XADD",
                "benchstream",
                "*",
                fanout_api::entry::FIELD_CONTENT_TYPE,
                fanout_api::entry::JSON_CONTENT_TYPE,
                fanout_api::entry::FIELD_BODY,
                "{}"
            ]
        );
    }
}
