//! Media hot-path benchmarks: per-packet cost of the receive and send paths, Opus per frame, and
//! heap allocations per packet in steady state (must be 0 for the G.711 paths).
//!
//! Run: `cargo bench --bench media`. Plain std timing (median of several runs) and a counting
//! global allocator; no criterion.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ivr::audio::dtmf::{DtmfDetector, dtmf_tone_level};
use ivr::audio::vad::{Vad, VadConfig};
use ivr::rtp::codec::{Decoder, Encoder, FRAME_SAMPLES_16K, OPUS_MAX_PACKET};
use ivr::rtp::inbound::{Inbound, InboundConfig};
use ivr::rtp::packet::parse_rtp;
use ivr::rtp::session::{Pacer, RtpSender};
use ivr::rtp::srtp::{KeySalt, MAX_TRAILER, Protector, Suite, Unprotector};
use ivr::types::Codec;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: ptr came from System.alloc with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const RUNS: usize = 7;

/// This thread's CPU time in ns from /proc/thread-self/schedstat (first field), so time slices
/// lost to other processes on the shared cores do not count. `None` where unavailable.
/// Reads into a stack buffer: the counting allocator must not see the stopwatch.
fn thread_cpu_ns() -> Option<u64> {
    use std::io::Read;
    let mut f = std::fs::File::open("/proc/thread-self/schedstat").ok()?;
    let mut buf = [0u8; 128];
    let n = f.read(&mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// CPU-time stopwatch, falling back to wall time.
struct Stopwatch {
    wall: Instant,
    cpu: Option<u64>,
}

impl Stopwatch {
    fn start() -> Self {
        Stopwatch {
            wall: Instant::now(),
            cpu: thread_cpu_ns(),
        }
    }

    fn elapsed(&self) -> Duration {
        match (self.cpu, thread_cpu_ns()) {
            (Some(a), Some(b)) => Duration::from_nanos(b.saturating_sub(a)),
            _ => self.wall.elapsed(),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Speech-like µ-law stream with a DTMF digit in it, as RTP packets.
fn incoming_packets(n: usize) -> Vec<Vec<u8>> {
    let mut tx = RtpSender::new(99);
    let mut enc = Encoder::new(Codec::Pcmu).expect("G.711 needs no setup");
    let mut pcm: Vec<i16> = (0..n * 160)
        .map(|i| {
            let t = i as f64 / 8000.0;
            (3000.0 * (2.0 * std::f64::consts::PI * 150.0 * t).sin() * (1.0 + (t * 3.0).sin()))
                as i16
        })
        .collect();
    let digit = dtmf_tone_level('5', 100, 8000, -10.0);
    pcm[80_000..80_000 + digit.len()].copy_from_slice(&digit);
    pcm.chunks(160)
        .map(|f| {
            let mut payload = [0u8; 160];
            let k = enc.encode(f, &mut payload).expect("fits");
            let mut out = vec![0u8; 172];
            let len = tx
                .next(0, &payload[..k], 160, false, &mut out)
                .expect("fits");
            out.truncate(len);
            out
        })
        .collect()
}

struct RxPath {
    inbound: Inbound,
    dtmf: DtmfDetector,
    vad: Vad,
    pcm: [i16; 160],
}

impl RxPath {
    fn new() -> Self {
        RxPath {
            inbound: Inbound::new(InboundConfig::for_codec(Codec::Pcmu))
                .expect("G.711 needs no setup"),
            dtmf: DtmfDetector::default(),
            vad: Vad::new(8000, VadConfig::default()),
            pcm: [0; 160],
        }
    }

    /// One packet in, one playout tick out: what the shell does every 20 ms per call
    /// (`Inbound` = parse + RFC 3550 stats + jitter push/pop + decode/conceal).
    #[inline(never)]
    fn packet(&mut self, now: Instant, datagram: &[u8]) -> u32 {
        let mut hits = self
            .inbound
            .handle_datagram(now, datagram)
            .ok()
            .flatten()
            .is_some() as u32;
        let n = self.inbound.poll_audio(now, &mut self.pcm);
        if n > 0 {
            hits += self.dtmf.process(&self.pcm[..n]).is_some() as u32;
            hits += self.vad.process(&self.pcm[..n]).is_some() as u32;
        }
        hits
    }
}

fn bench_rx() -> (f64, f64) {
    let packets = incoming_packets(60_000);
    let t0 = Instant::now();
    let mut runs = vec![];
    let mut allocs_per_packet = 0.0;
    for r in 0..RUNS {
        let mut path = RxPath::new();
        // Warm-up: fill the jitter buffer, settle the VAD floor.
        for (i, p) in packets[..100].iter().enumerate() {
            path.packet(t0 + Duration::from_millis(i as u64 * 20), p);
        }
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let start = Stopwatch::start();
        let mut hits = 0;
        for (i, p) in packets[100..].iter().enumerate() {
            hits += path.packet(
                t0 + Duration::from_millis((i + 100) as u64 * 20),
                black_box(p),
            );
        }
        let el = start.elapsed();
        let a1 = ALLOCS.load(Ordering::Relaxed);
        let n = (packets.len() - 100) as f64;
        runs.push(el.as_nanos() as f64 / n);
        if r == 0 {
            allocs_per_packet = (a1 - a0) as f64 / n;
            assert!(hits > 0, "the digit in the stream was detected");
        }
    }
    (median(runs), allocs_per_packet)
}

/// Per-stage cost of the receive path on decoded frames, to see where the time goes.
const STAGE_REPEAT: usize = 30;

fn bench_rx_stages() -> (f64, f64, f64) {
    let packets = incoming_packets(20_000);
    let mut dec = Decoder::new(Codec::Pcmu).expect("G.711 needs no setup");
    let frames: Vec<[i16; 160]> = packets
        .iter()
        .map(|p| {
            let mut f = [0i16; 160];
            dec.decode(parse_rtp(p).expect("ours").payload, &mut f)
                .expect("fits");
            f
        })
        .collect();
    let (mut d_runs, mut g_runs, mut v_runs) = (vec![], vec![], vec![]);
    for _ in 0..RUNS {
        let mut pcm = [0i16; 160];
        // Repeated so each run spans many scheduler ticks (schedstat's granularity).
        let start = Stopwatch::start();
        for _ in 0..STAGE_REPEAT {
            for p in &packets {
                let rtp = parse_rtp(black_box(p)).expect("ours");
                black_box(dec.decode(rtp.payload, &mut pcm).expect("fits"));
            }
        }
        d_runs.push(start.elapsed().as_nanos() as f64 / (STAGE_REPEAT * packets.len()) as f64);
        let mut det = DtmfDetector::default();
        let start = Stopwatch::start();
        for f in &frames {
            black_box(det.process(black_box(f)));
        }
        g_runs.push(start.elapsed().as_nanos() as f64 / frames.len() as f64);
        let mut vad = Vad::new(8000, VadConfig::default());
        let start = Stopwatch::start();
        for f in &frames {
            black_box(vad.process(black_box(f)));
        }
        v_runs.push(start.elapsed().as_nanos() as f64 / frames.len() as f64);
    }
    (median(d_runs), median(g_runs), median(v_runs))
}

fn bench_tx() -> (f64, f64) {
    // A prompt already encoded into 20 ms µ-law frames (the speech cache's shape).
    let prompt: Vec<[u8; 160]> = (0..500).map(|i| [(i % 256) as u8; 160]).collect();
    let mut runs = vec![];
    let mut allocs_per_packet = 0.0;
    let t0 = Instant::now();
    for r in 0..RUNS {
        let mut tx = RtpSender::new(5);
        let mut pacer = Pacer::new_20ms(t0);
        let mut out = [0u8; 1500];
        let mut bytes = 0usize;
        let n = 3_000_000usize;
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let start = Stopwatch::start();
        for i in 0..n {
            let now = t0 + Duration::from_millis(i as u64 * 20);
            let due = pacer.poll_due(now);
            tx.skip(due.skipped * 160);
            let frame = &prompt[i % prompt.len()];
            out[12..172].copy_from_slice(black_box(frame));
            bytes += tx
                .next_in_place(0, 160, 160, i % 500 == 0, &mut out)
                .expect("fits");
            black_box(&out);
        }
        let el = start.elapsed();
        let a1 = ALLOCS.load(Ordering::Relaxed);
        black_box(bytes);
        runs.push(el.as_nanos() as f64 / n as f64);
        if r == 0 {
            allocs_per_packet = (a1 - a0) as f64 / n as f64;
        }
    }
    (median(runs), allocs_per_packet)
}

/// SRTP (libsrtp2, AES_CM_128_HMAC_SHA1_80) on 172-byte PCMU packets: (protect in place, as in
/// the pacing thread's send buffer; unprotect in place; allocations per protect+unprotect).
fn bench_srtp(n: usize) -> (f64, f64, f64) {
    const ROOM: usize = 172 + MAX_TRAILER;
    let key = KeySalt([0x5a; 30]);
    let (mut prot, mut unprot, mut allocs) = (vec![], vec![], 0.0);
    for r in 0..RUNS {
        let mut tx = Protector::new(Suite::AesCm128HmacSha1_80, &key).expect("srtp");
        let mut rx = Unprotector::new(Suite::AesCm128HmacSha1_80, &key).expect("srtp");
        let mut sender = RtpSender::new(9);
        let mut packets: Vec<[u8; ROOM]> = (0..n)
            .map(|i| {
                let mut out = [0u8; ROOM];
                out[12..172].copy_from_slice(&[(i % 256) as u8; 160]);
                sender
                    .next_in_place(0, 160, 160, false, &mut out)
                    .expect("fits");
                out
            })
            .collect();
        let mut lens = vec![0usize; n];
        let a0 = ALLOCS.load(Ordering::Relaxed);
        let start = Stopwatch::start();
        for (p, len) in packets.iter_mut().zip(lens.iter_mut()) {
            *len = tx.protect(black_box(p), 172).expect("protect");
        }
        let protect = start.elapsed();
        let start = Stopwatch::start();
        for (p, len) in packets.iter_mut().zip(&lens) {
            black_box(rx.unprotect(black_box(&mut p[..*len])).expect("unprotect"));
        }
        let unprotect = start.elapsed();
        let a1 = ALLOCS.load(Ordering::Relaxed);
        prot.push(protect.as_nanos() as f64 / n as f64);
        unprot.push(unprotect.as_nanos() as f64 / n as f64);
        if r == 0 {
            allocs = (a1 - a0) as f64 / n as f64;
        }
    }
    (median(prot), median(unprot), allocs)
}

fn bench_opus(complexity: Option<u8>) -> (f64, f64, f64, f64) {
    let pcm: Vec<i16> = (0..FRAME_SAMPLES_16K * 250)
        .map(|i| {
            let t = i as f64 / 16000.0;
            (5000.0 * (2.0 * std::f64::consts::PI * 220.0 * t).sin() * (1.0 + (t * 2.0).sin()))
                as i16
        })
        .collect();
    let mut enc_runs = vec![];
    let mut dec_runs = vec![];
    let (mut enc_allocs, mut dec_allocs) = (0.0, 0.0);
    for r in 0..RUNS {
        let mut enc = Encoder::new(Codec::Opus).expect("libopus encoder");
        if let Some(c) = complexity {
            enc.set_complexity(c).expect("0-10 is valid");
        }
        let mut dec = Decoder::new(Codec::Opus).expect("libopus decoder");
        let mut payloads = vec![[0u8; OPUS_MAX_PACKET]; 250];
        let mut lens = vec![0usize; 250];
        let frames = pcm.chunks(FRAME_SAMPLES_16K).count();
        let a0 = ALLOCS.load(Ordering::Relaxed);
        // Repeats make each timed run span many scheduler ticks (schedstat's granularity).
        const ENC_REPEAT: usize = 4;
        const DEC_REPEAT: usize = 30;
        let start = Stopwatch::start();
        for _ in 0..ENC_REPEAT {
            for (i, f) in pcm.chunks(FRAME_SAMPLES_16K).enumerate() {
                lens[i] = enc
                    .encode(black_box(f), &mut payloads[i])
                    .expect("legal frame");
            }
        }
        let enc_el = start.elapsed();
        let a1 = ALLOCS.load(Ordering::Relaxed);
        let mut out = [0i16; 1920];
        let start = Stopwatch::start();
        for _ in 0..DEC_REPEAT {
            for i in 0..frames {
                black_box(
                    dec.decode(&payloads[i][..lens[i]], &mut out)
                        .expect("our own packet"),
                );
            }
        }
        let dec_el = start.elapsed();
        let a2 = ALLOCS.load(Ordering::Relaxed);
        let (enc_frames, dec_frames) = ((ENC_REPEAT * frames) as f64, (DEC_REPEAT * frames) as f64);
        enc_runs.push(enc_el.as_nanos() as f64 / enc_frames);
        dec_runs.push(dec_el.as_nanos() as f64 / dec_frames);
        if r == 0 {
            enc_allocs = (a1 - a0) as f64 / enc_frames;
            dec_allocs = (a2 - a1) as f64 / dec_frames;
        }
    }
    (median(enc_runs), enc_allocs, median(dec_runs), dec_allocs)
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` runs us with no args: keep that fast.
    let quick = !std::env::args().any(|a| a == "--bench");
    if quick {
        let (rx, rx_a) = bench_rx();
        let (tx, tx_a) = bench_tx();
        let (sp, su, s_a) = bench_srtp(20_000);
        assert_eq!((rx_a, tx_a, s_a), (0.0, 0.0, 0.0));
        println!(
            "media bench smoke run: rx {rx:.0} ns, tx {tx:.0} ns, srtp protect {sp:.0} ns, unprotect {su:.0} ns"
        );
        return;
    }
    let (rx, rx_allocs) = bench_rx();
    let (tx, tx_allocs) = bench_tx();
    let (st_dec, st_goertzel, st_vad) = bench_rx_stages();
    let (srtp_p, srtp_u, srtp_allocs) = bench_srtp(50_000);
    let (oe, oe_allocs, od, od_allocs) = bench_opus(None);
    let by_complexity: Vec<(u8, f64)> = [1u8, 5, 10]
        .iter()
        .map(|&c| (c, bench_opus(Some(c)).0))
        .collect();
    let clock = if thread_cpu_ns().is_some() {
        "thread CPU time"
    } else {
        "wall time"
    };
    println!("media hot path, median of {RUNS} runs, {clock} (ns per 20 ms packet/frame)");
    println!(
        "  (a) receive: parse + stats + jitter push/pop + µ-law decode 160 + Goertzel + VAD: {rx:>8.0} ns  allocs/packet {rx_allocs}"
    );
    println!(
        "      of which: parse + µ-law decode {st_dec:.0} ns, Goertzel DTMF {st_goertzel:.0} ns, VAD {st_vad:.0} ns"
    );
    println!(
        "  (b) send:    copy 160 B frame + RTP header + sender/pacer bookkeeping:          {tx:>8.0} ns  allocs/packet {tx_allocs}"
    );
    println!(
        "  SRTP AES_CM_128_HMAC_SHA1_80, 172 B packet: protect {srtp_p:.0} ns, unprotect {srtp_u:.0} ns  allocs/packet {srtp_allocs}"
    );
    println!(
        "  opus encode 16 kHz mono 20 ms (24 kbit/s):                                        {oe:>8.0} ns  allocs/frame {oe_allocs}"
    );
    for (c, ns) in &by_complexity {
        println!("  opus encode at complexity {c:>2}: {ns:>8.0} ns");
    }
    println!(
        "  opus decode 16 kHz mono 20 ms:                                                    {od:>8.0} ns  allocs/frame {od_allocs}"
    );
    let g711_core_us_per_s = (rx + tx) * 50.0 / 1000.0;
    println!(
        "  G.711 call (50 pkt/s each way): {g711_core_us_per_s:.1} µs CPU per call-second -> {:.0} calls per core (media core only)",
        1e6 / g711_core_us_per_s
    );
    let opus_us = (rx + tx + oe + od) * 50.0 / 1000.0;
    println!(
        "  Opus call, live encode both ways: {opus_us:.1} µs per call-second -> {:.0} calls per core",
        1e6 / opus_us
    );
    let cached_us = (rx + tx + od) * 50.0 / 1000.0;
    println!(
        "  Opus call, prompts pre-encoded (decode only): {cached_us:.1} µs per call-second -> {:.0} calls per core",
        1e6 / cached_us
    );
    println!("  (load average at run time matters: other builds on the 2 cores inflate these)");
    if rx_allocs != 0.0 || tx_allocs != 0.0 {
        println!("FAIL: the G.711 paths allocate in steady state");
        std::process::exit(1);
    }
}
