//! A SIP caller that offers RFC 4103 real-time text (`m=text`, t140 with `red`) types its
//! question over RTP: the call becomes a text call, the IVR types the case-status answer back
//! as T.140 (decoded here with the product's receiver), offers the link, stores it in the
//! outbox when the caller takes it by text message, and the record says `mode: rtt`.
//! One caller packet in three is dropped on the way: the redundancy must cover it.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::*;
use ivr::rtp::t140::{MISSING_TEXT, PACKET_BYTES_MAX, T140Receiver, T140Sender, T140SenderConfig};

const T140: u8 = 98;
const RED: u8 = 100;

/// The caller's RTT terminal: a text socket, the product's T.140 sender and receiver.
struct Terminal {
    sock: UdpSocket,
    dest: SocketAddr,
    tx: T140Sender,
    rx: T140Receiver,
    /// What the IVR typed, decoded.
    screen: String,
    sent: usize,
}

impl Terminal {
    /// Runs the terminal in real time for `limit` or until `until` holds for the screen.
    fn run(&mut self, limit: Duration, until: impl Fn(&str) -> bool) {
        let start = Instant::now();
        let mut buf = [0u8; PACKET_BYTES_MAX];
        let mut inbuf = [0u8; 2048];
        while start.elapsed() < limit && !until(&self.screen) {
            while let Some(n) = self.tx.poll_transmit(Instant::now(), &mut buf).unwrap() {
                self.sent += 1;
                // Every third packet is lost on the way to the IVR.
                if self.sent % 3 != 0 {
                    self.sock.send_to(&buf[..n], self.dest).unwrap();
                }
            }
            if let Ok((n, _)) = self.sock.recv_from(&mut inbuf) {
                self.rx.handle_datagram(&inbuf[..n]).unwrap();
                while let Some(c) = self.rx.poll_char() {
                    self.screen.push(c);
                }
            }
        }
    }

    fn type_line(&mut self, text: &str) {
        self.tx.push_text(text).unwrap();
    }
}

/// Drains the audio the IVR sent so far: (packets, packets with sound above silence).
fn drain_audio(sock: &UdpSocket) -> (usize, usize) {
    sock.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 2048];
    let (mut packets, mut loud) = (0, 0);
    while let Ok((n, _)) = sock.recv_from(&mut buf) {
        let Some(rtp) = parse_rtp(&buf[..n]) else {
            continue;
        };
        let decode: fn(u8) -> i16 = match rtp.pt {
            0 => ulaw_to_linear,
            8 => alaw_to_linear,
            _ => continue,
        };
        packets += 1;
        if rtp.payload.iter().any(|&b| decode(b).unsigned_abs() > 200) {
            loud += 1;
        }
    }
    sock.set_nonblocking(false).unwrap();
    (packets, loud)
}

fn media_port(answer: &str, kind: &str) -> u16 {
    answer
        .lines()
        .find_map(|l| l.strip_prefix(&format!("m={kind} ")))
        .and_then(|r| r.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("m={kind} in the answer:\n{answer}"))
}

