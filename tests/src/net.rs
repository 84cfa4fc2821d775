//! Loopback sockets: free ports, a raw RESP connection, a minimal HTTP GET.

use crate::resp::{self, Reply};
use std::collections::HashSet;
use std::io::{self, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ports already handed out by this process; the kernel may give the same
/// ephemeral port twice once the probing socket is closed.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A port on 127.0.0.1 that was free a moment ago and that this process has
/// not handed out before.
pub fn free_port() -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        let mut seen = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if seen.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// A client connection that speaks RESP byte by byte, for the cases a driver
/// would refuse to produce (malformed frames, huge values, abrupt closes).
#[derive(Debug)]
pub struct RawConn {
    reader: BufReader<TcpStream>,
}

/// How long a raw connection waits for one reply by default.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(60);

impl RawConn {
    /// Connects to 127.0.0.1:`port`.
    pub fn connect(port: u16) -> io::Result<Self> {
        let stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
        Ok(RawConn {
            reader: BufReader::with_capacity(64 * 1024, stream),
        })
    }

    /// Connects, panicking on failure.
    pub fn open(port: u16) -> Self {
        Self::connect(port).unwrap_or_else(|e| panic!("connect to 127.0.0.1:{port}: {e}"))
    }

    /// The underlying socket.
    pub fn stream(&self) -> &TcpStream {
        self.reader.get_ref()
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(bytes)
    }

    /// Reads one reply.
    pub fn read(&mut self) -> io::Result<Reply> {
        resp::read_reply(&mut self.reader)
    }

    /// Sends a command and reads its reply, panicking on I/O errors.
    pub fn cmd(&mut self, args: &[&str]) -> Reply {
        self.send(&resp::encode_str(args))
            .unwrap_or_else(|e| panic!("send {args:?}: {e}"));
        self.read()
            .unwrap_or_else(|e| panic!("reply to {args:?}: {e}"))
    }

    /// Direct access to the buffered reader (for streaming large replies).
    pub fn reader(&mut self) -> &mut BufReader<TcpStream> {
        &mut self.reader
    }

    /// Waits up to `timeout` for the peer to close the connection. Returns
    /// `Ok(())` on EOF or reset, `Err` with what happened otherwise (data
    /// arrived, or the connection stayed open).
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<(), String> {
        wait_closed(&mut self.reader, timeout, REPLY_TIMEOUT)
    }

    /// Closes the write half (the server sees EOF after what was sent).
    pub fn shutdown_write(&self) {
        let _ = self.reader.get_ref().shutdown(Shutdown::Write);
    }
}

/// Waits up to `timeout` for the peer of `reader` to close the connection,
/// then restores `read_timeout`. Returns `Ok(())` on EOF or reset, `Err`
/// with what happened otherwise (data arrived, or the connection stayed
/// open). Shared by the RESP and PostgreSQL raw connections.
pub fn wait_closed(
    reader: &mut BufReader<TcpStream>,
    timeout: Duration,
    read_timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let _ = reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 4096];
    let result = loop {
        if !reader.buffer().is_empty() {
            let extra = String::from_utf8_lossy(reader.buffer()).into_owned();
            break Err(format!("unexpected data before close: {extra:?}"));
        }
        match reader.read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                break Err(format!(
                    "unexpected data before close: {:?}",
                    String::from_utf8_lossy(&buf[..n])
                ));
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                ) =>
            {
                break Ok(());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if Instant::now() >= deadline {
                    break Err(format!("connection still open after {timeout:?}"));
                }
            }
            Err(e) => break Err(format!("unexpected error: {e}")),
        }
    };
    let _ = reader.get_ref().set_read_timeout(Some(read_timeout));
    result
}

/// `GET path` on 127.0.0.1:`port` over plain HTTP/1.1; returns the status code
/// and the body. Handles both Content-Length and chunked bodies.
pub fn http_get(port: u16, path: &str) -> io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.set_write_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no end of headers"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status code"))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size =
            usize::from_str_radix(size.split(';').next().unwrap_or("0").trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].strip_prefix("\r\n").unwrap_or(&rest[size..]);
    }
    out
}
