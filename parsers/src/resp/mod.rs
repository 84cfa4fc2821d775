//! RESP2 and RESP3, the Redis serialization protocol.
//!
//! Four entry points, from cheapest to richest:
//!
//! - [`Scanner`]: resumable frame-boundary tracking with constant memory.
//!   The proxy's hot path uses it to know where each top-level frame ends
//!   while payload bytes stream through, so a 500 MiB value never has to be
//!   buffered whole.
//! - [`check`]: is a whole frame buffered, and how long is it? No allocation.
//! - [`command_head`]: the first few arguments of a client command (name,
//!   subcommand, first key) as views, without allocation; inline commands
//!   are recognised and split by [`split_inline`].
//! - [`parse`]: a full [`Frame`] tree of views, for replies the appliance
//!   reads itself (upstream handshakes) and for tests.
//!
//! [`encode`] writes the frames the appliance produces itself.
//!
//! Every limit is in [`Limits`] and is checked before anything is allocated.

mod command;
pub mod encode;
mod error;
mod frame;
mod limits;
mod reader;
mod scanner;
#[cfg(test)]
mod testutil;

pub use command::{
    CommandHead, HEAD_ARG_BYTES_MAX, HEAD_ARGS, HeadStatus, command_head, split_inline,
};
pub use error::Error;
pub use frame::{Frame, check, length_line, parse};
pub use limits::Limits;
pub use scanner::{Scan, Scanner};
