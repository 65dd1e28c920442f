//! A full SIP call to the TTY number with Baudot audio (typed by minimodem, the independent
//! peer, sent as G.711 RTP): the IVR greets in TTY style, the caller's question gets the right
//! answer and the link offer, and minimodem decodes the IVR's tones exactly.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn minimodem_tx(text: &str, path: &std::path::Path) -> Vec<i16> {
    require("minimodem");
    let mut child = Command::new("minimodem")
        .args(["--tx", "tdd", "-R", "8000", "-f"])
        .arg(path)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    read_wav(path).1
}

/// What the IVR transmitted (G.711 RTP captured on the wire), decoded by minimodem.
fn minimodem_rx(packets: &[Captured], dir: &std::path::Path) -> String {
    // In sequence order, the 16-bit sequence numbers unwrapped (a call may cross 65535).
    let mut seqs = SeqUnwrapper::new();
    let mut rtp: Vec<(i64, Vec<i16>)> = packets
        .iter()
        .filter_map(|p| parse_rtp(&p.payload))
        .filter(|r| r.pt == 0)
        .map(|r| {
            let ext = seqs.extend(r.seq);
            (ext, r.payload.iter().map(|&b| ulaw_to_linear(b)).collect())
        })
        .collect();
    rtp.sort_by_key(|(seq, _)| *seq);
    let pcm: Vec<i16> = rtp.into_iter().flat_map(|(_, p)| p).collect();
    let wav = dir.join("ivr.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 8000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(&wav, spec).unwrap();
    for s in &pcm {
        w.write_sample(*s).unwrap();
    }
    w.finalize().unwrap();
    let out = Command::new("minimodem")
        .args(["--rx", "-q", "tdd", "-f"])
        .arg(&wav)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A call to the TTY number: listen to the greeting (sending silence, as a TTY line does), type
/// `text` with minimodem, keep the line alive for `listen` while the IVR types its reply, hang
/// up. Returns the call id and the IVR's RTP as captured on the wire.
fn tty_call(
    server: &Server,
    dir: &std::path::Path,
    text: &str,
    listen: Duration,
) -> (String, Vec<Captured>) {
    let question = minimodem_tx(text, &dir.join("q.wav"));
    let mut uac = Uac::new(server.sip);
    // Only this call's packets (another test's server may share the IVR's port range).
    let capture = Capture::start(
        &format!(
            "udp and dst port {} and src portrange {}-{}",
            uac.rtp.local_addr().unwrap().port(),
            server.rtp.0,
            server.rtp.1
        ),
        dir,
    );
    uac.dialed = "8007671833".into();
    let ok = uac.call();
    let dest = Uac::remote_rtp(&ok);
    // The greeting is 58 codes of 176 ms with its lead-in and tail: 10.7 s. (This waited 8 s:
    // the question's first words fell in the IVR's own turn and were dropped as its echo, so
    // the test passed or not on whether "STATUS" survived.)
    uac.send_pcmu(dest, &vec![0i16; 8000 * 12], 1, 1000);
    uac.send_pcmu(dest, &question, 601, 1000 + 8000 * 12);
    let start = Instant::now();
    let mut seq = 601 + (question.len() / 160) as u16 + 1;
    let mut ts = 1000 + 8000 * 12 + question.len() as u32;
    while start.elapsed() < listen {
        uac.send_pcmu(dest, &vec![0i16; 8000], seq, ts);
        seq = seq.wrapping_add(50);
        ts = ts.wrapping_add(8000);
    }
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    (uac.call_id.clone(), capture.stop())
}

#[test]
fn tty_caller_types_a_question_and_reads_the_answer() {
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("tty-call");
    // The answer and the link offer take ~25 s at 6 characters per second.
    let (call_id, packets) = tty_call(
        &server,
        &dir,
        "WHAT IS MY CASE STATUS Q GA",
        Duration::from_secs(40),
    );
    let call = server.ended_call(&call_id, Duration::from_secs(5));
    assert_eq!(call["mode"], "tty", "{call}");
    assert_eq!(call["intent"], "case_status", "{call}");
    assert_eq!(
        call["speech"]["caller_lines"],
        serde_json::json!(["WHAT IS MY CASE STATUS Q GA"]),
        "{call}"
    );

    let heard = minimodem_rx(&packets, &dir);
    let expected = "\r\nUSCIS CONTACT CENTER TTY. TYPE YOUR\r\nQUESTION GA\
                    \r\nCHECK YOUR CASE STATUS AT\r\nUSCIS.GOV/CASESTATUS OR IN YOUR USCIS\
                    \r\nONLINE ACCOUNT. WANT THIS LINK BY TEXT\r\nOR EMAIL Q TYPE TEXT OR EMAIL OR NO GA";
    assert_eq!(
        heard, expected,
        "minimodem decoded the IVR's tones; call: {call}"
    );
}

/// A question about something this office does not handle (taxes) is never answered: the IVR
/// types what it can help with and asks again, as minimodem decodes it off the wire.
#[test]
fn an_out_of_domain_question_gets_the_out_of_domain_reply() {
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("tty-ood");
    // The reply is ~150 characters at 6 a second.
    let (call_id, packets) = tty_call(
        &server,
        &dir,
        "I NEED TO FILE MY TAXES WITH THE IRS GA",
        Duration::from_secs(32),
    );
    let call = server.ended_call(&call_id, Duration::from_secs(5));
    assert_eq!(call["mode"], "tty", "{call}");
    assert!(call["intent"].is_null(), "nothing answered: {call}");
    let heard = minimodem_rx(&packets, &dir);
    let flat = heard.replace("\r\n", " ");
    assert!(
        flat.contains("I CAN HELP WITH IMMIGRATION CASES AND THIS OFFICE ONLY."),
        "minimodem decoded: {heard:?}; call: {call}"
    );
    assert!(
        flat.contains("TYPE YOUR QUESTION GA"),
        "asked again: {heard:?}"
    );
}

#[test]
fn a_voice_call_switches_to_tty_when_the_caller_types() {
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("tty-switch");
    let question = minimodem_tx("WHAT IS MY CASE STATUS Q GA", &dir.join("q.wav"));
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    let dest = Uac::remote_rtp(&ok);
    // The greeting plays; the caller types over it.
    uac.send_pcmu(dest, &vec![0i16; 8000 * 2], 1, 0);
    uac.send_pcmu(dest, &question, 101, 16000);
    let mut seq = 101 + (question.len() / 160) as u16 + 1;
    let mut ts = 16000 + question.len() as u32;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(12) {
        uac.send_pcmu(dest, &vec![0i16; 8000], seq, ts);
        seq = seq.wrapping_add(50);
        ts = ts.wrapping_add(8000);
    }
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["mode"], "tty", "{call}");
    assert_eq!(call["intent"], "case_status", "{call}");
    // The route is the TTY conversation's intent's, routed as a text call (issue #13: it was
    // computed from the voice flow's intent, none here, before the TTY override).
    assert_eq!(call["route"], "self", "{call}");
    assert!(
        call["route_reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{call}"
    );
    assert!(server.log_text().contains("Baudot tones detected"));
}

/// `[tty] numbers` are the TTY line too: a call to one starts as a text conversation (issue #13:
/// `[tty]` was never read; the file's section was refused as an unknown key, and only
/// `sip.tty_number` made a TTY call).
#[test]
fn a_number_listed_in_tty_numbers_is_answered_as_the_tty_line() {
    let server = Server::start(ServerOptions {
        extra_toml: "[tty]\nnumbers = [\"+1 800 555 0100\"]\npause_ms = 2500\n".into(),
        ..ServerOptions::default()
    });
    let mut uac = Uac::new(server.sip);
    uac.dialed = "8005550100".into();
    let ok = uac.call();
    let dest = Uac::remote_rtp(&ok);
    uac.send_pcmu(dest, &vec![0i16; 8000 * 2], 1, 0);
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["mode"], "tty", "{call}");
}
