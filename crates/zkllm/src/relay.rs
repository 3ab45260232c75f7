//! A loopback TCP relay between a client and a miner that can delay and record the traffic.
//!
//! Benchmarks use it to measure a chat at a realistic round-trip time on one machine; tests use
//! its recording to check what a miner actually receives.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Everything that crossed the relay from clients to the miner, in arrival order.
pub type Transcript = Arc<Mutex<Vec<u8>>>;

pub struct Relay {
    pub address: SocketAddr,
    /// Bytes sent towards the miner, across all connections.
    pub to_miner: Transcript,
}

impl Relay {
    /// Listens on a fresh loopback port and forwards each connection to `miner`, holding every
    /// chunk for `one_way_delay` in each direction (so a round trip costs twice that).
    pub fn start(miner: SocketAddr, one_way_delay: Duration) -> io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let to_miner = Transcript::default();
        let transcript = Arc::clone(&to_miner);
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(upstream) = TcpStream::connect(miner) else { continue };
                let _ = client.set_nodelay(true);
                let _ = upstream.set_nodelay(true);
                let (Ok(client_in), Ok(upstream_in)) = (client.try_clone(), upstream.try_clone())
                else {
                    continue;
                };
                pipe(client_in, upstream, one_way_delay, Some(Arc::clone(&transcript)));
                pipe(upstream_in, client, one_way_delay, None);
            }
        });
        Ok(Relay { address, to_miner })
    }
}

/// Copies `from` into `to` on two threads: a reader that stamps each chunk with its arrival time
/// and a writer that releases it `delay` later, so a large message is not delayed once per chunk.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration, record: Option<Transcript>) {
    let (chunks, due) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(record) = &record {
                        record.lock().expect("transcript lock").extend_from_slice(&buf[..n]);
                    }
                    if chunks.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (release_at, chunk) in due {
            std::thread::sleep(release_at.saturating_duration_since(Instant::now()));
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
