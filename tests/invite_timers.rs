//! INVITE dialogs and RFC 3261 timers driven in virtual time (no sleeping): 2xx retransmission
//! and ACK timeout, CANCEL, retransmitted INVITEs, BYE both ways with Timer E/F, re-INVITE hold,
//! 481 for unknown dialogs, and reject with Retry-After under Timer G.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ivr::sip::message::{self, Limits, Message, StartLine};
use ivr::sip::sdp::{LocalMedia, SessionDescription, negotiate};
use ivr::sip::{CallKey, Endpoint, EndpointConfig, Event, TerminateReason, Transport};
use ivr::types::{Codec, Direction};

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
    m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n";

fn peer() -> SocketAddr {
    "127.0.0.1:5070".parse().unwrap()
}

struct Harness {
    ep: Endpoint,
    now: Instant,
    transport: Transport,
}

impl Harness {
    fn new(transport: Transport) -> Harness {
        Harness {
            ep: Endpoint::new(EndpointConfig::default()),
            now: Instant::now(),
            transport,
        }
    }

    fn input(&mut self, text: &str) {
        self.ep
            .handle_input(self.now, peer(), self.transport, text.as_bytes());
    }

    fn sent(&mut self) -> Vec<Message> {
        std::iter::from_fn(|| self.ep.poll_transmit())
            .map(|t| {
                assert_eq!(t.destination, peer());
                assert_eq!(t.transport, self.transport);
                message::parse(&t.payload, &Limits::default(), false).expect("we send valid SIP")
            })
            .collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.ep.poll_event()).collect()
    }

    /// Advances virtual time to the next timer and fires it.
    fn advance(&mut self) -> Duration {
        let next = self.ep.poll_timeout().expect("a timer is pending");
        let step = next.saturating_duration_since(self.now);
        self.now = next;
        self.ep.handle_timeout(self.now);
        step
    }

    /// Runs timers until `limit` of virtual time has passed, collecting (elapsed, message) sent.
    fn run_for(&mut self, limit: Duration) -> Vec<(Duration, Message)> {
        let start = self.now;
        let mut out = Vec::new();
        while let Some(next) = self.ep.poll_timeout() {
            if next > start + limit {
                break;
            }
            self.advance();
            let at = self.now - start;
            out.extend(self.sent().into_iter().map(|m| (at, m)));
        }
        out
    }

    fn incoming(&mut self, invite: &str) -> CallKey {
        self.input(invite);
        let sent = self.sent();
        assert_eq!(codes(&sent), vec![100]);
        match self.events().as_slice() {
            [Event::Incoming { call, .. }] => *call,
            other => panic!("expected Incoming, got {other:?}"),
        }
    }

    fn answer(&mut self, call: CallKey, offer: &str) -> Message {
        let offer = SessionDescription::parse(offer.as_bytes()).unwrap();
        let n = negotiate(&offer, &local()).unwrap();
        self.ep.answer(self.now, call, &n.answer).unwrap();
        let mut sent = self.sent();
        assert_eq!(codes(&sent), vec![200]);
        sent.remove(0)
    }

    /// Answered and ACKed call; returns the key and our To tag.
    fn established(&mut self) -> (CallKey, String) {
        let call = self.incoming(&invite("z9hG4bKinv1", "", 1));
        let ok = self.answer(call, OFFER);
        let tag = ok.to_tag().unwrap();
        self.input(&ack(&tag, 1));
        assert_eq!(self.events(), vec![Event::Confirmed { call }]);
        (call, tag)
    }
}

fn local() -> LocalMedia {
    LocalMedia {
        addr: "127.0.0.1".parse().unwrap(),
        port: 30000,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        ptime_ms: 20,
        session_id: 42,
        session_version: 1,
        srtp: ivr::sip::sdp::SrtpMode::Off,
        srtp_key: ivr::rtp::srtp::KeySalt([0; ivr::rtp::srtp::KEY_SALT_LEN]),
    }
}

fn codes(msgs: &[Message]) -> Vec<u16> {
    msgs.iter().filter_map(|m| m.code()).collect()
}

