//! A voice caller gets the link by email, end to end against a real SMTP server (Debian's
//! aiosmtpd): case status with keys, 4 for the link, 2 for email, the address spelled on the
//! keypad two keys a character, `#`, the read-back, 1 to confirm. The message is in the outbox
//! before "sent" is said, and aiosmtpd receives it at the spelled address with the link. The
//! keys that spelled it are not in the call record.

mod common;
mod outbox_support;

use std::time::Duration;

use common::*;
use outbox_support::Smtpd;

/// The in-band audio of `keys` (DTMF pairs, `gap` samples after each).
fn keyed(dir: &std::path::Path, keys: &str, gap: &[i16]) -> Vec<i16> {
    let mut audio = Vec::new();
    for key in keys.chars() {
        audio.extend(dtmf_tone(dir, key));
        audio.extend(gap);
    }
    audio
}

#[test]
fn an_address_spelled_on_the_keypad_receives_the_link() {
    require("sox");
    require("espeak-ng");
    let smtp_port = free_port();
    // aiosmtpd's Mailbox makes the Maildir itself (a bare existing directory fails).
    let smtpd = Smtpd::start(smtp_port, &temp_dir("email-smtp").join("maildir"));
    let server = Server::start(ServerOptions {
        extra_toml: outbox_support::fast_config_toml(smtp_port),
        ..ServerOptions::default()
    });
    let dir = temp_dir("email-keys");
    let address = "jo.li7@ab.us";
    let keys = ivr::nlu::spell::keypad_keys(address).expect("spellable");
    let gap = vec![0i16; 8000 * 7 / 10];
    let short = vec![0i16; 8000 * 3 / 10];
    let mut audio = gap.clone();
    // English, case status, the link, by email; the address, then #.
    audio.extend(keyed(&dir, "1142", &gap));
    audio.extend(keyed(&dir, &format!("{keys}#"), &short));
    // The read-back ("You said J O dot L I 7 at A B dot U S ...") plays; 1 confirms it.
    audio.extend(vec![0i16; 8000 * 2]);
    audio.extend(dtmf_tone(&dir, '1'));
    audio.extend(vec![0i16; 8000 * 3]);
    let call = play_and_hang_up(&server, Uac::new(server.sip), &audio);
    // The keys spelling the address are not recorded; neither is the address.
    assert_eq!(call["digits"], "1142", "{call}");
    assert!(!call.to_string().contains("ab.us"), "{call}");
    let prompts = call["prompts"].to_string();
    for p in [
        "en:link_channel",
        // PocketSphinx cannot spell: the keypad request ([asr.en] spelling unset).
        "en:email.ask_keys",
        "en:entry.readback",
        "en:email_sent",
    ] {
        assert!(prompts.contains(p), "{p} missing: {prompts}");
    }
    assert_eq!(call["actions"][0], "send_link:email:case_status", "{call}");

    // Delivered by the outbox worker to the real SMTP server.
    // Delivery is asynchronous (the outbox worker); on a loaded CI box 20 s was not enough.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let raw = loop {
        if let Some(m) = smtpd.messages().into_iter().next() {
            break m;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no email arrived; outbox: {:?}",
            outbox_list(&server.data_dir)
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let to = outbox_support::header(&raw, "To").unwrap_or_default();
    assert!(to.contains(address), "sent to the spelled address: {to}");
    let body = outbox_support::body(&raw);
    assert!(body.contains("uscis.gov/casestatus"), "{body}");
    assert_eq!(smtpd.messages().len(), 1, "exactly one email");
}

/// Bad input loses nothing and sends nothing: keys that are no address ("jo" with no @, then
/// `#`) are answered with "that is not a complete email address" and the request again; the
/// outbox stays empty.
#[test]
fn keys_that_are_no_address_are_asked_again_and_nothing_is_queued() {
    require("sox");
    let server = Server::start(ServerOptions::default());
    let dir = temp_dir("email-bad-keys");
    let gap = vec![0i16; 8000 * 7 / 10];
    let short = vec![0i16; 8000 * 3 / 10];
    let mut audio = gap.clone();
    audio.extend(keyed(&dir, "1142", &gap));
    audio.extend(keyed(&dir, "5163#", &short));
    audio.extend(vec![0i16; 8000 * 3]);
    let call = play_and_hang_up(&server, Uac::new(server.sip), &audio);
    assert_eq!(
        prompt_after(&call, "en:email.invalid").as_deref(),
        Some("en:email.ask_keys"),
        "{call}"
    );
    assert!(!call["actions"].to_string().contains("send_link"), "{call}");
    assert!(outbox_list(&server.data_dir).is_empty(), "nothing queued");
}

/// The read-back answered by voice on the embedded default (PocketSphinx, 8 kHz G.711): the
/// address is spelled on the keypad, and "yes please" said over the read-back confirms it.
/// (This found the key-tone CMN bug: the tones before it had left the recognizer deaf.)
#[test]
fn yes_said_over_the_read_back_sends_the_email() {
    require("sox");
    let smtp_port = free_port();
    let smtpd = Smtpd::start(smtp_port, &temp_dir("email-yes-smtp").join("maildir"));
    let server = Server::start(ServerOptions {
        extra_toml: outbox_support::fast_config_toml(smtp_port),
        ..ServerOptions::default()
    });
    let dir = temp_dir("email-yes");
    let address = "al@ab.us";
    let keys = ivr::nlu::spell::keypad_keys(address).expect("spellable");
    let gap = vec![0i16; 8000 * 7 / 10];
    let short = vec![0i16; 8000 * 3 / 10];
    let mut audio = gap.clone();
    audio.extend(keyed(&dir, "1142", &gap));
    audio.extend(keyed(&dir, &format!("{keys}#"), &short));
    // Into the read-back ("You said A L at A B dot U S."), the caller says yes.
    audio.extend(vec![0i16; 8000 * 3 / 2]);
    audio.extend(speak_8k(&dir, "yes please"));
    audio.extend(vec![0i16; 8000 * 4]);
    let call = play_and_hang_up(&server, Uac::new(server.sip), &audio);
    assert_eq!(call["actions"][0], "send_link:email:case_status", "{call}");
    // What was said at the read-back is in the record; the spelling is not.
    assert!(!call.to_string().contains("ab.us"), "{call}");
    let raw = outbox_support::wait_for("the email", Duration::from_secs(60), || {
        smtpd.messages().into_iter().next()
    });
    let to = outbox_support::header(&raw, "To").unwrap_or_default();
    assert!(to.contains(address), "{to}");
}
