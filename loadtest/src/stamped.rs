//! A caller's RTP socket read in batches, each datagram with the time the kernel received it.
//!
//! A caller thread that woke for every packet of the IVR's stream (50 a second) cost the tester
//! as much CPU as the IVR spent serving the call, and the times it measured included its own
//! wake-up delay. With `SO_TIMESTAMPNS` the kernel stamps each datagram as it arrives, so the
//! thread can sleep through several packets, read them with one `recvmmsg`, and still time each
//! one where it arrived: fewer wake-ups, and arrival times free of the tester's scheduling.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Datagrams taken by one system call at most (100 ms of a 20 ms stream is 5).
pub const BATCH: usize = 8;
/// Room for one datagram: an RTP packet of 20 ms of G.711 is 172 bytes; larger ones (not a
/// stream the tester measures) are cut.
const SLOT: usize = 512;
/// Control room for one `SCM_TIMESTAMPNS` message (a `timespec`), in u64 for alignment.
const CMSG_WORDS: usize = 8;

/// Ask the kernel to stamp every datagram `socket` receives (`SO_TIMESTAMPNS`).
///
/// Linux turns receive stamping on for the whole host when the first socket asks, a moment
/// later (deferred work); a datagram received before that gets the time it was read instead.
/// So the first call also opens a socket that keeps stamping on for the rest of the process:
/// between two runs' calls, when no caller socket is open, it does not turn off again.
pub fn enable(socket: &UdpSocket) -> io::Result<()> {
    static KEEPER: std::sync::OnceLock<Option<UdpSocket>> = std::sync::OnceLock::new();
    KEEPER.get_or_init(|| {
        let keeper = UdpSocket::bind("127.0.0.1:0").ok()?;
        set_stamps(&keeper).ok()?;
        Some(keeper)
    });
    set_stamps(socket)
}

fn set_stamps(socket: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a c_int option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One received datagram.
pub struct Datagram<'a> {
    pub data: &'a [u8],
    pub from: Option<SocketAddr>,
    /// When the kernel received it (now, for a datagram without a stamp).
    pub arrival: Instant,
}

/// Buffers, addresses, control room and headers for [`BATCH`] datagrams, on the heap: the
/// headers point at them once, from the start.
pub struct StampedBatch {
    slots: Box<Slots>,
    /// `Instant::now()` and the realtime clock read together after the last receive: a stamp
    /// (realtime) becomes an `Instant` by its distance from this pair.
    anchor: (Instant, Duration),
}

struct Slots {
    bufs: [[u8; SLOT]; BATCH],
    addrs: [libc::sockaddr_storage; BATCH],
    ctrl: [[u64; CMSG_WORDS]; BATCH],
    iovs: [libc::iovec; BATCH],
    hdrs: [libc::mmsghdr; BATCH],
}

impl StampedBatch {
    pub fn new() -> StampedBatch {
        // SAFETY: byte and word arrays, sockaddr_storage, iovec and mmsghdr are plain C data
        // for which all-zero bytes (null pointers, zero lengths) are valid values.
        let mut slots = Box::new(unsafe { std::mem::zeroed::<Slots>() });
        let s = &mut *slots;
        for i in 0..BATCH {
            s.iovs[i] = libc::iovec {
                iov_base: s.bufs[i].as_mut_ptr().cast(),
                iov_len: SLOT,
            };
            let h = &mut s.hdrs[i].msg_hdr;
            h.msg_name = (&raw mut s.addrs[i]).cast();
            h.msg_iov = &raw mut s.iovs[i];
            h.msg_iovlen = 1;
            h.msg_control = s.ctrl[i].as_mut_ptr().cast();
        }
        StampedBatch {
            slots,
            anchor: (Instant::now(), realtime()),
        }
    }

    /// Up to [`BATCH`] of the datagrams waiting in `socket`, without blocking: how many were
    /// read. Fewer than [`BATCH`] means the socket is now empty; `WouldBlock` means it was.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let s = &mut *self.slots;
        // What the kernel overwrites: each address's and each control buffer's room.
        for h in &mut s.hdrs {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = CMSG_WORDS * 8;
        }
        // SAFETY: every header points at one iovec over a SLOT-byte buffer, a sockaddr_storage
        // and CMSG_WORDS words of control room, all in one heap allocation borrowed mutably for
        // this call; no timeout pointer.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                s.hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        self.anchor = (Instant::now(), realtime());
        Ok(n as usize)
    }

    /// Datagram `i` of the last [`recv`](Self::recv).
    pub fn datagram(&self, i: usize) -> Datagram<'_> {
        let s = &*self.slots;
        let h = &s.hdrs[i];
        let len = (h.msg_len as usize).min(SLOT);
        let (now, real_now) = self.anchor;
        let arrival = stamp(&h.msg_hdr).map_or(now, |at| {
            now.checked_sub(real_now.saturating_sub(at)).unwrap_or(now)
        });
        Datagram {
            data: &s.bufs[i][..len],
            from: socket_addr(&s.addrs[i], h.msg_hdr.msg_namelen),
            arrival,
        }
    }
}

