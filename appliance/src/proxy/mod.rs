//! The protocol proxies and what they share.
//!
//! A session runs through the same phases for every protocol: accept ▸
//! handshake ▸ authenticate ▸ connect upstream ▸ loop (parse ▸ classify ▸
//! forward ▸ reply). The protocol modules differ only where the protocol
//! does; connection buffers and closing live here.

pub mod auth;
pub mod buffer;
pub mod postgres;
pub mod redis;
pub mod stream;
pub mod upstream;

use std::time::Duration;

use monoio::io::{AsyncReadRent, AsyncWriteRent};

/// How long a closing connection waits for the client to close its side,
/// so that the last reply (often an error) is not destroyed by a reset.
pub const LINGER: Duration = Duration::from_secs(1);

/// Closes a client connection so that what was written last arrives: send
/// FIN, then read and discard until the client closes or [`LINGER`] passes.
/// Closing with unread input would make the kernel send a reset, and a
/// reset can destroy the reply still in flight.
pub async fn lingering_close<R: AsyncReadRent, W: AsyncWriteRent>(mut r: R, mut w: W) {
    let _ = w.shutdown().await;
    let drain = async {
        let mut buf = Vec::with_capacity(1024);
        loop {
            let (res, b) = r.read(buf).await;
            buf = b;
            buf.clear();
            match res {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    let _ = monoio::time::timeout(LINGER, drain).await;
}
