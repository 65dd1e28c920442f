//! A socket's waiting datagrams in one system call (`recvmmsg`): a media thread's receive
//! batch, allocated once per thread and reused for every socket it reads.
//!
//! Reading a socket one datagram at a time costs a second, empty read to learn that it is
//! empty. A batch asks for up to [`BATCH`] datagrams at once and learns the same from a short
//! count: a call that sent its one packet since the last tick costs one system call, not two.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::RawFd;

/// Datagrams taken from one socket by one system call at most.
pub const BATCH: usize = 8;
/// Room for one datagram (larger ones are cut, as a plain read into this much would).
const SLOT: usize = 2048;

/// Buffers, addresses and headers for [`BATCH`] datagrams, on the heap: the headers point at
/// the buffers and addresses once, from the start, and stay valid however the batch moves.
pub struct RecvBatch(Box<Slots>);

struct Slots {
    bufs: [[u8; SLOT]; BATCH],
    addrs: [libc::sockaddr_storage; BATCH],
    iovs: [libc::iovec; BATCH],
    hdrs: [libc::mmsghdr; BATCH],
}

impl RecvBatch {
    pub fn new() -> RecvBatch {
        // SAFETY: byte arrays, sockaddr_storage, iovec and mmsghdr are plain C data for which
        // all-zero bytes (null pointers, zero lengths) are valid values.
        let mut b = RecvBatch(Box::new(unsafe { std::mem::zeroed::<Slots>() }));
        let s = &mut *b.0;
        for i in 0..BATCH {
            s.iovs[i] = libc::iovec {
                iov_base: s.bufs[i].as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            let h = &mut s.hdrs[i].msg_hdr;
            h.msg_name = (&raw mut s.addrs[i]).cast();
            h.msg_iov = &raw mut s.iovs[i];
            h.msg_iovlen = 1;
        }
        b
    }

    /// Up to `max` (at most [`BATCH`]) of the datagrams waiting in `fd`, without blocking:
    /// how many were read. Fewer than asked means the socket is now empty; an error of kind
    /// `WouldBlock` means it was empty already.
    pub fn recv(&mut self, fd: RawFd, max: usize) -> io::Result<usize> {
        let k = max.min(BATCH);
        if k == 0 {
            return Ok(0);
        }
        let s = &mut *self.0;
        // The only input the kernel overwrites: each address's room.
        for h in &mut s.hdrs[..k] {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: the first `k` headers each point at one iovec over a SLOT-byte buffer and at
        // a sockaddr_storage, all in the same heap allocation, borrowed mutably for this call;
        // no timeout pointer.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                s.hdrs.as_mut_ptr(),
                k as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Datagram `i` of the last [`recv`](Self::recv), with its source (None for an address
    /// family other than IPv4 and IPv6).
    pub fn datagram(&mut self, i: usize) -> (&mut [u8], Option<SocketAddr>) {
        let s = &mut *self.0;
        let len = (s.hdrs[i].msg_len as usize).min(SLOT);
        let from = socket_addr(&s.addrs[i], s.hdrs[i].msg_hdr.msg_namelen);
        (&mut s.bufs[i][..len], from)
    }
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

fn socket_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let len = len as usize;
    match i32::from(ss.ss_family) {
        libc::AF_INET if len >= size_of::<libc::sockaddr_in>() => {
            // SAFETY: the kernel wrote a sockaddr_in (family AF_INET, length checked) into
            // storage that is large and aligned enough for any socket address.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddrV4::new(ip, u16::from_be(a.sin_port)).into())
        }
        libc::AF_INET6 if len >= size_of::<libc::sockaddr_in6>() => {
            // SAFETY: as above, for a sockaddr_in6.
            let a = unsafe { &*(ss as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(
                SocketAddrV6::new(
                    ip,
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )
                .into(),
            )
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn pair(local: &str) -> Option<(UdpSocket, UdpSocket)> {
        let rx = UdpSocket::bind(local).ok()?;
        rx.set_nonblocking(true).unwrap();
        let tx = UdpSocket::bind(local).ok()?;
        tx.connect(rx.local_addr().unwrap()).unwrap();
        Some((rx, tx))
    }

    /// A receiving socket with `count` datagrams of `len` bytes waiting, datagram `i` filled
    /// with `i`; and its sender.
    fn sent(count: u8, len: usize) -> (UdpSocket, UdpSocket) {
        let (rx, tx) = pair("127.0.0.1:0").unwrap();
        for i in 0..count {
            tx.send(&vec![i; len]).unwrap();
        }
        (rx, tx)
    }

    #[test]
    fn empty_socket_would_block() {
        let (rx, _tx) = pair("127.0.0.1:0").unwrap();
        let err = RecvBatch::new().recv(rx.as_raw_fd(), BATCH).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn short_count_then_empty() {
        let (rx, tx) = sent(3, 5);
        let mut b = RecvBatch::new();
        assert_eq!(b.recv(rx.as_raw_fd(), BATCH).unwrap(), 3);
        for i in 0..3u8 {
            let (d, from) = b.datagram(usize::from(i));
            assert_eq!(d, &[i; 5]);
            assert_eq!(from, Some(tx.local_addr().unwrap()));
        }
        let err = b.recv(rx.as_raw_fd(), BATCH).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn takes_at_most_what_is_asked() {
        let (rx, _tx) = sent(11, 3);
        let mut b = RecvBatch::new();
        assert_eq!(b.recv(rx.as_raw_fd(), 2).unwrap(), 2);
        assert_eq!(b.datagram(1).0, &[1; 3]);
        // More than BATCH asked: BATCH read.
        assert_eq!(b.recv(rx.as_raw_fd(), 100).unwrap(), BATCH);
        assert_eq!(b.datagram(0).0, &[2; 3]);
        assert_eq!(b.recv(rx.as_raw_fd(), BATCH).unwrap(), 1);
        assert_eq!(b.datagram(0).0, &[10; 3]);
        assert_eq!(b.recv(rx.as_raw_fd(), 0).unwrap(), 0);
    }

    #[test]
    fn oversized_datagram_is_cut_to_the_slot() {
        let (rx, tx) = pair("127.0.0.1:0").unwrap();
        tx.send(&[7u8; SLOT + 100]).unwrap();
        let mut b = RecvBatch::new();
        assert_eq!(b.recv(rx.as_raw_fd(), BATCH).unwrap(), 1);
        assert_eq!(b.datagram(0).0.len(), SLOT);
    }

    #[test]
    fn ipv6_source() {
        // Loopback IPv6 may be off in a container; the IPv4 tests cover the rest then.
        let Some((rx, tx)) = pair("[::1]:0") else {
            eprintln!("skipped: no IPv6 loopback");
            return;
        };
        tx.send(b"six").unwrap();
        let mut b = RecvBatch::new();
        assert_eq!(b.recv(rx.as_raw_fd(), BATCH).unwrap(), 1);
        let (d, from) = b.datagram(0);
        assert_eq!(d, b"six");
        assert_eq!(from, Some(tx.local_addr().unwrap()));
    }
}
