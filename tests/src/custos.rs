//! The appliance under test: configuration, process, admin endpoint.
//!
//! Each test gets its own `custos` process with its own temporary folder
//! holding the configuration, the upstream password file and the log (the
//! process' stderr), so tests can assert on log lines.

use crate::SETTLE_TIMEOUT;
use crate::certs::Certs;
use crate::metrics::Metrics;
use crate::net::{free_port, http_get};
use crate::postgres_server::PostgresServer;
use crate::process::{ChildGuard, ToolOutput, poll_until, run_tool, tail};
use crate::redis_server::RedisServer;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;
use tempfile::TempDir;

/// Where the appliance reads the upstream password from.
#[derive(Debug, Clone)]
pub enum PasswordSource {
    /// `upstream_password_file`: the harness writes this content to a file.
    File(String),
    /// `upstream_password_env`: the harness sets this variable for the process.
    Env {
        /// Variable name.
        var: String,
        /// Its value.
        value: String,
    },
    /// No password key at all (an upstream that trusts the appliance).
    None,
}

/// One `[[target]]`.
#[derive(Debug, Clone)]
pub struct TargetConfig {
    /// `name`, also the `target` label in metrics.
    pub name: String,
    /// `protocol`.
    pub protocol: String,
    /// Port of `upstream` on 127.0.0.1.
    pub upstream_port: u16,
    /// `upstream_user`.
    pub upstream_user: String,
    /// The upstream password and how it is passed.
    pub password: PasswordSource,
    /// `auth`.
    pub auth: String,
    /// `buffer_bytes_max`, when set.
    pub buffer_bytes_max: Option<u64>,
    /// `pending_replies_max`, when set.
    pub pending_replies_max: Option<u64>,
    /// `connect_timeout_ms`, when set.
    pub connect_timeout_ms: Option<u64>,
    /// `upstream_database` (PostgreSQL), when set.
    pub upstream_database: Option<String>,
    /// `tls_cert`, when set.
    pub tls_cert: Option<PathBuf>,
    /// `tls_key`, when set.
    pub tls_key: Option<PathBuf>,
    /// `allow_plaintext_auth`, when set.
    pub allow_plaintext_auth: Option<bool>,
    /// `upstream_tls` (`"disable"` or `"require"`), when set.
    pub upstream_tls: Option<String>,
    /// `upstream_tls_ca`, when set.
    pub upstream_tls_ca: Option<PathBuf>,
    /// Raw TOML lines appended to the table (for keys the builder lacks).
    pub extra: String,
}

impl TargetConfig {
    /// A Redis target named `name` fronting `upstream` as its ACL user.
    pub fn redis(name: &str, upstream: &RedisServer) -> Self {
        Self::base(
            name,
            "redis",
            upstream.port(),
            upstream.user(),
            upstream.password(),
        )
    }

    /// A PostgreSQL target named `name` fronting `upstream` as its
    /// application role, in development mode (`auth = "none"`), without
    /// client TLS and so with `allow_plaintext_auth = true`, and without
    /// `upstream_database` (the client's database name is forwarded).
    pub fn postgres(name: &str, upstream: &PostgresServer) -> Self {
        TargetConfig {
            allow_plaintext_auth: Some(true),
            ..Self::base(
                name,
                "postgres",
                upstream.port(),
                upstream.user(),
                upstream.password(),
            )
        }
    }

    /// A target with every optional key unset and `auth = "none"`.
    fn base(name: &str, protocol: &str, port: u16, user: &str, password: &str) -> Self {
        TargetConfig {
            name: name.into(),
            protocol: protocol.into(),
            upstream_port: port,
            upstream_user: user.into(),
            password: PasswordSource::File(password.into()),
            auth: "none".into(),
            buffer_bytes_max: None,
            pending_replies_max: None,
            connect_timeout_ms: None,
            upstream_database: None,
            tls_cert: None,
            tls_key: None,
            allow_plaintext_auth: None,
            upstream_tls: None,
            upstream_tls_ca: None,
            extra: String::new(),
        }
    }

    /// Renames the target.
    pub fn with_name(mut self, name: &str) -> Self {
        self.name = name.into();
        self
    }

    /// Sets `upstream_database`.
    pub fn upstream_database(mut self, database: &str) -> Self {
        self.upstream_database = Some(database.into());
        self
    }

