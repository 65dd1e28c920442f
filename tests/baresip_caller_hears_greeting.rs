//! A headless baresip caller (WAV file as its microphone, its decoded audio dumped to a WAV by
//! the sndfile module) completes a call; the recording holds the greeting.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn baresip_records_the_greeting() {
    require("baresip");
    require("sox");
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("baresip");
    // The caller says nothing for 15 s (a quiet line, as most callers listening to a greeting).
    let mic = dir.join("mic.wav");
    let st = Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
        .arg(&mic)
        .args(["trim", "0", "15"])
        .status()
        .unwrap();
    assert!(st.success());
    let sip_port = free_port();
    std::fs::write(
        dir.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nmodule_path /usr/lib/baresip/modules\n\
             module g711.so\nmodule aufile.so\nmodule sndfile.so\nmodule menu.so\nmodule account.so\n\
             audio_player aufile,{dir}/played.wav\naudio_source aufile,{mic}\nsnd_path {dir}\n",
            dir = dir.display(),
            mic = mic.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("accounts"),
        "<sip:2025550177@127.0.0.1>;regint=0;audio_codecs=PCMU\n",
    )
    .unwrap();
    let out = Command::new("timeout")
        .args(["40", "baresip", "-f"])
        .arg(&dir)
        .args(["-e", &format!("/dial sip:ivr@{}", server.sip), "-t", "12"])
        .current_dir(&dir)
        .output()
        .expect("run baresip");
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("Call established"), "baresip log:\n{log}");

    // sndfile writes dump-<time>-dec.wav: the audio baresip decoded from the IVR.
    let dec = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("no decoded-audio dump; baresip log:\n{log}"));
    let (rate, heard) = read_wav(&dec);
    assert_eq!(rate, 8000);
    // Skip the silence before the first prompt frame.
    let first = heard
        .iter()
        .position(|s| s.unsigned_abs() > 300)
        .expect("the caller heard audio");
    let heard = &heard[first..];
    assert!(
        heard.len() > 8000 * 4,
        "at least 4 s of greeting heard ({} samples)",
        heard.len()
    );
    let greeting = say_prompt("en", "greeting", &dir);
    let g0 = greeting
        .iter()
        .position(|s| s.unsigned_abs() > 300)
        .unwrap_or(0);
    let corr = envelope_correlation(heard, &greeting[g0..]);
    eprintln!("baresip recording vs greeting: envelope correlation {corr:.3}");
    assert!(corr > 0.9, "the recording holds the greeting ({corr:.3})");

    // baresip hung up when its timer ran out: the call record says so.
    let (_, body) = server.get("/calls?limit=1");
    let calls: serde_json::Value = serde_json::from_str(&body).unwrap();
    let call = server.ended_call(
        calls[0]["call_id"].as_str().unwrap(),
        Duration::from_secs(10),
    );
    assert_eq!(call["end_reason"], "caller_bye", "{call}");
    assert_eq!(call["codec"], "PCMU");
    assert_eq!(call["caller"], "***77");
}
