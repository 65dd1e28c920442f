//! The routing policy of intents.md as data: per intent a base route, a link, conditions that
//! escalate it, and for the special flows their kind. The flow asks [`Policy::decide`] instead
//! of carrying its own conditionals, so the rules live in one file ops can read
//! (`sip-configs/policy.toml`, embedded in the binary).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use jiff::Timestamp;
use serde::Deserialize;

use crate::intents::INTENTS;
use crate::types::Lang;

/// The policy shipped with the product.
pub const EMBEDDED_POLICY: &str = include_str!("../../../../sip-configs/policy.toml");

/// Where a question is handled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// Answer and offer the link; no live agent for this question alone.
    #[serde(rename = "self")]
    SelfService,
    Tier1,
    Tier2,
    Special,
}

impl Route {
    pub fn name(self) -> &'static str {
        match self {
            Route::SelfService => "self",
            Route::Tier1 => "tier1",
            Route::Tier2 => "tier2",
            Route::Special => "special",
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An agent queue; its SIP URI is configured in `RoutingConfig::queues`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Queue {
    Tier1,
    Tier2,
    Spanish,
    Tty,
}

impl Queue {
    pub fn name(self) -> &'static str {
        match self {
            Queue::Tier1 => "tier1",
            Queue::Tier2 => "tier2",
            Queue::Spanish => "spanish",
            Queue::Tty => "tty",
        }
    }
}

impl fmt::Display for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Facts the flow may establish (usually by asking) that change an intent's route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Change of address requested before biometrics are scheduled.
    BiometricsNotScheduled,
    /// The biometrics appointment was rescheduled 2+ times, is within 12 hours, or passed.
    BiometricsRescheduleBlocked,
    AsylumApplicant,
    /// The expedite request is for a biometrics appointment.
    ExpediteBiometrics,
}

impl Condition {
    pub const ALL: [Condition; 4] = [
        Condition::BiometricsNotScheduled,
        Condition::BiometricsRescheduleBlocked,
        Condition::AsylumApplicant,
        Condition::ExpediteBiometrics,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Condition::BiometricsNotScheduled => "biometrics_not_scheduled",
            Condition::BiometricsRescheduleBlocked => "biometrics_reschedule_blocked",
            Condition::AsylumApplicant => "asylum_applicant",
            Condition::ExpediteBiometrics => "expedite_biometrics",
        }
    }

    pub fn from_name(s: &str) -> Option<Condition> {
        Condition::ALL.into_iter().find(|c| c.name() == s)
    }
}

/// The flows that are more than answer / link / transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialKind {
    /// A caller asking for a person: say who may get case-specific help, try once to find
    /// the question (self-service may answer it), then transfer while open.
    Agent,
    /// VAWA, T, U or I-751 abuse waiver: no case information before enhanced identity
    /// verification; offer the secure message from the online account (the center calls
    /// back); transfer only for that verification.
    ProtectedCase,
}

impl SpecialKind {
    pub fn name(self) -> &'static str {
        match self {
            SpecialKind::Agent => "agent",
            SpecialKind::ProtectedCase => "protected_case",
        }
    }
}

/// A web page the IVR can name or send.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Filled from the table key at load.
    #[serde(skip)]
    pub id: String,
    pub title: String,
    /// `None`: the page names it without an address; spoken, never sent.
    #[serde(default)]
    pub url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct QueueByChannel {
    en: Queue,
    es: Queue,
    tty: Queue,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Queues {
    tier1: QueueByChannel,
    tier2: QueueByChannel,
}

/// A condition that, once known true, replaces the base route.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    pub when: Condition,
    pub route: Route,
    pub reason: String,
}

/// One intent's row of the policy.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentPolicy {
    pub id: String,
    pub route: Route,
    #[serde(default)]
    pub link: Option<String>,
    pub reason: String,
    #[serde(default)]
    pub escalate: Vec<Escalation>,
    /// Only with `route = "special"`.
    #[serde(default)]
    pub special: Option<SpecialKind>,
    /// The tier a special flow transfers to (tier1 or tier2).
    #[serde(default)]
    pub transfer: Option<Route>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    queues: Queues,
    #[serde(default)]
    links: BTreeMap<String, Link>,
    intent: Vec<IntentPolicy>,
}

/// Why a policy file was rejected. The message names the intent or link at fault.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "routing policy: {}", self.0)
    }
}

impl std::error::Error for PolicyError {}

/// The validated policy: every product intent has exactly one row.
#[derive(Clone, Debug)]
pub struct Policy {
    queues: Queues,
    links: BTreeMap<String, Link>,
    /// In `INTENTS` order.
    intents: Vec<IntentPolicy>,
}

