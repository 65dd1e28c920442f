//! The routing policy of intents.md: self-service first, tier 1, tier 2 with text-ahead
//! consent, and the special flows, decided against the business calendar.

use ivr::intents::INTENTS;
use ivr::routing::{
    Action, Condition, Facts, Queue, Route, Router, RoutingConfig, SpecialKind, text_ahead_consent,
};
use ivr::types::Lang;
use jiff::Timestamp;

fn router() -> Router {
    Router::from_config(&RoutingConfig::default(), None).expect("the shipped policy is valid")
}

fn ts(s: &str) -> Timestamp {
    s.parse().expect("test instants are valid RFC 3339")
}

/// Tuesday 2026-12-01 10:00 EST.
const OPEN: &str = "2026-12-01T15:00:00Z";
/// Tuesday 2026-12-01 21:00 EST; the next opening is Wednesday 08:00 EST.
const CLOSED: &str = "2026-12-02T02:00:00Z";
const NEXT_AFTER_CLOSED: &str = "2026-12-02T13:00:00Z";

/// Every caller shape: both languages, voice and TTY.
fn callers() -> Vec<Facts> {
    let mut v = Vec::new();
    for lang in Lang::ALL {
        for tty in [false, true] {
            v.push(Facts::new(lang).tty(tty));
        }
    }
    v
}

/// Instants across a week, on the hour, Saturday 2026-11-28 to Saturday 2026-12-05.
fn week_hours() -> Vec<Timestamp> {
    let start = ts("2026-11-28T00:00:00Z");
    (0..24 * 7)
        .map(|h| {
            start
                .checked_add(jiff::SignedDuration::from_hours(h))
                .expect("in range")
        })
        .collect()
}

#[test]
fn case_status_is_never_transferred() {
    let r = router();
    let mut saw_open = false;
    for now in week_hours() {
        saw_open |= r.calendar().is_open(now);
        for base in callers() {
            for consent in [None, Some(false), Some(true)] {
                for attempted in [false, true] {
                    let mut facts = base
                        .clone()
                        .text_ahead(consent)
                        .question_attempted(attempted)
                        .verification_requested(attempted);
                    for c in Condition::ALL {
                        facts = facts.condition(c, true);
                    }
                    let d = r.decide("case_status", &facts, now).unwrap();
                    assert_eq!(d.route, Route::SelfService);
                    assert_eq!(d.action, Action::AnswerOfferLink, "at {now}");
                    assert_eq!(d.queue, None);
                    assert!(!d.send_text_ahead);
                    assert_eq!(
                        d.link.and_then(|l| l.url).as_deref(),
                        Some("https://uscis.gov/casestatus")
                    );
                }
            }
        }
    }
    assert!(
        saw_open,
        "the week must include open hours for this test to mean anything"
    );
}

#[test]
fn expedite_during_hours_offers_a_tier1_transfer() {
    let r = router();
    let cases = [
        (Facts::new(Lang::En), Queue::Tier1),
        (Facts::new(Lang::Es), Queue::Spanish),
        (Facts::new(Lang::En).tty(true), Queue::Tty),
    ];
    for (facts, queue) in cases {
        let d = r.decide("expedite", &facts, ts(OPEN)).unwrap();
        assert!(d.open);
        assert_eq!(d.route, Route::Tier1);
        assert_eq!(
            d.action,
            Action::OfferTransfer {
                queue,
                needs_text_ahead_consent: false
            }
        );
        assert_eq!(d.next_open, Some(ts(OPEN)));
        assert!(d.reason.contains("expedite"), "{}", d.reason);
    }
}

