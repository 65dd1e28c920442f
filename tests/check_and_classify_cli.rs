//! `ivr check` and `ivr classify` as authors and ops run them.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn ivr() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ivr"));
    c.current_dir(repo());
    c
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn check_passes_on_the_shipped_files_and_reports_accuracy() {
    let out = ivr().arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("author test cases pass (100.0%)"),
        "{stdout}"
    );
}

#[test]
fn check_names_file_and_line_of_a_broken_prompt_and_grammar() {
    let dir = temp_dir("check");
    copy_tree(&repo().join("prompts"), &dir.join("prompts"));
    copy_tree(&repo().join("grammars"), &dir.join("grammars"));
    // Line 3 of a new prompt file has unbalanced markup; a grammar test case expects the wrong intent.
    std::fs::write(
        dir.join("prompts/en/extra.txt"),
        "# extra\nfine: ok\nbad: wait {pause 300\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("prompts/es/extra.txt"),
        "fine: bien\nbad: espere\n",
    )
    .unwrap();
    let hours = dir.join("grammars/en/hours.txt");
    let mut text = std::fs::read_to_string(&hours).unwrap();
    text.push_str("test: what is the status of my case => hours\n");
    std::fs::write(&hours, text).unwrap();
    let out = ivr()
        .arg("check")
        .arg("--prompts")
        .arg(dir.join("prompts"))
        .arg("--grammars")
        .arg(dir.join("grammars"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("prompts/en/extra.txt:3: prompt \"bad\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("hours.txt:") && stderr.contains("expected hours got case_status"),
        "{stderr}"
    );
}

#[test]
fn check_requires_every_rtt_prompt() {
    let dir = temp_dir("check-rtt");
    copy_tree(&repo().join("prompts"), &dir.join("prompts"));
    // The English RTT text of "anything else" is missing: the Spanish one is left alone.
    let en = dir.join("prompts/en/rtt.txt");
    let text = std::fs::read_to_string(&en).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("rtt.anything_else:"))
        .collect();
    assert_eq!(kept.len() + 1, text.lines().count());
    std::fs::write(&en, kept.join("\n") + "\n").unwrap();
    let out = ivr()
        .arg("check")
        .arg("--prompts")
        .arg(dir.join("prompts"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("prompt \"rtt.anything_else\" is missing in en"),
        "{stderr}"
    );
    // The Spanish twin is named with its file and line.
    assert!(
        stderr.contains("prompts/es/rtt.txt:")
            && stderr.contains("\"rtt.anything_else\" has no en version"),
        "{stderr}"
    );
}

#[test]
fn classify_reads_stdin_lines_and_prints_json_lines() {
    let mut child = ivr()
        .args(["classify", "--lang", "en"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"MY GREEN CARD NEVER CAME IN THE MAIL GA\nhow long does it take to process my application\n\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["intent"], "notice_not_received");
    assert_eq!(lines[1]["intent"], "processing_times");
    assert!(
        lines[2]["intent"].is_null(),
        "an empty line has no intent: {}",
        lines[2]
    );
    for l in &lines {
        let c = l["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c));
        assert!(l["slots"].is_object());
    }
    // Spanish with a typed phone number: the slot is extracted.
    let out = ivr()
        .args([
            "classify",
            "--lang",
            "es",
            "mándenme",
            "el",
            "enlace",
            "al",
            "202",
            "555",
            "0134",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["slots"]["phone"], "2025550134", "{v}");
}
