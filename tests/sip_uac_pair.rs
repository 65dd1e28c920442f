//! Two endpoints, a caller (UAC) and a callee (UAS), wired through a virtual network with a
//! seeded PRNG that drops, duplicates and reorders datagrams; the clock jumps to the next
//! event (quinn-proto `Pair::drive` style), so 32 s of Timer B take microseconds.
//! Proves: call → answer → ACK → BYE at 0 % and 20 % loss, CANCEL before and after a
//! provisional and racing a 2xx, 486 → Failed, no answer → 408 at Timer B, forked 2xx, and that
//! every retransmission stays within the RFC 3261 timers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ivr::sip::message::{self, Limits, Message, StartLine};
use ivr::sip::sdp::{LocalMedia, SessionDescription, negotiate};
use ivr::sip::{
    CallKey, Endpoint, EndpointConfig, Event, OutgoingCall, TerminateReason, Transmit, Transport,
};
use ivr::types::Codec;

const T1: Duration = Duration::from_millis(500);
const T2: Duration = Duration::from_secs(4);

fn caller_addr() -> SocketAddr {
    "10.0.0.1:5060".parse().unwrap()
}
fn callee_addr() -> SocketAddr {
    "10.0.0.2:5080".parse().unwrap()
}

fn media(port: u16) -> LocalMedia {
    LocalMedia {
        addr: "10.0.0.9".parse().unwrap(),
        port,
        codecs: vec![Codec::Pcmu, Codec::Pcma],
        ptime_ms: 20,
        session_id: u64::from(port),
        session_version: 1,
        srtp: ivr::sip::sdp::SrtpMode::Off,
        srtp_key: ivr::rtp::srtp::KeySalt([0; ivr::rtp::srtp::KEY_SALT_LEN]),
    }
}

fn offer() -> SessionDescription {
    SessionDescription::parse(
        b"v=0\r\no=- 7 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n\
          m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\n",
    )
    .unwrap()
}

/// What the callee's app does with an incoming call.
#[derive(Clone, Copy, PartialEq)]
enum Callee {
    Answer,
    Reject(u16),
    /// 180 and nothing more.
    Ring,
    /// 180, then 200 in the same instant (a CANCEL sent on the 180 must cross the 200).
    RingThenAnswer,
}

struct Side {
    ep: Endpoint,
    addr: SocketAddr,
    events: Vec<(Instant, Event)>,
    /// Every datagram this side sent, parsed, with its time.
    sent: Vec<(Instant, Message)>,
    /// Every datagram delivered to this side.
    received: Vec<(Instant, Message)>,
}

impl Side {
    fn new(addr: SocketAddr) -> Side {
        Side {
            ep: Endpoint::new(EndpointConfig {
                local_addr: addr,
                ..EndpointConfig::default()
            }),
            addr,
            events: Vec::new(),
            sent: Vec::new(),
            received: Vec::new(),
        }
    }
}

struct Datagram {
    at: Instant,
    seq: u64,
    from: SocketAddr,
    t: Transmit,
}

struct Pair {
    now: Instant,
    start: Instant,
    rng: u64,
    loss: f64,
    dup: f64,
    /// Uniform one-way delay range; a spread reorders datagrams.
    delay_ms: (u64, u64),
    /// Datagrams to the callee vanish (an unreachable destination).
    black_hole: bool,
    seq: u64,
    wire: Vec<Datagram>,
    caller: Side,
    callee: Side,
    policy: Callee,
    /// Caller app: CANCEL when this provisional arrives.
    cancel_on: Option<u16>,
    /// Caller app: hang up this long after Answered.
    hangup_after: Option<Duration>,
    hangup_at: Option<(Instant, CallKey)>,
}

