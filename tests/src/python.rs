//! Python drivers (psycopg 3, redis-py) in a virtual environment made once.
//!
//! The environment lives at `<workspace>/target/py-venv` and is reused across
//! test runs; a marker file records what was installed, so changing
//! [`REQUIREMENTS`] rebuilds it. Test binaries run in parallel, so building
//! it happens under an exclusive lock on `<workspace>/target/py-venv.lock`.
//! A machine without `python3` or its `venv` module fails the tests that need
//! it with a message saying so: nothing is skipped silently.

use crate::custos::workspace_root;
use crate::process::{ToolOutput, run_tool};
use crate::tools::{TOOL_TIMEOUT, scrub_pg_env};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

/// What `pip` installs into the environment.
pub const REQUIREMENTS: &[&str] = &["psycopg[binary]==3.3.*", "redis"];

const MARKER: &str = "custos-requirements.txt";

/// The environment's folder.
pub fn venv_dir() -> PathBuf {
    workspace_root().join("target").join("py-venv")
}

/// The environment's interpreter, creating the environment on first use.
pub fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(ensure_venv).clone()
}

fn ensure_venv() -> PathBuf {
    let dir = venv_dir();
    let parent = dir.parent().expect("venv folder has a parent");
    std::fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(parent.join("py-venv.lock"))
        .expect("open py-venv.lock");
    // SAFETY: flock(2) on a descriptor this function owns for the whole
    // call; the lock is released when `lock` is closed at the end.
    let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(
        rc,
        0,
        "flock py-venv.lock: {}",
        std::io::Error::last_os_error()
    );

    let wanted = REQUIREMENTS.join("\n");
    let python = dir.join("bin").join("python");
    let ready = std::fs::read_to_string(dir.join(MARKER)).is_ok_and(|m| m == wanted);
    if !(ready && python.is_file()) {
        build_venv(&dir, &wanted);
    }
    drop(lock);
    python
}

fn build_venv(dir: &Path, wanted: &str) {
    if dir.exists() {
        std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("rm -r {}: {e}", dir.display()));
    }
    let host_python = std::env::var_os("CUSTOS_PYTHON").unwrap_or_else(|| "python3".into());
    let mut venv = Command::new(&host_python);
    venv.args(["-m", "venv"]).arg(dir);
    let spawned = venv.output();
    match spawned {
        Err(e) => panic!(
            "cannot run {host_python:?} ({e}): the PostgreSQL driver tests need python3 with \
             the venv module (Debian: python3-venv python3-pip; see .ci/run)"
        ),
        Ok(out) if !out.status.success() => panic!(
            "{host_python:?} -m venv {} failed ({}): install python3-venv (see .ci/run)\n{}{}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Ok(_) => {}
    }
    let mut pip = Command::new(dir.join("bin").join("python"));
    pip.args([
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "--no-input",
    ])
    .args(REQUIREMENTS);
    run_tool(&mut pip, None, Duration::from_secs(900))
        .assert_success(&format!("pip install {}", REQUIREMENTS.join(" ")));
    std::fs::write(dir.join(MARKER), wanted).expect("write the venv marker");
}

/// Runs `script` (Python source) with `python -c`, `args` as `sys.argv[1:]`
/// and `env` added to a scrubbed environment (no inherited `PG*`).
pub fn run_python(script: &str, args: &[&str], env: &[(&str, &str)]) -> ToolOutput {
    let mut cmd = Command::new(python());
    scrub_pg_env(&mut cmd);
    cmd.arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        .env("PYTHONDONTWRITEBYTECODE", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_tool(&mut cmd, None, TOOL_TIMEOUT)
}

/// [`run_python`], panicking with both streams unless it exits 0; returns
/// stdout.
pub fn python_ok(what: &str, script: &str, args: &[&str]) -> String {
    let out = run_python(script, args, &[]);
    out.assert_success(what);
    out.stdout
}
