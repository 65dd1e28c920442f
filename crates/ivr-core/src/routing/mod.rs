//! Business calendar and routing policy: whether live help is open, and what the flow does
//! with each intent (answer, offer a link, offer a transfer, say when to call back, or run a
//! special flow).
//!
//! Sans-IO: the current time comes in as a `jiff::Timestamp` (wall time, because business
//! hours are wall-clock hours; a monotonic `Instant` cannot say what day it is). The only
//! outside read is jiff's tz database lookup when a [`Router`] is built.

pub mod calendar;
pub mod policy;

use std::fmt;
use std::path::PathBuf;

use jiff::Timestamp;
use jiff::civil::{Date, Time, Weekday};
use serde::{Deserialize, Serialize};

pub use calendar::{Calendar, CalendarError, Holiday, federal_holidays, observed_holiday};
pub use policy::{
    Action, Condition, Decision, Facts, Link, Policy, PolicyError, Queue, Route, SpecialKind,
    text_ahead_consent,
};

/// A day of the week in config files (`"mon"` … `"sun"`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Day {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Day {
    pub fn weekday(self) -> Weekday {
        match self {
            Day::Mon => Weekday::Monday,
            Day::Tue => Weekday::Tuesday,
            Day::Wed => Weekday::Wednesday,
            Day::Thu => Weekday::Thursday,
            Day::Fri => Weekday::Friday,
            Day::Sat => Weekday::Saturday,
            Day::Sun => Weekday::Sunday,
        }
    }
}

/// SIP URIs of the agent queues a transfer goes to (used by the transfer work).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueUris {
    pub tier1: String,
    pub tier2: String,
    pub spanish: String,
    pub tty: String,
}

impl Default for QueueUris {
    /// Placeholders in the reserved `.invalid` domain: a deployment must set real ones.
    fn default() -> Self {
        QueueUris {
            tier1: "sip:tier1@agents.invalid".into(),
            tier2: "sip:tier2@agents.invalid".into(),
            spanish: "sip:spanish@agents.invalid".into(),
            tty: "sip:tty@agents.invalid".into(),
        }
    }
}

impl QueueUris {
    pub fn uri(&self, queue: Queue) -> &str {
        match queue {
            Queue::Tier1 => &self.tier1,
            Queue::Tier2 => &self.tier2,
            Queue::Spanish => &self.spanish,
            Queue::Tty => &self.tty,
        }
    }
}

/// The `[routing]` section. Defaults are the contact center of the page: Monday to Friday,
/// 8am to 8pm America/New_York, federal holidays closed, the embedded policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// IANA zone the hours are in. Default `America/New_York` (daylight saving applies).
    pub time_zone: String,
    /// Opening wall-clock time, inclusive. Default `08:00`.
    pub open: Time,
    /// Closing wall-clock time, exclusive (19:59:59 is open, 20:00 is not). Default `20:00`.
    pub close: Time,
    /// Days with hours. Default Monday to Friday.
    pub weekdays: Vec<Day>,
    /// Dates closed besides federal holidays (e.g. `2026-12-24`). Default none.
    pub extra_closed: Vec<Date>,
    /// A policy file replacing the embedded `sip-configs/policy.toml`; read by the binary.
    pub policy: Option<PathBuf>,
    pub queues: QueueUris,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            time_zone: "America/New_York".into(),
            open: Time::constant(8, 0, 0, 0),
            close: Time::constant(20, 0, 0, 0),
            weekdays: vec![Day::Mon, Day::Tue, Day::Wed, Day::Thu, Day::Fri],
            extra_closed: Vec::new(),
            policy: None,
            queues: QueueUris::default(),
        }
    }
}

impl RoutingConfig {
    /// The calendar these settings describe (looks the zone up in the tz database).
    pub fn calendar(&self) -> Result<Calendar, CalendarError> {
        let tz = calendar::time_zone(&self.time_zone)?;
        let days: Vec<Weekday> = self.weekdays.iter().map(|d| d.weekday()).collect();
        Calendar::new(
            tz,
            self.open,
            self.close,
            &days,
            self.extra_closed.iter().copied(),
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoutingError {
    Calendar(CalendarError),
    Policy(PolicyError),
    /// A queue URI that is not `sip:` or `sips:`.
    QueueUri {
        queue: Queue,
        uri: String,
    },
    /// Not one of `crate::intents::INTENTS`.
    UnknownIntent(String),
}

impl fmt::Display for RoutingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoutingError::Calendar(e) => write!(f, "routing calendar: {e}"),
            RoutingError::Policy(e) => e.fmt(f),
            RoutingError::QueueUri { queue, uri } => {
                write!(
                    f,
                    "routing queue {queue}: {uri:?} is not a sip: or sips: URI"
                )
            }
            RoutingError::UnknownIntent(id) => write!(
                f,
                "unknown intent {id:?}; known: {}",
                crate::intents::INTENTS.join(", ")
            ),
        }
    }
}

impl std::error::Error for RoutingError {}

impl From<CalendarError> for RoutingError {
    fn from(e: CalendarError) -> Self {
        RoutingError::Calendar(e)
    }
}

impl From<PolicyError> for RoutingError {
    fn from(e: PolicyError) -> Self {
        RoutingError::Policy(e)
    }
}

