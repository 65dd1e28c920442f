//! SIP parse and endpoint throughput with plain std timing (no criterion).
//! Run: `cargo bench --bench sip_parse` (release profile). Prints ns per operation.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use ivr::sip::guard::{Guard, GuardConfig, Verdict};
use ivr::sip::message::{self, Limits};
use ivr::sip::{Endpoint, EndpointConfig, Event, Transport};

const SDP: &str = "v=0\r\no=- 3 3 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
    m=audio 40000 RTP/AVP 0 8 96 101\r\na=rtpmap:96 opus/48000/2\r\na=rtpmap:101 telephone-event/8000\r\n\
    a=fmtp:101 0-16\r\na=ptime:20\r\na=sendrecv\r\n";

fn invite(n: u64) -> Vec<u8> {
    format!(
        "INVITE sip:help@192.0.2.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK{n:x};rport\r\n\
         Via: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKupstream{n}\r\nRecord-Route: <sip:192.0.2.10;lr>\r\n\
         Max-Forwards: 69\r\nFrom: \"Caller\" <sip:+15550100@trunk.example.com>;tag={n}\r\n\
         To: <sip:help@ivr.example.com>\r\nCall-ID: {n}-bench@192.0.2.10\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:+15550100@192.0.2.10:5060>\r\nAllow: INVITE, ACK, CANCEL, BYE, OPTIONS\r\n\
         Supported: replaces, timer\r\nUser-Agent: trunk/1.0\r\nContent-Type: application/sdp\r\n\
         Content-Length: {}\r\n\r\n{SDP}",
        SDP.len()
    )
    .into_bytes()
}

fn report(name: &str, iterations: u64, start: Instant) {
    let ns = start.elapsed().as_nanos() as f64 / iterations as f64;
    println!("{name:<40} {ns:>10.0} ns/op  ({:.0} ops/s)", 1e9 / ns);
}

fn main() {
    let msg = invite(1);
    let limits = Limits::default();
    let n = 100_000;
    let start = Instant::now();
    for _ in 0..n {
        black_box(message::parse(black_box(&msg), &limits, false).expect("bench INVITE parses"));
    }
    report(&format!("parse INVITE ({} B)", msg.len()), n, start);

    let start = Instant::now();
    for _ in 0..n {
        let m = message::parse(black_box(&msg), &limits, false).expect("bench INVITE parses");
        black_box(message::validate_request(&m)).expect("valid");
    }
    report(
        &format!("parse+validate INVITE ({} B)", msg.len()),
        n,
        start,
    );

    // The edge guard on every message: trust, token bucket, User-Agent scan (one source, and
    // 10,000 sources cycling through the table).
    let mut guard = Guard::new(GuardConfig {
        trusted: vec!["192.0.2.0/24".parse().expect("cidr")],
        rate_per_sec: 0,
        ..GuardConfig::default()
    });
    let from: std::net::IpAddr = "192.0.2.10".parse().expect("ip");
    let t0 = Instant::now();
    let start = Instant::now();
    for _ in 0..n {
        assert_eq!(guard.check(t0, from, black_box(&msg)), Verdict::Accept);
    }
    report("guard check INVITE (no rate limit)", n, start);
    let mut guard = Guard::new(GuardConfig {
        trusted: vec!["10.0.0.0/8".parse().expect("cidr")],
        ..GuardConfig::default()
    });
    let start = Instant::now();
    for i in 0..n {
        let from =
            std::net::IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + (i % 10_000) as u32));
        let now = t0 + std::time::Duration::from_micros(i * 10);
        assert_eq!(guard.check(now, from, black_box(&msg)), Verdict::Accept);
    }
    report("guard check INVITE (10k sources, limit on)", n, start);

    let m = message::parse(&msg, &limits, false).expect("parses");
    let start = Instant::now();
    for _ in 0..n {
        black_box(black_box(&m).to_bytes());
    }
    report("print INVITE", n, start);

    // Full path of a new call: parse, route, 100 Trying, Incoming event, then a 486 reject.
    let mut ep = Endpoint::new(EndpointConfig::default());
    let from: SocketAddr = "192.0.2.10:5060".parse().expect("literal address");
    let msgs: Vec<Vec<u8>> = (0..n).map(invite).collect();
    let now = Instant::now();
    let start = Instant::now();
    for data in &msgs {
        ep.handle_input(now, from, Transport::Udp, data);
        while ep.poll_transmit().is_some() {}
        while let Some(ev) = ep.poll_event() {
            if let Event::Incoming { call, .. } = ev {
                ep.reject(now, call, 486, &[]).expect("pending INVITE");
            }
        }
        while ep.poll_transmit().is_some() {}
    }
    report("endpoint INVITE -> 100 -> 486", n, start);
}
