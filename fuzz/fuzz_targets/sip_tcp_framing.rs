//! TCP framing: a byte stream cut into messages by Content-Length, as the shell does.
#![no_main]

use ivr_proto::sip::message::{self, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let mut buf = data;
    // Each frame consumes at least one byte: bounded by the input's length.
    for _ in 0..=data.len() {
        let skip = buf
            .iter()
            .take_while(|b| **b == b'\r' || **b == b'\n')
            .count();
        buf = &buf[skip..];
        match message::frame_len(buf) {
            Ok(Some(len)) => {
                assert!(len > 0 && len <= buf.len(), "frame {len} of {}", buf.len());
                let _ = message::parse(&buf[..len], &limits, true);
                buf = &buf[len..];
            }
            Ok(None) | Err(_) => break,
        }
    }
});
