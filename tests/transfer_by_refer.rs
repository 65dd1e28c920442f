//! A caller asks for an expedite (tier 1) while the center is open, presses 0: the IVR says
//! "please hold", sends REFER to the tier-1 queue with the call's context in User-to-User
//! (hex, no personal data), follows the NOTIFY progress and leaves the call on success.
//! Case status is never transferred (tested in the flow and routing tests).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const ALWAYS_OPEN: &str = "[routing]\nweekdays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n\
    open = \"00:00\"\nclose = \"23:59\"\n[routing.queues]\ntier1 = \"sip:tier1@127.0.0.1:5999\"\n";

/// In-band keys 1, 8, 1, 0 (English, other topics, expedite, a representative) with pauses.
fn keys_to_transfer(dir: &std::path::Path) -> Vec<i16> {
    let one = sox_tone(dir, "one", 697, 1209);
    let eight = sox_tone(dir, "eight", 852, 1336);
    let zero = sox_tone(dir, "zero", 941, 1336);
    let gap = vec![0i16; 8000 * 7 / 10];
    let mut audio = gap.clone();
    for key in [&one, &eight, &one, &zero] {
        audio.extend(key.iter());
        audio.extend(gap.iter());
    }
    audio
}

#[test]
fn expedite_during_hours_is_transferred_by_refer() {
    let server = Server::start(ServerOptions {
        extra_toml: ALWAYS_OPEN.into(),
        ..ServerOptions::default()
    });
    let config = server.data_dir.join("ivr.toml");
    let dir = temp_dir("refer");
    let audio = keys_to_transfer(&dir);
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    uac.send_pcmu(Uac::remote_rtp(&ok), &audio, 1, 0);

    if !open_now(&config) {
        // A federal holiday (or the last minute of the day): no transfer may be offered.
        uac.request("BYE", "", true);
        let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
        assert!(
            !call["prompts"].to_string().contains("offer_transfer"),
            "{call}"
        );
        return;
    }

    // The REFER comes after "please hold".
    let refer = uac
        .wait_request("REFER", Duration::from_secs(20))
        .expect("a REFER from the IVR");
    assert!(
        refer
            .header("Refer-To")
            .unwrap_or("")
            .contains("tier1@127.0.0.1:5999"),
        "{refer:?}"
    );
    assert!(refer.header("Referred-By").is_some());
    let uui = refer.header("User-to-User").expect("context for the agent");
    let hex = uui.split(';').next().unwrap();
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        "intent=expedite;lang=en;mode=voice;consent=none"
    );
    assert!(uui.contains("encoding=hex"));
    // The trunk accepts and reports the agent answered.
    uac.accept_refer(&refer, "SIP/2.0 200 OK");
    let mut notify_ok = false;
    let mut bye = None;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) && bye.is_none() {
        if let Some(m) = uac.recv(Duration::from_millis(200)) {
            if m.status() == Some(200) && m.header("CSeq").is_some_and(|c| c.contains("NOTIFY")) {
                notify_ok = true;
            }
            if m.method() == Some("BYE") {
                bye = Some(m);
            }
        }
    }
    assert!(notify_ok, "NOTIFY answered 200");
    uac.respond_ok(&bye.expect("the IVR leaves the call after the transfer"));
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["end_reason"], "transferred", "{call}");
    assert_eq!(call["outcome"], "transferred");
    assert!(
        call["actions"].to_string().contains("transfer:expedite"),
        "{call}"
    );
    let prompts = call["prompts"].to_string();
    assert!(
        prompts.contains("en:offer_transfer") && prompts.contains("en:transfer_start"),
        "{prompts}"
    );
}

/// The trunk cannot transfer right now (503): the IVR apologizes and the call goes on (the
/// caller is offered the after-answer menu again, link included where there is one). A trunk
/// that does not do REFER at all (405, 501...) is bridged instead: tests/transfer_bridge.rs.
#[test]
fn a_refused_transfer_is_apologized_for_and_the_call_goes_on() {
    let server = Server::start(ServerOptions {
        extra_toml: ALWAYS_OPEN.into(),
        ..ServerOptions::default()
    });
    let config = server.data_dir.join("ivr.toml");
    let dir = temp_dir("refer-refused");
    let audio = keys_to_transfer(&dir);
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    let dest = Uac::remote_rtp(&ok);
    uac.send_pcmu(dest, &audio, 1, 0);
    if !open_now(&config) {
        return;
    }
    let refer = uac
        .wait_request("REFER", Duration::from_secs(20))
        .expect("a REFER from the IVR");
    uac.respond(&refer, 503, "Service Unavailable");
    // The caller hears the apology; keep the line alive a moment, then hang up.
    uac.send_pcmu(dest, &vec![0i16; 8000 * 2], 400, 100_000);
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["end_reason"], "caller_bye", "{call}");
    assert!(
        call["prompts"].to_string().contains("en:transfer_failed"),
        "{call}"
    );
    assert_ne!(call["outcome"], "transferred");
    assert_eq!(call["transfer"], "failed:503", "{call}");
}

