//! A gateway that sends keys as tones inside the audio (no RFC 4733): tones synthesized with sox
//! into the caller's G.711 stream navigate the menu.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn inband_tones_choose_spanish_then_case_status() {
    require("sox");
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("inband");
    let two = sox_tone(&dir, "two", 697, 1336);
    let one = sox_tone(&dir, "one", 697, 1209);
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    let dest = Uac::remote_rtp(&ok);
    // Audio from t = 0: half a second of line noise-free silence, key 2, silence, key 1, silence.
    let gap = vec![0i16; 8000 / 2];
    let mut audio = gap.clone();
    audio.extend(&two);
    audio.extend(&gap);
    audio.extend(&gap);
    audio.extend(&one);
    audio.extend(&gap);
    audio.extend(&gap);
    uac.send_pcmu(dest, &audio, 100, 5000);
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["digits"], "21", "{call}");
    assert_eq!(call["lang"], "es");
    assert_eq!(call["intent"], "case_status");
    let prompts = call["prompts"].to_string();
    assert!(prompts.contains("es:answer.case_status"), "{prompts}");
    // Spanish has no recognizer on the embedded default: its callers are never told that
    // spoken answers are unavailable (they were never invited to speak).
    assert!(!prompts.contains("speech_fallback"), "{prompts}");
    assert!(
        !call["actions"].to_string().contains("speech_fallback"),
        "{call}"
    );
}