impl Pair {
    fn new(seed: u64, loss: f64, policy: Callee) -> Pair {
        let now = Instant::now();
        Pair {
            now,
            start: now,
            rng: seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1,
            loss,
            dup: if loss > 0.0 { 0.05 } else { 0.0 },
            delay_ms: if loss > 0.0 { (5, 80) } else { (20, 20) },
            black_hole: false,
            seq: 0,
            wire: Vec::new(),
            caller: Side::new(caller_addr()),
            callee: Side::new(callee_addr()),
            policy,
            cancel_on: None,
            hangup_after: Some(Duration::from_secs(1)),
            hangup_at: None,
        }
    }

    fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn place_call(&mut self, transport: Transport) -> CallKey {
        let call = self
            .caller
            .ep
            .invite(
                self.now,
                OutgoingCall {
                    target: "sip:tier1@queue.example".into(),
                    from_user: "ivr".into(),
                    destination: callee_addr(),
                    transport,
                    offer: offer(),
                    headers: vec![("User-to-User".into(), "c0ffee;encoding=hex".into())],
                },
            )
            .unwrap();
        self.settle();
        call
    }

    /// Moves outputs onto the wire and lets both apps react, until nothing changes.
    fn settle(&mut self) {
        loop {
            let mut moved = false;
            for caller in [true, false] {
                let side = if caller {
                    &mut self.caller
                } else {
                    &mut self.callee
                };
                let from = side.addr;
                let mut out = Vec::new();
                while let Some(t) = side.ep.poll_transmit() {
                    let m = message::parse(&t.payload, &Limits::default(), false)
                        .expect("endpoints send valid SIP");
                    side.sent.push((self.now, m));
                    out.push(t);
                }
                for t in out {
                    moved = true;
                    self.put_on_wire(from, t);
                }
            }
            while let Some(ev) = self.callee.ep.poll_event() {
                moved = true;
                self.callee.events.push((self.now, ev.clone()));
                if let Event::Incoming { call, info } = ev {
                    self.callee_app(call, info.offer);
                }
            }
            while let Some(ev) = self.caller.ep.poll_event() {
                moved = true;
                self.caller.events.push((self.now, ev.clone()));
                match ev {
                    Event::Progress { call, status } if Some(status) == self.cancel_on => {
                        self.caller.ep.cancel(self.now, call).unwrap();
                    }
                    Event::Answered { call, .. } => {
                        if let Some(after) = self.hangup_after {
                            self.hangup_at = Some((self.now + after, call));
                        }
                    }
                    _ => {}
                }
            }
            if !moved {
                return;
            }
        }
    }

    fn callee_app(&mut self, call: CallKey, offer: Option<SessionDescription>) {
        let ep = &mut self.callee.ep;
        let now = self.now;
        let answer = || {
            negotiate(&offer.clone().unwrap(), &media(30000))
                .unwrap()
                .answer
        };
        match self.policy {
            Callee::Answer => ep.answer(now, call, &answer()).unwrap(),
            Callee::Reject(code) => ep.reject(now, call, code, &[]).unwrap(),
            Callee::Ring => ep.ring(now, call).unwrap(),
            Callee::RingThenAnswer => {
                ep.ring(now, call).unwrap();
                ep.answer(now, call, &answer()).unwrap();
            }
        }
    }

    fn put_on_wire(&mut self, from: SocketAddr, t: Transmit) {
        let reliable = t.transport == Transport::Tcp;
        if self.black_hole && t.destination == callee_addr() {
            return;
        }
        if !reliable && self.random() < self.loss {
            return;
        }
        let copies = if !reliable && self.random() < self.dup {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let (lo, hi) = self.delay_ms;
            // TCP keeps order: a fixed delay and FIFO on ties.
            let ms = if reliable {
                lo
            } else {
                lo + (self.random() * (hi - lo + 1) as f64) as u64
            };
            self.seq += 1;
            self.wire.push(Datagram {
                at: self.now + Duration::from_millis(ms),
                seq: self.seq,
                from,
                t: t.clone(),
            });
        }
    }

