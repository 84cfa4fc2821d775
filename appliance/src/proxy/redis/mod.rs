//! The Redis proxy: RESP2 and RESP3 clients, unchanged, in front of a store
//! that only ever sees the appliance's own credential.
//!
//! A session is two loops on one shard, joined in one task:
//!
//! - the client side reads commands, classifies each (one look at the
//!   command name), records what reply it expects in the [`pending`] FIFO,
//!   and forwards whatever arrived in one read to the store in one write,
//!   straight from the read buffer;
//! - the upstream side reads replies, finds frame boundaries with a
//!   constant-memory scanner, matches each reply to the oldest pending
//!   command (pub/sub deliveries and RESP3 pushes are told apart and pass
//!   through), and forwards them, again straight from its read buffer.
//!
//! Values larger than the buffer bound stream through in pieces. The few
//! commands that change the connection itself (AUTH, HELLO, RESET, QUIT,
//! the subscribe family) are tracked; the ones whose replies a proxy cannot
//! match (MONITOR, CLIENT REPLY, SYNC) are refused with a clear error.

mod auth;
pub mod commands;
pub mod pending;
mod session;
pub mod shared;
pub mod upstream;

pub use session::serve;
