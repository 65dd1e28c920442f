//! Strict source (issue #16, as rtpengine's option): once the caller's media has come from an
//! address and port, RTP to the call's port from anywhere else is counted and dropped. A third
//! party who learns the port cannot inject keys (or audio) into someone else's call.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;

/// `pcm` as 20 ms PCMU packets from `sock` to `dest`, paced in real time.
fn send_pcmu_from(sock: &UdpSocket, dest: SocketAddr, pcm: &[i16], seq0: u16, ts0: u32) {
    let start = Instant::now();
    for (i, frame) in pcm.chunks(160).enumerate() {
        let mut pkt = vec![0x80, 0x00];
        pkt.extend_from_slice(&seq0.wrapping_add(i as u16).to_be_bytes());
        pkt.extend_from_slice(&ts0.wrapping_add(160 * i as u32).to_be_bytes());
        pkt.extend_from_slice(&0x5eed_0bad_u32.to_be_bytes());
        pkt.extend(frame.iter().map(|&s| linear_to_ulaw(s)));
        sock.send_to(&pkt, dest).unwrap();
        let due = start + Duration::from_millis(20 * (i as u64 + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

#[test]
fn keys_from_a_stray_source_are_dropped_and_counted() {
    require("sox");
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("strict-source");
    let two = sox_tone(&dir, "two", 697, 1336);
    let nine = sox_tone(&dir, "nine", 852, 1477);
    let gap = vec![0i16; 8000 / 2];
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    let dest = Uac::remote_rtp(&ok);
    let stray_before = server.metric("ivr_rtp_stray_packets_total");

    // The caller's media comes first: it sets the call's source.
    uac.send_pcmu(dest, &gap, 100, 5000);
    // Someone else sends key 9 to the same port (a different socket: another port).
    let stray = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut injected = gap.clone();
    injected.extend(&nine);
    injected.extend(&gap);
    send_pcmu_from(&stray, dest, &injected, 2000, 90_000);
    let stray_packets = injected.len().div_ceil(160) as i64;
    // The caller presses 2 (Spanish): that one counts.
    let mut audio = gap.clone();
    audio.extend(&two);
    audio.extend(&gap);
    audio.extend(&gap);
    uac.send_pcmu(dest, &audio, 200, 5000 + 8000);

    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["digits"], "2", "the stray 9 was not taken: {call}");
    assert_eq!(call["lang"], "es", "{call}");
    let dropped = server.metric("ivr_rtp_stray_packets_total") - stray_before;
    assert_eq!(dropped, stray_packets, "every stray packet counted");
    assert!(
        server
            .log_text()
            .contains("RTP from a stray source dropped")
    );
}
