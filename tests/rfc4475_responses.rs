//! RFC 4475 torture messages: every one of the 49 goes through `Endpoint::handle_input` and the
//! first final response (or its absence) must match what MANIFEST.tsv expects for a UAS.
//! Also: random bytes and mutations of these messages never panic the endpoint.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ivr::sip::message::{self, Limits, Method, StartLine};
use ivr::sip::{Endpoint, EndpointConfig, Event, Transport};

struct Case {
    file: String,
    class: String,
    action: String,
    data: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/rfc4475"));
    let manifest = std::fs::read_to_string(dir.join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    manifest
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let data = std::fs::read(dir.join(f[0])).expect("torture file");
            assert_eq!(
                data.len().to_string(),
                f[4],
                "{} size differs from manifest",
                f[0]
            );
            Case {
                file: f[0].into(),
                class: f[2].into(),
                action: f[3].into(),
                data,
            }
        })
        .collect()
}

/// What the endpoint does with a well-formed message of this kind ("accept" in the manifest).
#[derive(Debug, PartialEq)]
enum Outcome {
    /// No final response (a new call: 100 Trying + Incoming, or a response we absorb).
    NoFinal,
    Class(u16),
}

fn accepted_outcome(data: &[u8]) -> Outcome {
    // Parse leniently with the crate itself only to learn the method; a parse failure here means
    // the file is not "acceptable" at all and the assertion below will catch the endpoint's 400.
    let Ok(msg) = message::parse(data, &Limits::default(), false) else {
        return Outcome::Class(0);
    };
    match msg.start {
        StartLine::Response { .. } => Outcome::NoFinal,
        StartLine::Request { ref method, .. } => match method {
            // A To tag names a dialog we never created: 481 (RFC 3261 §12.2.2).
            Method::Invite if msg.to_tag().is_some() => Outcome::Class(4),
            Method::Invite => Outcome::NoFinal,
            Method::Options => Outcome::Class(2),
            Method::Other(_) => Outcome::Class(5),
            _ => Outcome::Class(4), // REGISTER/MESSAGE/...: 405 at this UAS
        },
    }
}

/// Allowed outcomes read from the manifest's expected_action text.
fn allowed(case: &Case) -> Vec<Outcome> {
    let action = case.action.as_str();
    let mut out = Vec::new();
    // Codes named for a UAS (a proxy's 483 in "process normally at UAS (proxy: 483)" is not ours).
    let uas_part = action.split("(proxy").next().unwrap_or(action);
    for word in uas_part.split(|c: char| !c.is_ascii_digit()) {
        if word.len() == 3
            && let Ok(code) = word.parse::<u16>()
            && (100..700).contains(&code)
        {
            out.push(Outcome::Class(code / 100));
        }
    }
    let accepts = [
        "accept",
        "ignore",
        "process normally",
        "parse OK",
        "2543-style",
    ];
    if accepts.iter().any(|a| action.contains(a)) && !action.starts_with("discard") {
        out.push(accepted_outcome(&case.data));
    }
    if action.contains("discard") {
        out.push(Outcome::NoFinal);
    }
    out
}

fn run(data: &[u8]) -> (Vec<Vec<u8>>, Vec<Event>) {
    let mut ep = Endpoint::new(EndpointConfig::default());
    let from: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    ep.handle_input(Instant::now(), from, Transport::Udp, data);
    let mut sent = Vec::new();
    while let Some(t) = ep.poll_transmit() {
        assert_eq!(
            t.destination, from,
            "responses go to the source address only"
        );
        sent.push(t.payload);
    }
    (sent, std::iter::from_fn(|| ep.poll_event()).collect())
}

