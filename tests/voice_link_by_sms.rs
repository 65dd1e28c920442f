//! A voice caller asks for case status with keys, presses 4 for the link by text message and
//! 1 to confirm: the message is in the outbox (durable, recipient redacted in listings) and the
//! caller hears that it was sent only after that.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn pressing_4_stores_the_link_for_a_text_message() {
    require("sox");
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("sms");
    let one = sox_tone(&dir, "one", 697, 1209);
    let four = sox_tone(&dir, "four", 770, 1209);
    let gap = vec![0i16; 8000 * 7 / 10];
    // English, case status, "text me the link", confirm.
    let mut audio = gap.clone();
    for key in [&one, &one, &four, &one] {
        audio.extend(key.iter());
        audio.extend(gap.iter());
    }
    audio.extend(vec![0i16; 8000 * 3]);
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    uac.send_pcmu(Uac::remote_rtp(&ok), &audio, 1, 0);
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["digits"], "1141", "{call}");
    assert_eq!(call["actions"][0], "send_link:sms:case_status", "{call}");
    let prompts = call["prompts"].to_string();
    assert!(
        prompts.contains("en:sms_confirm") && prompts.contains("en:sms_sent"),
        "{prompts}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_ivr"))
        .args(["outbox", "list", "--json", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let m = &rows[0];
    assert_eq!(m["channel"], "sms");
    assert_eq!(m["call_id"], uac.call_id.as_str());
    assert!(
        m["url"]
            .as_str()
            .unwrap_or("")
            .contains("uscis.gov/casestatus"),
        "{m}"
    );
    assert!(
        !m.to_string().contains("2025550134"),
        "recipient redacted in listings: {m}"
    );
}
