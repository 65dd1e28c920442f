//! The binary runs outside its checkout: with no `grammars/` or `prompts/` in its working
//! directory, `ivr classify`, `ivr check`, `ivr say` and `ivr serve` use the grammars and prompts
//! built into it (and say so), and a SIPp caller to such a server hears the menus.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

fn ivr_in(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ivr"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run ivr")
}

#[test]
fn classify_check_and_say_work_from_an_empty_directory() {
    let dir = temp_dir("anywhere-cli");
    assert!(!dir.join("grammars").exists() && !dir.join("prompts").exists());

    let out = ivr_in(&dir, &["classify", "case status"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("classify prints JSON");
    assert_eq!(v["intent"], "case_status", "{v}");
    assert!(stderr.contains("using the built-in grammars"), "{stderr}");

    let out = ivr_in(&dir, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("check: ok"), "{stdout}");
    assert!(stdout.contains("author test cases pass"), "{stdout}");

    // A configured directory that is not there falls back too; one that is there is used (a
    // broken copy is reported, proving the directory, not the built-in set, was read).
    let broken = dir.join("mine");
    std::fs::create_dir_all(broken.join("en")).unwrap();
    std::fs::create_dir_all(broken.join("es")).unwrap();
    std::fs::write(broken.join("en/x.txt"), "this is not a grammar line\n").unwrap();
    let out = ivr_in(&dir, &["classify", "--grammars", "mine", "case status"]);
    assert!(
        !out.status.success(),
        "a broken configured directory must not be ignored"
    );

    let cfg = dir.join("say.toml");
    std::fs::write(
        &cfg,
        format!(
            "[paths]\ndata_dir = \"data\"\ntts_cache_dir = \"{}\"\n",
            repo().join("target/tts-cache").display()
        ),
    )
    .unwrap();
    let out = ivr_in(
        &dir,
        &[
            "say",
            "--prompt",
            "greeting",
            "-o",
            "greeting.wav",
            "--config",
            "say.toml",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (rate, samples) = read_wav(&dir.join("greeting.wav"));
    assert_eq!(rate, 8000);
    assert!(samples.len() > 8000, "greeting shorter than a second");
    assert!(rms(&samples) > 300.0, "greeting is silent");
}

#[test]
fn serve_from_an_empty_directory_answers_a_sipp_caller() {
    require("sipp");
    let cwd = temp_dir("anywhere-serve");
    let server = Server::start(ServerOptions {
        // Relative, and absent in the server's working directory.
        prompts_dir: "prompts".into(),
        grammars_dir: "grammars".into(),
        cwd: Some(cwd.clone()),
        ..ServerOptions::default()
    });
    let log = server.log_text();
    assert!(log.contains("using the built-in grammars"), "{log}");
    assert!(log.contains("using the built-in prompts"), "{log}");

    let out = Command::new("sipp")
        .arg("-sf")
        .arg(repo().join("sip-configs/sipp/uac_menu.xml"))
        .args(["-m", "1", "-s", "ivr", "-i", "127.0.0.1", "-p"])
        .arg(free_port().to_string())
        .args(["-timeout", "40s", "-timeout_error", "-nostdin"])
        .arg(server.sip.to_string())
        .current_dir(&cwd)
        .output()
        .expect("run sipp");
    assert!(
        out.status.success(),
        "sipp failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        server.log_text()
    );
    let (_, body) = server.get("/calls?limit=5");
    let calls: serde_json::Value = serde_json::from_str(&body).unwrap();
    let call = server.ended_call(
        calls[0]["call_id"].as_str().expect("a call record"),
        Duration::from_secs(10),
    );
    assert_eq!(call["end_reason"], "caller_bye", "{call}");
    let prompts = call["prompts"].to_string();
    assert!(prompts.contains("en:greeting"), "{call}");
    assert!(prompts.contains("en:main_menu"), "{call}");
}
