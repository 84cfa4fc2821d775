//! A connection's two directions, in clear or under TLS, as independent
//! halves that a session's two loops own.
//!
//! In clear, reads fill the session's [`ConnBuf`] and writes hand the
//! caller's buffer to the kernel, as everywhere else in the data plane.
//! Under TLS both halves share the connection's TLS state (one thread, so a
//! `RefCell` that is never borrowed across an await): the read half feeds
//! ciphertext in and takes plaintext out into the same [`ConnBuf`], the write
//! half encrypts into a buffer of its own and writes that. TLS records the
//! read half makes the connection owe its peer (a key update answer) go out
//! with the next write.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use monoio::buf::IoBuf;
use monoio::io::{
    AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, OwnedReadHalf, OwnedWriteHalf, Splitable,
};
use monoio::net::TcpStream;

use super::LINGER;
use super::buffer::ConnBuf;

/// Ciphertext read per system call; a TLS record is at most 16 KiB plus
/// its header and tag.
const CIPHER_READ_BYTES: usize = 18 * 1024;
/// Plaintext taken from the TLS state per call: one record's worth.
const TLS_RECORD_BYTES: usize = 16 * 1024;

type Tls = Rc<RefCell<rustls::Connection>>;

/// The receiving half of a connection.
pub struct StreamRead {
    tcp: OwnedReadHalf<TcpStream>,
    tls: Option<TlsRead>,
}

struct TlsRead {
    conn: Tls,
    /// Ciphertext read but not yet accepted by the TLS state.
    cipher: Vec<u8>,
    fed: usize,
}

/// The sending half of a connection.
pub struct StreamWrite {
    tcp: OwnedWriteHalf<TcpStream>,
    tls: Option<TlsWrite>,
}

struct TlsWrite {
    conn: Tls,
    /// Ciphertext waiting for the kernel; reused.
    out: Vec<u8>,
}

/// Splits a connection into its halves; `tls` is the connection's TLS state
/// after a completed handshake.
pub fn split(tcp: TcpStream, tls: Option<rustls::Connection>) -> (StreamRead, StreamWrite) {
    let (r, w) = tcp.into_split();
    match tls {
        None => (
            StreamRead { tcp: r, tls: None },
            StreamWrite { tcp: w, tls: None },
        ),
        Some(conn) => {
            let conn = Rc::new(RefCell::new(conn));
            (
                StreamRead {
                    tcp: r,
                    tls: Some(TlsRead {
                        conn: conn.clone(),
                        cipher: Vec::new(),
                        fed: 0,
                    }),
                },
                StreamWrite {
                    tcp: w,
                    tls: Some(TlsWrite {
                        conn,
                        out: Vec::new(),
                    }),
                },
            )
        }
    }
}

impl StreamRead {
    /// Whether the connection is under TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads into the free tail of `buf` (the caller made room). `Ok(0)` is
    /// the end of the stream. Cancelling the future loses the bytes of the
    /// read in flight, which callers only do when the connection is ending.
    pub async fn read(&mut self, buf: &mut ConnBuf) -> io::Result<usize> {
        let Some(t) = &mut self.tls else {
            let (res, slice) = self.tcp.read(buf.spare()).await;
            let n = *res.as_ref().unwrap_or(&0);
            buf.restore(slice, n);
            return res;
        };
        loop {
            // Plaintext the TLS state already holds.
            match buf.fill_with(TLS_RECORD_BYTES, |dst| {
                t.conn.borrow_mut().reader().read(dst)
            }) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // Ciphertext already read.
            if t.fed < t.cipher.len() {
                let mut conn = t.conn.borrow_mut();
                let mut rest = &t.cipher[t.fed..];
                let n = conn.read_tls(&mut rest)?;
                t.fed += n;
                conn.process_new_packets().map_err(io::Error::other)?;
                continue;
            }
            // More from the kernel.
            let mut cipher = std::mem::take(&mut t.cipher);
            cipher.clear();
            cipher.reserve(CIPHER_READ_BYTES);
            t.fed = 0;
            let (res, cipher) = self.tcp.read(cipher).await;
            t.cipher = cipher;
            if res? == 0 {
                // The peer closed without a close_notify: the end of the
                // stream all the same for a protocol with its own framing.
                return Ok(0);
            }
        }
    }

