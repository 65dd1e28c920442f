//! Blind transfer by REFER (RFC 3515) from the IVR's side of an answered call, against a
//! scripted trunk in virtual time: 202 then NOTIFY sipfrag 100/200 → TransferProgress with
//! done=true on 200; 405 → done at once; 503 sipfrag → done with 503; NOTIFY without a
//! subscription → 481, for another event package → 489; REFER without any answer → 408 after
//! Timer F.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ivr::sip::message::{self, Limits, Message, StartLine};
use ivr::sip::sdp::{LocalMedia, negotiate};
use ivr::sip::{CallError, CallKey, Endpoint, EndpointConfig, Event, TerminateReason, Transport};
use ivr::types::Codec;

const T1: Duration = Duration::from_millis(500);

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 192.0.2.10\r\ns=-\r\nc=IN IP4 192.0.2.10\r\nt=0 0\r\n\
    m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n";

/// `intent=billing;lang=en;consent=yes`, hex-encoded as RFC 7433 allows.
const UUI: &str = "696e74656e743d62696c6c696e673b6c616e673d656e3b636f6e73656e743d796573;encoding=hex;purpose=call";

fn trunk() -> SocketAddr {
    "192.0.2.10:5060".parse().unwrap()
}

struct Ivr {
    ep: Endpoint,
    now: Instant,
    call: CallKey,
    /// The IVR's To tag in the trunk's dialog.
    tag: String,
    /// The trunk's next CSeq.
    cseq: u32,
}

impl Ivr {
    /// An answered and ACKed call from the trunk.
    fn established() -> Ivr {
        let mut ep = Endpoint::new(EndpointConfig::default());
        let now = Instant::now();
        let invite = format!(
            "INVITE sip:help@127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKinv\r\n\
             From: <sip:5550100@trunk.example>;tag=trunk\r\nTo: <sip:help@ivr.example>\r\n\
             Call-ID: xfer-1\r\nCSeq: 1 INVITE\r\nContact: <sip:trunk@192.0.2.10:5060>\r\n\
             Max-Forwards: 70\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{OFFER}",
            OFFER.len()
        );
        ep.handle_input(now, trunk(), Transport::Udp, invite.as_bytes());
        let Some(Event::Incoming { call, info }) = ep.poll_event() else {
            panic!("no Incoming")
        };
        let local = LocalMedia {
            addr: "127.0.0.1".parse().unwrap(),
            port: 30000,
            codecs: vec![Codec::Pcmu],
            ptime_ms: 20,
            session_id: 1,
            session_version: 1,
            srtp: ivr::sip::sdp::SrtpMode::Off,
            srtp_key: ivr::rtp::srtp::KeySalt([0; ivr::rtp::srtp::KEY_SALT_LEN]),
        };
        let answer = negotiate(&info.offer.unwrap(), &local).unwrap().answer;
        ep.answer(now, call, &answer).unwrap();
        let sent: Vec<Message> = drain(&mut ep);
        let tag = sent.last().unwrap().to_tag().unwrap();
        let mut ivr = Ivr {
            ep,
            now,
            call,
            tag,
            cseq: 1,
        };
        ivr.input(&ivr.in_dialog("ACK", "z9hG4bKack", 1, &[], ""));
        assert_eq!(ivr.events(), [Event::Confirmed { call }]);
        ivr
    }

    fn input(&mut self, text: &str) {
        self.ep
            .handle_input(self.now, trunk(), Transport::Udp, text.as_bytes());
    }

    fn sent(&mut self) -> Vec<Message> {
        drain(&mut self.ep)
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.ep.poll_event()).collect()
    }

    fn in_dialog(
        &self,
        method: &str,
        branch: &str,
        cseq: u32,
        headers: &[(&str, &str)],
        body: &str,
    ) -> String {
        let mut out = format!(
            "{method} sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch={branch}\r\n\
             From: <sip:5550100@trunk.example>;tag=trunk\r\nTo: <sip:help@ivr.example>;tag={}\r\n\
             Call-ID: xfer-1\r\nCSeq: {cseq} {method}\r\nMax-Forwards: 70\r\n",
            self.tag
        );
        for (n, v) in headers {
            out.push_str(&format!("{n}: {v}\r\n"));
        }
        out + &format!("Content-Length: {}\r\n\r\n{body}", body.len())
    }

    /// The trunk sends NOTIFY with a sipfrag status line; returns the IVR's response code.
    fn notify(&mut self, frag: &str, state: &str) -> u16 {
        self.cseq += 1;
        let text = self.in_dialog(
            "NOTIFY",
            &format!("z9hG4bKn{}", self.cseq),
            self.cseq,
            &[
                ("Event", "refer"),
                ("Subscription-State", state),
                ("Content-Type", "message/sipfrag;version=2.0"),
            ],
            &format!("{frag}\r\n"),
        );
        self.input(&text);
        let sent = self.sent();
        assert_eq!(sent.len(), 1, "{sent:?}");
        sent[0].code().unwrap()
    }

    /// Sends REFER and returns it as the trunk receives it.
    fn refer(&mut self) -> Message {
        self.ep
            .refer(
                self.now,
                self.call,
                "sip:tier1@queue.example",
                &[
                    ("Referred-By", "<sip:ivr@ivr.example>"),
                    ("User-to-User", UUI),
                ],
            )
            .unwrap();
        let mut sent = self.sent();
        assert_eq!(sent.len(), 1);
        sent.remove(0)
    }
}

