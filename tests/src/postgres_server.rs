//! A throwaway PostgreSQL server on a free loopback port.
//!
//! `initdb` makes a fresh cluster in a temporary folder; the server listens
//! on 127.0.0.1 only, with its unix socket in that folder too, so it never
//! collides with the machine's own PostgreSQL. The cluster has the superuser
//! `postgres` (reached over the unix socket, for setting up and inspecting)
//! and the application role `custos` with a random password, owning the
//! database `app`: the identity the appliance connects as. Every TCP
//! connection must authenticate with the configured method, which is what
//! proves the appliance authenticates upstream by itself.
//!
//! PostgreSQL refuses to run as root. When the tests run as root (CI does),
//! the cluster's folder is handed to the `postgres` system user and `initdb`
//! and `postgres` run as that user.

use crate::certs::Certs;
use crate::net::free_port;
use crate::process::{ChildGuard, ToolOutput, poll_until, run_tool, tail};
use crate::tools::{PgConnect, scrub_pg_env};
use crate::{SETTLE_TIMEOUT, random_hex};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;
use tempfile::TempDir;

/// The `pg_hba.conf` method for TCP connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgAuth {
    /// `scram-sha-256`, PostgreSQL's default.
    ScramSha256,
    /// `md5`; the role's password is stored as an MD5 hash, otherwise the
    /// server would silently use SCRAM instead.
    Md5,
    /// `password`: the password in clear text over the connection.
    Password,
    /// `trust`: no password at all.
    Trust,
}

impl PgAuth {
    /// The method's name in `pg_hba.conf`.
    pub fn hba_method(self) -> &'static str {
        match self {
            PgAuth::ScramSha256 => "scram-sha-256",
            PgAuth::Md5 => "md5",
            PgAuth::Password => "password",
            PgAuth::Trust => "trust",
        }
    }

    /// `password_encryption` for roles created on such a server.
    pub fn password_encryption(self) -> &'static str {
        match self {
            PgAuth::Md5 => "md5",
            _ => "scram-sha-256",
        }
    }
}

/// How the server is started; a builder ending in [`PostgresOptions::start`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Authentication of TCP connections.
    pub auth: PgAuth,
    /// `ssl = on` with this certificate and key (PEM files, copied into the
    /// cluster so their owner and mode suit the server).
    pub ssl: Option<(PathBuf, PathBuf)>,
    /// Lines appended to `postgresql.conf`.
    pub conf: Vec<String>,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            auth: PgAuth::ScramSha256,
            ssl: None,
            conf: Vec::new(),
        }
    }
}

impl PostgresOptions {
    /// Sets the authentication method of TCP connections.
    pub fn auth(mut self, auth: PgAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Turns TLS on with the server certificate of `certs`.
    pub fn ssl(mut self, certs: &Certs) -> Self {
        self.ssl = Some((certs.cert(), certs.key()));
        self
    }

    /// Appends a line to `postgresql.conf`, e.g. `"max_connections = 20"`.
    pub fn conf(mut self, line: &str) -> Self {
        self.conf.push(line.to_string());
        self
    }

    /// Starts a server with these options.
    pub fn start(self) -> PostgresServer {
        PostgresServer::start_with(self)
    }
}

/// The folder of the PostgreSQL server binaries: `CUSTOS_PG_BINDIR`, else
/// PostgreSQL 15's Debian folder, else what `pg_config --bindir` says.
pub fn pg_bindir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("CUSTOS_PG_BINDIR") {
            return PathBuf::from(dir);
        }
        let debian = PathBuf::from("/usr/lib/postgresql/15/bin");
        if debian.join("postgres").is_file() {
            return debian;
        }
        let from_pg_config = Command::new("pg_config")
            .arg("--bindir")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
        match from_pg_config {
            Some(dir) if dir.join("postgres").is_file() => dir,
            other => panic!(
                "no PostgreSQL server binaries: neither /usr/lib/postgresql/15/bin/postgres \
                 nor pg_config --bindir ({other:?}) has one; install postgresql-15 \
                 (see .ci/run) or set CUSTOS_PG_BINDIR"
            ),
        }
    })
    .clone()
}

/// A PostgreSQL client program: the one next to the server binaries when
/// there is one, so client and server versions match; else from PATH.
pub fn pg_program(name: &str) -> PathBuf {
    let local = pg_bindir().join(name);
    if local.is_file() {
        local
    } else {
        PathBuf::from(name)
    }
}

/// The user and group the server runs as, when the tests run as root.
#[derive(Debug, Clone, Copy)]
struct RunAs {
    uid: u32,
    gid: u32,
}

