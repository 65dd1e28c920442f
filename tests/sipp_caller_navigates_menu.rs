//! A SIPp caller (G.711 A-law + an RFC 2833 key, from the pcaps Debian's sip-tester ships) gets
//! 200 OK, hears the greeting — the IVR's RTP, captured on loopback and decoded, matches the
//! rendered prompt — and its key changes what is played next; the call ends cleanly.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn sipp_caller_hears_greeting_and_its_key_changes_the_prompt() {
    require("sipp");
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("sipp");
    // SIPp's media on ports of its own (-mp; [auto_media_port] of the first call is that port),
    // so the capture holds only this call's packets: another test's server may share the
    // IVR's port range.
    let (media_lo, media_hi) = rtp_ports();
    let capture = Capture::start(
        &format!(
            "udp and dst portrange {media_lo}-{media_hi} and src portrange {}-{}",
            server.rtp.0, server.rtp.1
        ),
        &dir,
    );

    let scenario = repo().join("sip-configs/sipp/uac_menu.xml");
    let sipp_port = free_port();
    let out = Command::new("sipp")
        .arg("-sf")
        .arg(&scenario)
        .args([
            "-m",
            "1",
            "-s",
            "ivr",
            "-i",
            "127.0.0.1",
            "-p",
            &sipp_port.to_string(),
            "-mp",
            &media_lo.to_string(),
        ])
        .args(["-timeout", "40s", "-timeout_error", "-bg"])
        .arg("-trace_err")
        .arg(server.sip.to_string())
        .current_dir(&dir)
        .output()
        .expect("run sipp");
    // -bg returns at once with the pid; wait for the scenario to finish.
    let pid: Option<u32> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|w| w.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok());
    let start = std::time::Instant::now();
    while let Some(pid) = pid {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || start.elapsed() > Duration::from_secs(45)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let packets = capture.stop();

    // The call's record: the key, the prompts, a clean end by the caller's BYE.
    let (_, body) = server.get("/calls?limit=5");
    let calls: serde_json::Value = serde_json::from_str(&body).unwrap();
    let call = &calls[0];
    let call = server.ended_call(
        call["call_id"].as_str().expect("a call record"),
        Duration::from_secs(10),
    );
    assert_eq!(call["digits"], "1", "{call}");
    assert_eq!(call["lang"], "en");
    assert_eq!(call["end_reason"], "caller_bye", "{call}");
    assert_eq!(call["codec"], "PCMA");
    let prompts: Vec<&str> = call["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        prompts,
        [
            "en:greeting",
            "en:ask_question",
            "en:language_menu",
            "es:language_menu",
            "en:ask_question",
            "en:main_menu"
        ],
        "{call}"
    );

    // The audio: RTP from the IVR, in sequence order, split at marker bits into talkspurts.
    let mut seqs = SeqUnwrapper::new();
    let mut rtp: Vec<(i64, bool, Vec<i16>)> = packets
        .iter()
        .filter_map(|p| parse_rtp(&p.payload))
        .filter(|r| r.pt == 8)
        .map(|r| {
            (
                seqs.extend(r.seq),
                r.marker,
                r.payload.iter().map(|&b| alaw_to_linear(b)).collect(),
            )
        })
        .collect();
    rtp.sort_by_key(|(seq, _, _)| *seq);
    assert!(
        rtp.len() > 300,
        "expected ~9 s of RTP from the IVR, got {} packets",
        rtp.len()
    );
    let starts: Vec<usize> = rtp
        .iter()
        .enumerate()
        .filter(|(_, r)| r.1)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        starts.len(),
        2,
        "two talkspurts (greeting, then main menu after the key): {starts:?}"
    );
    let spurt = |from: usize, to: usize| -> Vec<i16> {
        rtp[from..to].iter().flat_map(|r| r.2.clone()).collect()
    };
    // SIPp's recording talks over the greeting, which stops it (barge-in): what counts is the
    // greeting as heard up to the silence that follows the stop.
    let mut greeting_heard = spurt(starts[0], starts[1]);
    let frames: Vec<f64> = greeting_heard.chunks(160).map(rms).collect();
    if let Some(quiet) =
        (0..frames.len().saturating_sub(10)).find(|&i| frames[i..i + 10].iter().all(|&r| r < 50.0))
    {
        greeting_heard.truncate(quiet * 160);
    }
    eprintln!("greeting heard for {} ms", greeting_heard.len() / 8);
    assert!(
        greeting_heard.len() >= 8000 / 2,
        "at least half a second of the greeting"
    );
    let menu_heard = spurt(starts[1], rtp.len());
    assert!(rms(&greeting_heard) > 500.0, "the greeting is not silent");

    let greeting = say_prompt("en", "greeting", &dir);
    // With speech recognition on (the embedded default), the main menu invites a spoken
    // question first.
    let mut main_menu = say_prompt("en", "ask_question", &dir);
    main_menu.extend(say_prompt("en", "main_menu", &dir));
    let g = envelope_correlation(&greeting_heard, &greeting);
    let m = envelope_correlation(&menu_heard, &main_menu);
    let cross = envelope_correlation(&menu_heard, &greeting);
    eprintln!(
        "envelope correlation: greeting {g:.3}, main menu {m:.3}, main menu vs greeting {cross:.3}"
    );
    assert!(
        g > 0.9,
        "what the caller heard first is the greeting ({g:.3})"
    );
    assert!(
        m > 0.9,
        "after the key the caller hears the main menu ({m:.3})"
    );
    assert!(cross < 0.5, "and not the greeting again ({cross:.3})");
}