    fn next_time(&self) -> Option<Instant> {
        let wire = self.wire.iter().map(|d| d.at).min();
        let app = self.hangup_at.map(|(t, _)| t);
        [
            wire,
            app,
            self.caller.ep.poll_timeout(),
            self.callee.ep.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs until nothing is left to do or `limit` of virtual time has passed.
    fn drive(&mut self, limit: Duration) {
        let end = self.now + limit;
        while let Some(next) = self.next_time() {
            if next > end {
                break;
            }
            self.now = self.now.max(next);
            self.step();
        }
    }

    /// One thing at a time, so that apps react between two datagrams of the same instant.
    fn step(&mut self) {
        let now = self.now;
        if let Some(i) = self
            .wire
            .iter()
            .enumerate()
            .filter(|(_, d)| d.at <= now)
            .min_by_key(|(_, d)| (d.at, d.seq))
            .map(|(i, _)| i)
        {
            let d = self.wire.remove(i);
            let side = if d.t.destination == caller_addr() {
                &mut self.caller
            } else {
                &mut self.callee
            };
            let m = message::parse(&d.t.payload, &Limits::default(), false).unwrap();
            side.received.push((now, m));
            side.ep
                .handle_input(now, d.from, d.t.transport, &d.t.payload);
        } else if let Some((at, call)) = self.hangup_at
            && at <= now
        {
            self.hangup_at = None;
            self.caller.ep.hangup(now, call).unwrap();
        } else {
            for side in [&mut self.caller, &mut self.callee] {
                if side.ep.poll_timeout().is_some_and(|t| t <= now) {
                    side.ep.handle_timeout(now);
                }
            }
        }
        self.settle();
    }
}

fn kinds(events: &[(Instant, Event)]) -> Vec<String> {
    events
        .iter()
        .map(|(_, e)| match e {
            Event::Incoming { .. } => "Incoming".to_string(),
            Event::Confirmed { .. } => "Confirmed".into(),
            Event::Cancelled { .. } => "Cancelled".into(),
            Event::RemoteHangup { .. } => "RemoteHangup".into(),
            Event::Terminated { reason, .. } => format!("Terminated({reason:?})"),
            Event::Progress { status, .. } => format!("Progress({status})"),
            Event::Answered { answer, .. } => format!("Answered(sdp={})", answer.is_some()),
            Event::Failed { status, .. } => format!("Failed({status})"),
            other => format!("{other:?}"),
        })
        .collect()
}

fn method_of(m: &Message) -> Option<&str> {
    match &m.start {
        StartLine::Request { method, .. } => Some(method.as_str()),
        StartLine::Response { .. } => None,
    }
}

fn count_requests(side: &Side, method: &str) -> usize {
    side.sent
        .iter()
        .filter(|(_, m)| method_of(m) == Some(method))
        .count()
}

/// Checks RFC 3261 §17.1 retransmission timing of every request the side sent: copies of one
/// request (same branch and CSeq method) are T1, 2T1, 4T1.. apart for INVITE, at least T1 and at
/// most T2 apart for non-INVITE, and all within 64*T1 of the first copy.
fn assert_retransmissions_within_timers(side: &Side) {
    let mut copies: HashMap<(String, String), Vec<Instant>> = HashMap::new();
    for (at, m) in &side.sent {
        let Some(method) = method_of(m) else { continue };
        if method == "ACK" {
            continue; // ACKs answer 2xx copies; checked separately.
        }
        let branch = m.top_via().unwrap().branch().unwrap().to_string();
        copies
            .entry((branch, method.to_string()))
            .or_default()
            .push(*at);
    }
    for ((_, method), times) in copies {
        let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
        for (i, gap) in gaps.iter().enumerate() {
            if method == "INVITE" {
                assert_eq!(*gap, T1 * (1 << i), "INVITE gaps {gaps:?}");
            } else {
                assert!(*gap >= T1 && *gap <= T2, "{method} gaps {gaps:?}");
            }
        }
        assert!(times[times.len() - 1] - times[0] < T1 * 64, "{method}");
    }
}

#[test]
fn call_answer_ack_bye_without_loss() {
    let mut p = Pair::new(1, 0.0, Callee::Answer);
    let call = p.place_call(Transport::Udp);
    p.drive(Duration::from_secs(120));
    assert_eq!(
        kinds(&p.caller.events),
        [
            "Progress(100)",
            "Answered(sdp=true)",
            "Terminated(LocalBye)"
        ]
    );
    assert_eq!(
        kinds(&p.callee.events),
        ["Incoming", "Confirmed", "RemoteHangup"]
    );
    let Event::Answered {
        answer: Some(sdp), ..
    } = &p.caller.events[1].1
    else {
        panic!()
    };
    assert_eq!(sdp.media[0].port, 30000, "the callee's negotiated answer");
    // Answered 40 ms after the INVITE (two 20 ms hops), nothing retransmitted.
    assert_eq!(p.caller.events[1].0 - p.start, Duration::from_millis(40));
    for method in ["INVITE", "ACK", "BYE"] {
        assert_eq!(count_requests(&p.caller, method), 1, "{method}");
    }
    let Event::Incoming { info, .. } = &p.callee.events[0].1 else {
        panic!()
    };
    assert!(
        info.headers
            .iter()
            .any(|(n, v)| n == "User-to-User" && v == "c0ffee;encoding=hex")
    );
    assert_eq!(info.request_user, "tier1");
    assert_eq!(info.from_user, "ivr");
    assert!(!p.caller.ep.contains(call));
    assert_eq!((p.caller.ep.calls(), p.callee.ep.calls()), (0, 0));
    assert_eq!(p.caller.ep.poll_timeout(), None, "all transactions ended");
    assert_eq!(p.callee.ep.poll_timeout(), None);
}

#[test]
fn call_over_tcp_has_no_retransmissions() {
    let mut p = Pair::new(2, 0.0, Callee::Answer);
    p.place_call(Transport::Tcp);
    p.drive(Duration::from_secs(120));
    assert_eq!(
        kinds(&p.caller.events),
        [
            "Progress(100)",
            "Answered(sdp=true)",
            "Terminated(LocalBye)"
        ]
    );
    let invite = &p.caller.sent[0].1;
    assert!(invite.header("via").unwrap().starts_with("SIP/2.0/TCP "));
    assert!(invite.header("contact").unwrap().contains("transport=tcp"));
    assert_eq!(p.caller.sent.len(), 3, "INVITE, ACK, BYE once each");
}

#[test]
fn call_survives_twenty_percent_loss() {
    let mut retransmitted = 0;
    let mut reacked = 0;
    for seed in 0..200 {
        let mut p = Pair::new(seed, 0.2, Callee::Answer);
        p.place_call(Transport::Udp);
        p.drive(Duration::from_secs(300));
        let caller = kinds(&p.caller.events);
        let caller: Vec<&str> = caller
            .iter()
            .map(String::as_str)
            .filter(|k| !k.starts_with("Progress"))
            .collect();
        assert_eq!(
            caller,
            ["Answered(sdp=true)", "Terminated(LocalBye)"],
            "seed {seed}"
        );
        // When every ACK copy is lost until the BYE arrives, the BYE ends the call before it
        // was confirmed (RFC 3261 §15 allows a BYE once the 2xx is out).
        let callee = kinds(&p.callee.events);
        let bye_first = p
            .callee
            .received
            .iter()
            .find_map(|(_, m)| method_of(m).filter(|m| *m == "ACK" || *m == "BYE"))
            == Some("BYE");
        let expected: &[&str] = if bye_first {
            &["Incoming", "RemoteHangup"]
        } else {
            &["Incoming", "Confirmed", "RemoteHangup"]
        };
        assert_eq!(callee, expected, "seed {seed}");
        assert_retransmissions_within_timers(&p.caller);
        // Every 2xx copy that reached the caller (retransmitted or duplicated) got an ACK, and
        // no ACK went out without one.
        let oks = p
            .caller
            .received
            .iter()
            .filter(|(_, m)| m.code() == Some(200) && m.cseq().unwrap().1 == "INVITE")
            .count();
        assert_eq!(count_requests(&p.caller, "ACK"), oks, "seed {seed}");
        retransmitted += count_requests(&p.caller, "INVITE") - 1;
        reacked += oks - 1;
        assert_eq!((p.caller.ep.calls(), p.callee.ep.calls()), (0, 0));
        assert_eq!(p.caller.ep.poll_timeout(), None, "seed {seed}");
    }
    eprintln!("200 calls at 20% loss: {retransmitted} INVITE retransmissions, {reacked} re-ACKs");
    // The loss really exercised the retransmission paths.
    assert!(
        retransmitted > 20 && reacked > 20,
        "{retransmitted} {reacked}"
    );
}

#[test]
fn busy_callee_fails_with_486_and_the_transaction_acks() {
    for (seed, loss) in [(3, 0.0), (4, 0.2), (5, 0.2), (6, 0.2)] {
        let mut p = Pair::new(seed, loss, Callee::Reject(486));
        let call = p.place_call(Transport::Udp);
        p.drive(Duration::from_secs(120));
        let events: Vec<String> = kinds(&p.caller.events)
            .into_iter()
            .filter(|k| !k.starts_with("Progress"))
            .collect();
        assert_eq!(events, ["Failed(486)"]);
        assert!(!p.caller.ep.contains(call));
        // The ACK of a non-2xx is hop-by-hop: same branch as the INVITE, CSeq 1 ACK.
        let invite_branch = p.caller.sent[0]
            .1
            .top_via()
            .unwrap()
            .branch()
            .unwrap()
            .to_string();
        let acks: Vec<&Message> = p
            .caller
            .sent
            .iter()
            .map(|(_, m)| m)
            .filter(|m| method_of(m) == Some("ACK"))
            .collect();
        assert!(!acks.is_empty());
        for ack in &acks {
            assert_eq!(
                ack.top_via().unwrap().branch(),
                Some(invite_branch.as_str())
            );
            assert_eq!(ack.cseq(), Some((1, "ACK")));
            assert!(ack.to_tag().is_some());
        }
        let finals = p
            .caller
            .received
            .iter()
            .filter(|(_, m)| m.code() == Some(486))
            .count();
        assert_eq!(acks.len(), finals, "one ACK per 486 copy");
        assert_eq!(p.callee.ep.calls(), 0);
        assert_eq!(
            p.callee.ep.poll_timeout(),
            None,
            "the callee's Timer G stopped"
        );
        assert_eq!(p.caller.ep.poll_timeout(), None, "Timer D ran out");
    }
}

#[test]
fn unreachable_callee_fails_with_408_at_timer_b() {
    let mut p = Pair::new(7, 0.0, Callee::Answer);
    p.black_hole = true;
    let call = p.place_call(Transport::Udp);
    p.drive(Duration::from_secs(120));
    assert_eq!(kinds(&p.caller.events), ["Failed(408)"]);
    assert_eq!(p.caller.events[0].0 - p.start, T1 * 64);
    let sends: Vec<u128> = p
        .caller
        .sent
        .iter()
        .map(|(at, _)| (*at - p.start).as_millis())
        .collect();
    assert_eq!(sends, [0, 500, 1500, 3500, 7500, 15500, 31500]);
    assert!(!p.caller.ep.contains(call));
    assert_eq!(p.caller.ep.poll_timeout(), None);

    // Over TCP only Timer B runs.
    let mut p = Pair::new(8, 0.0, Callee::Answer);
    p.black_hole = true;
    p.place_call(Transport::Tcp);
    p.drive(Duration::from_secs(120));
    assert_eq!(kinds(&p.caller.events), ["Failed(408)"]);
    assert_eq!(p.caller.events[0].0 - p.start, T1 * 64);
    assert_eq!(p.caller.sent.len(), 1);
}

#[test]
fn cancel_after_ringing_gives_487() {
    for (seed, loss) in [(9, 0.0), (10, 0.2), (11, 0.2)] {
        let mut p = Pair::new(seed, loss, Callee::Ring);
        p.cancel_on = Some(180);
        p.place_call(Transport::Udp);
        p.drive(Duration::from_secs(120));
        let caller = kinds(&p.caller.events);
        assert_eq!(
            caller.last().map(String::as_str),
            Some("Failed(487)"),
            "{caller:?}"
        );
        assert!(caller.contains(&"Progress(180)".to_string()));
        assert_eq!(kinds(&p.callee.events), ["Incoming", "Cancelled"]);
        let cancel = p
            .caller
            .sent
            .iter()
            .find(|(_, m)| method_of(m) == Some("CANCEL"))
            .unwrap();
        let invite = &p.caller.sent[0].1;
        assert_eq!(
            cancel.1.top_via().unwrap().branch(),
            invite.top_via().unwrap().branch()
        );
        assert_eq!(cancel.1.cseq(), Some((1, "CANCEL")));
        assert_eq!(cancel.1.to_tag(), None, "CANCEL copies the INVITE's To");
        assert_retransmissions_within_timers(&p.caller);
        assert_eq!((p.caller.ep.calls(), p.callee.ep.calls()), (0, 0));
    }
}

#[test]
fn cancel_before_any_provisional_waits_for_one() {
    let mut p = Pair::new(12, 0.0, Callee::Ring);
    let call = p.place_call(Transport::Udp);
    p.caller.ep.cancel(p.now, call).unwrap();
    assert_eq!(
        p.caller.ep.cancel(p.now, call),
        Err(ivr::sip::CallError::InvalidState)
    );
    p.settle();
    assert_eq!(count_requests(&p.caller, "CANCEL"), 0, "RFC 3261 §9.1");
    p.drive(Duration::from_secs(120));
    let first_1xx = p
        .caller
        .received
        .iter()
        .find(|(_, m)| m.code().is_some_and(|c| c < 200))
        .unwrap()
        .0;
    let cancel_at = p
        .caller
        .sent
        .iter()
        .find(|(_, m)| method_of(m) == Some("CANCEL"))
        .unwrap()
        .0;
    assert_eq!(cancel_at, first_1xx);
    assert_eq!(kinds(&p.caller.events).last().unwrap(), "Failed(487)");
}

#[test]
fn cancel_crossing_the_2xx_acks_and_hangs_up() {
    let mut p = Pair::new(13, 0.0, Callee::RingThenAnswer);
    p.cancel_on = Some(180);
    p.place_call(Transport::Udp);
    p.drive(Duration::from_secs(120));
    // The app never hears Answered for a call it cancelled; the endpoint ends it with BYE.
    assert_eq!(
        kinds(&p.caller.events),
        ["Progress(100)", "Progress(180)", "Terminated(LocalBye)"]
    );
    assert_eq!(
        kinds(&p.callee.events),
        ["Incoming", "Confirmed", "RemoteHangup"]
    );
    let methods: Vec<&str> = p
        .caller
        .sent
        .iter()
        .filter_map(|(_, m)| method_of(m))
        .collect();
    assert_eq!(methods, ["INVITE", "CANCEL", "ACK", "BYE"]);
    // The callee answered the CANCEL 200 but kept the call (RFC 3261 §9.2).
    assert!(
        p.caller
            .received
            .iter()
            .any(|(_, m)| m.code() == Some(200) && m.cseq().unwrap().1 == "CANCEL")
    );
    assert_eq!((p.caller.ep.calls(), p.callee.ep.calls()), (0, 0));
}

#[test]
fn hangup_of_unanswered_call_cancels_it() {
    let mut p = Pair::new(14, 0.0, Callee::Ring);
    let call = p.place_call(Transport::Udp);
    p.drive(Duration::from_millis(100));
    p.caller.ep.hangup(p.now, call).unwrap();
    p.settle();
    p.drive(Duration::from_secs(120));
    assert_eq!(kinds(&p.caller.events).last().unwrap(), "Failed(487)");
    assert_eq!(count_requests(&p.caller, "CANCEL"), 1);
}

#[test]
fn forked_2xx_is_acked_and_hung_up() {
    let mut p = Pair::new(15, 0.0, Callee::Answer);
    p.hangup_after = None;
    let call = p.place_call(Transport::Udp);
    p.drive(Duration::from_millis(100));
    let ok = p
        .caller
        .received
        .iter()
        .find(|(_, m)| m.code() == Some(200))
        .unwrap()
        .1
        .clone();
    let tag = ok.to_tag().unwrap();
    // A second branch of a forking proxy answers with its own tag.
    let fork = String::from_utf8(ok.to_bytes())
        .unwrap()
        .replace(&format!("tag={tag}"), "tag=forked");
    let before = p.caller.sent.len();
    p.caller
        .ep
        .handle_input(p.now, callee_addr(), Transport::Udp, fork.as_bytes());
    p.settle();
    let new: Vec<&Message> = p.caller.sent[before..].iter().map(|(_, m)| m).collect();
    let methods: Vec<&str> = new.iter().filter_map(|m| method_of(m)).collect();
    assert_eq!(methods, ["ACK", "BYE"]);
    assert!(new.iter().all(|m| m.to_tag().as_deref() == Some("forked")));
    // The same fork retransmitted: ACK again, no second BYE.
    p.caller
        .ep
        .handle_input(p.now, callee_addr(), Transport::Udp, fork.as_bytes());
    p.settle();
    let methods: Vec<&str> = p.caller.sent[before + 2..]
        .iter()
        .filter_map(|(_, m)| method_of(m))
        .collect();
    assert_eq!(methods, ["ACK"]);
    let answered = kinds(&p.caller.events)
        .iter()
        .filter(|k| k.starts_with("Answered"))
        .count();
    assert_eq!(answered, 1);
    assert!(p.caller.ep.contains(call), "the first dialog lives on");

    // A flood of forks is bounded: 16 dialogs per INVITE (the first + 15 forks) get ACK/BYE.
    for i in 0..40 {
        let more = fork.replace("tag=forked", &format!("tag=f{i}"));
        p.caller
            .ep
            .handle_input(p.now, callee_addr(), Transport::Udp, more.as_bytes());
    }
    p.settle();
    let byes = count_requests(&p.caller, "BYE");
    assert_eq!(byes, 15, "forked BYEs");
}

#[test]
fn callee_hangs_up_an_outgoing_call() {
    let mut p = Pair::new(16, 0.0, Callee::Answer);
    p.hangup_after = None;
    let call = p.place_call(Transport::Udp);
    p.drive(Duration::from_millis(200));
    let Some((_, Event::Incoming { call: theirs, .. })) = p.callee.events.first().cloned() else {
        panic!()
    };
    p.callee.ep.hangup(p.now, theirs).unwrap();
    p.settle();
    p.drive(Duration::from_secs(60));
    assert_eq!(kinds(&p.caller.events).last().unwrap(), "RemoteHangup");
    assert!(matches!(
        p.callee.events.last(),
        Some((
            _,
            Event::Terminated {
                reason: TerminateReason::LocalBye,
                ..
            }
        ))
    ));
    assert!(!p.caller.ep.contains(call));
    // The callee's BYE reached the caller's Contact and carried both tags.
    let bye = p
        .caller
        .received
        .iter()
        .find(|(_, m)| method_of(m) == Some("BYE"))
        .unwrap();
    assert!(matches!(&bye.1.start, StartLine::Request { uri, .. } if uri == "sip:10.0.0.1:5060"));
}

#[test]
fn invite_rejects_bad_targets() {
    let mut ep = Endpoint::new(EndpointConfig::default());
    let base = OutgoingCall {
        target: "sip:a@b".into(),
        from_user: "ivr".into(),
        destination: callee_addr(),
        transport: Transport::Udp,
        offer: offer(),
        headers: vec![],
    };
    let now = Instant::now();
    for bad in [
        OutgoingCall {
            target: "http://x".into(),
            ..base.clone()
        },
        OutgoingCall {
            target: "sip:a@b>\r\nX: y".into(),
            ..base.clone()
        },
        OutgoingCall {
            from_user: "a b".into(),
            ..base.clone()
        },
        OutgoingCall {
            headers: vec![("X-Bad".into(), "v\r\nInjected: 1".into())],
            ..base.clone()
        },
        OutgoingCall {
            headers: vec![("Bad Name".into(), "v".into())],
            ..base.clone()
        },
    ] {
        assert_eq!(ep.invite(now, bad), Err(ivr::sip::CallError::InvalidTarget));
    }
    assert!(ep.poll_transmit().is_none());
    let call = ep.invite(now, base).unwrap();
    assert_eq!(
        ep.refer(now, call, "sip:x@y", &[]),
        Err(ivr::sip::CallError::InvalidState),
        "no REFER before the answer"
    );
    assert_eq!(
        ep.cancel(now, CallKey(999)),
        Err(ivr::sip::CallError::UnknownCall)
    );
}

#[test]
fn ack_and_bye_follow_the_record_route_of_the_2xx() {
    let mut ep = Endpoint::new(EndpointConfig {
        local_addr: caller_addr(),
        ..EndpointConfig::default()
    });
    let now = Instant::now();
    let call = ep
        .invite(
            now,
            OutgoingCall {
                target: "sip:tier1@queue.example".into(),
                from_user: "ivr".into(),
                destination: callee_addr(),
                transport: Transport::Udp,
                offer: offer(),
                headers: vec![],
            },
        )
        .unwrap();
    let invite = message::parse(
        &ep.poll_transmit().unwrap().payload,
        &Limits::default(),
        false,
    )
    .unwrap();
    // The 2xx as a record-routing proxy chain delivers it: Record-Route in callee-to-caller order.
    let mut ok = String::from("SIP/2.0 200 OK\r\n");
    for h in invite
        .headers
        .iter()
        .filter(|h| ["via", "from", "call-id", "cseq"].iter().any(|n| h.is(n)))
    {
        ok.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    ok.push_str(&format!(
        "To: {};tag=agent\r\nRecord-Route: <sip:p2.example;lr>\r\nRecord-Route: <sip:p1.example;lr>\r\n\
         Contact: <sip:agent@192.0.2.7:5090>\r\nContent-Length: 0\r\n\r\n",
        invite.header("to").unwrap()
    ));
    ep.handle_input(now, callee_addr(), Transport::Udp, ok.as_bytes());
    assert_eq!(
        ep.poll_event(),
        Some(Event::Answered { call, answer: None })
    );
    ep.hangup(now, call).unwrap();
    let sent: Vec<Message> = std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| {
            assert_eq!(
                t.destination,
                callee_addr(),
                "no DNS: everything to the destination"
            );
            message::parse(&t.payload, &Limits::default(), false).unwrap()
        })
        .collect();
    assert_eq!(sent.len(), 2);
    for (m, method, cseq) in [(&sent[0], "ACK", 1), (&sent[1], "BYE", 2)] {
        assert_eq!(method_of(m), Some(method));
        assert_eq!(m.cseq(), Some((cseq, method)));
        assert!(
            matches!(&m.start, StartLine::Request { uri, .. } if uri == "sip:agent@192.0.2.7:5090")
        );
        assert_eq!(
            m.values("route"),
            ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
        );
        assert_eq!(m.to_tag().as_deref(), Some("agent"));
        assert_eq!(m.from_tag(), invite.from_tag());
        assert_eq!(m.call_id(), invite.call_id());
    }
    assert_ne!(
        sent[0].top_via().unwrap().branch(),
        invite.top_via().unwrap().branch(),
        "the ACK of a 2xx is a new transaction"
    );
}
