//! RFC 4103 text: RTP datagrams (T.140 plain and RFC 2198 RED) into the receiver.
#![no_main]

use ivr_proto::rtp::t140::T140Receiver;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut red = T140Receiver::new(98, Some(99));
    let mut plain = T140Receiver::new(98, None);
    // Several datagrams: the input split at 0xFF bytes.
    for dgram in data.split(|b| *b == 0xff) {
        let _ = red.handle_datagram(dgram);
        let _ = plain.handle_datagram(dgram);
    }
});
