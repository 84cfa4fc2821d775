//! The stock Redis command-line clients, pointed at a port.

use crate::process::{ToolOutput, run_tool};
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
