//! An SDP offer: parse, then answer it as the IVR would (RFC 3264).
#![no_main]

use ivr::sip::sdp::{self, LocalMedia, SessionDescription};
use ivr::types::Codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(offer) = SessionDescription::parse(data) {
        let local = LocalMedia {
            addr: "127.0.0.1".parse().unwrap(),
            port: 20000,
            codecs: vec![Codec::Pcmu, Codec::Pcma, Codec::Opus],
            ptime_ms: 20,
            session_id: 1,
            session_version: 1,
        };
        let _ = sdp::negotiate(&offer, &local);
    }
});