/// A TTY caller on the line, kept alive with silence after typing its question.
struct TtyLine {
    uac: Uac,
    dest: std::net::SocketAddr,
    seq: u16,
    ts: u32,
}

impl TtyLine {
    /// Calls the TTY number and types (minimodem) a question the policy sends to the TTY queue.
    fn call(server: &Server, dir: &std::path::Path) -> TtyLine {
        let wav = dir.join("q.wav");
        let mut child = Command::new("minimodem")
            .args(["--tx", "tdd", "-R", "8000", "-f"])
            .arg(&wav)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(
            &mut child.stdin.take().unwrap(),
            b"I NEED TO WITHDRAW MY APPLICATION GA",
        )
        .unwrap();
        assert!(child.wait().unwrap().success());
        let question = read_wav(&wav).1;
        let mut uac = Uac::new(server.sip);
        uac.dialed = "8007671833".into();
        let ok = uac.call();
        let dest = Uac::remote_rtp(&ok);
        uac.send_pcmu(dest, &vec![0i16; 8000 * 8], 1, 0);
        uac.send_pcmu(dest, &question, 401, 64_000);
        TtyLine {
            uac,
            dest,
            seq: 401 + (question.len() / 160) as u16 + 1,
            ts: 64_000 + question.len() as u32,
        }
    }

    /// Silence for up to `secs`, returning the first SIP message the IVR sends meanwhile.
    fn keep_alive(&mut self, secs: u64) -> Option<SipMsg> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            self.uac
                .send_pcmu(self.dest, &vec![0i16; 1600], self.seq, self.ts);
            self.seq = self.seq.wrapping_add(10);
            self.ts = self.ts.wrapping_add(1600);
            if let Some(m) = self.uac.recv(Duration::from_millis(10)) {
                return Some(m);
            }
        }
        None
    }

    /// Keeps the line alive while the IVR types, until its REFER (60 s at most).
    fn wait_refer(&mut self) -> SipMsg {
        loop {
            let m = self.keep_alive(60).expect("no REFER from the IVR");
            if m.method() == Some("REFER") {
                return m;
            }
        }
    }
}

/// A TTY caller whose question the policy sends to a person, while open: the IVR types its
/// answer, then REFERs the call to the TTY agent queue.
#[test]
fn a_tty_caller_is_transferred_to_the_tty_queue() {
    require("minimodem");
    let toml = format!("{ALWAYS_OPEN}tty = \"sip:tty-agents@127.0.0.1:5998\"\n");
    let server = Server::start(ServerOptions {
        extra_toml: toml,
        ..ServerOptions::default()
    });
    if !open_now(&server.data_dir.join("ivr.toml")) {
        return;
    }
    let mut line = TtyLine::call(&server, &temp_dir("tty-refer"));
    let refer = line.wait_refer();
    let uac = &mut line.uac;
    assert!(
        refer
            .header("Refer-To")
            .unwrap_or("")
            .contains("tty-agents@127.0.0.1:5998"),
        "{refer:?}"
    );
    uac.accept_refer(&refer, "SIP/2.0 200 OK");
    let bye = uac
        .wait_request("BYE", Duration::from_secs(10))
        .expect("a BYE after the transfer");
    uac.respond_ok(&bye);
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["mode"], "tty", "{call}");
    assert_eq!(call["intent"], "withdraw", "{call}");
    assert_eq!(call["end_reason"], "transferred", "{call}");
}

/// A TTY caller whose transfer the trunk refuses (503): the text conversation hears of it, types
/// that no agent could be reached and goes on; the IVR does not hang up. Before issue #13's fix
/// only the (frozen) voice flow was told, the TTY conversation stayed `Done` and the caller's
/// line went silent.
#[test]
fn a_refused_tty_transfer_is_typed_to_the_caller_and_the_call_goes_on() {
    require("minimodem");
    let toml = format!("{ALWAYS_OPEN}tty = \"sip:tty-agents@127.0.0.1:5998\"\n");
    let server = Server::start(ServerOptions {
        extra_toml: toml,
        ..ServerOptions::default()
    });
    if !open_now(&server.data_dir.join("ivr.toml")) {
        return;
    }
    let mut line = TtyLine::call(&server, &temp_dir("tty-refer-refused"));
    let refer = line.wait_refer();
    line.uac.respond(&refer, 503, "Service Unavailable");
    // The IVR types the apology and "ANYTHING ELSE" (~80 characters at 6 a second); it must
    // not hang up meanwhile.
    while let Some(m) = line.keep_alive(20) {
        assert_ne!(
            m.method(),
            Some("BYE"),
            "the IVR hung up after a refused transfer"
        );
    }
    let uac = &mut line.uac;
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["mode"], "tty", "{call}");
    assert_eq!(call["transfer"], "failed:503", "{call}");
    assert_eq!(call["end_reason"], "caller_bye", "{call}");
    assert_ne!(call["outcome"], "transferred", "{call}");
    assert!(
        call["actions"].to_string().contains("transfer_failed"),
        "the TTY conversation was told: {call}"
    );
    assert!(
        call["speech"]["typed_lines"].as_u64().unwrap_or(0) >= 3,
        "greeting, answer and the apology were typed: {call}"
    );
}