    /// Sets `tls_cert` and `tls_key` to the server certificate of `certs`.
    pub fn client_tls(mut self, certs: &Certs) -> Self {
        self.tls_cert = Some(certs.cert());
        self.tls_key = Some(certs.key());
        self
    }

    /// Sets `allow_plaintext_auth`; `None` leaves the key out (its default).
    pub fn allow_plaintext_auth(mut self, allow: Option<bool>) -> Self {
        self.allow_plaintext_auth = allow;
        self
    }

    /// Sets `upstream_tls` (`"disable"` or `"require"`).
    pub fn upstream_tls(mut self, mode: &str) -> Self {
        self.upstream_tls = Some(mode.into());
        self
    }

    /// Sets `upstream_tls_ca`.
    pub fn upstream_tls_ca(mut self, ca: &Path) -> Self {
        self.upstream_tls_ca = Some(ca.to_path_buf());
        self
    }

    /// Sets how the upstream password is passed.
    pub fn password(mut self, password: PasswordSource) -> Self {
        self.password = password;
        self
    }

    /// Sets `buffer_bytes_max`.
    pub fn buffer_bytes_max(mut self, bytes: u64) -> Self {
        self.buffer_bytes_max = Some(bytes);
        self
    }

    /// Appends a raw TOML line to the table.
    pub fn extra_line(mut self, line: &str) -> Self {
        self.extra.push_str(line);
        self.extra.push('\n');
        self
    }

    /// `default_action`: what policy does when no rule matches.
    pub fn default_action(self, action: &str) -> Self {
        self.extra_line(&format!("default_action = {action:?}"))
    }
}

/// The whole configuration file, minus the ports the harness allocates.
#[derive(Debug, Clone)]
pub struct CustosConfig {
    /// `server.workers` as a TOML value (`"auto"` or a number); unset when `None`.
    pub workers: Option<String>,
    /// `server.shutdown_grace_ms`.
    pub shutdown_grace_ms: Option<u64>,
    /// `server.log_format`.
    pub log_format: Option<String>,
    /// The targets, in file order.
    pub targets: Vec<TargetConfig>,
    /// Raw TOML lines appended to `[server]`.
    pub server_extra: String,
    /// Raw TOML sections (such as `[identity]`) written before the targets.
    pub sections: String,
    /// `[[rule]]` tables, written after the targets.
    pub rules: String,
}

impl CustosConfig {
    /// One Redis target named `cache` in front of `upstream`, two workers (so
    /// connections spread over more than one shard).
    pub fn redis(upstream: &RedisServer) -> Self {
        CustosConfig {
            workers: Some("2".into()),
            shutdown_grace_ms: None,
            log_format: None,
            targets: vec![TargetConfig::redis("cache", upstream)],
            server_extra: String::new(),
            sections: String::new(),
            rules: String::new(),
        }
    }

    /// One PostgreSQL target named `pg` in front of `upstream` (see
    /// [`TargetConfig::postgres`]), two workers.
    pub fn postgres(upstream: &PostgresServer) -> Self {
        Self::single(TargetConfig::postgres("pg", upstream))
    }

    /// `target` alone, two workers.
    pub fn single(target: TargetConfig) -> Self {
        CustosConfig {
            workers: Some("2".into()),
            shutdown_grace_ms: None,
            log_format: None,
            targets: vec![target],
            server_extra: String::new(),
            sections: String::new(),
            rules: String::new(),
        }
    }

    /// Changes the first target with `f`.
    pub fn map_target(mut self, f: impl FnOnce(TargetConfig) -> TargetConfig) -> Self {
        let first = self.targets.remove(0);
        self.targets.insert(0, f(first));
        self
    }

    fn first(&mut self) -> &mut TargetConfig {
        self.targets.first_mut().expect("at least one target")
    }

    /// Sets `buffer_bytes_max` of the first target.
    pub fn buffer_bytes_max(mut self, bytes: u64) -> Self {
        self.first().buffer_bytes_max = Some(bytes);
        self
    }

    /// Sets `pending_replies_max` of the first target.
    pub fn pending_replies_max(mut self, n: u64) -> Self {
        self.first().pending_replies_max = Some(n);
        self
    }

    /// Sets `connect_timeout_ms` of the first target.
    pub fn connect_timeout_ms(mut self, ms: u64) -> Self {
        self.first().connect_timeout_ms = Some(ms);
        self
    }

    /// Replaces the upstream password of the first target (e.g. a wrong one).
    pub fn upstream_password(mut self, password: &str) -> Self {
        self.first().password = PasswordSource::File(password.into());
        self
    }

