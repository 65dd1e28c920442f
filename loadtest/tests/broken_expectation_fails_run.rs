//! A manifest whose expectation the IVR cannot meet makes `loadtest run` exit non-zero and
//! name the failing call and script (and what differed), in its output and in report.json.

mod common;

use std::process::Command;

use common::*;

#[test]
fn a_wrong_expected_intent_fails_the_run_naming_the_call() {
    let server = Server::start();
    let dir = temp_dir("broken");
    // Two scripts: one right, one expecting "hours" where the keys lead to case status.
    let manifest = dir.join("manifest.toml");
    std::fs::write(
        &manifest,
        r#"
caller = "2025550134"
[[script]]
name = "keys-right"
steps = [
  { type = "wait", ms = 500 },
  { type = "dtmf", digits = "1", wait_ms = 800 },
  { type = "dtmf", digits = "2", wait_ms = 1500 },
  { type = "hangup" },
]
[script.expect]
intent = "processing_times"
digits = "12"

[[script]]
name = "expects-the-wrong-intent"
steps = [
  { type = "wait", ms = 500 },
  { type = "dtmf", digits = "1", wait_ms = 800 },
  { type = "dtmf", digits = "1", wait_ms = 1500 },
  { type = "hangup" },
]
[script.expect]
intent = "hours"
"#,
    )
    .unwrap();
    let report = dir.join("report");
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "run",
            "--target",
            &server.target(),
            "--admin",
            &server.admin_url(),
        ])
        .arg("--manifest")
        .arg(&manifest)
        .args(["--calls", "2", "--concurrency", "2", "--quiet", "--report"])
        .arg(&report)
        .output()
        .expect("run loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find(|l| l.starts_with("FAILED"))
        .unwrap_or_else(|| panic!("no FAILED line:\n{stdout}"));
    assert!(line.contains("expects-the-wrong-intent"), "{line}");
    assert!(
        line.contains("intent: expected \"hours\", got \"case_status\""),
        "{line}"
    );
    assert!(
        !stdout.contains("script keys-right"),
        "the right script passed:\n{stdout}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(json["passed"], false);
    assert_eq!(json["calls"]["passed"], 1);
    let failures = json["failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0]["script"], "expects-the-wrong-intent");
    let call_id = failures[0]["call_id"].as_str().unwrap();
    assert!(!call_id.is_empty() && line.contains(call_id), "{line}");
    let failed = json["objectives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "failed_max_pct")
        .unwrap();
    assert_eq!(failed["ok"], false);
    assert!(
        std::fs::read_to_string(report.join("report.html"))
            .unwrap()
            .contains("FAILED")
    );
}
