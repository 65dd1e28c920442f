//! A voice caller asks for case status with keys, presses 4 for the link, 1 for a text message
//! and 1 to confirm: the message is in the outbox (durable, recipient redacted in listings) and the
//! caller hears that it was sent only after that.

mod common;

use common::*;

#[test]
fn pressing_4_stores_the_link_for_a_text_message() {
    require("sox");
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("sms");
    let one = sox_tone(&dir, "one", 697, 1209);
    let four = sox_tone(&dir, "four", 770, 1209);
    let gap = vec![0i16; 8000 * 7 / 10];
    // English, case status, the link, by text message, confirm the caller's number.
    let mut audio = gap.clone();
    for key in [&one, &one, &four, &one, &one] {
        audio.extend(key.iter());
        audio.extend(gap.iter());
    }
    audio.extend(vec![0i16; 8000 * 3]);
    let call = play_and_hang_up(&server, Uac::new(server.sip), &audio);
    let call_id = call["call_id"].as_str().expect("call id").to_string();
    assert_eq!(call["digits"], "11411", "{call}");
    assert_eq!(call["actions"][0], "send_link:sms:case_status", "{call}");
    let prompts = call["prompts"].to_string();
    assert!(
        prompts.contains("en:sms_confirm") && prompts.contains("en:sms_sent"),
        "{prompts}"
    );

    let rows = outbox_list(&server.data_dir);
    assert_eq!(rows.len(), 1, "{rows:?}");
    let m = &rows[0];
    assert_eq!(m["channel"], "sms");
    assert_eq!(m["call_id"], call_id.as_str());
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

#[test]
fn a_caller_from_an_unknown_number_keys_one_and_the_read_back_is_confirmed() {
    require("sox");
    require("espeak-ng");
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("sms-keyed");
    let gap = vec![0i16; 8000 * 7 / 10];
    let short = vec![0i16; 8000 * 3 / 10];
    let mut audio = gap.clone();
    // English, case status, "text me the link" (no caller ID to confirm: the number is asked).
    for key in ['1', '1', '4', '1'] {
        audio.extend(dtmf_tone(&dir, key));
        audio.extend(&gap);
    }
    audio.extend(&gap);
    for key in "2125550199".chars() {
        audio.extend(dtmf_tone(&dir, key));
        audio.extend(&short);
    }
    // The read-back ("You entered 2 1 2, ...") plays; 1 confirms it.
    audio.extend(vec![0i16; 8000 * 2]);
    audio.extend(dtmf_tone(&dir, '1'));
    audio.extend(vec![0i16; 8000 * 3]);
    let mut uac = Uac::new(server.sip);
    uac.caller = "anonymous".into();
    let call = play_and_hang_up(&server, uac, &audio);
    let call_id = call["call_id"].as_str().expect("call id").to_string();
    // The number keyed is not in the record.
    assert_eq!(call["digits"], "1141", "{call}");
    assert!(!call.to_string().contains("5550199"), "{call}");
    let prompts = call["prompts"].to_string();
    for p in ["en:entry.ask", "en:entry.readback", "en:sms_sent"] {
        assert!(prompts.contains(p), "{p} missing: {prompts}");
    }
    assert_eq!(call["actions"][0], "send_link:sms:case_status", "{call}");
    // The recipient, read from the outbox's SQLite file itself (listings redact it).
    let db = rusqlite::Connection::open(server.data_dir.join("outbox.sqlite3")).unwrap();
    let (to, db_call_id): (String, String) = db
        .query_row("SELECT recipient, call_id FROM messages", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert!(
        to.contains("2125550199"),
        "the keyed number is the recipient: {to}"
    );
    assert_eq!(db_call_id, call_id);
}
