//! A throwaway `redis-server` on a free loopback port.
//!
//! The server has no persistence and one ACL user (the appliance's upstream
//! identity) with a random password; the `default` user is disabled so a
//! connection that reaches the store without authenticating is refused, which
//! is what proves the appliance authenticates upstream by itself.

use crate::net::{RawConn, free_port};
use crate::process::{ChildGuard, ToolOutput, poll_until, run_tool};
use crate::resp::{Reply, encode_str};
use crate::{SETTLE_TIMEOUT, random_hex};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// Fresh ports tried when another process takes the one picked first.
const PORT_ATTEMPTS: usize = 5;

/// How the server is started.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// The ACL user the appliance authenticates as.
    pub user: String,
    /// `--maxclients`.
    pub maxclients: u32,
    /// More `redis-server` arguments, e.g. `["--maxmemory", "1gb"]`.
    pub extra_args: Vec<String>,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            user: "custos".into(),
            maxclients: 10_000,
            extra_args: Vec::new(),
        }
    }
}

/// A running (or deliberately stopped) `redis-server`.
#[derive(Debug)]
pub struct RedisServer {
    dir: TempDir,
    port: u16,
    password: String,
    opts: RedisOptions,
    child: Option<ChildGuard>,
}

impl RedisServer {
    /// Starts a server with the default options and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server with `opts` and waits until it answers.
    pub fn start_with(opts: RedisOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("custos-redis-")
            .tempdir()
            .expect("temp dir");
        let mut server = RedisServer {
            dir,
            port: free_port(),
            password: random_hex(16),
            opts,
            child: None,
        };
        // Another test may take the free port before the server binds it:
        // then the server exits at once and a new port is tried.
        for _ in 0..PORT_ATTEMPTS {
            match server.spawn() {
                Ok(()) => return server,
                Err(e) if e.contains("Address already in use") => server.port = free_port(),
                Err(e) => panic!("{e}"),
            }
        }
        panic!("redis-server found no free port in {PORT_ATTEMPTS} attempts");
    }

    /// Starts the server on its port and waits until the ACL user can log
    /// in; `Err` with the log when the server exits first.
    fn spawn(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path())
            .args(["--daemonize", "no"])
            .args(["--maxclients", &self.opts.maxclients.to_string()])
            .args(["--user", "default", "off"])
            .args(["--user", &self.opts.user, "on"])
            .arg(format!(">{}", self.password))
            .args(["~*", "&*", "+@all"])
            .args(&self.opts.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = ChildGuard::spawn("redis-server", &mut cmd);
        let port = self.port;
        let (user, password) = (self.opts.user.clone(), self.password.clone());
        let log_path = self.log_path();
        let exited = poll_until(SETTLE_TIMEOUT, "redis-server to answer PING", || {
            if let Some(status) = child.try_wait() {
                return Ok(Some(format!(
                    "redis-server on port {port} exited with {status}; log:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                )));
            }
            // Anything short of both answers (refused, reset while the
            // server starts) means not ready yet.
            let io = |e: std::io::Error| e.to_string();
            let mut c = RawConn::connect(port).map_err(io)?;
            c.send(&encode_str(&["AUTH", &user, &password]))
                .map_err(io)?;
            let auth = c.read().map_err(io)?;
            c.send(&encode_str(&["PING"])).map_err(io)?;
            let pong = c.read().map_err(io)?;
            if auth == Reply::Simple("OK".into()) && pong == Reply::Simple("PONG".into()) {
                Ok(None)
            } else {
                Err(format!("AUTH -> {auth:?}, PING -> {pong:?}"))
            }
        });
        if let Some(log) = exited {
            return Err(log);
        }
        self.child = Some(child);
        Ok(())
    }

    /// The port the server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The ACL user's name.
    pub fn user(&self) -> &str {
        &self.opts.user
    }

    /// The ACL user's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The server's process id, when it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// The server's log file.
    pub fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("redis.log")
    }

    /// The server's folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the server at once (SIGKILL), like a crash.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill();
        }
    }

    /// Starts the server again on the same port, with the same user and
    /// password and an empty data set.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn() {
            panic!("{e}");
        }
    }

    /// A `redis` crate client that talks to the server directly, as the
    /// ACL user (RESP2).
    pub fn client(&self) -> redis::Client {
        redis::Client::open(format!(
            "redis://{}:{}@127.0.0.1:{}/",
            self.opts.user, self.password, self.port
        ))
        .expect("redis client")
    }

    /// A direct synchronous connection (bypassing the appliance), for
    /// checking what reached the store.
    pub fn connection(&self) -> redis::Connection {
        let c = self
            .client()
            .get_connection_with_timeout(Duration::from_secs(30))
            .expect("direct connection to redis-server");
        c.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("read timeout");
        c
    }

    /// A direct raw connection, already authenticated.
    pub fn raw(&self) -> RawConn {
        let mut c = RawConn::open(self.port);
        let ok = c.cmd(&["AUTH", &self.opts.user, &self.password]);
        assert_eq!(
            ok,
            Reply::Simple("OK".into()),
            "AUTH on the direct connection"
        );
        c
    }

    /// The lines of `CLIENT LIST`, excluding the connection that asks.
    pub fn client_list(&self) -> Vec<String> {
        let mut c = self.raw();
        let me = match c.cmd(&["CLIENT", "ID"]) {
            Reply::Int(id) => id,
            other => panic!("CLIENT ID -> {other:?}"),
        };
        let list = c.cmd(&["CLIENT", "LIST"]).text().expect("CLIENT LIST text");
        list.lines()
            .filter(|l| !l.starts_with(&format!("id={me} ")))
            .map(str::to_string)
            .collect()
    }

    /// Runs `redis-cli` directly against the server, authenticated.
    pub fn cli(&self, args: &[&str]) -> ToolOutput {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["--user", &self.opts.user, "--pass", &self.password])
            .arg("--no-auth-warning")
            .args(args);
        run_tool(&mut cmd, None, Duration::from_secs(120))
    }
}
