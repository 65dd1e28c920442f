//! Understanding you can trust: the hard evaluation sets hold their floors (CI fails on a
//! regression), a caller in danger is never given an ordinary answer, a question about another
//! agency is never answered, and a garbled transcript is confirmed or asked again, never
//! answered.

mod common;

use std::process::Command;

use common::*;
use ivr::nlu::{self, Decision, SpeechEvidence};
use ivr::types::Lang;

fn nlu() -> nlu::Nlu {
    ivr::server::load_grammars(&repo().join("grammars")).expect("the repo's grammars build")
}

#[test]
fn eval_sets_hold_their_floors() {
    let out = Command::new(env!("CARGO_BIN_EXE_ivr"))
        .arg("check")
        .args(["--eval", "evals/en.txt", "--eval", "evals/es.txt"])
        .args([
            "--eval",
            "evals/holdout/en.txt",
            "--eval",
            "evals/holdout/es.txt",
        ])
        .current_dir(repo())
        .output()
        .expect("ivr runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "floors broken:\n{stderr}\n{stdout}");
    // Every set was scored, with the per-set lines the authors read.
    for set in ["in_domain", "asr_style", "safety", "out_of_domain"] {
        assert!(stdout.matches(set).count() >= 4, "{set}: {stdout}");
    }
}

#[test]
fn callers_in_danger_are_never_given_an_ordinary_answer() {
    let nlu = nlu();
    for (lang, text) in [
        (
            Lang::En,
            "my husband hits me and I need help with my petition",
        ),
        (
            Lang::Es,
            "mi esposo me pega y necesito ayuda con mi petición",
        ),
        (
            Lang::En,
            "I was brought here and forced to work and now I have a case with you",
        ),
        (
            Lang::En,
            "he says he'll call immigration on me if I leave, what's my case status",
        ),
        (
            Lang::Es,
            "me obligaron a trabajar sin pago y quiero saber de mi caso",
        ),
    ] {
        let c = nlu.classify(lang, text);
        assert_eq!(c.intent.as_deref(), Some("protected_case"), "{text}: {c:?}");
        assert!(c.safety, "{text}");
        assert_eq!(c.decision(), Decision::Answer, "{text}");
        // Spoken with an unsure recognizer: confirmed in plain words, still never another
        // intent's answer.
        let unsure = SpeechEvidence {
            asr_confidence: 0.0,
            answer_floor: ivr::asr::sphinx::ANSWER_FLOOR,
        };
        assert_eq!(nlu::decide::decide(&c, Some(unsure)), Decision::Confirm);
    }
}

#[test]
fn out_of_domain_questions_are_never_answered() {
    let nlu = nlu();
    for (lang, text) in [
        (Lang::En, "I lost my dog"),
        (Lang::En, "I need to renew my driver's license"),
        (Lang::En, "I want to file my taxes"),
        (Lang::En, "what's your fax number for the IRS"),
        (Lang::Es, "necesito renovar mi licencia de manejo"),
        (Lang::Es, "quiero hacer mis impuestos"),
    ] {
        let c = nlu.classify(lang, text);
        assert_eq!(c.decision(), Decision::OutOfDomain, "{text}: {c:?}");
        assert_eq!(c.intent, None, "{text}");
        assert!(c.out_of_domain.is_some(), "{text}");
    }
}

#[test]
fn garbled_transcripts_are_confirmed_or_asked_again_never_answered() {
    let nlu = nlu();
    // What PocketSphinx made of "Hello. I would like to check the status of my case please"
    // over G.711 (a baresip call and `ivr call --rate 8000`), with its posterior of the order
    // it gives such transcripts.
    for text in [
        "are on what are you and on my green",
        "are on what are you what are you marine",
    ] {
        let c = nlu.classify(Lang::En, text);
        let heard = SpeechEvidence {
            asr_confidence: 2e-5,
            answer_floor: ivr::asr::sphinx::ANSWER_FLOOR,
        };
        let d = nlu::decide::decide(&c, Some(heard));
        assert_ne!(d, Decision::Answer, "{text}: {c:?}");
    }
}
