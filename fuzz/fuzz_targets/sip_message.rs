//! A datagram through the whole SIP receive path: the edge guard, the parser (UDP and stream
//! rules), validation, printing, and the endpoint (transactions, dialogs, responses).
#![no_main]

use std::time::{Duration, Instant};

use ivr_proto::sip::guard::{Guard, GuardConfig};
use ivr_proto::sip::message::{self, Limits};
use ivr_proto::sip::{Endpoint, EndpointConfig, Transport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let from: std::net::SocketAddr = "127.0.0.1:5070".parse().unwrap();
    let mut guard = Guard::new(GuardConfig::default());
    let _ = guard.check(now, from.ip(), data);
    let limits = Limits::default();
    for stream in [false, true] {
        if let Ok(m) = message::parse(data, &limits, stream) {
            let _ = message::validate_request(&m);
            let _ = message::parse(&m.to_bytes(), &limits, true);
        }
    }
    let _ = message::salvage(data);
    let mut ep = Endpoint::new(EndpointConfig::default());
    ep.handle_input(now, from, Transport::Udp, data);
    ep.refuse(from, Transport::Udp, data, 403);
    ep.handle_timeout(now + Duration::from_secs(64));
    while ep.poll_transmit().is_some() {}
    while ep.poll_event().is_some() {}
});
