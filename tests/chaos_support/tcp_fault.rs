//! A fault-injecting TCP proxy on a loopback port: every connection to it is relayed to one upstream
//! address, subject to a [`TcpMode`] that a test can change at any moment. A change applies to the
//! connections already open as well as to new ones, so a partition cuts live keep-alive connections
//! too — as a real one does.
//!
//! - `Pass`: bytes flow both ways unchanged.
//! - `Blackhole`: connections are accepted (or kept) but nothing is forwarded or answered; what the
//!   client sends is read and discarded, so it waits for its own timeout — a dropped-packet partition.
//! - `Reset`: every connection is closed with a TCP RST (linger 0) — an active reject.
//! - `Delay(d)`: each chunk waits `d` before it is forwarded, in both directions.
//! - `Truncate(n)`: at most `n` bytes of each upstream answer reach the client, then both sides are
//!   reset — a connection that dies mid-response.
//!
//! Counters say how many connections each mode handled, so a test can tell a fault was exercised.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does to traffic right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpMode {
    Pass,
    Blackhole,
    Reset,
    Delay(Duration),
    Truncate(usize),
}

/// A running proxy; it stops when the runtime that spawned it shuts down.
pub struct TcpFault {
    pub port: u16,
    mode: watch::Sender<TcpMode>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicU64>,
}

impl TcpFault {
    /// Listens on a fresh loopback port and relays to `upstream`, starting in `Pass`.
    pub fn start(rt: &tokio::runtime::Runtime, upstream: SocketAddr) -> TcpFault {
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the TCP fault proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (mode, _) = watch::channel(TcpMode::Pass);
        let accepted = Arc::new(AtomicU64::new(0));
        let (tx, count) = (mode.clone(), accepted.clone());
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(relay(client, upstream, tx.subscribe()));
            }
        });
        TcpFault {
            port,
            mode,
            accepted,
        }
    }

    /// Switches every connection, open or new, to `mode`.
    pub fn set(&self, mode: TcpMode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> TcpMode {
        *self.mode.borrow()
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// Closes a socket with RST instead of FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Reads and discards from `client` until the mode leaves `Blackhole` or the client hangs up;
/// returns the mode that ended the blackhole (`None`: the client is gone).
async fn blackhole(client: &mut TcpStream, mode: &mut watch::Receiver<TcpMode>) -> Option<TcpMode> {
    let mut sink = [0u8; 16 * 1024];
    loop {
        tokio::select! {
            r = client.read(&mut sink) => {
                if matches!(r, Ok(0) | Err(_)) {
                    return None;
                }
            }
            changed = mode.changed() => {
                changed.ok()?;
                let now = *mode.borrow_and_update();
                if now != TcpMode::Blackhole {
                    return Some(now);
                }
            }
        }
    }
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<TcpMode>) {
    let _ = client.set_nodelay(true);
    let mut current = *mode.borrow_and_update();
    if current == TcpMode::Blackhole {
        match blackhole(&mut client, &mut mode).await {
            Some(m) => current = m,
            None => return,
        }
    }
    if current == TcpMode::Reset {
        return reset(client);
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        // The upstream is down: the client sees its connection refused-like close.
        return reset(client);
    };
    let _ = server.set_nodelay(true);
    let mut up = vec![0u8; 64 * 1024];
    let mut down = vec![0u8; 64 * 1024];
    // Bytes of the upstream's answers passed on so far (for `Truncate`).
    let mut passed_down = 0usize;
    loop {
        tokio::select! {
            r = client.read(&mut up) => {
                let n = match r { Ok(0) | Err(_) => break, Ok(n) => n };
                if let TcpMode::Delay(d) = current {
                    tokio::time::sleep(d).await;
                }
                if server.write_all(&up[..n]).await.is_err() {
                    break;
                }
            }
            r = server.read(&mut down) => {
                let n = match r { Ok(0) | Err(_) => break, Ok(n) => n };
                if let TcpMode::Delay(d) = current {
                    tokio::time::sleep(d).await;
                }
                let allowed = match current {
                    TcpMode::Truncate(limit) => n.min(limit.saturating_sub(passed_down)),
                    _ => n,
                };
                if client.write_all(&down[..allowed]).await.is_err() {
                    break;
                }
                passed_down += allowed;
                if allowed < n {
                    reset(server);
                    return reset(client);
                }
            }
            changed = mode.changed() => {
                if changed.is_err() {
                    break;
                }
                current = *mode.borrow_and_update();
                match current {
                    TcpMode::Reset => {
                        reset(server);
                        return reset(client);
                    }
                    TcpMode::Blackhole => {
                        // The partition swallows this connection: the upstream loses it, the
                        // client keeps waiting on a socket that never answers.
                        reset(server);
                        let _ = blackhole(&mut client, &mut mode).await;
                        return reset(client);
                    }
                    _ => {}
                }
            }
        }
    }
    let _ = client.shutdown().await;
    let _ = server.shutdown().await;
}
