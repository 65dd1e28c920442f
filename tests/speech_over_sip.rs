//! Speech over SIP, on the embedded default (PocketSphinx for English): a caller (the harness's
//! raw SIP UAC sending G.711 from an espeak-ng recording) says its question over the greeting;
//! the greeting stops (barge-in, timed from the caller's own side of the wire) and the answer
//! matches the question. And overload: more talking callers than a one-worker pool with a tiny
//! queue can take — every call gets either its answer or the keypad fallback, and the media
//! pacing holds.
//!
//! Needs `espeak-ng`, `sox`, `libpocketsphinx-dev`, `pocketsphinx-en-us`.

mod common;

use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// A question PocketSphinx hears right even through G.711 at 8 kHz (see call_speech_english).
const QUESTION: &str = "i want to withdraw my application";
const INTENT: &str = "withdraw";

/// Index of the first 20 ms frame louder than -40 dBFS.
fn onset_frame(pcm: &[i16]) -> usize {
    pcm.chunks(160)
        .position(|f| rms(f) > 330.0)
        .expect("the recording has speech")
}

/// Arrival time and loudness of every RTP packet the IVR sends to `sock`.
fn record_rtp(sock: UdpSocket, until: Instant) -> Arc<Mutex<Vec<(Instant, f64)>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let o = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while Instant::now() < until {
            if let Ok(n) = sock.recv(&mut buf)
                && let Some(rtp) = parse_rtp(&buf[..n])
                && rtp.pt == 0
            {
                let pcm: Vec<i16> = rtp.payload.iter().map(|&b| ulaw_to_linear(b)).collect();
                o.lock().unwrap().push((Instant::now(), rms(&pcm)));
            }
        }
    });
    out
}

