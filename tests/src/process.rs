//! Child processes that die with their guard, tools run with a deadline, and
//! polling helpers.
//!
//! Tests never sleep for a fixed time and then assert: they poll a condition
//! until a generous deadline, so a slow machine makes a test slower, not red.

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    child: Child,
    name: String,
    exit: Option<ExitStatus>,
}

impl ChildGuard {
    /// Spawns `cmd`, naming the process `name` in panics.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        ChildGuard {
            child,
            name: name.to_string(),
            exit: None,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self
                .child
                .try_wait()
                .unwrap_or_else(|e| panic!("wait for {}: {e}", self.name));
        }
        self.exit
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. `libc::SIGTERM`) to the process.
    pub fn signal(&self, signal: i32) {
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our
        // own child, not yet reaped (reaping happens only through `try_wait`
        // and `kill`, after which this is a harmless ESRCH).
        let rc = unsafe { libc::kill(pid, signal) };
        if rc != 0 && self.exit.is_none() {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                panic!("kill({pid}, {signal}) for {}: {err}", self.name);
            }
        }
    }

    /// Kills the process (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            self.exit = self.child.wait().ok();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// What a finished tool printed.
#[derive(Debug)]
pub struct ToolOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl ToolOutput {
    /// Panics with both streams unless the tool exited 0.
    pub fn assert_success(&self, what: &str) -> &Self {
        assert!(
            self.status.success(),
            "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            tail(&self.stdout, 4000),
            tail(&self.stderr, 4000)
        );
        self
    }
}

/// The last `max` bytes of `s` (on a char boundary), for failure messages.
pub fn tail(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Runs `cmd` to completion, feeding it `stdin`, killing it and panicking if
/// it runs longer than `timeout`.
pub fn run_tool(cmd: &mut Command, stdin: Option<Vec<u8>>, timeout: Duration) -> ToolOutput {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let name = format!("{cmd:?}");
    let mut guard = ChildGuard::spawn(&name, cmd);
    // Writing and reading happen on their own threads so a tool that fills a
    // pipe while we are still feeding it cannot deadlock the test.
    let writer = guard.child.stdin.take().map(|mut pipe| {
        let data = stdin.unwrap_or_default();
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        })
    });
    let out = read_pipe(guard.child.stdout.take());
    let err = read_pipe(guard.child.stderr.take());
    let status = guard.wait_timeout(timeout);
    let Some(status) = status else {
        guard.kill();
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        panic!(
            "{name} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
            tail(&stdout, 4000),
            tail(&stderr, 4000)
        );
    };
    if let Some(w) = writer {
        let _ = w.join();
    }
    ToolOutput {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

fn read_pipe<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Polls `f` every 50 ms until it returns `Ok`, panicking with `what` and
/// the last `Err` it gave once `timeout` has passed.
pub fn poll_until<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last state: {last}")
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Polls `f` until it returns true; see [`poll_until`].
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    poll_until(timeout, what, || {
        if f() {
            Ok(())
        } else {
            Err("condition false".to_string())
        }
    })
}