/// What the flow knows about the caller when it asks for a decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub lang: Lang,
    /// On the TTY line: transfers go to the TTY queue.
    pub tty: bool,
    /// Answers to conditions; a condition not in the map has not been asked.
    pub conditions: BTreeMap<Condition, bool>,
    /// Text-ahead consent for a tier-2 transfer: `None` not asked yet, `Some(true)` only
    /// after an explicit yes (see [`text_ahead_consent`]).
    pub text_ahead: Option<bool>,
    /// `agent`: the one attempt to find the caller's question was made and found nothing
    /// self-service can answer.
    pub question_attempted: bool,
    /// `protected_case`: the caller asked to complete enhanced identity verification.
    pub verification_requested: bool,
}

impl Facts {
    pub fn new(lang: Lang) -> Facts {
        Facts {
            lang,
            tty: false,
            conditions: BTreeMap::new(),
            text_ahead: None,
            question_attempted: false,
            verification_requested: false,
        }
    }

    pub fn tty(mut self, tty: bool) -> Facts {
        self.tty = tty;
        self
    }

    pub fn condition(mut self, c: Condition, value: bool) -> Facts {
        self.conditions.insert(c, value);
        self
    }

    pub fn text_ahead(mut self, consent: Option<bool>) -> Facts {
        self.text_ahead = consent;
        self
    }

    pub fn question_attempted(mut self, attempted: bool) -> Facts {
        self.question_attempted = attempted;
        self
    }

    pub fn verification_requested(mut self, requested: bool) -> Facts {
        self.verification_requested = requested;
        self
    }
}

/// Consent to the text-ahead notification from the caller's reply: only the dialog act
/// `yes` (spoken, typed or keyed) counts. Silence, `no`, `repeat`, noise: no consent.
pub fn text_ahead_consent(reply_act: Option<&str>) -> bool {
    reply_act == Some("yes")
}

/// What the flow does next with this question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer; there is no link to send.
    Answer,
    /// Answer and offer to send the link.
    AnswerOfferLink,
    /// Answer, offer the link if any, then offer a live agent in `queue`. For tier 2 the
    /// text-ahead question comes first while `needs_text_ahead_consent`.
    OfferTransfer {
        queue: Queue,
        needs_text_ahead_consent: bool,
    },
    /// A live agent would help but the center is closed: answer, offer the link, say when
    /// live help is available next.
    AfterHours { next_open: Option<Timestamp> },
    /// Run the special flow.
    Special(SpecialKind),
}

impl Action {
    /// The snake_case name ops see in `ivr route` and call records.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Answer => "answer",
            Action::AnswerOfferLink => "answer_offer_link",
            Action::OfferTransfer { .. } => "offer_transfer",
            Action::AfterHours { .. } => "after_hours",
            Action::Special(_) => "special",
        }
    }
}

/// The policy's answer for one question at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub intent: &'static str,
    /// The route after conditions (a special intent stays `Special`).
    pub route: Route,
    pub open: bool,
    pub action: Action,
    /// When live help is next available (`Some(now)` while open); `None` if the calendar has
    /// no opening within its horizon.
    pub next_open: Option<Timestamp>,
    pub link: Option<Link>,
    /// The queue a transfer from this question would use, open or not; `None` for self.
    pub queue: Option<Queue>,
    /// Send the text-ahead notification: tier 2, a transfer now, and an explicit yes.
    pub send_text_ahead: bool,
    /// Why, for the call record.
    pub reason: String,
}

impl Policy {
    /// The policy in `sip-configs/policy.toml` as built into the binary.
    pub fn embedded() -> Result<Policy, PolicyError> {
        Policy::from_toml(EMBEDDED_POLICY)
    }

