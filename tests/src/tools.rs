//! The stock Redis and PostgreSQL command-line clients, pointed at a port.

use crate::postgres_server::pg_program;
use crate::process::{ToolOutput, run_tool};
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// How long a command-line client may run before the test fails.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(300);

/// `redis-cli -h 127.0.0.1 -p port args...`, fed `stdin` when given. No
/// credentials: the appliance in development mode needs none.
pub fn redis_cli(port: u16, args: &[&str], stdin: Option<&[u8]>) -> ToolOutput {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .env_remove("REDISCLI_AUTH");
    run_tool(&mut cmd, stdin.map(<[u8]>::to_vec), TOOL_TIMEOUT)
}

/// `redis-benchmark -h 127.0.0.1 -p port args...`.
pub fn redis_benchmark(port: u16, args: &[&str]) -> ToolOutput {
    let mut cmd = Command::new("redis-benchmark");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args);
    run_tool(&mut cmd, None, TOOL_TIMEOUT)
}

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

// ---- PostgreSQL ----

/// A path no file will ever be at: libpq is pointed there for the files it
/// would otherwise look up in the home folder (`~/.pgpass`,
/// `~/.postgresql/root.crt`, ...), so the machine's own setup never leaks in.
const NO_FILE: &str = "/nonexistent/custos-tests";

/// Removes every `PG*` variable a client would otherwise inherit and points
/// libpq's per-user files at nothing.
pub fn scrub_pg_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    for var in ["PGPASSFILE", "PGSERVICEFILE", "PGSYSCONFDIR"] {
        cmd.env(var, NO_FILE);
    }
}

/// Where and how a PostgreSQL client connects. Every libpq parameter that
/// matters is set explicitly, so nothing falls back to the machine's
/// defaults (its socket folder, port 5432, the OS user name, `~/.pgpass`).
#[derive(Debug, Clone)]
pub struct PgConnect {
    /// `host`: an address or a unix socket folder.
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `user`.
    pub user: String,
    /// `dbname`.
    pub dbname: String,
    /// The password, passed as `PGPASSWORD` (never on a command line).
    pub password: Option<String>,
    /// `sslmode`.
    pub sslmode: String,
    /// Other connection keywords, e.g. `application_name`, `options`,
    /// `sslrootcert`, `gssencmode`.
    pub params: Vec<(String, String)>,
}

impl PgConnect {
    /// 127.0.0.1:`port` as user `alice` on database `app`, without TLS and
    /// without a password (what the appliance in development mode accepts).
    pub fn new(port: u16) -> Self {
        PgConnect {
            host: "127.0.0.1".into(),
            port,
            user: "alice".into(),
            dbname: "app".into(),
            password: None,
            sslmode: "disable".into(),
            params: vec![("connect_timeout".into(), "30".into())],
        }
    }

    /// Sets `host`.
    pub fn host(mut self, host: &str) -> Self {
        self.host = host.into();
        self
    }

    /// Sets `user`.
    pub fn user(mut self, user: &str) -> Self {
        self.user = user.into();
        self
    }

    /// Sets `dbname`.
    pub fn dbname(mut self, dbname: &str) -> Self {
        self.dbname = dbname.into();
        self
    }

    /// Sets the password.
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Sets `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`).
    pub fn sslmode(mut self, mode: &str) -> Self {
        self.sslmode = mode.into();
        self
    }

    /// Connects to 127.0.0.1 but names the server `name` (`host` is what
    /// TLS verification checks, `hostaddr` where libpq connects), so a
    /// certificate for `localhost` verifies without depending on how the
    /// machine resolves that name.
    pub fn server_name(self, name: &str) -> Self {
        self.host(name).param("hostaddr", "127.0.0.1")
    }

    /// `sslmode=verify-full` against the CA in `ca`.
    pub fn verify_full(self, ca: &Path) -> Self {
        self.sslmode("verify-full")
            .param("sslrootcert", &ca.display().to_string())
    }

    /// Sets (or replaces) any other connection keyword.
    pub fn param(mut self, key: &str, value: &str) -> Self {
        self.params.retain(|(k, _)| k != key);
        self.params.push((key.into(), value.into()));
        self
    }

    /// The libpq connection string, without the password.
    pub fn conninfo(&self) -> String {
        let mut s = String::new();
        let fixed = [
            ("host", self.host.clone()),
            ("port", self.port.to_string()),
            ("user", self.user.clone()),
            ("dbname", self.dbname.clone()),
            ("sslmode", self.sslmode.clone()),
        ];
        for (k, v) in fixed
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(self.params.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        {
            let quoted = v.replace('\\', "\\\\").replace('\'', "\\'");
            let _ = write!(s, "{}{k}='{quoted}'", if s.is_empty() { "" } else { " " });
        }
        s
    }

    /// Scrubs the environment of `cmd` and sets the libpq variables, so a
    /// tool that reads only the environment connects where this says too.
    pub fn apply_env(&self, cmd: &mut Command) {
        scrub_pg_env(cmd);
        cmd.env("PGHOST", &self.host)
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", &self.user)
            .env("PGDATABASE", &self.dbname)
            .env("PGSSLMODE", &self.sslmode)
            // Without an explicit root certificate, `require` must not
            // start verifying because of a file in the home folder.
            .env("PGSSLROOTCERT", NO_FILE)
            .env("PGSSLCERT", NO_FILE)
            .env("PGSSLKEY", NO_FILE);
        if let Some(pw) = &self.password {
            cmd.env("PGPASSWORD", pw);
        }
    }
}

/// `psql -X -q -v ON_ERROR_STOP=1 -At -d <conninfo> args...`, fed `stdin`
/// when given. Later `-v` arguments override the defaults.
pub fn psql(conn: &PgConnect, args: &[&str], stdin: Option<&[u8]>) -> ToolOutput {
    let mut cmd = Command::new(pg_program("psql"));
    conn.apply_env(&mut cmd);
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At", "-d"])
        .arg(conn.conninfo())
        .args(args);
    run_tool(&mut cmd, stdin.map(<[u8]>::to_vec), TOOL_TIMEOUT)
}

/// `psql -c sql`, panicking unless it succeeds; returns stdout trimmed.
pub fn psql_ok(conn: &PgConnect, sql: &str) -> String {
    let out = psql(conn, &["-c", sql], None);
    out.assert_success(&format!("psql -c {sql:?} ({})", conn.conninfo()));
    out.stdout.trim_end().to_string()
}

/// `pgbench args... <conninfo>`.
pub fn pgbench(conn: &PgConnect, args: &[&str]) -> ToolOutput {
    let mut cmd = Command::new(pg_program("pgbench"));
    conn.apply_env(&mut cmd);
    cmd.args(args).arg(conn.conninfo());
    run_tool(&mut cmd, None, TOOL_TIMEOUT)
}

/// The "number of transactions actually processed: N/M" of a pgbench run,
/// as (N, M).
pub fn pgbench_transactions(stdout: &str) -> Option<(u64, u64)> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed:"))?;
    let (done, planned) = line.trim().split_once('/')?;
    Some((done.trim().parse().ok()?, planned.trim().parse().ok()?))
}
