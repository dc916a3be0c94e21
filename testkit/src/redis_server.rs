//! A private `redis-server` on a free loopback port, removed when dropped.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::TestCertificates;

/// A `redis-server` child process with its own data directory.
pub struct RedisServer {
    child: Child,
    port: u16,
    tls: Option<(u16, TestCertificates)>,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a redis-server with no persistence on a free port and waits
    /// until it answers PING. Panics with a clear message when `redis-server`
    /// is not installed (the README's test command installs it).
    pub fn start() -> Self {
        Self::start_with(&["--save", "", "--appendonly", "no"])
    }

    /// Starts a redis-server with extra configuration arguments (for
    /// example `["--appendonly", "yes"]`).
    pub fn start_with(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        Self::start_in(dir, args, None)
    }

    /// [`Self::start_with`] on `port`, for a test that must know the address
    /// before the server exists; panics if the port is taken.
    pub fn start_on(port: u16, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        Self::start_in(dir, args, Some(port))
    }

    /// Starts a redis-server that also accepts TLS on a second port, with a
    /// certificate for 127.0.0.1 signed by a test CA ([`Self::tls_ca`]);
    /// clients are not asked for certificates. The plain port stays open
    /// for the test's own checks.
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let certs = TestCertificates::generate(dir.path());
        let tls_port = free_port();
        let path = |p: &Path| p.to_str().expect("UTF-8 temp path").to_owned();
        let (tls_port_arg, cert, key, ca) = (
            tls_port.to_string(),
            path(&certs.cert),
            path(&certs.key),
            path(&certs.ca),
        );
        let mut server = Self::start_in(
            dir,
            &[
                "--save",
                "",
                "--appendonly",
                "no",
                "--tls-port",
                &tls_port_arg,
                "--tls-cert-file",
                &cert,
                "--tls-key-file",
                &key,
                "--tls-ca-cert-file",
                &ca,
                "--tls-auth-clients",
                "no",
            ],
            None,
        );
        server.tls = Some((tls_port, certs));
        server
    }

    fn start_in(dir: tempfile::TempDir, args: &[&str], fixed_port: Option<u16>) -> Self {
        let tries = if fixed_port.is_some() { 1 } else { 5 };
        for _ in 0..tries {
            let port = fixed_port.unwrap_or_else(free_port);
            let mut child = Command::new("redis-server")
                .arg("--port")
                .arg(port.to_string())
                .args(["--bind", "127.0.0.1", "--daemonize", "no", "--dir"])
                .arg(dir.path())
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cannot run redis-server: install it (apt-get install redis-server) or run the README's test command");
            if wait_ready(&mut child, port, Duration::from_secs(10)) {
                return Self {
                    child,
                    port,
                    tls: None,
                    _dir: dir,
                };
            }
            // Most likely another process took the port between our probe
            // and redis-server's bind: try another one.
            let _ = child.kill();
            let _ = child.wait();
        }
        match fixed_port {
            Some(port) => panic!("redis-server did not start on port {port}"),
            None => panic!("redis-server did not start on a free port after 5 tries"),
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `rediss://127.0.0.1:<tls port>` of a server started with
    /// [`Self::start_tls`].
    pub fn tls_url(&self) -> String {
        let (port, _) = self.tls.as_ref().expect("started with start_tls");
        format!("rediss://127.0.0.1:{port}")
    }

    /// The CA certificate (PEM file) that signed the TLS port's certificate.
    pub fn tls_ca(&self) -> &Path {
        let (_, certs) = self.tls.as_ref().expect("started with start_tls");
        &certs.ca
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_ready(child: &mut Child, port: u16, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let mut reply = [0u8; 7];
            if stream.write_all(b"PING\r\n").is_ok()
                && stream.read_exact(&mut reply).is_ok()
                && &reply == b"+PONG\r\n"
            {
                return true;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