fn status(payload: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(payload);
    text.strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn every_torture_message_gets_the_expected_response_class() {
    let cases = cases();
    assert_eq!(cases.len(), 49);
    let mut failures = Vec::new();
    for case in &cases {
        let (sent, events) = run(&case.data);
        let first_final = sent.iter().map(|p| status(p)).find(|&s| s >= 200);
        let outcome = match first_final {
            Some(code) => Outcome::Class(code / 100),
            None => Outcome::NoFinal,
        };
        let allowed = allowed(case);
        // Visible with --nocapture: the table of what the endpoint answered, with 400 reasons.
        let warning = sent
            .first()
            .and_then(|p| message::parse(p, &Limits::default(), false).ok());
        let warning = warning
            .as_ref()
            .and_then(|m| m.header("warning").map(str::to_string))
            .unwrap_or_default();
        println!(
            "{:<15} {:<40} -> {:?} {}",
            case.file, case.action, first_final, warning
        );
        if !allowed.contains(&outcome) {
            failures.push(format!(
                "{} ({}, {:?}): got {:?} {:?}, allowed {:?}",
                case.file, case.class, case.action, outcome, first_final, allowed
            ));
        }
        // Every response parses back and is well-formed.
        for p in &sent {
            let m = message::parse(p, &Limits::default(), false).expect("our response parses");
            assert!(
                m.call_id().is_some() || case.file == "insuf.dat",
                "{}",
                case.file
            );
        }
        // No final: a response is absorbed silently; a request must be a new call (100 + Incoming).
        if first_final.is_none() {
            if case.data.starts_with(b"SIP/") {
                assert!(
                    sent.is_empty() && events.is_empty(),
                    "{}: replied to a response",
                    case.file
                );
            } else {
                let statuses: Vec<u16> = sent.iter().map(|p| status(p)).collect();
                assert_eq!(statuses, vec![100], "{}", case.file);
                assert!(
                    matches!(events.as_slice(), [Event::Incoming { .. }]),
                    "{}: 100 without Incoming",
                    case.file
                );
            }
        }
        if first_final == Some(420) {
            let text = String::from_utf8_lossy(&sent[0]);
            assert!(
                text.contains(
                    "\r\nUnsupported: nothingSupportsThis, nothingSupportsThisEither\r\n"
                ),
                "{text}"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// As in the server: one long-lived endpoint gets all 49 in a row, each from its own port. Many
/// files reuse a branch (z9hG4bKkdjuw), so later ones match earlier transactions; the answer
/// must still reach the sender of each copy, with the class the manifest allows.
#[test]
fn one_endpoint_answers_each_sender_in_sequence() {
    let mut ep = Endpoint::new(EndpointConfig::default());
    let now = Instant::now();
    let mut failures = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        let from: SocketAddr = format!("127.0.0.1:{}", 20000 + i).parse().unwrap();
        ep.handle_input(now, from, Transport::Udp, &case.data);
        let mut first_final = None;
        while let Some(t) = ep.poll_transmit() {
            assert_eq!(t.destination, from, "{}: answer sent elsewhere", case.file);
            first_final = first_final.or(Some(status(&t.payload)).filter(|&s| s >= 200));
        }
        while ep.poll_event().is_some() {}
        let outcome = first_final.map_or(Outcome::NoFinal, |c| Outcome::Class(c / 100));
        if !allowed(case).contains(&outcome) {
            failures.push(format!("{}: {first_final:?}", case.file));
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn specific_codes_for_semantic_cases() {
    let by_name = |n: &str| cases().into_iter().find(|c| c.file == n).unwrap();
    let first_final = |n: &str| {
        run(&by_name(n).data)
            .0
            .iter()
            .map(|p| status(p))
            .find(|&s| s >= 200)
    };
    assert_eq!(first_final("badvers.dat"), Some(505));
    assert_eq!(first_final("unkscm.dat"), Some(416));
    assert_eq!(first_final("novelsc.dat"), Some(416));
    assert_eq!(first_final("bext01.dat"), Some(420));
    assert_eq!(first_final("invut.dat"), Some(415));
    assert_eq!(first_final("sdp01.dat"), Some(406));
    assert_eq!(first_final("esc02.dat"), Some(501));
    assert_eq!(first_final("intmeth.dat"), Some(501));
    assert_eq!(first_final("zeromf.dat"), Some(200));
    assert_eq!(first_final("dblreq.dat"), Some(405));
    assert_eq!(first_final("mcl01.dat"), Some(400));
    assert_eq!(first_final("clerr.dat"), Some(400));
    let warning = |n: &str| {
        let sent = run(&by_name(n).data).0;
        let m = message::parse(&sent[0], &Limits::default(), false).unwrap();
        m.header("warning").unwrap_or("").to_string()
    };
    assert!(
        warning("insuf.dat").contains("missing Call-ID"),
        "{}",
        warning("insuf.dat")
    );
    assert!(warning("multi01.dat").contains("more than one"));
    assert!(warning("mismatch01.dat").contains("CSeq method"));
    assert!(warning("ncl.dat").contains("Content-Length"));
    assert!(warning("quotbal.dat").contains("malformed To"));
    assert!(warning("badaspec.dat").contains("malformed To"));
    assert!(warning("baddn.dat").contains("malformed From"));
    assert!(warning("regbadct.dat").contains("malformed Contact"));
    assert!(warning("badinv01.dat").contains("malformed Via"));
    assert!(warning("scalar02.dat").contains("malformed"));
    assert!(warning("ltgtruri.dat").contains("start line"));
    let (sent, events) = run(&by_name("inv2543.dat").data);
    assert_eq!(
        sent.iter().map(|p| status(p)).collect::<Vec<_>>(),
        vec![100]
    );
    assert!(matches!(&events[..], [Event::Incoming { info, .. }] if info.offer.is_some()));
    // multipart body with an SDP part inside is not a 415.
    let (sent, _) = run(&by_name("mpart01.dat").data);
    assert_eq!(status(&sent[0]), 405);
}

/// xorshift64: a tiny deterministic PRNG, no new dependencies.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn random_bytes_and_mutations_never_panic() {
    let cases = cases();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut ep = Endpoint::new(EndpointConfig::default());
    let from: SocketAddr = "127.0.0.1:5070".parse().unwrap();
    let mut now = Instant::now();
    let interesting = b"\r\n :;,<>\"\\=@/%0z9hG4bK";
    // IVR_FUZZ_ROUNDS=200000 for a longer soak; the default keeps `cargo test` fast.
    let rounds: u64 = std::env::var("IVR_FUZZ_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(6000);
    for round in 0..rounds {
        let base = &cases[rng.below(cases.len())].data;
        let mut data = base.clone();
        match round % 5 {
            0 => data.truncate(rng.below(data.len() + 1)),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(data.len());
                    data[i] = rng.next() as u8;
                }
            }
            2 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(data.len());
                    data[i] = interesting[rng.below(interesting.len())];
                }
            }
            3 => {
                let i = rng.below(data.len());
                let j = rng.below(data.len());
                let (a, b) = (i.min(j), i.max(j));
                data.drain(a..b);
            }
            _ => data = (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        }
        let transport = if round % 7 == 0 {
            Transport::Tcp
        } else {
            Transport::Udp
        };
        let _ = message::frame_len(&data);
        ep.handle_input(now, from, transport, &data);
        now += Duration::from_millis(rng.below(3000) as u64);
        ep.handle_timeout(now);
        while ep.poll_transmit().is_some() {}
        while ep.poll_event().is_some() {}
    }
    // Everything the endpoint created eventually expires.
    now += Duration::from_secs(120);
    ep.handle_timeout(now);
    ep.handle_timeout(now + Duration::from_secs(120));
    assert_eq!(
        ep.poll_timeout(),
        None,
        "timers left after all transactions expired"
    );
}

/// Over TCP the shell cuts the stream with `frame_len`: a too-short body waits for more bytes
/// (clerr), a negative Content-Length is a framing error (ncl), and every other message frames
/// within its own length and then gets the same answer class as over UDP.
#[test]
fn tcp_framing_of_torture_messages() {
    for case in cases() {
        let framed = message::frame_len(&case.data);
        match case.file.as_str() {
            "clerr.dat" => assert_eq!(framed, Ok(None), "clerr waits for the rest of its body"),
            "ncl.dat" => assert_eq!(framed, Err(message::FrameError::BadContentLength)),
            // Cut without its final blank line: incomplete on a stream.
            "baddn.dat" => assert_eq!(framed, Ok(None)),
            // Conflicting Content-Lengths: the framer takes the last; the parser then says 400.
            _ => {
                let Ok(Some(len)) = framed else {
                    panic!("{}: {framed:?}", case.file)
                };
                assert!(len <= case.data.len(), "{}", case.file);
                let mut ep = Endpoint::new(EndpointConfig::default());
                let from: SocketAddr = "127.0.0.1:5070".parse().unwrap();
                ep.handle_input(Instant::now(), from, Transport::Tcp, &case.data[..len]);
                let (udp_sent, _) = run(&case.data);
                let class = |v: Vec<u16>| v.into_iter().find(|&s| s >= 200).map(|s| s / 100);
                let tcp: Vec<u16> = std::iter::from_fn(|| ep.poll_transmit())
                    .map(|t| status(&t.payload))
                    .collect();
                let udp: Vec<u16> = udp_sent.iter().map(|p| status(p)).collect();
                // inv2543 has no Content-Length: on a stream its body is not part of the message.
                if case.file != "inv2543.dat" {
                    assert_eq!(class(tcp), class(udp), "{}", case.file);
                }
            }
        }
    }
}
