//! A media thread's RTP sends through io_uring: every packet of a tick is queued in one
//! submission ring and the kernel sends them all from one `io_uring_enter`, instead of one
//! `sendto` system call per packet. The sockets are registered with the ring (fixed files), so
//! a send also skips the file-table lookup and its reference count (`fdget`/`fput`, which a
//! multithreaded process pays on every `sendto`).
//!
//! Each send carries `MSG_DONTWAIT`: a full socket buffer completes it at once with `EAGAIN`
//! (the packet is dropped, as `sendto` would drop it) instead of parking it in the ring, so after
//! `flush` every slot is free again and no packet buffer outlives its tick.
//!
//! Where io_uring is refused (an old kernel, a seccomp profile, `io_uring_disabled`), `new`
//! fails its loopback self-test and the thread sends with `sendto` as before.

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

/// Bytes in a packet slot (the media thread's packets fit the 1500-byte MTU).
pub const SLOT_BYTES: usize = 1500;

/// A destination as the kernel reads it (`sockaddr_in` or `sockaddr_in6`).
#[derive(Clone, Copy)]
#[repr(C)]
union RawAddr {
    v4: libc::sockaddr_in,
    v6: libc::sockaddr_in6,
}

fn raw_addr(addr: SocketAddr) -> (RawAddr, libc::socklen_t) {
    match addr {
        SocketAddr::V4(a) => (
            RawAddr {
                v4: libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                },
            },
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        ),
        SocketAddr::V6(a) => (
            RawAddr {
                v6: libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                },
            },
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        ),
    }
}

/// Which socket a queued packet leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Socket {
    /// Registered at this index of the ring's file table.
    Fixed(u32),
    /// Not registered (the table was full or refused it).
    Fd(RawFd),
}

/// What a flush did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    pub sent: u64,
    pub failed: u64,
}

/// The send ring of one media thread.
pub struct SendRing {
    ring: IoUring,
    /// `slots × SLOT_BYTES`: packet `i` is built in place at `i * SLOT_BYTES`.
    bufs: Box<[u8]>,
    addrs: Box<[RawAddr]>,
    /// Packets queued since the last flush (slots `0..pending` are in use).
    pending: usize,
    /// Entries in the registered file table (0: none registered).
    files: u32,
}

impl SendRing {
    /// A ring of `slots` packets (a flush happens when they are all queued) with a file table
    /// of `files` entries, proven by sending one datagram to itself on loopback.
    pub fn new(slots: usize, files: u32) -> io::Result<SendRing> {
        let slots = slots.max(1);
        let entries = (slots as u32).next_power_of_two();
        // Single issuer and cooperative task running: the kernel skips cross-thread locking
        // and interrupts; submit-all: one refused entry does not stop the rest of the batch.
        let ring = IoUring::<squeue::Entry, cqueue::Entry>::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_submit_all()
            .setup_cqsize(entries * 2)
            .build(entries)
            .or_else(|_| IoUring::new(entries))?;
        let files = if files > 0 && ring.submitter().register_files_sparse(files).is_ok() {
            files
        } else {
            0
        };
        let zero = raw_addr(SocketAddr::from(([0, 0, 0, 0], 0))).0;
        let mut me = SendRing {
            ring,
            bufs: vec![0u8; slots * SLOT_BYTES].into_boxed_slice(),
            addrs: vec![zero; slots].into_boxed_slice(),
            pending: 0,
            files,
        };
        me.self_test()?;
        Ok(me)
    }