impl Default for StampedBatch {
    fn default() -> Self {
        StampedBatch::new()
    }
}

/// The realtime clock (the clock of `SO_TIMESTAMPNS`) as time since the epoch.
fn realtime() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The `SCM_TIMESTAMPNS` stamp of a received message, as time since the epoch.
fn stamp(h: &libc::msghdr) -> Option<Duration> {
    // SAFETY: `h` is a header the kernel filled: its control pointer and length describe the
    // control messages it wrote, which the CMSG macros walk within that length.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_TIMESTAMPNS {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::timespec>());
                return Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32));
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

fn socket_addr(ss: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    let mut storage = socket2::SockAddrStorage::zeroed();
    // SAFETY: SockAddrStorage is a transparent sockaddr_storage; the kernel wrote an address
    // of `len` bytes into `ss`, which is what SockAddr::new is given.
    unsafe {
        *storage.view_as::<libc::sockaddr_storage>() = *ss;
        socket2::SockAddr::new(storage, len)
    }
    .as_socket()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(local: &str) -> Option<(UdpSocket, UdpSocket)> {
        let rx = UdpSocket::bind(local).ok()?;
        enable(&rx).unwrap();
        // The host turns stamping on a moment after the first socket asks (see `enable`).
        std::thread::sleep(Duration::from_millis(50));
        let tx = UdpSocket::bind(local).ok()?;
        tx.connect(rx.local_addr().unwrap()).unwrap();
        Some((rx, tx))
    }

    #[test]
    fn empty_socket_would_block() {
        let (rx, _tx) = pair("127.0.0.1:0").unwrap();
        let err = StampedBatch::new().recv(&rx).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn datagrams_keep_the_time_they_arrived_not_the_time_they_were_read() {
        let (rx, tx) = pair("127.0.0.1:0").unwrap();
        let sent_at: Vec<Instant> = (0..3u8)
            .map(|i| {
                let t = Instant::now();
                tx.send(&[i; 5]).unwrap();
                std::thread::sleep(Duration::from_millis(30));
                t
            })
            .collect();
        // Read 100 ms after the last one arrived.
        std::thread::sleep(Duration::from_millis(100));
        let mut b = StampedBatch::new();
        assert_eq!(b.recv(&rx).unwrap(), 3);
        let read_at = Instant::now();
        for (i, &t) in sent_at.iter().enumerate() {
            let d = b.datagram(i);
            assert_eq!(d.data, &[i as u8; 5]);
            assert_eq!(d.from, Some(tx.local_addr().unwrap()));
            // Stamped at the send (loopback delivers at once), within the clocks' read-out
            // error, and long before the read.
            let off =
                d.arrival.saturating_duration_since(t) + t.saturating_duration_since(d.arrival);
            assert!(
                off < Duration::from_millis(5),
                "datagram {i}: {off:?} from its send"
            );
            assert!(
                read_at - d.arrival >= Duration::from_millis(100),
                "datagram {i}"
            );
        }
        // 30 ms apart, as sent.
        let gap = b.datagram(1).arrival - b.datagram(0).arrival;
        assert!(
            gap >= Duration::from_millis(29) && gap < Duration::from_millis(45),
            "{gap:?}"
        );
        assert_eq!(b.recv(&rx).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_full_batch_then_the_rest() {
        let (rx, tx) = pair("127.0.0.1:0").unwrap();
        for i in 0..(BATCH as u8 + 3) {
            tx.send(&[i; 3]).unwrap();
        }
        let mut b = StampedBatch::new();
        assert_eq!(b.recv(&rx).unwrap(), BATCH);
        assert_eq!(b.datagram(BATCH - 1).data, &[BATCH as u8 - 1; 3]);
        assert_eq!(b.recv(&rx).unwrap(), 3);
        assert_eq!(b.datagram(2).data, &[BATCH as u8 + 2; 3]);
    }

    #[test]
    fn oversized_datagram_is_cut_to_the_slot() {
        let (rx, tx) = pair("127.0.0.1:0").unwrap();
        tx.send(&[7u8; SLOT + 100]).unwrap();
        let mut b = StampedBatch::new();
        assert_eq!(b.recv(&rx).unwrap(), 1);
        assert_eq!(b.datagram(0).data.len(), SLOT);
    }

    #[test]
    fn without_stamps_a_datagram_arrives_when_read() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        tx.send_to(b"x", rx.local_addr().unwrap()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut b = StampedBatch::new();
        let before = Instant::now();
        assert_eq!(b.recv(&rx).unwrap(), 1);
        assert!(b.datagram(0).arrival >= before);
    }

    #[test]
    fn ipv6_source() {
        // Loopback IPv6 may be off in a container; the IPv4 tests cover the rest then.
        let Some((rx, tx)) = pair("[::1]:0") else {
            eprintln!("skipped: no IPv6 loopback");
            return;
        };
        tx.send(b"six").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        let mut b = StampedBatch::new();
        assert_eq!(b.recv(&rx).unwrap(), 1);
        let d = b.datagram(0);
        assert_eq!(d.data, b"six");
        assert_eq!(d.from, Some(tx.local_addr().unwrap()));
    }
}
