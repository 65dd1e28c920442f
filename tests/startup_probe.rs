//! A server that is still loading is out of service, not dead: from the moment `ivr serve`
//! starts on a fresh data dir (an empty prompt cache, so every prompt is rendered), every
//! OPTIONS probe gets 503 + Retry-After or 200, an INVITE during loading gets 503, and once
//! `/readyz` is green the same probes get 200 and calls are taken.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// One OPTIONS, sent again on the RFC 3261 timer (0.5 s, 1 s) as a proxy's probe would be:
/// the status of the first answer, or `None` if 3.5 s bring nothing.
fn probe(server: std::net::SocketAddr) -> Option<u16> {
    let mut uac = Uac::new(server);
    uac.request("OPTIONS", "", true);
    let start = Instant::now();
    let mut resend = Duration::from_millis(500);
    let mut next = start + resend;
    while start.elapsed() < Duration::from_millis(3500) {
        if let Some(m) = uac.recv(Duration::from_millis(50)) {
            if let Some(code) = m.status() {
                if code == 503 {
                    assert!(
                        m.header("Retry-After").is_some(),
                        "a 503 says when to come back"
                    );
                }
                return Some(code);
            }
        }
        if Instant::now() >= next {
            uac.request("OPTIONS", "", false);
            resend *= 2;
            next = Instant::now() + resend;
        }
    }
    None
}

#[test]
fn options_and_invite_get_503_while_loading_then_200() {
    let cache = temp_dir("fresh-tts-cache");
    let opts = ServerOptions {
        tts_cache: Some(cache.clone()),
        ..ServerOptions::default()
    };
    let mut server = Server::spawn(&opts);
    let mut statuses = Vec::new();
    let mut invite_during_loading = None;
    let start = Instant::now();
    loop {
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("ivr serve exited {status}:\n{}", server.log_text());
        }
        let status = probe(server.sip);
        statuses.push(status);
        assert!(
            status.is_some(),
            "a probe {:?} after the start got nothing; so far {statuses:?}\n{}",
            start.elapsed(),
            server.log_text()
        );
        if status == Some(503) && invite_during_loading.is_none() {
            let mut uac = Uac::new(server.sip);
            let sdp = uac.sdp("sendrecv");
            uac.request("INVITE", &sdp, true);
            invite_during_loading = uac.final_response(Duration::from_secs(3)).status();
        }
        if status == Some(200) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "never ready: {statuses:?}\n{}",
            server.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Rendering every prompt from nothing takes seconds: the first probes saw it loading.
    assert_eq!(statuses[0], Some(503), "{statuses:?}");
    assert_eq!(invite_during_loading, Some(503), "a call while loading");
    assert_eq!(server.get("/readyz").0, 200, "OPTIONS 200 means ready");
    // Ready: a call is taken and answered.
    let mut uac = Uac::new(server.sip);
    uac.call();
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    let _ = std::fs::remove_dir_all(&cache);
}
