//! Hot reload: a good edit to `grammars/` or `prompts/` is live within a second; a broken edit is
//! rejected with file and line in the log and changes nothing served.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn classify(server: &Server, text: &str) -> serde_json::Value {
    let (status, body) = server.get(&format!(
        "/classify?lang=en&text={}",
        text.replace(' ', "%20")
    ));
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// Poll until `done` or `limit`; returns how long it took.
fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if done() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn grammar_edits_are_live_and_broken_ones_change_nothing() {
    let dir = temp_dir("reload-g");
    copy_dir(&repo().join("grammars"), &dir.join("grammars"));
    let server = Server::start(
        ServerOptions {
            extra_toml: String::new(),
            ..ServerOptions::default()
        }
        .with_grammars(dir.join("grammars")),
    );

    let phrase = "zebra umbrella pineapple";
    let before = classify(&server, phrase);
    assert_ne!(before["intent"], "hours", "{before}");

    // A good edit: a new phrase for `hours`.
    let hours = dir.join("grammars/en/hours.txt");
    let mut text = std::fs::read_to_string(&hours).unwrap();
    text.push_str("\nzebra umbrella pineapple\n");
    std::fs::write(&hours, &text).unwrap();
    let took = wait_for(Duration::from_secs(5), || {
        classify(&server, phrase)["intent"] == "hours"
    })
    .expect("the new phrase is understood after the edit");
    eprintln!("grammar edit live after {took:?}");
    assert!(
        took <= Duration::from_secs(1),
        "live within a second (took {took:?})"
    );
    assert_eq!(server.metric("ivr_grammar_reloads_total"), 1);

    // A broken edit: an unknown intent id. Rejected, reported with file:line, nothing changes.
    let broken = dir.join("grammars/en/broken.txt");
    std::fs::write(&broken, "# oops\n[intent no_such_intent]\nsomething\n").unwrap();
    wait_for(Duration::from_secs(5), || {
        server.metric("ivr_grammar_reload_failures_total") == 1
    })
    .expect("the broken edit is rejected");
    let log = server.log_text();
    assert!(
        log.contains("broken.txt:2:"),
        "the log names file and line:\n{log}"
    );
    assert_eq!(
        classify(&server, phrase)["intent"],
        "hours",
        "the previous grammars keep serving"
    );
    assert_eq!(
        classify(&server, "what is the status of my case")["intent"],
        "case_status"
    );
}

#[test]
fn prompt_edits_are_live_and_broken_ones_change_nothing() {
    let dir = temp_dir("reload-p");
    copy_dir(&repo().join("prompts"), &dir.join("prompts"));
    let server = Server::start(ServerOptions {
        prompts_dir: dir.join("prompts"),
        ..ServerOptions::default()
    });
    let get = |server: &Server| -> serde_json::Value {
        let (status, body) = server.get("/prompts/en/goodbye");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    };
    let before = get(&server);

    let menus = dir.join("prompts/en/menus.txt");
    let text = std::fs::read_to_string(&menus).unwrap();
    let edited = text.replace(
        "Thank you for calling U.S.C.I.S. Goodbye.",
        "Thanks for calling. Have a good day.",
    );
    assert_ne!(text, edited);
    std::fs::write(&menus, &edited).unwrap();
    let took = wait_for(Duration::from_secs(10), || {
        get(&server)["text"] == "Thanks for calling. Have a good day."
    })
    .expect("the edited prompt is served");
    eprintln!("prompt edit live after {took:?}");
    assert!(
        took <= Duration::from_secs(1),
        "live within a second (took {took:?})"
    );
    assert_ne!(
        get(&server)["duration_ms"],
        before["duration_ms"],
        "re-rendered audio"
    );

    // Broken markup: rejected with file and line; the previous prompt keeps serving.
    std::fs::write(
        &menus,
        edited.replace("Have a good day.", "Have a good {pause day."),
    )
    .unwrap();
    wait_for(Duration::from_secs(5), || {
        server.metric("ivr_prompt_reload_failures_total") == 1
    })
    .expect("the broken edit is rejected");
    let log = server.log_text();
    assert!(
        log.contains("menus.txt:") && log.contains("never closed"),
        "file and line in the log:\n{log}"
    );
    assert_eq!(get(&server)["text"], "Thanks for calling. Have a good day.");
}
