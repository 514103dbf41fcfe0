//! Descriptors of the sockets listener filter `reverse_tunnel_spares` saw accepted, so that the
//! handshake network filter can later move a spare tunnel's socket to a socket loop
//! (docs/architecture.md#spare-tunnels). The network filter ABI of Envoy 1.40.0 has no call
//! that gives a connection's descriptor; the listener filter ABI has one
//! (`listener_filter_get_socket_fd`), and both filters of one connection run on the same worker.
//!
//! One table per worker (thread-local), keyed by the socket's (local, peer) address pair, which
//! names one TCP connection. A record is taken when the network filter asks for it; records of
//! connections that never ask (closed during their handshake) are dropped after
//! [`MAX_AGE_MS`]. A descriptor is only used after checking that it still is the socket of that
//! address pair, so a record outliving its socket (the number reused) is refused, never misused.
//!
//! Threads: every function runs on an Envoy worker, for that worker's sockets.

use std::cell::RefCell;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{BorrowedFd, FromRawFd, RawFd};

/// A record older than this (ms) belongs to a connection that closed during its handshake.
pub const MAX_AGE_MS: u64 = 60_000;
/// The table is swept for old records when it holds this many.
const SWEEP_AT: usize = 1024;

type Key = (SocketAddr, SocketAddr);

thread_local! {
    static SEEN: RefCell<HashMap<Key, (RawFd, u64)>> = RefCell::new(HashMap::new());
}

/// The (local, peer) address pair of socket `fd`; an error if `fd` is not an open socket.
fn addresses(fd: RawFd) -> std::io::Result<Key> {
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(9)); // EBADF
    }
    // SAFETY: the stream only borrows `fd` to ask the kernel for its addresses; ManuallyDrop
    // keeps it from closing the descriptor. A closed `fd` gives EBADF, a non-socket ENOTSOCK.
    let s = ManuallyDrop::new(unsafe { TcpStream::from_raw_fd(fd) });
    Ok((s.local_addr()?, s.peer_addr()?))
}

/// Notes Envoy's descriptor `fd` of a socket just accepted at `now_ms`. Accepting worker, in
/// the listener filter's `on_accept`.
pub fn remember(fd: RawFd, now_ms: u64) -> std::io::Result<()> {
    let key = addresses(fd)?;
    SEEN.with(|t| {
        let mut t = t.borrow_mut();
        if t.len() >= SWEEP_AT {
            t.retain(|_, (_, at)| now_ms.saturating_sub(*at) < MAX_AGE_MS);
        }
        t.insert(key, (fd, now_ms));
    });
    Ok(())
}

/// Takes the record of the connection `(local, peer)` and returns a duplicate of its
/// descriptor (close-on-exec) that the caller owns. None if no record exists, or its
/// descriptor is no longer that connection's socket, or it cannot be duplicated. Owning worker
/// of the connection, while Envoy's connection (and so its descriptor) is open.
pub fn take(local: SocketAddr, peer: SocketAddr) -> Option<TcpStream> {
    let (fd, _) = SEEN.with(|t| t.borrow_mut().remove(&(local, peer)))?;
    if addresses(fd).ok()? != (local, peer) {
        return None;
    }
    // SAFETY: `fd` is open (its addresses were just read on this thread, and only this thread's
    // Envoy connection closes it); it is only borrowed to duplicate it.
    let owned = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().ok()?;
    Some(TcpStream::from(owned))
}

/// Parses Envoy's address text `ip:port` (an IPv6 address with or without brackets) into a
/// socket address; None for anything else (a pipe, an internal address, "").
pub fn parse_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.rsplit_once(':')?;
    let ip: std::net::IpAddr = ip.trim_start_matches('[').trim_end_matches(']').parse().ok()?;
    Some(SocketAddr::new(ip, port.parse().ok()?))
}

/// Records held by this thread (tests and diagnostics).
pub fn held() -> usize {
    SEEN.with(|t| t.borrow().len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::fd::AsRawFd;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        (c, s)
    }

    #[test]
    fn a_remembered_socket_is_taken_once_as_a_working_duplicate() {
        let (mut client, server) = pair();
        remember(server.as_raw_fd(), 0).unwrap();
        let (local, peer) = (server.local_addr().unwrap(), server.peer_addr().unwrap());
        let mut dup = take(local, peer).expect("the record");
        assert!(take(local, peer).is_none(), "a record is taken once");
        drop(server); // Envoy closes its descriptor: the duplicate keeps the connection
        use std::io::{Read, Write};
        client.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        dup.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"ping");
        dup.write_all(b"pong").unwrap();
        client.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"pong");
    }

    #[test]
    fn envoy_address_texts_parse_for_both_families() {
        assert_eq!(parse_address("127.0.0.1:9000"), Some(([127, 0, 0, 1], 9000).into()));
        let v6: SocketAddr = "[::1]:9000".parse().unwrap();
        assert_eq!(parse_address("::1:9000"), Some(v6));
        assert_eq!(parse_address("[::1]:9000"), Some(v6));
        for bad in ["", "envoy://internal", "127.0.0.1", "127.0.0.1:x", "/tmp/sock:0"] {
            assert_eq!(parse_address(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_record_whose_descriptor_changed_is_refused() {
        let (_c1, s1) = pair();
        let (_c2, s2) = pair();
        let (local, peer) = (s1.local_addr().unwrap(), s1.peer_addr().unwrap());
        // A record naming s1's addresses but s2's descriptor (as after s1's number was reused).
        SEEN.with(|t| t.borrow_mut().insert((local, peer), (s2.as_raw_fd(), 0)));
        assert!(take(local, peer).is_none());
        assert!(take(s2.local_addr().unwrap(), s2.peer_addr().unwrap()).is_none(), "never remembered");
    }

    #[test]
    fn old_records_are_swept_and_unknown_descriptors_refused() {
        assert!(remember(-1, 0).is_err());
        let (_c, s) = pair();
        for i in 0..SWEEP_AT as u64 {
            let port = 1 + i as u16;
            SEEN.with(|t| t.borrow_mut().insert((([127, 0, 0, 2], port).into(), ([127, 0, 0, 3], port).into()), (-1, 0)));
        }
        remember(s.as_raw_fd(), MAX_AGE_MS + 1).unwrap();
        assert_eq!(held(), 1, "only the fresh record is left");
    }
}
