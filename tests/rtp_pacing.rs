//! The IVR's outgoing RTP, timed by the receiving test as packets arrive: one packet every
//! 20 ms, p99 of the inter-packet interval within 20 ± 2 ms; sequence and timestamp continuous.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn outgoing_rtp_is_paced_at_20ms() {
    let server = Server::start(ServerOptions::default());
    let mut uac = Uac::new(server.sip);
    uac.call();
    let mut arrivals: Vec<(Instant, u16, u32)> = Vec::new();
    let mut buf = [0u8; 2048];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(6) {
        if let Ok((n, _)) = uac.rtp.recv_from(&mut buf) {
            let at = Instant::now();
            if let Some(r) = parse_rtp(&buf[..n]) {
                arrivals.push((at, r.seq, r.ts));
            }
        }
    }
    uac.request("BYE", "", true);
    assert!(arrivals.len() > 250, "{} packets in 6 s", arrivals.len());
    for w in arrivals.windows(2) {
        assert_eq!(w[1].1, w[0].1.wrapping_add(1), "sequence continuous");
        assert_eq!(
            w[1].2.wrapping_sub(w[0].2),
            160,
            "timestamp advances one 20 ms frame"
        );
    }
    let mut dev_us: Vec<u64> = arrivals
        .windows(2)
        .map(|w| (w[1].0.duration_since(w[0].0).as_micros() as i64 - 20_000).unsigned_abs())
        .collect();
    dev_us.sort_unstable();
    let p50 = dev_us[dev_us.len() / 2];
    let p99 = dev_us[dev_us.len() * 99 / 100];
    eprintln!(
        "pacing: |interval - 20 ms| p50 {p50} µs, p99 {p99} µs, max {} µs",
        dev_us.last().unwrap()
    );
    assert!(p99 <= 2_000, "p99 pacing error {p99} µs > 2 ms");
}
