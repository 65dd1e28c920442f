//! Issue #18: the IVR's media path on a bad network. The shipped full mix (keys, spoken
//! questions, a recording, in-band keys on A-law, a TTY caller) for 40 s of call starts at a modest
//! concurrency, every caller's RTP impaired by the load tester itself (no `netem` here):
//! 5 % loss, up to 40 ms of jitter, 2 % reordered, 1 % duplicated, with the default fixed seed.
//! Every voice call must still meet its expectation (RFC 4733 and in-band keys recorded, intents
//! answered, links sent); every TTY caller's question must be read, and answered in all but at
//! most one TTY call (see the assertion for why). Latency objectives are not asserted (a loaded
//! CI box misses them by design); correctness is. The TTY character error rate is printed.

mod common;

use common::*;

#[test]
fn full_mix_holds_under_loss_jitter_reorder_and_duplicates() {
    let server = Server::start();
    let run = run_full_mix(
        &server,
        "run",
        "impaired",
        &[
            "--concurrency",
            "12",
            "--rate",
            "3",
            "--duration",
            "40",
            "--impair",
            "loss=5,jitter=40,reorder=2,dup=1",
            "--quiet",
        ],
    );
    println!("{}", run.stdout);
    let json = run.json();
    // The impairment was applied, at about the rates asked for.
    assert_eq!(
        json["settings"]["impair"], "loss=5,jitter=40,reorder=2,dup=1",
        "{}",
        json["settings"]
    );
    let imp = &json["figures"]["impairment"];
    let n = imp["generated"].as_f64().unwrap();
    assert!(n > 10_000.0, "{imp}");
    let share = |k: &str| 100.0 * imp[k].as_f64().unwrap() / n;
    assert!((3.5..6.5).contains(&share("dropped")), "{imp}");
    assert!((1.2..2.8).contains(&share("reordered")), "{imp}");
    assert!((0.5..1.5).contains(&share("duplicated")), "{imp}");
    // Every script of the mix ran.
    let scripts = json["scripts"].as_array().unwrap();
    for s in scripts {
        assert!(s["calls"].as_u64().unwrap() >= 1, "{s}");
    }
    // Every voice call met its expectation: RFC 4733 and in-band keys, intents, links.
    let failures = run.failed_lines(|l| !l.contains("tty-case-status"));
    assert!(
        failures.is_empty(),
        "voice calls failed on the impaired network:\n{failures}\n{}",
        server.log_tail(30)
    );
    // TTY: Baudot has no redundancy and a lost 20 ms packet can take most of a 22 ms bit, so
    // 5 % loss costs ~1-3 % of the characters (BENCHMARKING.md, "Media path on an impaired
    // network"); now and then a question comes out too garbled to answer without asking back
    // (2 of 86 calls measured). Every TTY call's question must be read, all but at most one
    // answered, and the character error rate stay well under 10 %.
    let tty: Vec<&serde_json::Value> = json["per_call"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["script"] == "tty-case-status")
        .collect();
    assert!(tty.len() >= 3, "{} TTY calls", tty.len());
    for c in &tty {
        let chars = c["tty_chars"].as_u64().unwrap();
        let errors = c["tty_char_errors"].as_u64().unwrap();
        assert!(chars > 20 && errors * 3 < chars, "question not read: {c}");
    }
    let unanswered = tty.iter().filter(|c| c["intent"] != "case_status").count();
    assert!(
        unanswered <= 1,
        "{unanswered} of {} TTY questions not answered:\n{}\n{}",
        tty.len(),
        run.failed_lines(|_| true),
        server.log_tail(30)
    );
    let cer = json["figures"]["tty_cer_pct"]
        .as_f64()
        .expect("TTY calls ran");
    println!(
        "TTY under impairment: {} calls, {unanswered} not answered, character error rate {cer:.2} %",
        tty.len()
    );
    assert!(cer < 10.0, "TTY CER {cer}");
}