#[test]
fn a_question_over_the_greeting_stops_it_and_gets_the_answer() {
    let server = Server::start(ServerOptions::default());
    let (_, ready) = server.get("/readyz");
    assert!(ready.contains("\"en\":\"pocketsphinx\""), "{ready}");
    let dir = temp_dir("speech-sip");
    let question = speak_8k(&dir, QUESTION);
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    let dest = Uac::remote_rtp(&ok);
    let t0 = Instant::now();
    let packets = record_rtp(uac.rtp.try_clone().unwrap(), t0 + Duration::from_secs(40));
    // 1.5 s into the greeting (about 12 s long) the caller asks, then stays on the line.
    let lead = vec![0i16; 8000 * 3 / 2];
    let mut audio = lead.clone();
    audio.extend(&question);
    audio.extend(vec![0i16; 8000 * 12]);
    let speech_on = t0 + Duration::from_millis(1500 + 20 * onset_frame(&question) as u64);
    let last_loud = question
        .chunks(160)
        .rposition(|f| rms(f) > 330.0)
        .expect("speech");
    let speech_end = t0 + Duration::from_millis(1500 + 20 * (last_loud as u64 + 1));
    uac.send_pcmu(dest, &audio, 1, 1000);
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    println!("{call:#}");
    // Understood; answered at once when the recognizer was sure of its words too, confirmed
    // first otherwise (PocketSphinx's posterior at 8 kHz is often under its floor even for a
    // right transcript).
    let understood = &call["speech"]["understood"][0];
    assert_eq!(understood["intent"], INTENT, "{call}");
    let prompts = call["prompts"].to_string();
    match understood["decision"].as_str() {
        Some("answer") => {
            assert_eq!(call["intent"], INTENT, "{call}");
            assert!(
                prompts.contains(&format!("en:answer.{INTENT}")),
                "{prompts}"
            );
        }
        Some("confirm") => assert!(
            prompts.contains(&format!("en:confirm.{INTENT}")),
            "{prompts}"
        ),
        other => panic!("decided {other:?}: {call}"),
    }
    assert!(
        call["speech"]["transcripts"][0].as_str().is_some(),
        "{call}"
    );

    // From the caller's side: the greeting was loud until the caller spoke, then went quiet
    // (stopped), then the answer came.
    let packets = packets.lock().unwrap().clone();
    let loud = |p: &(Instant, f64)| p.1 > 200.0;
    assert!(
        packets
            .iter()
            .any(|p| p.0 > t0 + Duration::from_millis(500) && p.0 < speech_on && loud(p)),
        "the greeting played before the caller spoke"
    );
    // The greeting's last loud packet after onset: quiet follows for at least 300 ms.
    let stopped = packets
        .iter()
        .filter(|p| p.0 >= speech_on)
        .find(|p| {
            !packets
                .iter()
                .any(|q| q.0 > p.0 && q.0 < p.0 + Duration::from_millis(300) && loud(q))
        })
        .map(|p| p.0)
        .expect("the greeting stopped");
    let barge_ms = stopped.saturating_duration_since(speech_on).as_millis();
    let reply = packets
        .iter()
        .find(|p| p.0 > speech_end && loud(p))
        .map(|p| p.0)
        .expect("a reply after the question");
    let reply_ms = reply.saturating_duration_since(speech_end).as_millis();
    println!(
        "FIGURES barge-in {barge_ms} ms after speech onset; first reply audio {reply_ms} ms after the caller's speech ended (trailing silence 700 ms); server reply latency {:?}",
        call["speech"]["reply_latency_ms"]
    );
    // Well before the greeting's natural end; the target (200 ms) is reported, not asserted on
    // a shared machine.
    assert!(
        barge_ms < 1500,
        "the greeting went on {barge_ms} ms after the caller spoke"
    );
    assert!(reply_ms < 5000, "the reply took {reply_ms} ms");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A spoken question about something this office does not handle is never answered: the caller
/// hears what the IVR can help with, and is asked again.
#[test]
fn an_out_of_domain_question_gets_the_out_of_domain_reply() {
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("speech-sip-ood");
    // Heard as another agency's business through G.711 by the embedded recognizer, spoken over
    // the greeting (measured with `ivr call --rate 8000` on the same audio: "i need my social
    // duty are the card" — "social" is enough). Many out-of-domain questions are not heard this
    // well at 8 kHz; those are confirmed or asked again instead (BENCHMARKING.md).
    let question = speak_8k(&dir, "i need my social security card");
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    let dest = Uac::remote_rtp(&ok);
    let mut audio = vec![0i16; 8000 * 3 / 2];
    audio.extend(&question);
    audio.extend(vec![0i16; 8000 * 16]);
    uac.send_pcmu(dest, &audio, 1, 1000);
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    println!("{call:#}");
    let prompts: Vec<String> = call["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .filter_map(|p| p.as_str().map(String::from))
        .collect();
    let at = prompts
        .iter()
        .position(|p| p == "en:out_of_domain")
        .unwrap_or_else(|| panic!("the out-of-domain reply: {prompts:?}"));
    assert!(at + 1 < prompts.len(), "then the menu: {prompts:?}");
    assert!(
        !prompts.iter().any(|p| p.starts_with("en:answer.")),
        "never an answer: {prompts:?}"
    );
    assert!(call["intent"].is_null(), "{call}");
    assert_eq!(
        call["speech"]["understood"][0]["decision"], "out_of_domain",
        "{call}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn overloaded_recognition_falls_back_to_the_keypad_and_pacing_holds() {
    // One worker with room for two queued jobs: a talking caller needs dozens.
    let server = Server::start(ServerOptions {
        extra_toml: "[asr]\nworkers = 1\nqueue_jobs_max = 2\n".into(),
        ..ServerOptions::default()
    });
    let dir = temp_dir("speech-overload");
    let question = speak_8k(&dir, QUESTION);
    let callers = 6;
    let mut handles = Vec::new();
    for i in 0..callers {
        let sip = server.sip;
        let q = question.clone();
        handles.push(std::thread::spawn(move || {
            let mut uac = Uac::new(sip);
            let ok = uac.call();
            let dest = Uac::remote_rtp(&ok);
            let mut audio = vec![0i16; 8000];
            audio.extend(&q);
            audio.extend(vec![0i16; 8000 * 8]);
            uac.send_pcmu(dest, &audio, 1, 1000 + i);
            uac.request("BYE", "", true);
            let _ = uac.final_response(Duration::from_secs(3));
            uac.call_id.clone()
        }));
    }
    let ids: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let (mut answered, mut fallback) = (0, 0);
    for id in &ids {
        let call = server.ended_call(id, Duration::from_secs(10));
        let fell_back = call["actions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "speech_fallback"));
        let prompts = call["prompts"].to_string();
        if fell_back {
            assert!(prompts.contains("en:speech_fallback"), "{prompts}");
            fallback += 1;
        } else {
            // Not refused: recognized (answered, or confirmed first) or at worst asked again —
            // never silence.
            let understood = call["speech"]["understood"][0]["intent"] == INTENT;
            assert!(
                understood || prompts.contains("en:not_understood"),
                "{call}"
            );
            answered += usize::from(understood);
        }
    }
    let refused = server.metric("ivr_asr_overloaded_total");
    let (_, metrics) = server.get("/metrics");
    let bucket = |le: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "ivr_rtp_send_lateness_seconds_bucket{{le=\"{le}\"}} "
                ))
                .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("bucket {le} missing:\n{metrics}"))
    };
    let (within_2ms, total) = (bucket("0.002"), bucket("+Inf"));
    let late = 1.0 - within_2ms / total;
    println!(
        "FIGURES {callers} talking callers on 1 worker: {answered} answered, {fallback} keypad fallback, {refused} jobs refused; {:.3}% of {total} packets > 2 ms late",
        late * 100.0
    );
    assert!(fallback > 0, "the pool was never overloaded");
    assert!(refused > 0);
    // Pacing holds: the median packet leaves on time (within 2 ms). The share late is printed,
    // not asserted: with a compiler beside it a CI run saw 6.7 % (a quiet box: < 1 %), which
    // measures the machine; BENCHMARKING.md reports pacing tails from quiet runs.
    assert!(
        late < 0.5,
        "the median packet is more than 2 ms late ({:.2}% late)",
        late * 100.0
    );
    let _ = std::fs::remove_dir_all(&dir);
}