fn drain(ep: &mut Endpoint) -> Vec<Message> {
    std::iter::from_fn(|| ep.poll_transmit())
        .map(|t| {
            assert_eq!(t.destination, trunk());
            message::parse(&t.payload, &Limits::default(), false).expect("valid SIP")
        })
        .collect()
}

/// The trunk's response to one of our requests.
fn response_to(req: &Message, code: u16) -> String {
    let mut out = format!("SIP/2.0 {code} Whatever\r\n");
    for h in req.headers.iter().filter(|h| {
        ["via", "from", "to", "call-id", "cseq"]
            .iter()
            .any(|n| h.is(n))
    }) {
        out.push_str(&format!("{}: {}\r\n", h.name, h.value));
    }
    out + "Content-Length: 0\r\n\r\n"
}

fn progress(call: CallKey, status: u16, done: bool) -> Event {
    Event::TransferProgress { call, status, done }
}

#[test]
fn accepted_refer_reports_202_then_notify_progress() {
    let mut ivr = Ivr::established();
    let call = ivr.call;
    let refer = ivr.refer();
    assert!(
        matches!(&refer.start, StartLine::Request { uri, .. } if uri == "sip:trunk@192.0.2.10:5060")
    );
    assert_eq!(refer.header("refer-to"), Some("<sip:tier1@queue.example>"));
    assert_eq!(refer.header("referred-by"), Some("<sip:ivr@ivr.example>"));
    assert_eq!(refer.header("user-to-user"), Some(UUI));
    assert_eq!(refer.cseq(), Some((1, "REFER")));
    assert_eq!(refer.from_tag().as_deref(), Some(ivr.tag.as_str()));
    assert_eq!(refer.to_tag().as_deref(), Some("trunk"));
    assert_eq!(
        ivr.ep.refer(ivr.now, call, "sip:other@queue.example", &[]),
        Err(CallError::InvalidState),
        "one transfer at a time"
    );

    ivr.input(&response_to(&refer, 202));
    assert_eq!(ivr.events(), [progress(call, 202, false)]);
    // A retransmitted 202 is absorbed by the transaction.
    ivr.input(&response_to(&refer, 202));
    assert_eq!(ivr.events(), []);

    assert_eq!(ivr.notify("SIP/2.0 100 Trying", "active;expires=60"), 200);
    assert_eq!(ivr.events(), [progress(call, 100, false)]);
    // A retransmitted NOTIFY gets the same 200 from the server transaction, and no event.
    let again = ivr.in_dialog(
        "NOTIFY",
        &format!("z9hG4bKn{}", ivr.cseq),
        ivr.cseq,
        &[("Event", "refer"), ("Subscription-State", "active")],
        "SIP/2.0 100 Trying\r\n",
    );
    ivr.input(&again);
    assert_eq!(
        ivr.sent().iter().map(|m| m.code()).collect::<Vec<_>>(),
        [Some(200)]
    );
    assert_eq!(ivr.events(), []);

    assert_eq!(
        ivr.notify("SIP/2.0 200 OK", "terminated;reason=noresource"),
        200
    );
    assert_eq!(ivr.events(), [progress(call, 200, true)]);
    // The implicit subscription is over.
    assert_eq!(ivr.notify("SIP/2.0 200 OK", "terminated"), 481);
    assert_eq!(ivr.events(), []);

    // On success the IVR hangs up its leg.
    ivr.ep.hangup(ivr.now, call).unwrap();
    let bye = ivr.sent().remove(0);
    assert_eq!(bye.cseq(), Some((2, "BYE")));
    ivr.input(&response_to(&bye, 200));
    assert_eq!(
        ivr.events(),
        [Event::Terminated {
            call,
            reason: TerminateReason::LocalBye
        }]
    );
}

#[test]
fn refused_refer_is_done_at_once() {
    for code in [405, 501, 603] {
        let mut ivr = Ivr::established();
        let call = ivr.call;
        let refer = ivr.refer();
        ivr.input(&response_to(&refer, code));
        assert_eq!(ivr.events(), [progress(call, code, true)]);
        // No subscription was created.
        assert_eq!(ivr.notify("SIP/2.0 100 Trying", "active"), 481);
        assert_eq!(ivr.events(), []);
        // The call stays up (the IVR bridges instead), and a new REFER is allowed.
        assert!(ivr.ep.contains(call));
        let second = ivr.refer();
        assert_eq!(second.cseq(), Some((2, "REFER")));
    }
}