fn with_body(head: String, body: &str) -> String {
    if body.is_empty() {
        format!("{head}Content-Length: 0\r\n\r\n")
    } else {
        format!(
            "{head}Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }
}

fn invite(branch: &str, to_tag: &str, cseq: u32) -> String {
    invite_with_sdp(branch, to_tag, cseq, OFFER)
}

fn invite_with_sdp(branch: &str, to_tag: &str, cseq: u32, sdp: &str) -> String {
    let to_tag = if to_tag.is_empty() {
        String::new()
    } else {
        format!(";tag={to_tag}")
    };
    with_body(
        format!(
            "INVITE sip:help@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n\
             Record-Route: <sip:proxy1.example.com;lr>, <sip:proxy2.example.com;lr>\r\n\
             From: <sip:5550100@example.com>;tag=caller\r\nTo: <sip:help@example.com>{to_tag}\r\n\
             Call-ID: call-1@127.0.0.1\r\nCSeq: {cseq} INVITE\r\nContact: <sip:5550100@127.0.0.1:5070>\r\n\
             Max-Forwards: 70\r\n"
        ),
        sdp,
    )
}

fn in_dialog(method: &str, branch: &str, to_tag: &str, cseq: u32) -> String {
    format!(
        "{method} sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\n\
         From: <sip:5550100@example.com>;tag=caller\r\nTo: <sip:help@example.com>;tag={to_tag}\r\n\
         Call-ID: call-1@127.0.0.1\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn cancel(branch: &str) -> String {
    format!(
        "CANCEL sip:help@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch};rport\r\n\
         From: <sip:5550100@example.com>;tag=caller\r\nTo: <sip:help@example.com>\r\nCall-ID: call-1@127.0.0.1\r\n\
         CSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    )
}

fn ack(to_tag: &str, cseq: u32) -> String {
    in_dialog("ACK", &format!("z9hG4bKack{cseq}"), to_tag, cseq)
}

fn response_to(req: &Message, code: u16) -> String {
    let mut out = format!("SIP/2.0 {code} Whatever\r\n");
    for h in req.headers.iter().filter(|h| {
        ["via", "from", "to", "call-id", "cseq"]
            .iter()
            .any(|n| h.is(n))
    }) {
        out.push_str(&format!("{}: {}", h.name, h.value));
        if h.is("to") {
            out.push_str(";tag=caller-side");
        }
        out.push_str("\r\n");
    }
    out + "Content-Length: 0\r\n\r\n"
}

#[test]
fn ok_is_retransmitted_with_doubling_intervals_until_ack() {
    let mut h = Harness::new(Transport::Udp);
    let call = h.incoming(&invite("z9hG4bKinv1", "", 1));
    let ok = h.answer(call, OFFER);
    assert!(
        ok.header("contact")
            .is_some_and(|c| c.contains("127.0.0.1:5060"))
    );
    assert!(String::from_utf8_lossy(&ok.body).contains("m=audio 30000 RTP/AVP 0 101"));
    assert_eq!(
        ok.values("record-route"),
        vec!["<sip:proxy1.example.com;lr>", "<sip:proxy2.example.com;lr>"]
    );
    let sent = h.run_for(T1 * 23);
    let times: Vec<Duration> = sent.iter().map(|(t, _)| *t).collect();
    let expect: Vec<Duration> = [1, 3, 7, 15, 23].iter().map(|&k| T1 * k).collect();
    assert_eq!(times, expect, "T1, then doubling, capped at T2");
    assert!(
        sent.iter()
            .all(|(_, m)| m.code() == Some(200) && m.to_tag() == ok.to_tag())
    );
    h.input(&ack(&ok.to_tag().unwrap(), 1));
    assert_eq!(h.events(), vec![Event::Confirmed { call }]);
    // After the ACK nothing is retransmitted any more.
    assert!(h.run_for(T1 * 64).is_empty());
    assert_eq!(h.ep.calls(), 1);
}

#[test]
fn no_ack_for_64_t1_sends_bye_and_terminates() {
    let mut h = Harness::new(Transport::Udp);
    let call = h.incoming(&invite("z9hG4bKinv1", "", 1));
    let ok = h.answer(call, OFFER);
    let start = h.now;
    let mut bye_at = None;
    while h.events().is_empty() {
        h.advance();
        if let Some(bye) = h
            .sent()
            .into_iter()
            .find(|m| m.method().is_some_and(|m| m.as_str() == "BYE"))
        {
            bye_at = Some((h.now - start, bye));
        }
    }
    let (at, bye) = bye_at.expect("BYE sent");
    assert_eq!(at, T1 * 64);
    assert_eq!(bye.to_tag(), Some("caller".into()));
    assert_eq!(bye.from_tag(), ok.to_tag());
    assert_eq!(h.ep.calls(), 0);
    // The Terminated event was emitted together with the BYE.
    let mut h2 = Harness::new(Transport::Udp);
    let call2 = h2.incoming(&invite("z9hG4bKinv1", "", 1));
    h2.answer(call2, OFFER);
    h2.now += T1 * 64;
    h2.ep.handle_timeout(h2.now);
    assert_eq!(
        h2.events(),
        vec![Event::Terminated {
            call: call2,
            reason: TerminateReason::AckTimeout
        }]
    );
    let _ = call;
}

#[test]
fn tcp_has_no_ok_retransmissions_but_still_times_out() {
    let mut h = Harness::new(Transport::Tcp);
    let call = h.incoming(&invite("z9hG4bKinv1", "", 1));
    h.answer(call, OFFER);
    assert_eq!(h.ep.poll_timeout(), Some(h.now + T1 * 64));
    h.advance();
    let sent = h.sent();
    assert!(
        sent.iter().all(|m| m.code().is_none()),
        "no 2xx retransmission over TCP"
    );
    assert_eq!(
        h.events(),
        vec![Event::Terminated {
            call,
            reason: TerminateReason::AckTimeout
        }]
    );
}

#[test]
fn cancel_gets_200_and_invite_487_then_timer_g_until_ack() {
    let mut h = Harness::new(Transport::Udp);
    let call = h.incoming(&invite("z9hG4bKinv1", "", 1));
    h.input(&cancel("z9hG4bKinv1"));
    let sent = h.sent();
    assert_eq!(codes(&sent), vec![200, 487]);
    assert_eq!(sent[0].cseq(), Some((1, "CANCEL")));
    assert_eq!(sent[1].cseq(), Some((1, "INVITE")));
    assert_eq!(h.events(), vec![Event::Cancelled { call }]);
    assert_eq!(h.ep.calls(), 0);
    let again = h.run_for(T1 * 3);
    assert_eq!(
        again
            .iter()
            .map(|(t, m)| (*t, m.code()))
            .collect::<Vec<_>>(),
        vec![(T1, Some(487)), (T1 * 3, Some(487))]
    );
    // ACK for the 487 (same branch) is absorbed by the transaction and stops Timer G.
    h.input(&in_dialog(
        "ACK",
        "z9hG4bKinv1",
        &sent[1].to_tag().unwrap(),
        1,
    ));
    assert!(h.sent().is_empty());
    assert!(h.run_for(T1 * 64).is_empty());
    assert!(h.events().is_empty());
}

#[test]
fn cancel_without_transaction_is_481() {
    let mut h = Harness::new(Transport::Udp);
    h.input(
        "CANCEL sip:help@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnone\r\n\
         From: <sip:a@example.com>;tag=x\r\nTo: <sip:help@example.com>\r\nCall-ID: nope\r\nCSeq: 1 CANCEL\r\n\r\n",
    );
    assert_eq!(codes(&h.sent()), vec![481]);
}

#[test]
fn retransmitted_invite_repeats_responses_and_is_not_a_new_call() {
    let mut h = Harness::new(Transport::Udp);
    let call = h.incoming(&invite("z9hG4bKinv1", "", 1));
    h.input(&invite("z9hG4bKinv1", "", 1));
    assert_eq!(codes(&h.sent()), vec![100]);
    let ok = h.answer(call, OFFER);
    h.input(&invite("z9hG4bKinv1", "", 1));
    let again = h.sent();
    assert_eq!(codes(&again), vec![200]);
    assert_eq!(again[0].to_tag(), ok.to_tag());
    assert!(h.events().is_empty());
    assert_eq!(h.ep.calls(), 1);
}

#[test]
fn remote_bye_is_answered_and_reported() {
    let mut h = Harness::new(Transport::Udp);
    let (call, tag) = h.established();
    h.input(&in_dialog("BYE", "z9hG4bKbye1", &tag, 2));
    assert_eq!(codes(&h.sent()), vec![200]);
    assert_eq!(h.events(), vec![Event::RemoteHangup { call }]);
    assert_eq!(h.ep.calls(), 0);
    // A retransmitted BYE gets the same 200 from the transaction, no second event.
    h.input(&in_dialog("BYE", "z9hG4bKbye1", &tag, 2));
    assert_eq!(codes(&h.sent()), vec![200]);
    assert!(h.events().is_empty());
}

#[test]
fn unknown_dialog_is_481() {
    let mut h = Harness::new(Transport::Udp);
    let (_call, tag) = h.established();
    h.input(&in_dialog("BYE", "z9hG4bKbye9", "not-our-tag", 2));
    assert_eq!(codes(&h.sent()), vec![481]);
    h.input(&in_dialog("INFO", "z9hG4bKinfo9", "not-our-tag", 3));
    assert_eq!(codes(&h.sent()), vec![481]);
    h.input(&invite("z9hG4bKreinv9", "not-our-tag", 4));
    assert_eq!(codes(&h.sent()), vec![481]);
    h.input(&in_dialog("INFO", "z9hG4bKinfo1", &tag, 5));
    assert_eq!(codes(&h.sent()), vec![200]);
    assert_eq!(h.ep.calls(), 1);
}

#[test]
fn local_hangup_sends_bye_with_dialog_headers_and_timer_e() {
    let mut h = Harness::new(Transport::Udp);
    let (call, tag) = h.established();
    h.ep.hangup(h.now, call).unwrap();
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    let bye = &sent[0];
    assert_eq!(
        bye.start,
        StartLine::Request {
            method: message::Method::Bye,
            uri: "sip:5550100@127.0.0.1:5070".into()
        }
    );
    assert_eq!(bye.from_tag(), Some(tag));
    assert_eq!(bye.to_tag(), Some("caller".into()));
    assert_eq!(bye.cseq(), Some((1, "BYE")));
    assert_eq!(bye.call_id(), Some("call-1@127.0.0.1"));
    assert_eq!(
        bye.values("route"),
        vec!["<sip:proxy1.example.com;lr>", "<sip:proxy2.example.com;lr>"]
    );
    let retx = h.run_for(T1 * 7);
    assert_eq!(
        retx.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![T1, T1 * 3, T1 * 7]
    );
    assert!(retx.iter().all(|(_, m)| m.to_bytes() == bye.to_bytes()));
    assert!(h.events().is_empty());
    h.input(&response_to(bye, 200));
    assert_eq!(
        h.events(),
        vec![Event::Terminated {
            call,
            reason: TerminateReason::LocalBye
        }]
    );
    assert_eq!(h.ep.calls(), 0);
    // Timer K absorbs retransmitted responses; after Timer K and Timer L everything is gone.
    h.input(&response_to(bye, 200));
    assert!(h.events().is_empty());
    h.run_for(T1 * 64);
    assert_eq!(h.ep.poll_timeout(), None);
}

#[test]
fn unanswered_bye_ends_with_timer_f() {
    let mut h = Harness::new(Transport::Udp);
    let (call, _) = h.established();
    let start = h.now;
    h.ep.hangup(h.now, call).unwrap();
    h.sent();
    let mut retransmits = 0;
    while h.events().is_empty() {
        h.advance();
        retransmits += h.sent().len();
    }
    assert_eq!(h.now - start, T1 * 64);
    // E: 0.5, 1.5, 3.5, 7.5, then every T2 until 32 s.
    assert_eq!(
        retransmits,
        4 + ((T1 * 64 - T1 * 15).as_millis() / T2.as_millis()) as usize
    );
    assert_eq!(h.ep.calls(), 0);
    assert_eq!(
        h.ep.hangup(h.now, call),
        Err(ivr::sip::CallError::UnknownCall)
    );
}

#[test]
fn reinvite_hold_is_reoffered_and_answered_recvonly() {
    let mut h = Harness::new(Transport::Udp);
    let (call, tag) = h.established();
    let hold = OFFER.replace("a=rtpmap:101", "a=sendonly\r\na=rtpmap:101");
    h.input(&invite_with_sdp("z9hG4bKreinv1", &tag, 2, &hold));
    assert_eq!(codes(&h.sent()), vec![100]);
    let offer = match h.events().as_slice() {
        [
            Event::Reoffer {
                call: c,
                offer: Some(o),
            },
        ] if *c == call => o.clone(),
        other => panic!("expected Reoffer, got {other:?}"),
    };
    let n = negotiate(&offer, &local()).unwrap();
    assert_eq!(n.direction, Direction::RecvOnly);
    h.ep.answer(h.now, call, &n.answer).unwrap();
    let ok = h.sent();
    assert_eq!(codes(&ok), vec![200]);
    assert!(String::from_utf8_lossy(&ok[0].body).contains("a=recvonly"));
    assert_eq!(ok[0].to_tag(), Some(tag.clone()));
    h.input(&ack(&tag, 2));
    assert!(
        h.events().is_empty(),
        "ACK of a re-INVITE is not a new Confirmed"
    );
    assert!(
        h.run_for(T1 * 64).is_empty(),
        "ACK stopped the 2xx retransmissions"
    );
    assert_eq!(h.ep.calls(), 1);
}

#[test]
fn reject_with_retry_after_and_timer_g() {
    let mut h = Harness::new(Transport::Udp);
    let call = h.incoming(&invite("z9hG4bKinv1", "", 1));
    h.ep.reject(h.now, call, 503, &[("Retry-After", "30")])
        .unwrap();
    let sent = h.sent();
    assert_eq!(codes(&sent), vec![503]);
    assert_eq!(sent[0].header("retry-after"), Some("30"));
    assert_eq!(h.ep.calls(), 0);
    let retx = h.run_for(T1 * 64);
    let times: Vec<Duration> = retx.iter().map(|(t, _)| *t).collect();
    assert_eq!(&times[..5], &[T1, T1 * 3, T1 * 7, T1 * 15, T1 * 23]);
    assert!(
        times.iter().all(|&t| t < T1 * 64),
        "Timer H stops Timer G at 64*T1"
    );
    assert_eq!(h.ep.poll_timeout(), None);
    assert!(h.events().is_empty());
}

#[test]
fn options_is_200_and_register_405() {
    let mut h = Harness::new(Transport::Udp);
    let opt = in_dialog("OPTIONS", "z9hG4bKopt", "x", 1)
        .replace(";tag=x", "")
        .replace("Max-Forwards: 70", "Max-Forwards: 0");
    h.input(&opt);
    let sent = h.sent();
    assert_eq!(codes(&sent), vec![200]);
    assert!(
        sent[0]
            .header("allow")
            .is_some_and(|a| a.contains("INVITE"))
    );
    h.input(&in_dialog("REGISTER", "z9hG4bKreg", "x", 1).replace(";tag=x", ""));
    let sent = h.sent();
    assert_eq!(codes(&sent), vec![405]);
    assert!(sent[0].header("allow").is_some());
}

/// Random interleavings of caller messages, app commands and clock jumps: no panic, every call
/// ends at most once, no event names a call after its end, and `calls()` matches our bookkeeping.
#[test]
fn random_dialog_sequences_keep_call_bookkeeping_consistent() {
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for transport in [Transport::Udp, Transport::Tcp] {
        let mut h = Harness::new(transport);
        let mut live: std::collections::BTreeSet<CallKey> = Default::default();
        let mut ended: std::collections::BTreeSet<CallKey> = Default::default();
        let mut tags: Vec<String> = vec!["nobody".into()];
        let mut seen: std::collections::BTreeMap<String, u32> = Default::default();
        for step in 0..4000u32 {
            let branch = format!("z9hG4bKf{}", next(6));
            // Mostly recent tags, so that in-dialog requests often hit a live dialog.
            let back = next((tags.len() as u64).min(3)) as usize;
            let tag = tags[tags.len() - 1 - back].clone();
            let cseq = 1 + next(4) as u32;
            match next(10) {
                0 | 1 => h.input(&invite(&branch, "", 1)),
                2 => h.input(&invite(&format!("z9hG4bKre{step}"), &tag, 2 + step)),
                3 => h.input(&ack(&tag, if next(2) == 0 { 1 } else { cseq })),
                4 => h.input(&in_dialog("BYE", &branch, &tag, cseq)),
                5 => h.input(&cancel(&branch)),
                6 => h.now += Duration::from_millis(next(12_000)),
                _ => {
                    let Some(&call) = live.iter().nth(next(live.len().max(1) as u64) as usize)
                    else {
                        continue;
                    };
                    let offer = SessionDescription::parse(OFFER.as_bytes()).unwrap();
                    let answer = negotiate(&offer, &local()).unwrap().answer;
                    let action = next(4);
                    let _ = match action {
                        0 => h.ep.answer(h.now, call, &answer),
                        1 => h.ep.reject(h.now, call, 486, &[]),
                        2 => h.ep.hangup(h.now, call),
                        _ => h.ep.ring(h.now, call),
                    };
                    // Rejecting the initial INVITE ends the call without an event; every other
                    // end (hangup included) is reported by an event, checked below.
                    if action == 1 && !h.ep.contains(call) {
                        live.remove(&call);
                        ended.insert(call);
                    }
                }
            }
            h.ep.handle_timeout(h.now);
            for m in h.sent() {
                if let Some(tag) = m.to_tag().filter(|_| m.code().is_some_and(|c| c == 200)) {
                    if !tags.contains(&tag) {
                        tags.push(tag);
                    }
                }
            }
            for ev in h.events() {
                let kind = format!("{ev:?}");
                *seen
                    .entry(kind.split([' ', '{']).next().unwrap_or("").to_string())
                    .or_insert(0) += 1;
                let (call, ends) = match ev {
                    Event::Incoming { call, .. } => {
                        assert!(live.insert(call), "step {step}: reused key");
                        (call, false)
                    }
                    Event::Reoffer { call, .. } | Event::Confirmed { call } => (call, false),
                    Event::Cancelled { call }
                    | Event::RemoteHangup { call }
                    | Event::Terminated { call, .. } => (call, true),
                    // This run never places calls or sends REFER.
                    other => panic!("step {step}: client-side event {other:?}"),
                };
                assert!(
                    !ended.contains(&call),
                    "step {step}: event for ended call {call:?}"
                );
                if ends {
                    live.remove(&call);
                    ended.insert(call);
                }
            }
            assert_eq!(h.ep.calls(), live.len(), "step {step}");
        }
        // The walk must actually reach every kind of event, or it proves little.
        for kind in [
            "Incoming",
            "Confirmed",
            "Cancelled",
            "RemoteHangup",
            "Terminated",
            "Reoffer",
        ] {
            assert!(
                seen.get(kind).is_some_and(|&n| n > 0),
                "{transport:?}: never saw {kind}: {seen:?}"
            );
        }
        println!("{transport:?}: {seen:?}");
    }
}

#[test]
fn rejected_reinvite_keeps_the_dialog() {
    let mut h = Harness::new(Transport::Udp);
    let (call, tag) = h.established();
    h.input(&invite("z9hG4bKreinv1", &tag, 2));
    assert_eq!(codes(&h.sent()), vec![100]);
    assert!(matches!(
        h.events().as_slice(),
        [Event::Reoffer { offer: Some(_), .. }]
    ));
    h.ep.reject(h.now, call, 488, &[]).unwrap();
    let sent = h.sent();
    assert_eq!(codes(&sent), vec![488]);
    assert_eq!(sent[0].to_tag(), Some(tag.clone()));
    h.input(&in_dialog("ACK", "z9hG4bKreinv1", &tag, 2));
    assert!(h.run_for(T1 * 64).is_empty(), "ACK absorbed, no Timer G");
    assert!(h.ep.contains(call));
    // A second re-INVITE with a lower CSeq is out of order.
    h.input(&invite("z9hG4bKreinv0", &tag, 1));
    assert_eq!(codes(&h.sent()), vec![500]);
}

#[test]
fn offerless_reinvite_gets_answer_from_ack() {
    let mut h = Harness::new(Transport::Udp);
    let (call, tag) = h.established();
    h.input(&invite_with_sdp("z9hG4bKreinv1", &tag, 2, ""));
    h.sent();
    assert_eq!(h.events(), vec![Event::Reoffer { call, offer: None }]);
    let ours = negotiate(
        &SessionDescription::parse(OFFER.as_bytes()).unwrap(),
        &local(),
    )
    .unwrap()
    .answer;
    h.ep.answer(h.now, call, &ours).unwrap();
    assert_eq!(codes(&h.sent()), vec![200]);
    let ack_with_answer = ack(&tag, 2).replace(
        "Content-Length: 0\r\n\r\n",
        &format!(
            "Content-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
            OFFER.len()
        ),
    );
    h.input(&ack_with_answer);
    match h.events().as_slice() {
        [
            Event::Reoffer {
                call: c,
                offer: Some(sd),
            },
        ] => {
            assert_eq!(*c, call);
            assert_eq!(sd.media[0].port, 40000);
        }
        other => panic!("expected the ACK's answer as Reoffer, got {other:?}"),
    }
}

#[test]
fn early_and_duplicate_timeouts_are_harmless() {
    let mut h = Harness::new(Transport::Udp);
    let call = h.incoming(&invite("z9hG4bKinv1", "", 1));
    h.answer(call, OFFER);
    let start = h.now;
    h.ep.handle_timeout(start + T1 / 2);
    h.ep.handle_timeout(start + T1 / 2);
    assert!(h.sent().is_empty(), "early wake-up sends nothing");
    h.ep.handle_timeout(start + T1);
    h.ep.handle_timeout(start + T1);
    assert_eq!(
        codes(&h.sent()),
        vec![200],
        "one retransmission per due timer"
    );
    assert_eq!(h.ep.poll_timeout(), Some(start + T1 * 3));
}