/// A prompt's text from `prompts/en/rtt.txt`, what an RTT caller reads.
fn rtt_prompt(id: &str) -> String {
    let text = std::fs::read_to_string(repo().join("prompts/en/rtt.txt")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{id}: ")))
        .unwrap_or_else(|| panic!("{id} in prompts/en/rtt.txt"))
        .trim()
        .to_string()
}

/// Calls with audio and RFC 4103 text (t140 + red) offered; returns the caller and its RTT
/// terminal, connected to the text port the IVR answered (audio + 2).
fn rtt_call(server: &Server) -> (Uac, Terminal) {
    let text_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    text_sock
        .set_read_timeout(Some(Duration::from_millis(10)))
        .unwrap();
    let text_port = text_sock.local_addr().unwrap().port();

    let mut uac = Uac::new(server.sip);
    let sdp = format!(
        "{}m=text {text_port} RTP/AVP {RED} {T140}\r\na=rtpmap:{T140} t140/1000\r\n\
         a=rtpmap:{RED} red/1000\r\na=fmtp:{RED} {T140}/{T140}/{T140}\r\na=sendrecv\r\n",
        uac.sdp("sendrecv")
    );
    let branch = uac.request("INVITE", &sdp, true);
    let ok = uac.final_response(Duration::from_secs(5));
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    uac.ack(true, &branch);
    let audio_port = media_port(&ok.body, "audio");
    let ivr_text_port = media_port(&ok.body, "text");
    assert_eq!(ivr_text_port, audio_port + 2, "{}", ok.body);

    let now = Instant::now();
    let term = Terminal {
        sock: text_sock,
        dest: SocketAddr::from(([127, 0, 0, 1], ivr_text_port)),
        tx: T140Sender::new(
            now,
            T140SenderConfig {
                payload_type: T140,
                red_payload_type: Some(RED),
                ssrc: 0x5EED,
                ..T140SenderConfig::default()
            },
        ),
        rx: T140Receiver::new(T140, Some(RED)),
        screen: String::new(),
        sent: 0,
    };
    (uac, term)
}

#[test]
fn rtt_caller_types_a_question_and_reads_the_answer() {
    let server = Server::start(ServerOptions::default());
    let (mut uac, mut term) = rtt_call(&server);

    // The voice greeting plays until the caller types.
    std::thread::sleep(Duration::from_millis(1500));
    let (packets, loud) = drain_audio(&uac.rtp);
    assert!(loud > 10, "greeting heard: {loud} of {packets} packets");

    // Typed a few keys at a time, as a person does.
    for chunk in ["how do I ", "check my ", "case status", "\r\n"] {
        term.type_line(chunk);
        term.run(Duration::from_millis(250), |_| false);
    }
    let answer = rtt_prompt("rtt.answer.case_status");
    term.run(Duration::from_secs(10), |s| s.contains(&answer));
    assert!(term.screen.contains(&answer), "{:?}", term.screen);
    assert!(
        term.screen.contains(&rtt_prompt("rtt.link_offer")),
        "{:?}",
        term.screen
    );
    assert!(!term.screen.contains(MISSING_TEXT), "{:?}", term.screen);
    // A text call: the voice prompts stopped (comfort silence only).
    drain_audio(&uac.rtp);
    std::thread::sleep(Duration::from_millis(1000));
    let (packets, loud) = drain_audio(&uac.rtp);
    assert!(
        packets > 20 && loud == 0,
        "{loud} of {packets} packets with sound"
    );

    // The link by text message, to the caller's own number.
    term.type_line("text\r\n");
    let ask = rtt_prompt("rtt.ask_phone_caller_id");
    term.run(Duration::from_secs(5), |s| s.contains(&ask));
    assert!(term.screen.contains(&ask), "{:?}", term.screen);
    term.type_line("yes\r\n");
    let sent = rtt_prompt("rtt.sent");
    term.run(Duration::from_secs(5), |s| s.contains(&sent));
    assert!(term.screen.contains(&sent), "{:?}", term.screen);
    for etiquette in [" GA", " SK", " Q "] {
        assert!(!term.screen.contains(etiquette), "{:?}", term.screen);
    }

    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["mode"], "rtt", "{call}");
    assert_eq!(call["intent"], "case_status", "{call}");
    assert_eq!(call["actions"][0], "send_link:sms:case_status", "{call}");
    assert!(server.log_text().contains("RTT mode"));

    let rows = outbox_list(&server.data_dir);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["channel"], "sms");
    assert_eq!(rows[0]["call_id"], uac.call_id.as_str());
}

const ALWAYS_OPEN: &str = "[routing]\nweekdays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n\
    open = \"00:00\"\nclose = \"23:59\"\n[routing.queues]\ntty = \"sip:tty-agents@127.0.0.1:5998\"\n";

/// A question the policy sends to a person, while open: the IVR types its answer, then REFERs
/// the call to the TTY agent queue with `mode=rtt` in the context it passes on.
#[test]
fn rtt_caller_is_transferred_to_the_tty_queue() {
    let server = Server::start(ServerOptions {
        extra_toml: ALWAYS_OPEN.into(),
        ..ServerOptions::default()
    });
    if !open_now(&server.data_dir.join("ivr.toml")) {
        eprintln!("closed now (a holiday): nothing to transfer to");
        return;
    }
    let (mut uac, mut term) = rtt_call(&server);
    term.type_line("I need to withdraw my application\r\n");
    let start = Instant::now();
    let refer = loop {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no REFER from the IVR; screen {:?}",
            term.screen
        );
        term.run(Duration::from_millis(50), |_| false);
        if let Some(m) = uac.recv(Duration::from_millis(10))
            && m.method() == Some("REFER")
        {
            break m;
        }
    };
    // The answer was typed (with its redundancy) before the call left.
    assert!(
        term.screen.contains(&rtt_prompt("rtt.answer.withdraw")),
        "{:?}",
        term.screen
    );
    assert!(
        refer
            .header("Refer-To")
            .unwrap_or("")
            .contains("tty-agents@127.0.0.1:5998"),
        "{refer:?}"
    );
    let uui = refer.header("User-to-User").unwrap_or("");
    let hex = uui.split(';').next().unwrap_or("");
    let context: String = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .map(char::from)
        .collect();
    assert_eq!(
        context, "intent=withdraw;lang=en;mode=rtt;consent=none",
        "{uui}"
    );
    uac.accept_refer(&refer, "SIP/2.0 200 OK");
    let bye = uac
        .wait_request("BYE", Duration::from_secs(10))
        .expect("a BYE after the transfer");
    uac.respond_ok(&bye);
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["mode"], "rtt", "{call}");
    assert_eq!(call["intent"], "withdraw", "{call}");
    assert_eq!(call["end_reason"], "transferred", "{call}");
}
