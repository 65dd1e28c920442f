//! A caller who sends no RTP for a while (hold, silence suppression, a gateway slow to start)
//! is watched through its media thread's epoll instance instead of being read at every tick
//! (`outgoing::Watcher`), and is read at every tick again once it talks: nothing it sends after
//! the quiet spell is missed. The gauges say which way each socket is read.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// Polls `name` on /metrics until it equals `want` (within `within`); returns the last value.
fn metric_reaches(server: &Server, name: &str, want: i64, within: Duration) -> i64 {
    let deadline = Instant::now() + within;
    loop {
        let v = server.metric(name);
        if v == want || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_caller_quiet_for_a_while_is_watched_then_heard_when_it_talks_again() {
    require("sox");
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("quiet-caller");
    let two = sox_tone(&dir, "two", 697, 1336);
    let gap = vec![0i16; 8000 / 2];
    assert_eq!(server.metric("ivr_rtp_sockets_watched"), 0);

    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    let dest = Uac::remote_rtp(&ok);
    // Nothing from the caller: after five empty reads its socket goes into the epoll set.
    let watched = metric_reaches(
        &server,
        "ivr_rtp_sockets_watched",
        1,
        Duration::from_secs(3),
    );
    assert_eq!(watched, 1, "the quiet caller's socket is watched");
    assert_eq!(server.metric("ivr_rtp_watch_changes_total"), 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        server.metric("ivr_rtp_sockets_watched"),
        1,
        "still quiet, still watched"
    );

    // The caller talks: key 2 (Spanish), in band, after half a second of silence as audio.
    let mut audio = gap.clone();
    audio.extend(&two);
    audio.extend(&gap);
    audio.extend(&gap);
    uac.send_pcmu(dest, &audio, 100, 5000);
    assert_eq!(
        server.metric("ivr_rtp_sockets_watched"),
        0,
        "a talking caller's socket is read at every tick, out of the epoll set"
    );
    assert_eq!(server.metric("ivr_rtp_watch_changes_total"), 2);

    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["digits"], "2", "the key after the quiet spell: {call}");
    assert_eq!(call["lang"], "es", "{call}");
}