    /// One datagram from a fresh loopback socket to itself, through the ring (and through the
    /// file table when there is one): a kernel that takes the ring but not a send with a
    /// destination address (before 6.0) fails here, not on the first call.
    fn self_test(&mut self) -> io::Result<()> {
        let sock = UdpSocket::bind(("127.0.0.1", 0))?;
        sock.set_nonblocking(true)?;
        let dest = sock.local_addr()?;
        let target = match self.register(0, sock.as_raw_fd()) {
            true => Socket::Fixed(0),
            false => Socket::Fd(sock.as_raw_fd()),
        };
        self.buffer()[..4].copy_from_slice(b"ivr!");
        let queued = self.queue(target, 4, dest);
        let done = self.flush();
        self.unregister(0);
        let mut got = [0u8; 8];
        match sock.recv(&mut got) {
            Ok(4) if queued.sent + done.sent == 1 && &got[..4] == b"ivr!" => Ok(()),
            _ => Err(io::Error::other("io_uring send self-test failed")),
        }
    }

    /// Registers `fd` at `index` of the file table; false if there is no such entry (the
    /// socket is then sent from by descriptor).
    pub fn register(&mut self, index: usize, fd: RawFd) -> bool {
        index < self.files as usize
            && self
                .ring
                .submitter()
                .register_files_update(index as u32, &[fd])
                .is_ok_and(|n| n == 1)
    }

    /// Takes the socket at `index` out of the file table (the table holds a reference: a
    /// socket still registered would stay open after the call closed it).
    pub fn unregister(&mut self, index: usize) {
        if index < self.files as usize {
            let _ = self
                .ring
                .submitter()
                .register_files_update(index as u32, &[-1]);
        }
    }

    /// The buffer the next packet is built in.
    pub fn buffer(&mut self) -> &mut [u8] {
        let at = self.pending * SLOT_BYTES;
        &mut self.bufs[at..at + SLOT_BYTES]
    }

    /// Queues the `len` bytes built in `buffer()` for `dest`. When every slot is in use the
    /// ring is flushed: what that flush did is returned.
    pub fn queue(&mut self, socket: Socket, len: usize, dest: SocketAddr) -> Flushed {
        let slot = self.pending;
        let (addr, addr_len) = raw_addr(dest);
        self.addrs[slot] = addr;
        let buf = self.bufs[slot * SLOT_BYTES..].as_ptr();
        let len = len.min(SLOT_BYTES) as u32;
        let addr = &self.addrs[slot] as *const RawAddr as *const libc::sockaddr;
        let entry = match socket {
            Socket::Fixed(i) => opcode::Send::new(types::Fixed(i), buf, len),
            Socket::Fd(fd) => opcode::Send::new(types::Fd(fd), buf, len),
        }
        .dest_addr(addr)
        .dest_addr_len(addr_len)
        .flags(libc::MSG_DONTWAIT)
        .build()
        .user_data(slot as u64);
        // SAFETY: the buffer and the address live in `self` and are not touched again until
        // `flush` has reaped this entry's completion.
        let pushed = unsafe { self.ring.submission().push(&entry) };
        if pushed.is_err() {
            // The queue is sized to the slots; cannot happen, but never lose the count.
            return Flushed { sent: 0, failed: 1 };
        }
        self.pending += 1;
        if self.pending == self.addrs.len() {
            self.flush()
        } else {
            Flushed::default()
        }
    }

    /// Sends everything queued (one system call) and reaps the completions; every slot is free
    /// afterwards.
    pub fn flush(&mut self) -> Flushed {
        let mut done = Flushed::default();
        if self.pending == 0 {
            return done;
        }
        let want = self.pending;
        let mut reaped = 0;
        while reaped < want {
            // Every send is non-blocking, so its completion is posted during the submission;
            // the wait returns at once. EINTR: submit again (what was submitted stays so).
            if let Err(e) = self.ring.submit_and_wait(want - reaped) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                // The ring itself failed: what it did not complete is lost (counted).
                done.failed += (want - reaped) as u64;
                break;
            }
            for cqe in self.ring.completion() {
                reaped += 1;
                if cqe.result() >= 0 {
                    done.sent += 1;
                } else {
                    done.failed += 1;
                }
            }
        }
        self.pending = 0;
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receiver() -> UdpSocket {
        let s = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        s
    }

