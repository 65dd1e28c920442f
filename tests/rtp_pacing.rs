//! The IVR's outgoing RTP, timed from the packets as captured on loopback by tshark (kernel
//! timestamps, so the test's own scheduling adds no noise): one packet every 20 ms (the median
//! interval within 20 ± 1 ms), no drift (the stream's span is its packet count × 20 ms within
//! 1 %), sequence and timestamp continuous. The tail (p99 of |interval − 20 ms|, target ≤ 2 ms)
//! is printed, not asserted: on a shared machine it measures the machine (a CI run on a loaded
//! box saw 4.7 ms). BENCHMARKING.md reports it from quiet runs.
//!
//! Both ways the media threads send: through io_uring (the default; `/metrics` says how many
//! threads do) and with `sendto` (`[media] io_uring = false`).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn outgoing_rtp_is_paced_at_20ms_through_io_uring() {
    let server = Server::start(ServerOptions::default());
    let rings = server.metric("ivr_rtp_threads_io_uring");
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim() != "0")
        .unwrap_or(false);
    if disabled {
        eprintln!("io_uring is disabled on this kernel: the media threads use sendto");
        assert_eq!(rings, 0);
    } else {
        assert!(rings >= 1, "no media thread sends through io_uring");
    }
    paced(server, "pacing-uring");
}

#[test]
fn outgoing_rtp_is_paced_at_20ms_with_sendto() {
    let server = Server::start(ServerOptions {
        media_toml: "io_uring = false\n".into(),
        ..ServerOptions::default()
    });
    assert_eq!(server.metric("ivr_rtp_threads_io_uring"), 0);
    paced(server, "pacing-sendto");
}

fn paced(server: Server, name: &str) {
    let dir = temp_dir(name);
    let mut uac = Uac::new(server.sip);
    // Only this call's packets (another test's server may share the IVR's port range).
    let capture = Capture::start(
        &format!(
            "udp and dst port {} and src portrange {}-{}",
            uac.rtp.local_addr().unwrap().port(),
            server.rtp.0,
            server.rtp.1
        ),
        &dir,
    );
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
    let mut interval_us: Vec<u64> = rtp
        .windows(2)
        .map(|w| w[1].0.saturating_sub(w[0].0).as_micros() as u64)
        .collect();
    interval_us.sort_unstable();
    let median_interval = interval_us[interval_us.len() / 2];
    let span_us = rtp[rtp.len() - 1].0.saturating_sub(rtp[0].0).as_micros() as f64;
    let per_packet_us = span_us / (rtp.len() - 1) as f64;
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
    eprintln!("median interval {median_interval} µs; span / intervals {per_packet_us:.0} µs");
    assert!(
        (19_000..=21_000).contains(&median_interval),
        "median interval {median_interval} µs, not 20 ms"
    );
    assert!(
        (per_packet_us - 20_000.0).abs() <= 200.0,
        "the stream drifts: {per_packet_us:.0} µs per packet over {} packets",
        rtp.len()
    );
    assert_eq!(server.metric("ivr_rtp_send_errors_total"), 0);
}