fn run_as() -> Option<RunAs> {
    static RUN_AS: OnceLock<Option<RunAs>> = OnceLock::new();
    *RUN_AS.get_or_init(|| {
        // SAFETY: geteuid(2) has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        Some(lookup_user("postgres").unwrap_or_else(|| {
            panic!(
                "running as root, and PostgreSQL refuses to: the `postgres` system user is \
                 needed to run the test servers (the postgresql packages create it)"
            )
        }))
    })
}

fn lookup_user(name: &str) -> Option<RunAs> {
    let cname = std::ffi::CString::new(name).ok()?;
    // SAFETY: `passwd` is plain old data; an all-zero value is valid and is
    // only read after getpwnam_r filled it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: `cname` is a
    // NUL-terminated string, `pwd` and `result` are live locals, and `buf`
    // is writable for `buf.len()` bytes; the re-entrant variant keeps tests
    // on parallel threads from sharing a static buffer.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    (rc == 0 && !result.is_null()).then_some(RunAs {
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    })
}

fn give_to_server_user(path: &Path) {
    if let Some(u) = run_as() {
        std::os::unix::fs::chown(path, Some(u.uid), Some(u.gid))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }
}

/// A running (or deliberately stopped) PostgreSQL server.
#[derive(Debug)]
pub struct PostgresServer {
    dir: TempDir,
    port: u16,
    password: String,
    superuser_password: String,
    opts: PostgresOptions,
    child: Option<ChildGuard>,
}

/// The application role the appliance connects as.
pub const APP_USER: &str = "custos";
/// The database the application role owns.
pub const APP_DATABASE: &str = "app";
/// The superuser, reached over the unix socket only.
pub const SUPERUSER: &str = "postgres";

impl PostgresServer {
    /// Starts a server with the default options (SCRAM, no TLS).
    pub fn start() -> Self {
        Self::start_with(PostgresOptions::default())
    }

