//! An SDP offer: parse, then answer it as the IVR would (RFC 3264, SDES a=crypto).
#![no_main]

use ivr_proto::sip::sdp::{self, LocalMedia, SessionDescription};
use ivr_proto::types::Codec;
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
            // SRTP allowed: the offer's a=crypto lines (RFC 4568) are parsed and answered too.
            srtp: sdp::SrtpMode::Optional,
            srtp_key: ivr_proto::rtp::srtp::KeySalt([7; ivr_proto::rtp::srtp::KEY_SALT_LEN]),
        };
        let _ = sdp::negotiate(&offer, &local);
    }
});