    #[test]
    fn packets_queued_from_fixed_and_plain_sockets_arrive_in_order_after_one_flush() {
        let mut ring = SendRing::new(8, 4).expect("io_uring on this kernel");
        let rx = receiver();
        let dest = rx.local_addr().unwrap();
        let a = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        let b = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        assert!(ring.register(1, a.as_raw_fd()));
        // Beyond the table: sent by descriptor.
        assert!(!ring.register(4, b.as_raw_fd()));
        for i in 0..3u8 {
            ring.buffer()[..2].copy_from_slice(&[b'a', i]);
            assert_eq!(ring.queue(Socket::Fixed(1), 2, dest), Flushed::default());
            ring.buffer()[..2].copy_from_slice(&[b'b', i]);
            assert_eq!(
                ring.queue(Socket::Fd(b.as_raw_fd()), 2, dest),
                Flushed::default()
            );
        }
        // Nothing leaves before the flush.
        rx.set_nonblocking(true).unwrap();
        assert!(rx.recv_from(&mut [0u8; 4]).is_err());
        rx.set_nonblocking(false).unwrap();
        assert_eq!(ring.flush(), Flushed { sent: 6, failed: 0 });
        let mut from_a = Vec::new();
        let mut from_b = Vec::new();
        for _ in 0..6 {
            let mut buf = [0u8; 4];
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(n, 2);
            if from == a.local_addr().unwrap() {
                from_a.push(buf[..2].to_vec());
            } else {
                assert_eq!(from, b.local_addr().unwrap());
                from_b.push(buf[..2].to_vec());
            }
        }
        assert_eq!(
            from_a,
            [b"a\0".to_vec(), b"a\x01".to_vec(), b"a\x02".to_vec()]
        );
        assert_eq!(
            from_b,
            [b"b\0".to_vec(), b"b\x01".to_vec(), b"b\x02".to_vec()]
        );
    }

    #[test]
    fn a_full_ring_flushes_itself_and_a_failed_send_is_counted() {
        let mut ring = SendRing::new(2, 2).expect("io_uring on this kernel");
        let rx = receiver();
        let dest = rx.local_addr().unwrap();
        let a = UdpSocket::bind(("127.0.0.1", 0)).unwrap();
        assert!(ring.register(0, a.as_raw_fd()));
        ring.buffer()[0] = 1;
        assert_eq!(ring.queue(Socket::Fixed(0), 1, dest), Flushed::default());
        ring.buffer()[0] = 2;
        // The second of two slots: flushed at once.
        assert_eq!(
            ring.queue(Socket::Fixed(0), 1, dest),
            Flushed { sent: 2, failed: 0 }
        );
        // An empty table entry: the kernel refuses the send (EBADF), counted as failed.
        ring.unregister(0);
        ring.buffer()[0] = 3;
        ring.queue(Socket::Fixed(0), 1, dest);
        assert_eq!(ring.flush(), Flushed { sent: 0, failed: 1 });
        let mut buf = [0u8; 4];
        assert_eq!(rx.recv(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 1);
        assert_eq!(rx.recv(&mut buf).unwrap(), 1);
        assert_eq!(buf[0], 2);
    }

    #[test]
    fn an_ipv6_destination_is_sent_to() {
        let Ok(rx) = UdpSocket::bind(("::1", 0)) else {
            eprintln!("skipped: no IPv6 loopback on this machine");
            return;
        };
        rx.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let tx = UdpSocket::bind(("::1", 0)).unwrap();
        let mut ring = SendRing::new(4, 0).expect("io_uring on this kernel");
        ring.buffer()[..3].copy_from_slice(b"six");
        ring.queue(Socket::Fd(tx.as_raw_fd()), 3, rx.local_addr().unwrap());
        assert_eq!(ring.flush(), Flushed { sent: 1, failed: 0 });
        let mut buf = [0u8; 8];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!((&buf[..n], from), (&b"six"[..], tx.local_addr().unwrap()));
    }
}
