//! The sample set against a real `ivr serve`: 20 calls at concurrency 10 pass every
//! expectation, and report.json / report.html carry every figure (latency, RTP quality, the
//! IVR's CPU and memory, the tool's own pacing, timeline, correctness per script).

mod common;

use common::*;

#[test]
fn twenty_sample_calls_pass_with_a_complete_report() {
    let server = Server::start();
    let run = run_full_mix(
        &server,
        "run",
        "report",
        &["--calls", "20", "--concurrency", "10"],
    );
    assert!(
        run.status.success(),
        "loadtest failed ({:?}):\n{}\n{}\n{}",
        run.status,
        run.stdout,
        run.stderr,
        server.log_tail(40)
    );
    println!("{}", run.stdout);
    let json = run.json();
    assert_eq!(json["passed"], true);
    assert_eq!(json["calls"]["total"], 20);
    assert_eq!(json["calls"]["connected"], 20);
    assert_eq!(json["calls"]["passed"], 20);
    assert_eq!(json["settings"]["concurrency"], 10);
    assert_eq!(json["settings"]["expectations_checked"], true);
    let f = &json["figures"];
    let num = |v: &serde_json::Value| v.as_f64().unwrap_or(f64::NAN);
    // Every call was answered and heard; latencies are positive and plausible on loopback.
    assert_eq!(f["invite_ms"]["count"], 20);
    assert!(
        num(&f["invite_ms"]["p50"]) > 0.0 && num(&f["invite_ms"]["p99"]) < 2000.0,
        "{f}"
    );
    assert_eq!(f["first_audio_ms"]["count"], 20);
    assert!(num(&f["first_audio_ms"]["p50"]) < 3000.0, "{f}");
    // Each script has inputs the IVR answers: at least one response per call.
    assert!(f["response_ms"]["count"].as_u64().unwrap() >= 20, "{f}");
    assert!(f["reaction_ms"]["count"].as_u64().unwrap() >= 20, "{f}");
    assert!(num(&f["reaction_ms"]["p50"]) > 0.0);
    assert_eq!(f["jitter_ms"]["count"], 20);
    assert!(
        num(&f["jitter_ms"]["p99"]) >= 0.0 && num(&f["jitter_ms"]["p99"]) < 20.0,
        "{f}"
    );
    assert!(num(&f["loss_pct"]["max"]) < 1.0, "{f}");
    assert!(
        f["pacing_error_ms"]["count"].as_u64().unwrap() > 1000,
        "{f}"
    );
    // The tool's own pacing.
    let s = &json["sender"];
    assert!(s["ticks"].as_u64().unwrap() > 100, "{s}");
    assert!(s["packets_sent"].as_u64().unwrap() > 1000, "{s}");
    assert!(num(&s["lateness_p50_ms"]) < 10.0, "{s}");
    // The IVR runs here: found by its SIP port, CPU and memory sampled.
    let ivr = &json["ivr"];
    assert_eq!(ivr["pid"], server.child.id());
    assert!(num(&ivr["rss_mib_max"]) > 1.0, "{ivr}");
    assert!(num(&ivr["cpu_pct_max"]) > 0.0, "{ivr}");
    let timeline = json["timeline"].as_array().unwrap();
    assert!(timeline.len() >= 5);
    assert!(
        timeline.iter().any(|p| p["active_calls"] == 10),
        "concurrency reached 10"
    );
    // Correctness per script: all seven scripts ran and passed.
    let scripts = json["scripts"].as_array().unwrap();
    assert_eq!(scripts.len(), 7);
    for s in scripts {
        assert!(s["calls"].as_u64().unwrap() >= 2, "{s}");
        assert_eq!(s["failed"], 0, "{s}");
    }
    assert_eq!(json["per_call"].as_array().unwrap().len(), 20);
    assert!(json["failures"].as_array().unwrap().is_empty());
    let objectives = json["objectives"].as_array().unwrap();
    assert!(
        objectives.len() >= 5,
        "the manifest's objectives were checked"
    );
    assert!(objectives.iter().all(|o| o["ok"] == true));

    let html = run.html();
    assert!(html.contains("PASSED"));
    // Four latency histograms, four over-time charts, the correctness table with each script.
    assert!(html.matches("<svg").count() >= 8, "plots present");
    assert!(html.contains("Response latency") && html.contains("IVR CPU"));
    for s in scripts {
        assert!(html.contains(s["name"].as_str().unwrap()));
    }
}
