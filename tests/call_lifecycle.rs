//! Call lifecycle over real UDP against `ivr serve`: CANCEL before answer, BYE mid-prompt, a
//! caller that vanishes, hold and resume by re-INVITE, 503 beyond the call limit, 481 for an
//! unknown dialog, OPTIONS for health checks.

mod common;

use std::time::{Duration, Instant};

use common::*;

fn count_rtp(uac: &Uac, window: Duration) -> Vec<(Instant, u16, u32, bool)> {
    let mut out = Vec::new();
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while start.elapsed() < window {
        if let Ok((n, _)) = uac.rtp.recv_from(&mut buf) {
            if let Some(r) = parse_rtp(&buf[..n]) {
                out.push((Instant::now(), r.seq, r.ts, r.marker));
            }
        }
    }
    out
}

#[test]
fn cancel_before_answer_gets_487_and_frees_the_call() {
    let server = Server::start(
        ServerOptions {
            extra_toml: String::new(),
            ..Default::default()
        }
        .with_answer_delay(2000),
    );
    let mut uac = Uac::new(server.sip);
    let sdp = uac.sdp("sendrecv");
    let branch = uac.request("INVITE", &sdp, true);
    // 100 Trying and 180 Ringing first.
    let mut saw_ringing = false;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(1) {
        if let Some(m) = uac.recv(Duration::from_millis(100)) {
            saw_ringing |= m.status() == Some(180);
        }
    }
    assert!(saw_ringing, "180 Ringing while the answer is delayed");
    uac.cancel(&branch);
    let mut codes = Vec::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) && !codes.contains(&487) {
        if let Some(m) = uac.recv(Duration::from_millis(100)) {
            codes.extend(m.status());
        }
    }
    assert!(codes.contains(&200), "200 for the CANCEL: {codes:?}");
    assert!(codes.contains(&487), "487 for the INVITE: {codes:?}");
    uac.ack(false, &branch);
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["end_reason"], "cancelled");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(server.metric("ivr_calls_active"), 0);
}

#[test]
fn bye_mid_prompt_ends_the_call_and_stops_media() {
    let server = Server::start(ServerOptions::default());
    let mut uac = Uac::new(server.sip);
    uac.call();
    let heard = count_rtp(&uac, Duration::from_millis(1000));
    assert!(
        heard.len() >= 40,
        "RTP flows while the greeting plays ({} packets)",
        heard.len()
    );
    uac.request("BYE", "", true);
    let ok = uac.final_response(Duration::from_secs(3));
    assert_eq!(ok.status(), Some(200));
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["end_reason"], "caller_bye");
    assert_eq!(call["outcome"], "caller_hangup");
    std::thread::sleep(Duration::from_millis(300));
    let after = count_rtp(&uac, Duration::from_millis(500));
    assert!(
        after.is_empty(),
        "no RTP after BYE ({} packets)",
        after.len()
    );
    assert_eq!(server.metric("ivr_calls_active"), 0);
    // The caller's number is stored redacted.
    assert_eq!(call["caller"], "***34");
    assert!(
        !std::fs::read_to_string(&server.log)
            .unwrap()
            .contains("2025550134"),
        "no clear number in the log"
    );
}

#[test]
fn a_caller_that_vanishes_is_hung_up_and_freed() {
    let server = Server::start(ServerOptions {
        rtp_timeout_secs: 2,
        ..Default::default()
    });
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    let dest = Uac::remote_rtp(&ok);
    uac.send_pcmu(dest, &vec![0i16; 160 * 10], 1, 1000);
    // Then nothing: no RTP, no BYE. The IVR sends BYE after the timeout.
    let start = Instant::now();
    let mut bye = None;
    while start.elapsed() < Duration::from_secs(6) {
        if let Some(m) = uac.recv(Duration::from_millis(200)) {
            if m.method() == Some("BYE") {
                bye = Some(m);
                break;
            }
        }
    }
    let bye = bye.expect("the IVR hangs up a silent, vanished caller");
    uac.respond_ok(&bye);
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["end_reason"], "rtp_timeout");
    assert_eq!(server.metric("ivr_calls_rtp_timeout_total"), 1);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(server.metric("ivr_calls_active"), 0);
}

#[test]
fn hold_and_resume_by_reinvite() {
    let server = Server::start(ServerOptions::default());
    let mut uac = Uac::new(server.sip);
    uac.call();
    let before = count_rtp(&uac, Duration::from_millis(600));
    assert!(before.len() >= 25);

    let hold = uac.sdp("sendonly");
    let b = uac.request("INVITE", &hold, true);
    let ok = uac.final_response(Duration::from_secs(3));
    assert_eq!(ok.status(), Some(200));
    assert!(
        ok.body.contains("a=recvonly"),
        "answer to sendonly is recvonly:\n{}",
        ok.body
    );
    uac.ack(true, &b);
    std::thread::sleep(Duration::from_millis(200));
    let _ = count_rtp(&uac, Duration::from_millis(100));
    let held = count_rtp(&uac, Duration::from_millis(800));
    assert!(
        held.is_empty(),
        "no audio to a caller on hold ({} packets)",
        held.len()
    );

    let resume = uac.sdp("sendrecv");
    let b = uac.request("INVITE", &resume, true);
    let ok = uac.final_response(Duration::from_secs(3));
    assert_eq!(ok.status(), Some(200));
    assert!(ok.body.contains("a=sendrecv"), "{}", ok.body);
    uac.ack(true, &b);
    let after = count_rtp(&uac, Duration::from_millis(600));
    assert!(after.len() >= 25, "audio resumes ({} packets)", after.len());
    // One stream: sequence numbers continue, the timestamp kept running through the hold.
    let (last_before, first_after) = (before.last().unwrap(), after.first().unwrap());
    assert_eq!(
        first_after.1.wrapping_sub(last_before.1) as u32,
        1,
        "sequence continues after hold"
    );
    let ts_gap = first_after.2.wrapping_sub(last_before.2) as f64 / 8000.0;
    let wall_gap = first_after.0.duration_since(last_before.0).as_secs_f64();
    assert!(
        (ts_gap - wall_gap).abs() < 0.1,
        "timestamp follows wall clock: {ts_gap:.3} s vs {wall_gap:.3} s"
    );
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
}

#[test]
fn beyond_the_call_limit_gets_503_with_retry_after() {
    let server = Server::start(ServerOptions {
        max_calls: 1,
        ..Default::default()
    });
    let mut first = Uac::new(server.sip);
    first.call();
    let mut second = Uac::new(server.sip);
    let sdp = second.sdp("sendrecv");
    second.request("INVITE", &sdp, true);
    let busy = second.final_response(Duration::from_secs(3));
    assert_eq!(busy.status(), Some(503));
    assert!(busy.header("Retry-After").is_some(), "{busy:?}");
    assert_eq!(server.metric("ivr_calls_rejected_total"), 1);
    first.request("BYE", "", true);
    assert_eq!(
        first.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
}

#[test]
fn options_and_unknown_dialogs() {
    let server = Server::start(ServerOptions::default());
    let mut uac = Uac::new(server.sip);
    uac.request("OPTIONS", "", true);
    let ok = uac.final_response(Duration::from_secs(3));
    assert_eq!(ok.status(), Some(200));
    assert!(
        ok.header("Allow").is_some_and(|a| a.contains("INVITE")),
        "{ok:?}"
    );
    let mut stray = Uac::new(server.sip);
    stray.to_tag = Some("nonexistent".into());
    stray.request("BYE", "", true);
    assert_eq!(
        stray.final_response(Duration::from_secs(3)).status(),
        Some(481)
    );
}