    /// Starts a server with `opts`, creates the role and the database, and
    /// waits until it answers.
    pub fn start_with(opts: PostgresOptions) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("custos-pg-")
            .tempdir()
            .expect("temp dir");
        give_to_server_user(dir.path());
        let mut server = PostgresServer {
            dir,
            port: free_port(),
            password: random_hex(16),
            superuser_password: random_hex(16),
            opts,
            child: None,
        };
        server.init();
        server.spawn();
        server.create_role_and_database();
        server
    }

    fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        scrub_pg_env(&mut cmd);
        cmd.current_dir(self.dir.path()).env("LC_ALL", "C");
        if let Some(u) = run_as() {
            cmd.uid(u.uid).gid(u.gid);
        }
        cmd
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The folder of the server's unix socket.
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    fn init(&mut self) {
        let mut cmd = self.command(&pg_bindir().join("initdb"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8"])
            .args(["--no-locale", "--no-sync", "--no-instructions"]);
        run_tool(&mut cmd, None, Duration::from_secs(300)).assert_success("initdb");

        let sock = self.socket_dir();
        std::fs::create_dir(&sock).expect("socket folder");
        give_to_server_user(&sock);

        // Unix-socket connections are trusted (they are how the harness sets
        // up and inspects the cluster); TCP, the appliance's way in, always
        // authenticates with the configured method.
        let hba = format!(
            "local all all trust\nhost all all 127.0.0.1/32 {}\n",
            self.opts.auth.hba_method()
        );
        self.write_owned(&self.data_dir().join("pg_hba.conf"), hba.as_bytes(), 0o600);

        let mut conf = format!(
            "\n# custos test harness\n\
             listen_addresses = '127.0.0.1'\n\
             port = {}\n\
             unix_socket_directories = '{}'\n\
             password_encryption = '{}'\n\
             max_connections = 100\n\
             shared_buffers = 32MB\n\
             fsync = off\n\
             full_page_writes = off\n\
             log_min_messages = warning\n\
             log_connections = off\n",
            self.port,
            sock.display(),
            self.opts.auth.password_encryption(),
        );
        if let Some((cert, key)) = &self.opts.ssl {
            let cert_pem = std::fs::read(cert).expect("read server certificate");
            let key_pem = std::fs::read(key).expect("read server key");
            // PostgreSQL insists that its key belongs to it with mode 0600.
            self.write_owned(&self.data_dir().join("server.crt"), &cert_pem, 0o644);
            self.write_owned(&self.data_dir().join("server.key"), &key_pem, 0o600);
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        for line in &self.opts.conf {
            conf.push_str(line);
            conf.push('\n');
        }
        let path = self.data_dir().join("postgresql.conf");
        let mut all = std::fs::read_to_string(&path).expect("read postgresql.conf");
        all.push_str(&conf);
        self.write_owned(&path, all.as_bytes(), 0o600);
    }

    fn write_owned(&self, path: &Path, bytes: &[u8], mode: u32) {
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        give_to_server_user(path);
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("postgres log file");
        let mut cmd = self.command(&pg_bindir().join("postgres"));
        cmd.arg("-D")
            .arg(self.data_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log file"))
            .stderr(log);
        let mut child = ChildGuard::spawn("postgres", &mut cmd);
        let log_path = self.log_path();
        let port = self.port;
        poll_until(SETTLE_TIMEOUT, "postgres to accept connections", || {
            if let Some(status) = child.try_wait() {
                panic!(
                    "postgres on port {port} exited with {status}; log:\n{}",
                    tail(
                        &std::fs::read_to_string(&log_path).unwrap_or_default(),
                        8000
                    )
                );
            }
            let out = self.superuser_psql("postgres", &["-c", "SELECT 1"]);
            if out.status.success() && out.stdout.trim() == "1" {
                Ok(())
            } else {
                Err(out.stderr)
            }
        });
        self.child = Some(child);
    }

    fn create_role_and_database(&self) {
        let role = format!(
            "SET password_encryption = '{enc}'; \
             CREATE ROLE {APP_USER} LOGIN PASSWORD '{pw}'; \
             ALTER ROLE {SUPERUSER} PASSWORD '{su}'",
            enc = self.opts.auth.password_encryption(),
            pw = self.password,
            su = self.superuser_password,
        );
        let db = format!("CREATE DATABASE {APP_DATABASE} OWNER {APP_USER}");
        // Separate -c options: CREATE DATABASE cannot share a transaction.
        self.superuser_psql("postgres", &["-c", &role, "-c", &db])
            .assert_success("create the application role and database");
    }

    fn superuser_psql(&self, database: &str, args: &[&str]) -> ToolOutput {
        let mut cmd = Command::new(pg_program("psql"));
        scrub_pg_env(&mut cmd);
        cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-At"])
            .arg("-h")
            .arg(self.socket_dir())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
            ])
            .args(args);
        run_tool(&mut cmd, None, Duration::from_secs(300))
    }

    /// Runs `sql` as the superuser in the application database over the
    /// unix socket (bypassing the appliance) and returns its unaligned,
    /// tuples-only output, trimmed. Panics if it fails.
    pub fn psql_direct(&self, sql: &str) -> String {
        self.psql_direct_in(APP_DATABASE, sql)
    }

    /// Like [`PostgresServer::psql_direct`], in database `database`.
    pub fn psql_direct_in(&self, database: &str, sql: &str) -> String {
        let out = self.superuser_psql(database, &["-c", sql]);
        out.assert_success(&format!("psql (direct, superuser): {sql}"));
        out.stdout.trim_end().to_string()
    }

    /// Connection parameters for a direct TCP connection as the application
    /// role with its password (no TLS).
    pub fn connect(&self) -> PgConnect {
        PgConnect::new(self.port)
            .user(APP_USER)
            .dbname(APP_DATABASE)
            .password(&self.password)
    }

    /// The TCP port (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The application role's name.
    pub fn user(&self) -> &str {
        APP_USER
    }

    /// The application role's password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The superuser's password (for TCP connections as `postgres`).
    pub fn superuser_password(&self) -> &str {
        &self.superuser_password
    }

    /// The application database.
    pub fn database(&self) -> &str {
        APP_DATABASE
    }

    /// The authentication method of TCP connections.
    pub fn auth(&self) -> PgAuth {
        self.opts.auth
    }

    /// The postmaster's process id, when it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(ChildGuard::pid)
    }

    /// The server's log file.
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The server's folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Kills the postmaster and every backend at once, like a crash: clients
    /// get no goodbye message. Everything is stopped (SIGSTOP) before
    /// anything is killed: a backend that outlived the postmaster by a
    /// moment would tell its client "terminating connection due to
    /// unexpected postmaster exit". Backends lead their own sessions, so they
    /// are found by parent pid rather than signalled as a process group.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.signal(libc::SIGSTOP);
            let backends = children_of(child.pid());
            for &pid in &backends {
                signal_pid(pid, libc::SIGSTOP);
            }
            for &pid in &backends {
                signal_pid(pid, libc::SIGKILL);
            }
            child.kill();
        }
    }

    /// Starts the server again on the same port with the same data, roles
    /// and passwords (crash recovery runs if it was killed).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

/// The pids whose parent is `parent`, from `/proc/*/stat`.
fn children_of(parent: u32) -> Vec<libc::pid_t> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let pid: libc::pid_t = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
            let after = &stat[stat.rfind(')')? + 1..];
            let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

fn signal_pid(pid: libc::pid_t, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions. The pid was read a
    // moment ago as a child of the server's stopped postmaster, which can
    // neither fork nor reap, so it still names that backend (or its zombie).
    let _ = unsafe { libc::kill(pid, signal) };
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- postgres log (last 4000 bytes) ----\n{}\n---- end of postgres log ----",
                tail(&self.log(), 4000)
            );
        }
        self.stop();
    }
}