    /// Passes the first target's password through the environment variable `var`.
    pub fn password_from_env(mut self, var: &str) -> Self {
        let value = match &self.first().password {
            PasswordSource::File(v) | PasswordSource::Env { value: v, .. } => v.clone(),
            PasswordSource::None => panic!("the first target has no password to move"),
        };
        self.first().password = PasswordSource::Env {
            var: var.into(),
            value,
        };
        self
    }

    /// Renames the first target.
    pub fn target_name(mut self, name: &str) -> Self {
        self.first().name = name.into();
        self
    }

    /// Sets `server.shutdown_grace_ms`.
    pub fn shutdown_grace_ms(mut self, ms: u64) -> Self {
        self.shutdown_grace_ms = Some(ms);
        self
    }

    /// Sets `server.workers` to a number.
    pub fn workers(mut self, n: u32) -> Self {
        self.workers = Some(n.to_string());
        self
    }

    /// Sets `server.log_format`.
    pub fn log_format(mut self, format: &str) -> Self {
        self.log_format = Some(format.into());
        self
    }

    /// Adds a raw TOML section (such as `[identity]`).
    pub fn section(mut self, toml: &str) -> Self {
        self.sections.push_str(toml);
        self
    }

    /// Adds an `[audit]` section keeping the trail in `dir`, signed with
    /// the key at `key` (created by the appliance when missing), with
    /// `extra` raw lines.
    pub fn audit(self, dir: &Path, key: &Path, extra: &str) -> Self {
        self.section(&format!(
            "\n[audit]\ndir = {:?}\nsigning_key = {:?}\nappliance_id = \"test\"\n{extra}\n",
            dir.display().to_string(),
            key.display().to_string()
        ))
    }

    /// Adds a `[[rule]]` whose keys are the TOML lines of `body`.
    pub fn rule(mut self, body: &str) -> Self {
        self.rules.push_str("\n[[rule]]\n");
        self.rules.push_str(body.trim());
        self.rules.push('\n');
        self
    }

    /// Adds a target.
    pub fn add_target(mut self, target: TargetConfig) -> Self {
        self.targets.push(target);
        self
    }

    /// Renders the configuration into `dir/custos.toml` with fresh ports,
    /// for `custos check-config`; returns the file's path.
    pub fn write_to(&self, dir: &Path) -> PathBuf {
        let ports: Vec<u16> = self.targets.iter().map(|_| free_port()).collect();
        let toml = self.render(free_port(), &ports, dir);
        let path = dir.join("custos.toml");
        std::fs::write(&path, toml).expect("write config");
        path
    }

    /// Renders the TOML file, writing password files into `dir`.
    pub fn render(&self, admin_port: u16, listen_ports: &[u16], dir: &Path) -> String {
        let mut t = String::from("[server]\n");
        if let Some(w) = &self.workers {
            let value = if w.parse::<u32>().is_ok() {
                w.clone()
            } else {
                format!("{w:?}")
            };
            let _ = writeln!(t, "workers = {value}");
        }
        let _ = writeln!(t, "admin_listen = \"127.0.0.1:{admin_port}\"");
        if let Some(ms) = self.shutdown_grace_ms {
            let _ = writeln!(t, "shutdown_grace_ms = {ms}");
        }
        if let Some(f) = &self.log_format {
            let _ = writeln!(t, "log_format = {f:?}");
        }
        t.push_str(&self.server_extra);
        t.push_str(&self.sections);
        for (i, target) in self.targets.iter().enumerate() {
            let _ = writeln!(t, "\n[[target]]");
            let _ = writeln!(t, "name = {:?}", target.name);
            let _ = writeln!(t, "protocol = {:?}", target.protocol);
            let _ = writeln!(t, "listen = \"127.0.0.1:{}\"", listen_ports[i]);
            let _ = writeln!(t, "upstream = \"127.0.0.1:{}\"", target.upstream_port);
            let _ = writeln!(t, "upstream_user = {:?}", target.upstream_user);
            match &target.password {
                PasswordSource::File(secret) => {
                    let path = dir.join(format!("secret-{i}"));
                    std::fs::write(&path, secret).expect("write password file");
                    let _ = writeln!(
                        t,
                        "upstream_password_file = {:?}",
                        path.display().to_string()
                    );
                }
                PasswordSource::Env { var, .. } => {
                    let _ = writeln!(t, "upstream_password_env = {var:?}");
                }
                PasswordSource::None => {}
            }
            let _ = writeln!(t, "auth = {:?}", target.auth);
            if let Some(b) = target.buffer_bytes_max {
                let _ = writeln!(t, "buffer_bytes_max = {b}");
            }
            if let Some(n) = target.pending_replies_max {
                let _ = writeln!(t, "pending_replies_max = {n}");
            }
            if let Some(ms) = target.connect_timeout_ms {
                let _ = writeln!(t, "connect_timeout_ms = {ms}");
            }
            if let Some(db) = &target.upstream_database {
                let _ = writeln!(t, "upstream_database = {db:?}");
            }
            for (key, path) in [
                ("tls_cert", &target.tls_cert),
                ("tls_key", &target.tls_key),
                ("upstream_tls_ca", &target.upstream_tls_ca),
            ] {
                if let Some(p) = path {
                    let _ = writeln!(t, "{key} = {:?}", p.display().to_string());
                }
            }
            if let Some(allow) = target.allow_plaintext_auth {
                let _ = writeln!(t, "allow_plaintext_auth = {allow}");
            }
            if let Some(mode) = &target.upstream_tls {
                let _ = writeln!(t, "upstream_tls = {mode:?}");
            }
            t.push_str(&target.extra);
        }
        t.push_str(&self.rules);
        t
    }
}