    /// Parses and validates a policy file's text.
    pub fn from_toml(text: &str) -> Result<Policy, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| PolicyError(e.to_string()))?;
        let mut links = file.links;
        for (id, link) in links.iter_mut() {
            link.id = id.clone();
            if let Some(url) = &link.url
                && !url.starts_with("https://")
            {
                return Err(PolicyError(format!(
                    "link {id}: url {url:?} must start with https://"
                )));
            }
        }
        let mut seen = HashSet::new();
        for row in &file.intent {
            if !INTENTS.contains(&row.id.as_str()) {
                return Err(PolicyError(format!("unknown intent {:?}", row.id)));
            }
            if !seen.insert(row.id.as_str()) {
                return Err(PolicyError(format!("intent {} listed twice", row.id)));
            }
            validate_row(row, &links)?;
        }
        let missing: Vec<&str> = INTENTS
            .iter()
            .copied()
            .filter(|id| !seen.contains(id))
            .collect();
        if !missing.is_empty() {
            return Err(PolicyError(format!(
                "intents without a policy: {}",
                missing.join(", ")
            )));
        }
        let mut intents = file.intent;
        intents.sort_by_key(|row| INTENTS.iter().position(|id| *id == row.id));
        Ok(Policy {
            queues: file.queues,
            links,
            intents,
        })
    }

    /// The row for `intent`, if it is a product intent.
    pub fn intent(&self, intent: &str) -> Option<&IntentPolicy> {
        self.intents.iter().find(|row| row.id == intent)
    }

    pub fn link(&self, id: &str) -> Option<&Link> {
        self.links.get(id)
    }

    /// The queue for a transfer on `route` (tier1 or tier2) for this caller.
    pub fn queue(&self, route: Route, facts: &Facts) -> Option<Queue> {
        let by = match route {
            Route::Tier1 => &self.queues.tier1,
            Route::Tier2 => &self.queues.tier2,
            Route::SelfService | Route::Special => return None,
        };
        Some(if facts.tty {
            by.tty
        } else {
            match facts.lang {
                Lang::En => by.en,
                Lang::Es => by.es,
            }
        })
    }

    /// Decides what to do with `intent` given the caller's `facts` and whether the center is
    /// `open` (and when it opens next). `None` for an id that is not a product intent.
    pub fn decide(
        &self,
        intent: &str,
        facts: &Facts,
        open: bool,
        next_open: Option<Timestamp>,
    ) -> Option<Decision> {
        let row = self.intent(intent)?;
        // The row's id was checked against INTENTS at load; return the static spelling.
        let intent_id = INTENTS.iter().copied().find(|id| *id == row.id)?;
        let link = row.link.as_deref().and_then(|id| self.link(id)).cloned();
        let sendable = link.as_ref().is_some_and(|l| l.url.is_some());

        // The first escalation whose condition is known true wins (file order).
        let (route, mut reason) = row
            .escalate
            .iter()
            .find(|e| facts.conditions.get(&e.when) == Some(&true))
            .map(|e| (e.route, e.reason.clone()))
            .unwrap_or((row.route, row.reason.clone()));

        // The tier a live transfer would use, and whether one is on offer for this question.
        let (transfer_route, wants_transfer) = match (route, row.special) {
            (Route::Special, Some(SpecialKind::Agent)) => (row.transfer, facts.question_attempted),
            (Route::Special, Some(SpecialKind::ProtectedCase)) => {
                (row.transfer, facts.verification_requested)
            }
            (Route::Tier1 | Route::Tier2, _) => (Some(route), true),
            _ => (None, false),
        };
        let queue = transfer_route.and_then(|r| self.queue(r, facts));

        let action = match (route, row.special, queue) {
            (Route::Special, Some(kind), _) if !wants_transfer => Action::Special(kind),
            (Route::SelfService, _, _) | (_, _, None) => {
                if sendable {
                    Action::AnswerOfferLink
                } else {
                    Action::Answer
                }
            }
            (_, _, Some(_)) if !open => Action::AfterHours { next_open },
            (_, _, Some(queue)) => Action::OfferTransfer {
                queue,
                needs_text_ahead_consent: transfer_route == Some(Route::Tier2)
                    && facts.text_ahead.is_none(),
            },
        };
        let send_text_ahead = matches!(action, Action::OfferTransfer { .. })
            && transfer_route == Some(Route::Tier2)
            && facts.text_ahead == Some(true);

        match &action {
            Action::AfterHours { .. } => reason.push_str("; after hours"),
            Action::OfferTransfer { queue, .. } => {
                reason.push_str("; transfer offered to ");
                reason.push_str(queue.name());
            }
            Action::Special(kind) if *kind == SpecialKind::ProtectedCase => {
                reason.push_str("; no case information given");
            }
            _ => {}
        }
        if send_text_ahead {
            reason.push_str("; text-ahead consent: yes");
        } else if transfer_route == Some(Route::Tier2) && facts.text_ahead == Some(false) {
            reason.push_str("; text-ahead consent: no");
        }
        Some(Decision {
            intent: intent_id,
            route,
            open,
            action,
            next_open,
            link,
            queue,
            send_text_ahead,
            reason,
        })
    }
}