/// The calendar and the policy together: what the flow calls.
#[derive(Clone, Debug)]
pub struct Router {
    policy: Policy,
    calendar: Calendar,
    queues: QueueUris,
}

impl Router {
    pub fn new(policy: Policy, calendar: Calendar, queues: QueueUris) -> Router {
        Router {
            policy,
            calendar,
            queues,
        }
    }

    /// Builds from config. `policy_toml`: the text of `cfg.policy` as the binary read it, or
    /// `None` for the embedded policy.
    pub fn from_config(
        cfg: &RoutingConfig,
        policy_toml: Option<&str>,
    ) -> Result<Router, RoutingError> {
        let policy = match policy_toml {
            Some(text) => Policy::from_toml(text)?,
            None => Policy::embedded()?,
        };
        for queue in [Queue::Tier1, Queue::Tier2, Queue::Spanish, Queue::Tty] {
            let uri = cfg.queues.uri(queue);
            if !(uri.starts_with("sip:") || uri.starts_with("sips:")) {
                return Err(RoutingError::QueueUri {
                    queue,
                    uri: uri.to_string(),
                });
            }
        }
        Ok(Router::new(policy, cfg.calendar()?, cfg.queues.clone()))
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn calendar(&self) -> &Calendar {
        &self.calendar
    }

    pub fn queue_uri(&self, queue: Queue) -> &str {
        self.queues.uri(queue)
    }

    /// What to do with `intent` for this caller at `now`.
    pub fn decide(
        &self,
        intent: &str,
        facts: &Facts,
        now: Timestamp,
    ) -> Result<Decision, RoutingError> {
        let open = self.calendar.is_open(now);
        let next_open = self.calendar.next_open(now);
        self.policy
            .decide(intent, facts, open, next_open)
            .ok_or_else(|| RoutingError::UnknownIntent(intent.to_string()))
    }

    /// Whether a caller (English, voice or `tty`) asking `intent` at `now` would be offered a
    /// live agent with no further questions: the hook the TTY conversation takes. Unknown
    /// intents never transfer.
    pub fn should_transfer(&self, intent: &str, tty: bool, now: Timestamp) -> bool {
        let facts = Facts::new(crate::types::Lang::En).tty(tty);
        self.decide(intent, &facts, now)
            .is_ok_and(|d| matches!(d.action, Action::OfferTransfer { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_the_page() {
        let cfg: RoutingConfig = toml::from_str("").unwrap();
        assert_eq!(cfg, RoutingConfig::default());
        let router = Router::from_config(&cfg, None).unwrap();
        // Monday 2026-11-30 12:00 EST.
        let noon: Timestamp = "2026-11-30T17:00:00Z".parse().unwrap();
        assert!(router.calendar().is_open(noon));
        assert!(router.should_transfer("withdraw", false, noon));
        assert!(!router.should_transfer("case_status", false, noon));
        assert!(!router.should_transfer("no_such_intent", false, noon));
    }

    #[test]
    fn config_round_trips_through_toml() {
        let mut cfg = RoutingConfig::default();
        cfg.extra_closed.push(jiff::civil::date(2026, 12, 24));
        let text = toml::to_string(&cfg).unwrap();
        assert_eq!(
            toml::from_str::<RoutingConfig>(&text).unwrap(),
            cfg,
            "{text}"
        );
    }

    #[test]
    fn config_parses_times_dates_and_days() {
        let cfg: RoutingConfig = toml::from_str(
            "open = \"09:30\"\nclose = \"17:00\"\nweekdays = [\"mon\", \"sat\"]\n\
             extra_closed = [\"2026-12-24\"]\n[queues]\ntty = \"sips:tty@pbx.example\"\n",
        )
        .unwrap();
        assert_eq!(cfg.open, Time::constant(9, 30, 0, 0));
        assert_eq!(cfg.weekdays, [Day::Mon, Day::Sat]);
        assert_eq!(cfg.extra_closed, [jiff::civil::date(2026, 12, 24)]);
        let cal = cfg.calendar().unwrap();
        // Saturday 2026-12-05 10:00 EST is open under these settings.
        assert!(cal.is_open("2026-12-05T15:00:00Z".parse().unwrap()));
        assert!(toml::from_str::<RoutingConfig>("opne = \"08:00\"").is_err());
        assert!(toml::from_str::<RoutingConfig>("weekdays = [\"funday\"]").is_err());
    }

    #[test]
    fn bad_config_is_a_typed_error() {
        let cfg = RoutingConfig {
            time_zone: "Nowhere/Atlantis".into(),
            ..RoutingConfig::default()
        };
        assert!(matches!(
            Router::from_config(&cfg, None),
            Err(RoutingError::Calendar(CalendarError::UnknownTimeZone(_)))
        ));
        let mut cfg = RoutingConfig::default();
        cfg.queues.tier2 = "tel:+18003755283".into();
        assert!(matches!(
            Router::from_config(&cfg, None),
            Err(RoutingError::QueueUri {
                queue: Queue::Tier2,
                ..
            })
        ));
        let router = Router::from_config(&RoutingConfig::default(), None).unwrap();
        let err = router
            .decide(
                "nope",
                &Facts::new(crate::types::Lang::En),
                Timestamp::UNIX_EPOCH,
            )
            .unwrap_err();
        assert!(err.to_string().contains("case_status"));
    }
}
