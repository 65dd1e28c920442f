//! Monitoring config: `promtool` accepts the scrape config and the alert rules, and the rules'
//! own unit tests pass (alerts fire on bad series, stay quiet on good ones). Every `ivr_*` metric
//! the rules and the Grafana dashboard use is one a running server really exposes on `/metrics`.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo().join("sip-configs/prometheus"))
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

/// Every `ivr_...` identifier in `text`.
fn ivr_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("ivr_") {
        let start = i + pos;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.insert(text[start..end].to_string());
        }
        i = end;
    }
    names
}

#[test]
fn promtool_accepts_the_config_and_the_rules_unit_tests_pass() {
    require("promtool");
    let out = promtool(&["check", "config", "prometheus.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&["check", "rules", "ivr.rules.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&["test", "rules", "ivr.rules.test.yml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn rules_and_dashboard_use_only_metrics_the_server_exposes() {
    let rules =
        std::fs::read_to_string(repo().join("sip-configs/prometheus/ivr.rules.yml")).unwrap();
    let dashboard =
        std::fs::read_to_string(repo().join("sip-configs/grafana/ivr-dashboard.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let panels = json["panels"].as_array().expect("panels");
    let graphs = panels.iter().filter(|p| p["type"] != "row").count();
    assert!(graphs >= 10, "{graphs} graphs");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert!(
            p["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "panel {} has no query",
            p["title"]
        );
    }

    // The embedded default: PocketSphinx English, so the recognizer's metrics are there too.
    let server = Server::start(ServerOptions::default());
    let (status, body) = server.get("/metrics");
    assert_eq!(status, 200);
    let exposed: BTreeSet<String> = body
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    let used: BTreeSet<String> = ivr_names(&rules)
        .into_iter()
        .chain(ivr_names(&dashboard))
        .collect();
    assert!(used.len() >= 20, "{used:?}");
    let missing: Vec<&String> = used.difference(&exposed).collect();
    assert!(
        missing.is_empty(),
        "used by the rules or the dashboard but not on /metrics: {missing:?}\nexposed: {exposed:?}"
    );
    for must in [
        "ivr_calls_active",
        "ivr_asr_overloaded_total",
        "ivr_outbox_queued",
        "ivr_rtp_send_lateness_seconds_bucket",
    ] {
        assert!(used.contains(must), "{must} not monitored");
    }
}