fn validate_row(row: &IntentPolicy, links: &BTreeMap<String, Link>) -> Result<(), PolicyError> {
    let err = |msg: String| Err(PolicyError(format!("intent {}: {msg}", row.id)));
    if let Some(link) = &row.link
        && !links.contains_key(link)
    {
        return err(format!("unknown link {link:?}"));
    }
    match (row.route, row.special, row.transfer) {
        (Route::Special, None, _) => return err("route special needs `special`".into()),
        (Route::Special, Some(_), Some(Route::Tier1 | Route::Tier2)) => {}
        (Route::Special, Some(_), _) => {
            return err("a special flow needs `transfer = \"tier1\"` or `\"tier2\"`".into());
        }
        (_, Some(_), _) => return err("`special` needs route = \"special\"".into()),
        (_, None, Some(_)) => return err("`transfer` is only for special flows".into()),
        _ => {}
    }
    for e in &row.escalate {
        if !matches!(e.route, Route::Tier1 | Route::Tier2) {
            return err(format!(
                "escalation on {} must go to tier1 or tier2",
                e.when.name()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::embedded().expect("the shipped policy is valid")
    }

    #[test]
    fn shipped_policy_covers_every_intent_in_order() {
        let p = policy();
        let ids: Vec<&str> = p.intents.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, INTENTS);
    }

    #[test]
    fn links_come_from_the_page() {
        let p = policy();
        let url = |id: &str| p.link(id).and_then(|l| l.url.clone());
        assert_eq!(
            url("casestatus").as_deref(),
            Some("https://uscis.gov/casestatus")
        );
        assert_eq!(
            url("e_request").as_deref(),
            Some("https://uscis.gov/e-request")
        );
        // The page names the account guide without an address.
        assert_eq!(url("online_account"), None);
        assert_eq!(p.link("casestatus").unwrap().id, "casestatus");
    }

    fn without_row(id: &str) -> String {
        let marker = format!("id = \"{id}\"");
        EMBEDDED_POLICY
            .split("[[intent]]")
            .filter(|chunk| !chunk.contains(&marker))
            .collect::<Vec<_>>()
            .join("[[intent]]")
    }

    #[test]
    fn a_missing_intent_is_rejected() {
        let err = Policy::from_toml(&without_row("withdraw")).unwrap_err();
        assert!(err.0.contains("withdraw"), "{err}");
    }

    #[test]
    fn unknown_names_are_rejected() {
        let cases = [
            (
                "route = \"tier1\"\nreason = \"tier 1: withdraw",
                "route = \"tier3\"\nreason = \"tier 1: withdraw",
            ),
            ("en = \"tier1\"", "en = \"tier9\""),
            ("link = \"processingtimes\"", "link = \"nowhere\""),
            ("when = \"asylum_applicant\"", "when = \"full_moon\""),
            ("id = \"hours\"", "id = \"weather\""),
            (
                "url = \"https://uscis.gov/tools\"",
                "url = \"http://example.com\"",
            ),
            (
                "[[intent]]\nid = \"hours\"",
                "[[intent]]\nid = \"hours\"\ncolour = \"red\"",
            ),
        ];
        for (from, to) in cases {
            assert!(EMBEDDED_POLICY.contains(from), "{from}");
            let text = EMBEDDED_POLICY.replacen(from, to, 1);
            assert!(Policy::from_toml(&text).is_err(), "accepted {to}");
        }
        let dup = format!(
            "{EMBEDDED_POLICY}\n[[intent]]\nid = \"hours\"\nroute = \"self\"\nreason = \"x\"\n"
        );
        assert!(Policy::from_toml(&dup).unwrap_err().0.contains("twice"));
        assert!(Policy::from_toml("not toml [").is_err());
    }

    #[test]
    fn first_true_condition_escalates_and_false_keeps_the_base() {
        let p = policy();
        let base = Facts::new(Lang::En);
        let d = p.decide("change_of_address", &base, true, None).unwrap();
        assert_eq!(d.route, Route::SelfService);
        let no = base
            .clone()
            .condition(Condition::BiometricsNotScheduled, false);
        assert_eq!(
            p.decide("change_of_address", &no, true, None)
                .unwrap()
                .route,
            Route::SelfService
        );
        let yes = base.condition(Condition::BiometricsNotScheduled, true);
        let d = p.decide("change_of_address", &yes, true, None).unwrap();
        assert_eq!(d.route, Route::Tier2);
        assert!(d.reason.contains("before biometrics"), "{}", d.reason);
    }

    #[test]
    fn queues_follow_language_and_tty() {
        let p = policy();
        let es = Facts::new(Lang::Es);
        assert_eq!(p.queue(Route::Tier1, &es), Some(Queue::Spanish));
        assert_eq!(p.queue(Route::Tier2, &es), Some(Queue::Tier2));
        assert_eq!(
            p.queue(Route::Tier2, &es.clone().tty(true)),
            Some(Queue::Tty)
        );
        assert_eq!(p.queue(Route::SelfService, &es), None);
    }

    #[test]
    fn consent_is_an_explicit_yes_only() {
        assert!(text_ahead_consent(Some("yes")));
        for reply in [None, Some("no"), Some("repeat"), Some("YES "), Some("")] {
            assert!(!text_ahead_consent(reply), "{reply:?}");
        }
    }
}
