//! A fault-injecting TCP relay between the appliance and a real store.
//!
//! It forwards bytes both ways but can hand them on in tiny pieces (every
//! read the other side does is then a short read, so frames arrive split at
//! arbitrary points) and can cut a connection after a given number of bytes
//! from the store (the store dying in the middle of a reply). The store
//! itself is real; only the path to it misbehaves.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

/// How the relay misbehaves.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    /// Largest piece written at a time, each in its own write.
    pub chunk_bytes: usize,
    /// Cut both directions after this many bytes from the store, if set.
    pub cut_after_upstream_bytes: Option<usize>,
}

/// A running relay; stops accepting when dropped.
pub struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Starts relaying from a free loopback port to 127.0.0.1:`upstream_port`.
    pub fn start(upstream_port: u16, faults: Faults) -> Relay {
        let listener = TcpListener::bind(("127.0.0.1", 0)).expect("bind relay");
        let port = listener.local_addr().expect("relay addr").port();
        listener
            .set_nonblocking(true)
            .expect("nonblocking relay listener");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((down, _)) => {
                        let _ = down.set_nonblocking(false);
                        let Ok(up) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                            continue;
                        };
                        let _ = up.set_nodelay(true);
                        let _ = down.set_nodelay(true);
                        let (d2, u2) = (
                            down.try_clone().expect("clone"),
                            up.try_clone().expect("clone"),
                        );
                        thread::spawn(move || pump(down, up, faults.chunk_bytes, None));
                        thread::spawn(move || {
                            pump(u2, d2, faults.chunk_bytes, faults.cut_after_upstream_bytes)
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Relay { port, stop }
    }

    /// The port the appliance should use as its upstream.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, chunk: usize, cut_after: Option<usize>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut data = &buf[..n];
        if let Some(limit) = cut_after {
            let room = limit.saturating_sub(total);
            if data.len() >= room {
                let _ = to.write_all(&data[..room]);
                break;
            }
        }
        total += n;
        while !data.is_empty() {
            let k = chunk.max(1).min(data.len());
            if to.write_all(&data[..k]).is_err() {
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            data = &data[k..];
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
