//! The tool's own pacing at 500 concurrent calls: 500 streams on the shared pacing threads send
//! to a local sink for 5 s; the sink times every packet. Prints the figures (BENCHMARKING.md
//! records them); asserts only gross sanity, since shared CI machines are noisy.
//!
//! `cargo test -p loadtest --test sender_pacing_500 -- --nocapture`

use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loadtest::sender::{Chunk, Sender, Stream};
use loadtest::stats::Dist;

const STREAMS: usize = 500;
const SECONDS: u64 = 5;

const SINKS: usize = 10;

/// A receive buffer big enough for a tick's burst (the kernel caps it at rmem_max).
fn big_buffer(sock: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let size: libc::c_int = 4 << 20;
    // SAFETY: a valid socket fd and a pointer to a c_int of the given length.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Per stream: packets of the clip received, and |interval − 20 ms| of consecutive ones (ms).
fn sink(sock: UdpSocket, ssrcs: HashMap<u32, usize>) -> (HashMap<usize, u64>, Vec<f64>) {
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut last: HashMap<usize, (Instant, u16)> = HashMap::new();
    let mut received: HashMap<usize, u64> = HashMap::new();
    let mut errors = Vec::new();
    let mut buf = [0u8; 256];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(SECONDS + 1) {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let at = Instant::now();
        // Only the clip's frames (payload 0x55), not the silence after it.
        if n < 13 || buf[12] != 0x55 {
            continue;
        }
        let ssrc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let Some(&i) = ssrcs.get(&ssrc) else { continue };
        *received.entry(i).or_default() += 1;
        if let Some((t, s)) = last.get(&i)
            && seq == s.wrapping_add(1)
        {
            let gap = at.duration_since(*t).as_secs_f64() * 1e6;
            errors.push((gap - 20_000.0).abs() / 1000.0);
        }
        last.insert(i, (at, seq));
    }
    (received, errors)
}

#[test]
fn five_hundred_streams_keep_20_ms() {
    // Ten sinks with a thread each, 50 streams per sink: one socket taking 25,000 packets/s in
    // bursts of 250 would measure its own buffer overflows, not the sender.
    let sinks: Vec<UdpSocket> = (0..SINKS)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            big_buffer(&s);
            s
        })
        .collect();
    let frames = (SECONDS * 50) as usize;
    let clip: Arc<[u8]> = vec![0x55u8; 160 * frames].into();
    let mut streams = Vec::new();
    let mut per_sink: Vec<HashMap<u32, usize>> = vec![HashMap::new(); SINKS];
    for i in 0..STREAMS {
        let s = Arc::new(Stream::new(
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            0,
            101,
            0xFF,
            i as u32 * 7919 + 1,
        ));
        s.set_dest(sinks[i % SINKS].local_addr().unwrap());
        s.push(Chunk::audio(clip.clone()));
        per_sink[i % SINKS].insert(s.ssrc(), i);
        streams.push(s);
    }
    assert_eq!(
        per_sink.iter().map(HashMap::len).sum::<usize>(),
        STREAMS,
        "distinct SSRCs"
    );
    let handles: Vec<_> = sinks
        .into_iter()
        .zip(per_sink)
        .map(|(sock, ssrcs)| std::thread::spawn(move || sink(sock, ssrcs)))
        .collect();
    let sender = Sender::start(2).unwrap();
    for s in &streams {
        sender.add(s.clone());
    }
    let mut received = vec![0u64; STREAMS];
    let mut errors_ms = Vec::new();
    for h in handles {
        let (r, e) = h.join().unwrap();
        for (i, n) in r {
            received[i] = n;
        }
        errors_ms.extend(e);
    }
    let lateness = sender.lateness();
    for s in &streams {
        s.close();
    }
    drop(sender);

    let total: u64 = received.iter().sum();
    let expected = (STREAMS * frames) as u64;
    let d = Dist::of(&errors_ms);
    println!(
        "pacing, {STREAMS} streams × {SECONDS} s on 2 threads: received {total}/{expected} packets; \
         interval error at the sinks p50 {:.3} ms p90 {:.3} ms p99 {:.3} ms max {:.3} ms; \
         sender tick lateness p50 {:.3} ms p99 {:.3} ms max {:.3} ms, {:.2} % of ticks > 2 ms, {} resyncs",
        d.p50,
        d.p90,
        d.p99,
        d.max,
        lateness.quantile_ms(0.5),
        lateness.quantile_ms(0.99),
        lateness.max_us as f64 / 1000.0,
        lateness.over_pct(2.0),
        lateness.resyncs
    );
    // Gross sanity only: nearly every packet arrives, and the typical interval is 20 ms.
    assert!(total as f64 >= expected as f64 * 0.95, "{total}/{expected}");
    assert!(
        received.iter().all(|&r| r as f64 >= frames as f64 * 0.8),
        "every stream flowed"
    );
    assert!(d.count as f64 > expected as f64 * 0.8);
    assert!(d.p50 < 5.0, "median interval error {} ms", d.p50);
    assert!(lateness.quantile_ms(0.5) < 5.0);
    assert!(lateness.ticks >= 2 * SECONDS * 50 * 9 / 10);
}
