//! The kernel's floor under the media path: what one call's packets cost a media thread when
//! it does nothing else with them. Issue #15 asks for <= 0.05 % of a core per call with SIPp
//! callers on this machine; this program shows how much of that the UDP path alone takes.
//!
//! It does what `server::outgoing` does per call and tick, minus all of the IVR's own work
//! (no jitter buffer, decoding, DTMF, Baudot watch, VAD, locks or events):
//! - "media threads" (one per core, SCHED_FIFO when permitted, as the IVR's): each owns N/T
//!   sockets on 127.0.0.1 and one edge-triggered epoll instance; every 20 ms it sends one
//!   172-byte RTP-sized datagram from each socket to a sink, then one `epoll_wait` and one
//!   `recvmmsg` per socket that received (up to 8 datagrams);
//! - a "callers" thread sends each socket one datagram per 20 ms, spread over the period
//!   (the callers' random phases), from one socket that it never reads, as SIPp's `rtp_stream`
//!   does from its media port in `scripts/media-cost`: the media threads send to that socket
//!   (its buffer fills; the kernel drops what arrives).
//!
//! Only the media threads' CPU (user + system, `/proc/self/task/TID/stat`) over the window is
//! reported, per call, as `scripts/media-cost` reports the IVR's. Like the IVR's, it includes
//! the kernel's loopback delivery into the sink, which runs in the sender's context.
//!
//! `cargo run --release --example udp_floor -- [CALLS [SECONDS [--connect]]]`
//! (defaults 400 and 20). `--connect`: each socket `connect`s to the callers' socket and sends
//! with `send` (the route is looked up once, not per packet).

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const FRAME: Duration = Duration::from_millis(20);
const DATAGRAM: usize = 172;
const BATCH: usize = 8;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let calls: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(400);
    let secs: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(20);
    let connect = args.iter().any(|a| a == "--connect");
    let direct = args.iter().any(|a| a == "--direct");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());

    let sink = UdpSocket::bind("127.0.0.1:0").expect("bind the callers' socket");
    let sink_addr = sink.local_addr().expect("the callers' address");
    let sockets: Vec<UdpSocket> = (0..calls)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind a call's socket");
            s.set_nonblocking(true).expect("non-blocking");
            if connect {
                s.connect(sink_addr).expect("connect to the sink");
            }
            s
        })
        .collect();
    let targets: Vec<SocketAddr> = sockets.iter().map(|s| s.local_addr().unwrap()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let callers = {
        let stop = stop.clone();
        std::thread::spawn(move || callers(&sink, &targets, &stop))
    };
    let mut shards: Vec<Vec<UdpSocket>> = (0..threads).map(|_| Vec::new()).collect();
    for (i, s) in sockets.into_iter().enumerate() {
        shards[i % threads].push(s);
    }
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let media: Vec<_> = shards
        .into_iter()
        .map(|shard| {
            let stop = stop.clone();
            let tid_tx = tid_tx.clone();
            std::thread::spawn(move || {
                // SAFETY: gettid takes no arguments.
                let _ = tid_tx.send(unsafe { libc::gettid() });
                media_thread(&shard, sink_addr, connect, direct, &stop)
            })
        })
        .collect();
    let tids: Vec<i32> = (0..threads).map(|_| tid_rx.recv().unwrap()).collect();

    // Warm up (every socket has received), then the window.
    std::thread::sleep(Duration::from_secs(3));
    let c0: u64 = tids.iter().map(|&t| thread_ticks(t)).sum();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let c1: u64 = tids.iter().map(|&t| thread_ticks(t)).sum();
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (sent, received) = media
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |(s, r), (a, b)| (s + a, r + b));
    callers.join().unwrap();

    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (c1 - c0) as f64 / hz / elapsed * 100.0;
    println!(
        "calls {calls}; {threads} media threads; {}; {}; window {elapsed:.1} s; media threads' CPU \
         {cpu:.1} % of a core = {:.4} % per call; datagrams in all: {sent} sent, {received} \
         received",
        if connect {
            "connected sockets (send)"
        } else {
            "unconnected sockets (sendto)"
        },
        if direct {
            "every socket read at every tick (no epoll)"
        } else {
            "epoll says which sockets to read"
        },
        cpu / calls as f64,
    );
}

/// user + system clock ticks of one of this process's threads.
fn thread_ticks(tid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

/// One datagram to each target per 20 ms, spread evenly over the period.
fn callers(socket: &UdpSocket, targets: &[SocketAddr], stop: &AtomicBool) {
    let packet = [0x80u8; DATAGRAM];
    let step = FRAME / targets.len().max(1) as u32;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        for t in targets {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            let _ = socket.send_to(&packet, t);
            next += step;
        }
    }
}

/// What a media thread does per tick for its calls, minus the IVR's own work.
/// Returns the datagrams sent and received.
fn media_thread(
    shard: &[UdpSocket],
    sink: SocketAddr,
    connect: bool,
    direct: bool,
    stop: &AtomicBool,
) -> (u64, u64) {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler reads `param` and changes only this thread's policy.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    // SAFETY: epoll_create1 takes no pointer.
    let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(epoll >= 0, "epoll_create1");
    for (i, s) in shard.iter().enumerate().filter(|_| !direct) {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: i as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        let rc = unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
        assert_eq!(rc, 0, "epoll_ctl");
    }
    let packet = [0x80u8; DATAGRAM];
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut addrs: Vec<libc::sockaddr_storage> =
        // SAFETY: sockaddr_storage is plain C data; all-zero is a valid value.
        (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = (0..BATCH)
        .map(|i| {
            // SAFETY: mmsghdr is plain C data; all-zero is a valid value.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_name = (&raw mut addrs[i]).cast();
            h.msg_hdr.msg_iov = &raw mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let mut ready = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut sent = 0u64;
    let mut received = 0u64;
    let mut next = Instant::now() + FRAME;
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        next += FRAME;
        for s in shard {
            let ok = if connect {
                s.send(&packet).is_ok()
            } else {
                s.send_to(&packet, sink).is_ok()
            };
            sent += u64::from(ok);
        }
        let mut drain = |fd: i32| loop {
            for h in &mut hdrs {
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            }
            // SAFETY: each header points at one iovec over a live 2,048-byte buffer and at a
            // live sockaddr_storage; no timeout pointer.
            let got = unsafe {
                libc::recvmmsg(
                    fd,
                    hdrs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            received += got.max(0) as u64;
            if got < BATCH as libc::c_int {
                break;
            }
        };
        if direct {
            shard.iter().for_each(|s| drain(s.as_raw_fd()));
            continue;
        }
        loop {
            // SAFETY: `ready` has room for `ready.len()` events; no timeout.
            let n = unsafe {
                libc::epoll_wait(epoll, ready.as_mut_ptr(), ready.len() as libc::c_int, 0)
            };
            let n = n.max(0) as usize;
            for ev in &ready[..n] {
                drain(shard[ev.u64 as usize].as_raw_fd());
            }
            if n < ready.len() {
                break;
            }
        }
    }
    // SAFETY: closing the descriptor this thread created.
    unsafe { libc::close(epoll) };
    (sent, received)
}