    /// Reads until `buf` holds at least `want` bytes. `Ok(false)` when the
    /// stream ended first or `buf` cannot grow to `want`.
    pub async fn read_at_least(&mut self, buf: &mut ConnBuf, want: usize) -> io::Result<bool> {
        while buf.bytes().len() < want {
            if !buf.make_room() {
                return Ok(false);
            }
            if self.read(buf).await? == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

impl StreamWrite {
    /// Writes `buf[from..to]` whole and gives the buffer back.
    pub async fn write_range(
        &mut self,
        buf: Vec<u8>,
        from: usize,
        to: usize,
    ) -> (io::Result<()>, Vec<u8>) {
        if from == to {
            return (Ok(()), buf);
        }
        match &mut self.tls {
            None => {
                let (res, slice) = self.tcp.write_all(buf.slice(from..to)).await;
                (res.map(drop), slice.into_inner())
            }
            Some(t) => {
                let res = encrypt_and_send(&mut self.tcp, t, &buf[from..to]).await;
                (res, buf)
            }
        }
    }

    /// Writes all of `buf` and gives it back.
    pub async fn write_vec(&mut self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let len = buf.len();
        self.write_range(buf, 0, len).await
    }

    /// Ends the sending direction: TLS close_notify, then FIN.
    pub async fn shutdown(&mut self) -> io::Result<()> {
        if let Some(t) = &mut self.tls {
            t.conn.borrow_mut().send_close_notify();
            let _ = flush_tls(&mut self.tcp, t).await;
        }
        self.tcp.shutdown().await
    }
}

async fn encrypt_and_send(
    tcp: &mut OwnedWriteHalf<TcpStream>,
    t: &mut TlsWrite,
    mut data: &[u8],
) -> io::Result<()> {
    while !data.is_empty() {
        let n = t.conn.borrow_mut().writer().write(data)?;
        data = &data[n..];
        flush_tls(tcp, t).await?;
    }
    Ok(())
}

/// Writes out every TLS record the connection owes its peer.
async fn flush_tls(tcp: &mut OwnedWriteHalf<TcpStream>, t: &mut TlsWrite) -> io::Result<()> {
    loop {
        let mut out = std::mem::take(&mut t.out);
        out.clear();
        {
            let mut conn = t.conn.borrow_mut();
            while conn.wants_write() {
                conn.write_tls(&mut out)?;
            }
        }
        if out.is_empty() {
            t.out = out;
            return Ok(());
        }
        let (res, out) = tcp.write_all(out).await;
        t.out = out;
        res?;
    }
}

/// Runs a TLS handshake on `tcp` to completion, `timeout` bounding it.
/// `received` holds bytes of the handshake already read from the stream (a
/// client that starts TLS without asking first).
pub async fn handshake(
    tcp: &mut TcpStream,
    conn: &mut rustls::Connection,
    received: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    match monoio::time::timeout(timeout, handshake_inner(tcp, conn, received)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "TLS handshake timed out",
        )),
    }
}

async fn handshake_inner(
    tcp: &mut TcpStream,
    conn: &mut rustls::Connection,
    mut received: &[u8],
) -> io::Result<()> {
    let mut cipher: Vec<u8> = Vec::with_capacity(CIPHER_READ_BYTES);
    let mut fed = 0;
    loop {
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out)?;
        }
        if !out.is_empty() {
            let (res, _) = tcp.write_all(out).await;
            res?;
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        let mut state_error = None;
        if !received.is_empty() {
            conn.read_tls(&mut received)?;
            if let Err(e) = conn.process_new_packets() {
                state_error = Some(e);
            }
        } else if fed < cipher.len() {
            let mut rest = &cipher[fed..];
            fed += conn.read_tls(&mut rest)?;
            if let Err(e) = conn.process_new_packets() {
                state_error = Some(e);
            }
        } else {
            cipher.clear();
            fed = 0;
            let (res, c) = tcp.read(cipher).await;
            cipher = c;
            if res? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                ));
            }
        }
        if let Some(e) = state_error {
            // Send the alert that says why, then give up.
            let mut out = Vec::new();
            while conn.wants_write() {
                if conn.write_tls(&mut out).is_err() {
                    break;
                }
            }
            if !out.is_empty() {
                let _ = tcp.write_all(out).await;
            }
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
    }
}

/// A server-side TLS state for a client connection.
pub fn accept_state(config: &Arc<rustls::ServerConfig>) -> io::Result<rustls::Connection> {
    rustls::ServerConnection::new(config.clone())
        .map(rustls::Connection::Server)
        .map_err(io::Error::other)
}

/// A client-side TLS state for a connection to a store.
pub fn connect_state(
    config: &Arc<rustls::ClientConfig>,
    name: rustls_pki_types::ServerName<'static>,
) -> io::Result<rustls::Connection> {
    rustls::ClientConnection::new(config.clone(), name)
        .map(rustls::Connection::Client)
        .map_err(io::Error::other)
}

/// Closes a connection so that what was written last arrives: TLS
/// close_notify and FIN, then read and discard until the peer closes or
/// [`LINGER`] passes (closing with unread input would send a reset, which
/// can destroy the reply still in flight).
pub async fn lingering_close(mut r: StreamRead, mut w: StreamWrite) {
    let _ = w.shutdown().await;
    let drain = async {
        let mut buf = Vec::with_capacity(1024);
        loop {
            let (res, b) = r.tcp.read(buf).await;
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