#[test]
fn expedite_after_hours_says_when_live_help_opens() {
    let r = router();
    for facts in callers() {
        let d = r.decide("expedite", &facts, ts(CLOSED)).unwrap();
        assert!(!d.open);
        assert_eq!(
            d.action,
            Action::AfterHours {
                next_open: Some(ts(NEXT_AFTER_CLOSED))
            }
        );
        assert_eq!(d.next_open, Some(ts(NEXT_AFTER_CLOSED)));
        assert!(d.reason.contains("after hours"), "{}", d.reason);
    }
    // Friday night before a holiday Monday waits for Tuesday (MLK Day 2027 is Jan 18).
    let d = r
        .decide(
            "expedite",
            &Facts::new(Lang::En),
            ts("2027-01-15T21:00:00-05:00"),
        )
        .unwrap();
    assert_eq!(
        d.action,
        Action::AfterHours {
            next_open: Some(ts("2027-01-19T08:00:00-05:00"))
        }
    );
}

#[test]
fn tier2_transfer_needs_an_explicit_yes_for_the_text_ahead() {
    let r = router();
    let biometrics = Facts::new(Lang::En).condition(Condition::ExpediteBiometrics, true);

    // Not asked yet: the flow must ask first, and nothing is sent.
    let d = r.decide("expedite", &biometrics, ts(OPEN)).unwrap();
    assert_eq!(d.route, Route::Tier2);
    assert_eq!(
        d.action,
        Action::OfferTransfer {
            queue: Queue::Tier2,
            needs_text_ahead_consent: true
        }
    );
    assert!(!d.send_text_ahead);

    // Anything but an explicit yes is a no: transfer without a text.
    for reply in [None, Some("no"), Some("repeat"), Some("help"), Some("")] {
        let facts = biometrics
            .clone()
            .text_ahead(Some(text_ahead_consent(reply)));
        let d = r.decide("expedite", &facts, ts(OPEN)).unwrap();
        assert_eq!(
            d.action,
            Action::OfferTransfer {
                queue: Queue::Tier2,
                needs_text_ahead_consent: false
            }
        );
        assert!(!d.send_text_ahead, "reply {reply:?} sent a text");
        assert!(d.reason.contains("consent: no"), "{}", d.reason);
    }

    // Yes: the text goes with the transfer, and the record says so.
    let yes = biometrics
        .clone()
        .text_ahead(Some(text_ahead_consent(Some("yes"))));
    let d = r.decide("expedite", &yes, ts(OPEN)).unwrap();
    assert!(d.send_text_ahead);
    assert!(d.reason.contains("consent: yes"), "{}", d.reason);

    // After hours there is no transfer, so no text even with a yes.
    let d = r.decide("expedite", &yes, ts(CLOSED)).unwrap();
    assert!(matches!(d.action, Action::AfterHours { .. }));
    assert!(!d.send_text_ahead);

    // Tier 1 never asks for text-ahead consent.
    let d = r
        .decide(
            "withdraw",
            &Facts::new(Lang::En).text_ahead(Some(true)),
            ts(OPEN),
        )
        .unwrap();
    assert!(!d.send_text_ahead);
}

#[test]
fn conditions_of_intents_md() {
    let r = router();
    let en = Facts::new(Lang::En);
    let route = |intent: &str, facts: &Facts| r.decide(intent, facts, ts(OPEN)).unwrap().route;
    let with = |c| en.clone().condition(c, true);

    assert_eq!(route("change_of_address", &en), Route::SelfService);
    assert_eq!(
        route(
            "change_of_address",
            &with(Condition::BiometricsNotScheduled)
        ),
        Route::Tier2
    );
    assert_eq!(route("reschedule_biometrics", &en), Route::SelfService);
    assert_eq!(
        route(
            "reschedule_biometrics",
            &with(Condition::BiometricsRescheduleBlocked)
        ),
        Route::Tier1
    );
    assert_eq!(route("reschedule_appointment", &en), Route::Tier1);
    assert_eq!(
        route("reschedule_appointment", &with(Condition::AsylumApplicant)),
        Route::Tier2
    );
    assert_eq!(
        route("expedite", &with(Condition::ExpediteBiometrics)),
        Route::Tier2
    );
    // A condition only changes the intent it belongs to.
    assert_eq!(
        route("withdraw", &with(Condition::AsylumApplicant)),
        Route::Tier1
    );
    assert_eq!(route("military", &en), Route::Tier2);
    assert_eq!(route("in_person_appointment", &en), Route::Tier2);
}

