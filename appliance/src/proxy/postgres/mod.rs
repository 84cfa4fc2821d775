//! The PostgreSQL proxy.
//!
//! A session goes through the phases every proxy shares:
//!
//! 1. **Handshake** ([`startup`]): SSLRequest answered with TLS when the
//!    target has a certificate (or TLS straight away, for clients that
//!    negotiate it directly with ALPN `postgresql`), GSSENCRequest declined,
//!    CancelRequest looked up and passed to the right store connection, and
//!    the StartupMessage read.
//! 2. **Authentication**: with `auth = "token"` the appliance asks for a
//!    cleartext password (only ever over TLS, unless the target allows
//!    plaintext) and verifies it as an OIDC token; under `auth = "none"` the
//!    client is the anonymous identity.
//! 3. **Store connection** ([`upstream`]): a connection of the session's
//!    own, logged in with the appliance's credential; the client sees the
//!    store's parameters and a cancel key issued by the appliance
//!    ([`cancel`]).
//! 4. **Proxying** ([`session`]): messages are forwarded whole from the
//!    connection's buffer, or streamed when larger than it (COPY data, large
//!    rows), in both directions at once, so pipelined extended-protocol
//!    batches, COPY and asynchronous notifications pass unchanged.

pub mod cancel;
pub mod scram;
mod session;
mod startup;
pub mod upstream;

pub use session::serve;

/// Compares two byte strings in time that depends only on their lengths,
/// for secrets a client or store presents.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// SQLSTATE codes the appliance answers with itself.
pub mod sqlstate {
    /// `protocol_violation`: malformed input.
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// `connection_failure`: the store is unreachable or went away.
    pub const CONNECTION_FAILURE: &str = "08006";
    /// `invalid_authorization_specification`: no user, or TLS required.
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// `invalid_password`: the token was refused.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// `feature_not_supported`: a protocol version or connection kind the
    /// appliance does not carry.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// `insufficient_privilege`.
    pub const INSUFFICIENT_PRIVILEGE: &str = "42501";
    /// `admin_shutdown`: the appliance is stopping.
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// `io_error`: the audit trail cannot be written (`fail_closed`).
    pub const AUDIT_UNAVAILABLE: &str = "58030";
}