/// The workspace root (the folder holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .canonicalize()
        .unwrap_or_else(|_| manifest.to_path_buf())
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Path to the `custos` binary, built on first use.
///
/// `CUSTOS_BIN` overrides the path. Otherwise `cargo build -p custos --bin
/// custos` runs once per test process, into the same target folder and
/// profile as the running test (cargo does nothing when it is up to date), so
/// the tests always exercise the current source.
pub fn custos_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("CUSTOS_BIN") {
            return PathBuf::from(bin);
        }
        // The test executable lives in <target>/<profile>/deps/.
        let exe = std::env::current_exe().expect("current_exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary in <target>/<profile>/deps")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("<target>").to_path_buf();
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(workspace_root())
            .args(["build", "-p", "custos", "--bin", "custos", "--target-dir"])
            .arg(&target_dir);
        if release {
            cmd.arg("--release");
        }
        let out = run_tool(&mut cmd, None, Duration::from_secs(3600));
        out.assert_success("cargo build -p custos --bin custos");
        let bin = profile_dir.join("custos");
        assert!(bin.exists(), "{} missing after the build", bin.display());
        bin
    })
    .clone()
}

/// A running appliance.
#[derive(Debug)]
pub struct Custos {
    dir: TempDir,
    child: ChildGuard,
    admin_port: u16,
    listen: Vec<(String, u16)>,
    config_path: PathBuf,
}

