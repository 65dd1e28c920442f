//! After hours, a question that needs a person is answered and the caller hears when live help
//! opens next (from the business calendar, rendered during the call), instead of "press 0";
//! pressing 0 anyway transfers nothing. The center here opens for half an hour, three hours from
//! now (UTC), every day: closed now, next open today or tomorrow.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;

#[test]
fn closed_now_the_answer_says_when_representatives_are_back() {
    require("sox");
    require("espeak-ng");
    let hour = (SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 3600
        + 3)
        % 24;
    let server = Server::start(ServerOptions {
        extra_toml: format!(
            "[routing]\ntime_zone = \"UTC\"\nweekdays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n\
             open = \"{hour:02}:00\"\nclose = \"{hour:02}:30\"\n"
        ),
        ..ServerOptions::default()
    });
    let dir = temp_dir("after-hours");
    let one = sox_tone(&dir, "one", 697, 1209);
    let eight = sox_tone(&dir, "eight", 852, 1336);
    let zero = sox_tone(&dir, "zero", 941, 1336);
    let gap = vec![0i16; 8000 * 7 / 10];
    // English, other topics, expedite (tier 1: a person when open); then 0 after the answer.
    let mut audio = gap.clone();
    for key in [&one, &eight, &one] {
        audio.extend(key.iter());
        audio.extend(gap.iter());
    }
    audio.extend(vec![0i16; 8000 * 3]);
    audio.extend(zero.iter());
    audio.extend(vec![0i16; 8000 * 3]);
    let call = play_and_hang_up(&server, Uac::new(server.sip), &audio);
    let prompts: Vec<&str> = call["prompts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    let answer = prompts
        .iter()
        .position(|p| *p == "en:answer.expedite")
        .unwrap_or_else(|| panic!("no answer: {prompts:?}"));
    // Right after the answer and its menu: when representatives are back, not "press 0".
    assert_eq!(
        prompts[answer + 1..answer + 3],
        ["en:after_answer", "en:after_hours_next"],
        "{prompts:?}"
    );
    assert!(!prompts.contains(&"en:offer_transfer"), "{prompts:?}");
    // 0 anyway: said again, no transfer.
    assert!(
        prompts[answer + 3..].contains(&"en:after_hours_next"),
        "{prompts:?}"
    );
    assert!(call["actions"].as_array().unwrap().is_empty(), "{call}");
    assert!(call["transfer"].is_null(), "{call}");
    let log = server.log_text();
    assert!(!log.contains("dynamic prompt not rendered"), "{log}");
}