#[test]
fn protected_case_gives_no_case_information_and_transfers_only_for_verification() {
    let r = router();
    for now in [ts(OPEN), ts(CLOSED)] {
        for facts in callers() {
            let d = r.decide("protected_case", &facts, now).unwrap();
            assert_eq!(d.route, Route::Special);
            assert_eq!(d.action, Action::Special(SpecialKind::ProtectedCase));
            assert!(d.reason.contains("no case information"), "{}", d.reason);
            // Other facts (consent, conditions) do not open a transfer either.
            let pushy = facts
                .clone()
                .text_ahead(Some(true))
                .question_attempted(true)
                .condition(Condition::AsylumApplicant, true);
            let d = r.decide("protected_case", &pushy, now).unwrap();
            assert_eq!(d.action, Action::Special(SpecialKind::ProtectedCase));
        }
    }
    let verify = Facts::new(Lang::En).verification_requested(true);
    let d = r.decide("protected_case", &verify, ts(OPEN)).unwrap();
    assert!(matches!(
        d.action,
        Action::OfferTransfer {
            queue: Queue::Tier1,
            ..
        }
    ));
    let d = r.decide("protected_case", &verify, ts(CLOSED)).unwrap();
    assert!(matches!(d.action, Action::AfterHours { .. }));
}

#[test]
fn agent_tries_self_service_once_then_transfers_while_open() {
    let r = router();
    for now in [ts(OPEN), ts(CLOSED)] {
        let d = r.decide("agent", &Facts::new(Lang::Es), now).unwrap();
        assert_eq!(d.action, Action::Special(SpecialKind::Agent));
    }
    let tried = Facts::new(Lang::Es).question_attempted(true);
    let d = r.decide("agent", &tried, ts(OPEN)).unwrap();
    assert_eq!(
        d.action,
        Action::OfferTransfer {
            queue: Queue::Spanish,
            needs_text_ahead_consent: false
        }
    );
    let d = r.decide("agent", &tried, ts(CLOSED)).unwrap();
    assert_eq!(
        d.action,
        Action::AfterHours {
            next_open: Some(ts(NEXT_AFTER_CLOSED))
        }
    );
}

#[test]
fn every_intent_is_decided_for_every_caller_at_any_hour() {
    let r = router();
    for intent in INTENTS {
        for now in week_hours() {
            let open = r.calendar().is_open(now);
            for facts in callers() {
                let d = r.decide(intent, &facts, now).unwrap();
                assert_eq!(d.intent, *intent);
                assert_eq!(d.open, open);
                assert!(d.next_open.is_some_and(|t| t >= now));
                assert!(!d.reason.is_empty());
                match &d.action {
                    Action::OfferTransfer { queue, .. } => {
                        assert!(open, "{intent} transfer while closed");
                        assert_ne!(d.route, Route::SelfService, "{intent}");
                        assert_eq!(d.queue, Some(*queue));
                        if facts.tty {
                            assert_eq!(*queue, Queue::Tty);
                        }
                    }
                    Action::AfterHours { next_open } => {
                        assert!(!open, "{intent} after hours while open");
                        assert_eq!(*next_open, d.next_open);
                    }
                    Action::AnswerOfferLink => {
                        assert!(d.link.as_ref().is_some_and(|l| l.url.is_some()), "{intent}");
                    }
                    Action::Answer | Action::Special(_) => {}
                }
                if d.route == Route::SelfService {
                    assert!(
                        matches!(d.action, Action::Answer | Action::AnswerOfferLink),
                        "{intent}: self-service must not transfer"
                    );
                }
            }
        }
    }
}

#[test]
fn unknown_intents_are_errors_not_panics() {
    let r = router();
    for id in [
        "",
        "CASE_STATUS",
        "case_status ",
        "yes",
        "\u{0}",
        "x".repeat(10_000).as_str(),
    ] {
        assert!(
            r.decide(id, &Facts::new(Lang::En), ts(OPEN)).is_err(),
            "{id:?}"
        );
    }
}