#[test]
fn failed_transfer_reports_the_sipfrag_status() {
    for frag in ["SIP/2.0 503 Service Unavailable", "SIP/2.0 486 Busy Here"] {
        let mut ivr = Ivr::established();
        let call = ivr.call;
        let refer = ivr.refer();
        ivr.input(&response_to(&refer, 202));
        assert_eq!(ivr.notify("SIP/2.0 100 Trying", "active"), 200);
        assert_eq!(ivr.notify(frag, "terminated;reason=noresource"), 200);
        let status: u16 = frag[8..11].parse().unwrap();
        assert_eq!(
            ivr.events(),
            [
                progress(call, 202, false),
                progress(call, 100, false),
                progress(call, status, true)
            ]
        );
        assert!(ivr.ep.contains(call), "the IVR keeps the caller");
    }
}

#[test]
fn notify_before_the_202_and_final_while_active() {
    let mut ivr = Ivr::established();
    let call = ivr.call;
    let refer = ivr.refer();
    // RFC 3515 §2.4.4: the NOTIFY may overtake the 202.
    assert_eq!(ivr.notify("SIP/2.0 100 Trying", "active"), 200);
    assert_eq!(ivr.notify("SIP/2.0 200 OK", "active"), 200);
    ivr.input(&response_to(&refer, 202));
    assert_eq!(
        ivr.events(),
        [progress(call, 100, false), progress(call, 200, true)],
        "a 202 after the outcome adds nothing"
    );
    // Still subscribed until terminated: the final NOTIFY is answered, not reported.
    assert_eq!(ivr.notify("SIP/2.0 200 OK", "terminated"), 200);
    assert_eq!(ivr.events(), []);
}

#[test]
fn stray_and_malformed_notify() {
    let mut ivr = Ivr::established();
    // No REFER yet: no subscription.
    assert_eq!(ivr.notify("SIP/2.0 100 Trying", "active"), 481);
    // Unknown dialog.
    let stray = "NOTIFY sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bKs\r\n\
        From: <sip:x@trunk.example>;tag=zz\r\nTo: <sip:help@ivr.example>;tag=nope\r\nCall-ID: other\r\n\
        CSeq: 9 NOTIFY\r\nEvent: refer\r\nSubscription-State: active\r\nContent-Length: 0\r\n\r\n";
    ivr.input(stray);
    assert_eq!(ivr.sent()[0].code(), Some(481));

    let refer = ivr.refer();
    ivr.input(&response_to(&refer, 202));
    ivr.events();
    ivr.cseq += 1;
    let presence = ivr.in_dialog(
        "NOTIFY",
        "z9hG4bKp",
        ivr.cseq,
        &[("Event", "presence"), ("Subscription-State", "active")],
        "",
    );
    ivr.input(&presence);
    assert_eq!(ivr.sent()[0].code(), Some(489));
    assert_eq!(ivr.notify("garbage", "active"), 400);
    assert_eq!(ivr.events(), [], "nothing reported for refused NOTIFYs");
    assert_eq!(ivr.notify("SIP/2.0 180 Ringing", "active"), 200);
    assert_eq!(ivr.events(), [progress(ivr.call, 180, false)]);
}

#[test]
fn unanswered_refer_times_out_with_408() {
    let mut ivr = Ivr::established();
    let call = ivr.call;
    let start = ivr.now;
    let refer = ivr.refer();
    let mut copies = 1;
    loop {
        let next = ivr.ep.poll_timeout().expect("Timer E/F pending");
        ivr.now = next;
        ivr.ep.handle_timeout(next);
        // The 2xx retransmission of the answered INVITE ended with the ACK; only REFER remains.
        for m in ivr.sent() {
            assert_eq!(m.cseq(), refer.cseq());
            copies += 1;
        }
        let events = ivr.events();
        if !events.is_empty() {
            assert_eq!(events, [progress(call, 408, true)]);
            break;
        }
    }
    assert_eq!(ivr.now - start, T1 * 64, "Timer F");
    assert_eq!(copies, 11, "Timer E: 0.5, 1, 2, 4, then every 4 s");
    assert!(ivr.ep.contains(call), "a lost REFER does not end the call");
}

#[test]
fn refer_checks_its_arguments() {
    let mut ivr = Ivr::established();
    let now = ivr.now;
    assert_eq!(
        ivr.ep.refer(now, CallKey(77), "sip:a@b", &[]),
        Err(CallError::UnknownCall)
    );
    assert_eq!(
        ivr.ep.refer(now, ivr.call, "mailto:a@b", &[]),
        Err(CallError::InvalidTarget)
    );
    assert_eq!(
        ivr.ep.refer(
            now,
            ivr.call,
            "sip:a@b",
            &[("User-to-User", "x\r\nEvil: 1")]
        ),
        Err(CallError::InvalidTarget)
    );
    assert!(ivr.sent().is_empty());
    // A bracketed target is taken as is, and Referred-By defaults to our URI.
    ivr.ep
        .refer(now, ivr.call, "<sip:tier2@queue.example>", &[])
        .unwrap();
    let refer = ivr.sent().remove(0);
    assert_eq!(refer.header("refer-to"), Some("<sip:tier2@queue.example>"));
    assert_eq!(refer.header("referred-by"), Some("<sip:help@ivr.example>"));
}
