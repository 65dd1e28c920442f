//! An RTP or RTCP datagram: the RTP header parse and the compound RTCP walk.
#![no_main]

use ivr_proto::rtp::{parse_rtp, rtcp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_rtp(data);
    // A compound packet holds at most one sub-packet per 4 bytes.
    for p in rtcp::parse_compound(data).take(data.len() / 4 + 1) {
        let _ = p;
    }
});
