//! RFC 4733 telephone-events: a sequence of packets (each 4-byte event plus timestamp) into the
//! digit receiver, at 8 kHz and 48 kHz.
#![no_main]

use std::time::{Duration, Instant};

use ivr_proto::rtp::TelephoneEventReceiver;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let t0 = Instant::now();
    for rate in [8000, 48000, 0] {
        let mut rx = TelephoneEventReceiver::new(rate);
        for (i, chunk) in data.chunks(9).enumerate() {
            let ts = chunk
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or_default();
            let marker = chunk.get(4).is_some_and(|b| b & 1 != 0);
            let payload = chunk.get(5..).unwrap_or_default();
            let now = t0 + Duration::from_millis(20 * i as u64);
            let _ = rx.handle(now, i as u16, ts, marker, payload);
            let _ = rx.handle_timeout(now + Duration::from_millis(10));
        }
    }
});