impl Custos {
    /// Writes the configuration, starts `custos run` and waits until
    /// `/healthz` answers 200.
    pub fn start(config: CustosConfig) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("custos-")
            .tempdir()
            .expect("temp dir");
        let admin_port = free_port();
        let ports: Vec<u16> = config.targets.iter().map(|_| free_port()).collect();
        let toml = config.render(admin_port, &ports, dir.path());
        let config_path = dir.path().join("custos.toml");
        std::fs::write(&config_path, &toml).expect("write config");
        let log = std::fs::File::create(dir.path().join("custos.log")).expect("log file");
        let out = std::fs::File::create(dir.path().join("custos.stdout")).expect("stdout file");
        let mut cmd = Command::new(custos_binary());
        cmd.arg("run")
            .arg("--config")
            .arg(&config_path)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log);
        for target in &config.targets {
            if let PasswordSource::Env { var, value } = &target.password {
                cmd.env(var, value);
            }
        }
        let child = ChildGuard::spawn("custos", &mut cmd);
        let mut custos = Custos {
            listen: config
                .targets
                .iter()
                .map(|t| t.name.clone())
                .zip(ports)
                .collect(),
            dir,
            child,
            admin_port,
            config_path,
        };
        custos.wait_healthy(&toml);
        custos
    }

    fn wait_healthy(&mut self, toml: &str) {
        let admin = self.admin_port;
        let log_path = self.dir.path().join("custos.log");
        let child = &mut self.child;
        poll_until(SETTLE_TIMEOUT, "custos /healthz to answer 200", || {
            if let Some(status) = child.try_wait() {
                panic!(
                    "custos exited with {status} before becoming healthy\nconfig:\n{toml}\nlog:\n{}",
                    tail(
                        &std::fs::read_to_string(&log_path).unwrap_or_default(),
                        8000
                    )
                );
            }
            match http_get(admin, "/healthz") {
                Ok((200, _)) => Ok(()),
                Ok((code, body)) => Err(format!("{code} {body}")),
                Err(e) => Err(e.to_string()),
            }
        });
    }

    /// The listening port of the first target.
    pub fn port(&self) -> u16 {
        self.listen[0].1
    }

    /// The listening port of the target named `name`.
    pub fn port_of(&self, name: &str) -> u16 {
        self.listen
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no target {name}"))
            .1
    }

    /// The admin port (`/healthz`, `/metrics`).
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The configuration file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The process' temporary folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET /healthz`.
    pub fn healthz(&self) -> std::io::Result<(u16, String)> {
        http_get(self.admin_port, "/healthz")
    }

    /// A scrape of `/metrics`, panicking unless it answers 200.
    pub fn metrics(&self) -> Metrics {
        let (code, body) =
            http_get(self.admin_port, "/metrics").unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        assert_eq!(code, 200, "GET /metrics -> {code}: {body}");
        Metrics::new(body)
    }

    /// Everything the process has written to stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("custos.log")).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    /// Sends a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        self.child.signal(signal);
    }

    /// Whether the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait()
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.child.wait_timeout(timeout)
    }

    /// Resident set size in KiB (`VmRSS` from `/proc/PID/status`).
    pub fn rss_kib(&self) -> u64 {
        proc_rss_kib(self.pid()).expect("VmRSS of custos")
    }

    /// Number of open file descriptors (`/proc/PID/fd`).
    pub fn fd_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .expect("/proc/PID/fd of custos")
    }

    /// Runs `custos audit <args>`.
    pub fn audit_cli(args: &[&str]) -> ToolOutput {
        let mut cmd = Command::new(custos_binary());
        cmd.arg("audit").args(args);
        run_tool(&mut cmd, None, Duration::from_secs(120))
    }

    /// Runs `custos check-config --config path` in `cwd`.
    pub fn check_config(path: &Path, cwd: &Path) -> ToolOutput {
        let mut cmd = Command::new(custos_binary());
        cmd.arg("check-config")
            .arg("--config")
            .arg(path)
            .current_dir(cwd);
        run_tool(&mut cmd, None, Duration::from_secs(60))
    }
}

impl Drop for Custos {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- custos log (last 8000 bytes) ----\n{}\n---- end of custos log ----",
                tail(&self.log(), 8000)
            );
        }
    }
}

/// `VmRSS` of any process, in KiB.
pub fn proc_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Samples a process' RSS every 100 ms until dropped and keeps the maximum,
/// for checking that a large transfer streams through bounded buffers.
#[derive(Debug)]
pub struct RssWatch {
    max_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl RssWatch {
    /// Starts sampling process `pid`.
    pub fn start(pid: u32) -> Self {
        let max_kib = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, s) = (max_kib.clone(), stop.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = proc_rss_kib(pid) {
                    m.fetch_max(rss, Ordering::Relaxed);
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        RssWatch {
            max_kib,
            stop,
            thread: Some(thread),
        }
    }

    /// The largest RSS seen so far, in KiB.
    pub fn max_kib(&self) -> u64 {
        self.max_kib.load(Ordering::Relaxed)
    }

    /// Stops sampling and asserts that `custos` grew by less than
    /// `limit_mib` over `baseline_kib` at any point while watched, for
    /// `what` (a transfer that must stream through bounded buffers).
    pub fn assert_growth_below(
        self,
        custos: &Custos,
        baseline_kib: u64,
        limit_mib: u64,
        what: &str,
    ) {
        let after_kib = custos.rss_kib();
        let max_kib = self.max_kib().max(after_kib);
        drop(self);
        let growth_mib = max_kib.saturating_sub(baseline_kib) / 1024;
        eprintln!(
            "custos RSS: baseline {baseline_kib} KiB, max {max_kib} KiB, after {after_kib} KiB"
        );
        assert!(
            growth_mib < limit_mib,
            "custos RSS grew by {growth_mib} MiB (baseline {baseline_kib} KiB, max {max_kib} KiB) \
             for {what}"
        );
    }
}

impl Drop for RssWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
