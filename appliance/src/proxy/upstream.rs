//! What can go wrong opening a store connection, whatever the protocol.

use std::future::Future;
use std::time::Duration;

use crate::config::Target;

/// Why the store could not be used for a session.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting failed, timed out, or the connection broke.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The store's address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// TLS towards the store failed (refused, or a certificate that does
    /// not verify).
    #[error("TLS with {addr} failed: {reason}")]
    Tls {
        /// The store's address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// The store refused the appliance's credential.
    #[error("upstream {addr} refused the credential of user {user:?}: {message}")]
    Credential {
        /// The store's address.
        addr: String,
        /// The appliance's user at the store.
        user: String,
        /// The store's own text (it never repeats the password).
        message: String,
    },
    /// The store refused the session for a reason of the client's (an
    /// unknown database, too many connections): its ErrorResponse, to be
    /// relayed as it is.
    #[error("upstream {addr} refused the session: {message}")]
    Refused {
        /// The store's address.
        addr: String,
        /// The store's message, for the log.
        message: String,
        /// The whole ErrorResponse message.
        error: Vec<u8>,
    },
    /// The store said something the protocol does not allow here.
    #[error("upstream {addr} broke the protocol while the appliance logged in: {what}")]
    Malformed {
        /// The store's address.
        addr: String,
        /// What was wrong.
        what: String,
    },
}

/// Runs `connect` (connecting and logging in) within the target's
/// `connect_timeout_ms`, as a whole.
pub async fn within_connect_timeout<T>(
    target: &Target,
    connect: impl Future<Output = Result<T, UpstreamError>>,
) -> Result<T, UpstreamError> {
    let deadline = Duration::from_millis(target.connect_timeout_ms);
    match monoio::time::timeout(deadline, connect).await {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Connect {
            addr: target.upstream.clone(),
            reason: format!("timed out after {} ms", target.connect_timeout_ms),
        }),
    }
}
