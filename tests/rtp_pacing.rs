//! The IVR's outgoing RTP, timed from the packets as captured on loopback by tshark (kernel
//! timestamps, so the test's own scheduling adds no noise): one packet every 20 ms, p99 of the
//! inter-packet interval within 20 ± 2 ms; sequence and timestamp continuous.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn outgoing_rtp_is_paced_at_20ms() {
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("pacing");
    let capture = Capture::start(
        &format!("udp and src portrange {}-{}", server.rtp.0, server.rtp.1),
        &dir,
    );
    let mut uac = Uac::new(server.sip);
    uac.call();
    std::thread::sleep(Duration::from_secs(8));
    uac.request("BYE", "", true);
    let packets = capture.stop();
    let rtp: Vec<(Duration, u16, u32)> = packets
        .iter()
        .filter_map(|p| parse_rtp(&p.payload).map(|r| (p.time, r.seq, r.ts)))
        .collect();
    assert!(rtp.len() > 350, "{} packets in 8 s", rtp.len());
    for w in rtp.windows(2) {
        assert_eq!(w[1].1, w[0].1.wrapping_add(1), "sequence continuous");
        assert_eq!(
            w[1].2.wrapping_sub(w[0].2),
            160,
            "timestamp advances one 20 ms frame"
        );
    }
    let mut dev_us: Vec<u64> = rtp
        .windows(2)
        .map(|w| (w[1].0.saturating_sub(w[0].0).as_micros() as i64 - 20_000).unsigned_abs())
        .collect();
    dev_us.sort_unstable();
    let p50 = dev_us[dev_us.len() / 2];
    let p99 = dev_us[dev_us.len() * 99 / 100];
    eprintln!(
        "pacing over {} intervals: |interval - 20 ms| p50 {p50} µs, p99 {p99} µs, max {} µs",
        dev_us.len(),
        dev_us.last().unwrap()
    );
    let (_, metrics) = server.get("/metrics");
    let lateness: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("ivr_rtp_send_lateness_seconds"))
        .collect();
    eprintln!("server-side send lateness:\n{}", lateness.join("\n"));
    assert!(p99 <= 2_000, "p99 pacing error {p99} µs > 2 ms");
}
