//! `ivr route`: one JSON object per question and instant; usage errors exit 2. Driven
//! in-process through `ivr::cli::route::run_with` (the binary wires `run`).

use std::process::ExitCode;

use clap::Parser;
use ivr::cli::route::{Args, run_with};
use ivr::routing::RoutingConfig;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

fn route(argv: &[&str]) -> (ExitCode, String, String) {
    route_with(argv, &RoutingConfig::default())
}

fn route_with(argv: &[&str], cfg: &RoutingConfig) -> (ExitCode, String, String) {
    let cli = Cli::try_parse_from(std::iter::once("route").chain(argv.iter().copied()))
        .expect("test arguments parse");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = run_with(cli.args, cfg, &mut out, &mut err).expect("no IO error");
    (
        code,
        String::from_utf8(out).expect("utf-8"),
        String::from_utf8(err).expect("utf-8"),
    )
}

fn json(out: &str) -> serde_json::Value {
    assert_eq!(out.lines().count(), 1, "exactly one line: {out}");
    serde_json::from_str(out).expect("one JSON object")
}

#[test]
fn expedite_during_hours() {
    // Monday 2026-03-09 08:00 EDT, the first business morning after the spring change.
    let (code, out, err) = route(&["--intent", "expedite", "--at", "2026-03-09T12:00:00Z"]);
    assert_eq!(code, ExitCode::SUCCESS, "{err}");
    let v = json(&out);
    assert_eq!(v["intent"], "expedite");
    assert_eq!(v["route"], "tier1");
    assert_eq!(v["open"], true);
    assert_eq!(v["action"], "offer_transfer");
    assert_eq!(v["queue"], "tier1");
    assert_eq!(v["needs_text_ahead_consent"], false);
    assert_eq!(v["next_open"], "2026-03-09T08:00:00-04:00");
    assert!(v["reason"].as_str().is_some_and(|r| r.contains("expedite")));
}

#[test]
fn after_hours_in_spanish_names_the_next_opening() {
    // Sunday 2026-11-01 (the fall change): next opening Monday 08:00 EST.
    let (code, out, _) = route(&[
        "--intent",
        "withdraw",
        "--at",
        "2026-11-01T12:00:00-05:00",
        "--lang",
        "es",
    ]);
    assert_eq!(code, ExitCode::SUCCESS);
    let v = json(&out);
    assert_eq!(v["open"], false);
    assert_eq!(v["action"], "after_hours");
    assert_eq!(v["queue"], "spanish");
    assert_eq!(v["next_open"], "2026-11-02T08:00:00-05:00");
}

#[test]
fn case_status_is_self_service_with_its_link() {
    let (_, out, _) = route(&[
        "--intent",
        "case_status",
        "--at",
        "2026-03-10T15:00:00Z",
        "--tty",
    ]);
    let v = json(&out);
    assert_eq!(v["route"], "self");
    assert_eq!(v["action"], "answer_offer_link");
    assert_eq!(v["queue"], serde_json::Value::Null);
    assert_eq!(v["link"]["id"], "casestatus");
    assert_eq!(v["link"]["url"], "https://uscis.gov/casestatus");
}

#[test]
fn facts_from_flags() {
    let at = "2026-03-10T15:00:00Z";
    let (_, out, _) = route(&[
        "--intent",
        "expedite",
        "--at",
        at,
        "--condition",
        "expedite_biometrics",
        "--text-ahead",
        "yes",
    ]);
    let v = json(&out);
    assert_eq!(v["route"], "tier2");
    assert_eq!(v["queue"], "tier2");
    assert_eq!(v["send_text_ahead"], true);
    let (_, out, _) = route(&["--intent", "agent", "--at", at]);
    let v = json(&out);
    assert_eq!(v["route"], "special");
    assert_eq!(v["action"], "special");
    assert_eq!(v["special"], "agent");
}

#[test]
fn extra_closed_dates_from_config() {
    let cfg: RoutingConfig = toml::from_str("extra_closed = [\"2026-03-10\"]").unwrap();
    let (_, out, _) = route_with(
        &["--intent", "withdraw", "--at", "2026-03-10T15:00:00Z"],
        &cfg,
    );
    let v = json(&out);
    assert_eq!(v["open"], false);
    assert_eq!(v["next_open"], "2026-03-11T08:00:00-04:00");
}

#[test]
fn usage_errors_exit_2_with_a_clear_message() {
    let at = "2026-03-10T15:00:00Z";
    let cases: [(&[&str], &str); 4] = [
        (
            &["--intent", "weather", "--at", at],
            "unknown intent \"weather\"",
        ),
        (
            &["--intent", "expedite", "--at", at, "--lang", "fr"],
            "unknown language",
        ),
        (
            &["--intent", "expedite", "--at", at, "--condition", "x"],
            "unknown condition",
        ),
        (
            &["--intent", "expedite", "--at", at, "--text-ahead", "maybe"],
            "yes or no",
        ),
    ];
    for (argv, msg) in cases {
        let (code, out, err) = route(argv);
        assert_eq!(code, ExitCode::from(2), "{argv:?}");
        assert!(out.is_empty(), "{argv:?} printed {out}");
        assert!(err.contains(msg), "{argv:?}: {err}");
    }
    // An instant without an offset is ambiguous: clap rejects it before run.
    assert!(
        Cli::try_parse_from(["route", "--intent", "hours", "--at", "2026-03-10T08:00"]).is_err()
    );
}
