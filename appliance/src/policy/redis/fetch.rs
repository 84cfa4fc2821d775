//! Asking a Redis store for its command table, as the appliance (its own
//! connection code and credential).

use std::sync::Arc;

use custos_parsers::resp::{self, Limits};
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use tracing::{info, warn};

use super::{CommandTable, TableSource};
use crate::config::{Config, Protocol, Target};

/// Largest `COMMAND` reply read (Redis 7 with every module answers well
/// under 1 MiB).
pub const REPLY_BYTES_MAX: usize = 16 * 1024 * 1024;

const COMMAND: &[u8] = b"*1\r\n$7\r\nCOMMAND\r\n";

/// Connects to `target`'s store and reads its command table.
pub async fn fetch(target: &Target) -> Result<CommandTable, String> {
    let auth = crate::proxy::redis::upstream::auth_command(target);
    let mut stream = crate::proxy::redis::upstream::connect(target, auth.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    let read = async {
        let (res, _) = stream.write_all(COMMAND.to_vec()).await;
        res.map_err(|e| e.to_string())?;
        let mut buf: Vec<u8> = Vec::with_capacity(128 * 1024);
        loop {
            match resp::check(&buf, &Limits::reply()) {
                Ok(Some(len)) => {
                    buf.truncate(len);
                    return Ok(buf);
                }
                Ok(None) => {}
                Err(e) => return Err(format!("malformed reply to COMMAND: {e}")),
            }
            if buf.len() >= REPLY_BYTES_MAX {
                return Err(format!(
                    "reply to COMMAND larger than {REPLY_BYTES_MAX} bytes"
                ));
            }
            if buf.len() == buf.capacity() {
                buf.reserve(buf.len());
            }
            let len = buf.len();
            let (res, slice) = stream
                .read(monoio::buf::IoBufMut::slice_mut(buf, len..))
                .await;
            buf = slice.into_inner();
            match res {
                Ok(0) => return Err("the store closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let deadline = std::time::Duration::from_millis(target.connect_timeout_ms);
    let reply = monoio::time::timeout(deadline, read).await.map_err(|_| {
        format!(
            "no reply to COMMAND within {} ms",
            target.connect_timeout_ms
        )
    })??;
    CommandTable::from_reply(&reply, TableSource::Upstream).map_err(|e| e.to_string())
}

/// The command table of every Redis target of `config` (by index), each
/// asked from its store; a store that cannot be asked gets `None` (the
/// built-in table) and a warning. Runs its own short-lived runtime, so it
/// may be called from any thread that is not a shard.
pub fn fetch_all(config: &Config) -> Vec<Option<Arc<CommandTable>>> {
    let rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build();
    let mut rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            warn!(error = %e, "cannot start a runtime to read the stores' command tables; using the built-in table");
            return vec![None; config.targets.len()];
        }
    };
    rt.block_on(async {
        let mut out = Vec::with_capacity(config.targets.len());
        for t in &config.targets {
            if t.protocol != Protocol::Redis {
                out.push(None);
                continue;
            }
            match fetch(t).await {
                Ok(table) => {
                    info!(target = %t.name, commands = table.len(), "command table read from the store");
                    out.push(Some(Arc::new(table)));
                }
                Err(e) => {
                    warn!(target = %t.name, error = %e, "cannot read the store's command table; using the built-in Redis 7.0 table (module commands are unknown to policy until a reload)");
                    out.push(None);
                }
            }
        }
        out
    })
}
