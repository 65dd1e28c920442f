//! The link offer, once for every dialog: after an answer with a web address, the caller may
//! get the link by text message or email. A sans-IO sub-machine the voice flow (`flow::Call`)
//! and the text conversation (`flow::tty`, TTY and RTT) both run, so its rules exist once:
//!
//! - the channel (text message or email; one the call cannot use gives the other);
//! - the recipient: the caller's own number when it can take a text (offered first), or a
//!   number or address the caller gives, validated here with the one rule of each
//!   (`types::UsPhone`, the email rule of `nlu::slots`);
//! - nothing is sent to a recipient the caller has not confirmed at its read-back;
//! - a failed step is asked again, at most `retries_max` tries in all, then the offer gives up;
//! - "sent" only after the shell stored the link ([`LinkOffer::handle_stored`] with `true`),
//!   "not sent" when it could not.
//!
//! The dialogs keep their wording and their input handling: they turn keys, speech or a typed
//! line into an [`Answer`] and each [`Step`] into their own prompts or turns. The voice flow's
//! keys and speech go through `flow::entry` (which reads the value back itself); the TTY and
//! RTT lines are read by `flow::tty`.

use crate::pii::Pii;
use crate::types::UsPhone;

/// How a link is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Sms,
    Email,
}

/// Where a link goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    /// The caller's own number (caller ID): `Some` when the dialog knows it, `None` when only
    /// the shell does (the voice flow is told only that it can take a text).
    CallerId(Option<Pii<String>>),
    /// A US number the caller gave: ten digits, no country code.
    Phone(Pii<String>),
    /// An address the caller gave.
    Email(Pii<String>),
}

impl Recipient {
    /// A number the caller gave, if it is a US number a text can reach (`types::UsPhone`).
    pub fn phone(digits: &str) -> Option<Recipient> {
        UsPhone::from_digits(digits).map(|p| Recipient::Phone(Pii::new(p.national().to_string())))
    }

    /// An address the caller gave, if it is well formed.
    pub fn email(address: &str) -> Option<Recipient> {
        crate::nlu::slots::valid_email(address).map(|a| Recipient::Email(Pii::new(a)))
    }

    pub fn channel(&self) -> Channel {
        match self {
            Recipient::CallerId(_) | Recipient::Phone(_) => Channel::Sms,
            Recipient::Email(_) => Channel::Email,
        }
    }
}

/// The caller's own number, for the text message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallerId {
    /// None that can take a text.
    Unusable,
    /// It can take a text; only the shell knows it.
    Usable,
    /// It can take a text, and this is it (read to the caller when offered).
    Known(Pii<String>),
}

impl CallerId {
    /// The caller ID (From), usable only if it is a US number (`types::UsPhone`).
    pub fn parse(caller_id: Option<&Pii<String>>) -> CallerId {
        caller_id
            .and_then(|c| crate::nlu::slots::phone(c.expose()))
            .map_or(CallerId::Unusable, |n| CallerId::Known(Pii::new(n)))
    }
}

/// What this call can do with a link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkConfig {
    pub caller_id: CallerId,
    /// The caller can give another number (the dialog can take and read back one).
    pub phone_entry: bool,
    /// The caller can give an email address.
    pub email: bool,
    /// Tries in all (a step not understood, no input, a refused read-back) before giving up.
    pub retries_max: u32,
}

/// What the caller answered, as the dialog understood it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// "By text", "by email".
    Channel(Channel),
    /// A number or an address (made with [`Recipient::phone`] / [`Recipient::email`]).
    Recipient(Recipient),
    /// Send it to the number I am calling from.
    UseCallerId,
    Yes,
    /// At the caller-ID offer: not that number, another one; at a read-back: that is wrong.
    No,
    /// No link after all.
    Decline,
    NoInput,
    NotUnderstood,
}

/// What the dialog does next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Ask how the link should go: text message or email.
    AskChannel,
    /// Offer the caller's own number (shown when known); yes, another number, or no.
    OfferCallerId(Option<Pii<String>>),
    /// Ask for the number or the address.
    AskRecipient(Channel),
    /// Read the recipient back and ask whether it is right.
    Confirm(Recipient),
    /// Store the link for sending, then call [`LinkOffer::handle_stored`].
    Send {
        recipient: Recipient,
        intent: String,
        link: Option<String>,
    },
    /// The link is stored: say it was sent.
    Sent(Channel),
    /// The link could not be stored: say it was not sent.
    NotSent(Channel),
    /// Nothing changes: the offer still waits for an answer (after a silence).
    StillWaiting,
    /// The caller wants no link.
    Declined,
    /// Too many tries, or no way to reach the caller on the channel.
    GaveUp,
}

/// What the offer waits for; the dialog reads the caller's input accordingly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Awaiting {
    Channel,
    /// A number (the caller's own offered when `caller_id`) or an address.
    Recipient {
        channel: Channel,
        caller_id: bool,
    },
    /// Yes or no at the read-back of this recipient (or another one instead).
    Confirm(Recipient),
    /// The shell's word that the link is stored.
    Stored,
    /// Nothing: the offer is over.
    Nothing,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Choosing,
    OfferingCallerId,
    Asking(Channel),
    Confirming(Recipient),
    Sending(Channel),
    Done,
}

/// One link offer, for the answer of `intent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkOffer {
    config: LinkConfig,
    intent: String,
    link: Option<String>,
    state: State,
    retries: u32,
}

impl LinkOffer {
    /// An offer of `intent`'s link (`link`: its address, when the dialog names it), and its
    /// first step: the channel question when email can be taken, else the text message's.
    pub fn start(config: LinkConfig, intent: &str, link: Option<String>) -> (LinkOffer, Step) {
        let mut offer = LinkOffer {
            config,
            intent: intent.to_string(),
            link,
            state: State::Choosing,
            retries: 0,
        };
        let step = if offer.config.email {
            Step::AskChannel
        } else {
            offer.choose(Channel::Sms)
        };
        (offer, step)
    }

    pub fn intent(&self) -> &str {
        &self.intent
    }

    pub fn awaiting(&self) -> Awaiting {
        match &self.state {
            State::Choosing => Awaiting::Channel,
            State::OfferingCallerId => Awaiting::Recipient {
                channel: Channel::Sms,
                caller_id: true,
            },
            State::Asking(channel) => Awaiting::Recipient {
                channel: *channel,
                caller_id: false,
            },
            State::Confirming(r) => Awaiting::Confirm(r.clone()),
            State::Sending(_) => Awaiting::Stored,
            State::Done => Awaiting::Nothing,
        }
    }

    /// The offer is over (sent or not, declined, given up).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The caller's answer to the last step.
    pub fn handle(&mut self, answer: Answer) -> Step {
        let state = std::mem::replace(&mut self.state, State::Done);
        if answer == Answer::NoInput && !matches!(state, State::Sending(_) | State::Done) {
            self.state = state;
            return self.count_try().unwrap_or(Step::StillWaiting);
        }
        match (state, answer) {
            (s @ (State::Sending(_) | State::Done), _) => {
                self.state = s;
                Step::StillWaiting
            }
            (State::Choosing, Answer::Channel(c)) => self.choose(c),
            (State::Choosing, Answer::Recipient(r)) => self.confirm(r),
            (State::Choosing, Answer::Decline | Answer::No) => Step::Declined,
            (State::Choosing, _) => self.retry(State::Choosing),
            (State::OfferingCallerId, Answer::UseCallerId | Answer::Yes) => self.send_caller_id(),
            (State::OfferingCallerId, Answer::No) => self.ask_phone(),
            (State::OfferingCallerId, Answer::Recipient(r @ Recipient::Phone(_))) => {
                self.confirm(r)
            }
            (State::OfferingCallerId, Answer::Decline) => Step::Declined,
            (State::OfferingCallerId, _) => self.retry(State::Asking(Channel::Sms)),
            (State::Asking(c), Answer::Recipient(r)) if r.channel() == c => self.confirm(r),
            (State::Asking(Channel::Sms), Answer::UseCallerId | Answer::Yes)
                if self.config.caller_id != CallerId::Unusable =>
            {
                self.send_caller_id()
            }
            (State::Asking(_), Answer::No | Answer::Decline) => Step::Declined,
            (State::Asking(c), _) => self.retry(State::Asking(c)),
            (State::Confirming(_), Answer::Recipient(r)) => self.confirm(r),
            (State::Confirming(r), Answer::Yes) => self.send(r),
            (State::Confirming(r), Answer::No) => self.retry(State::Asking(r.channel())),
            (State::Confirming(_), Answer::Decline) => Step::Declined,
            (State::Confirming(r), _) => self.retry(State::Confirming(r)),
        }
    }

    /// The shell stored the link of the last `Send` (`true`) or could not. `None` unless a
    /// `Send` waits for it: "sent" is never said for anything else.
    pub fn handle_stored(&mut self, stored: bool) -> Option<Step> {
        let State::Sending(channel) = self.state else {
            return None;
        };
        self.state = State::Done;
        Some(if stored {
            Step::Sent(channel)
        } else {
            Step::NotSent(channel)
        })
    }

    /// The recipient question of `channel`; a channel the call cannot use gives the other.
    fn choose(&mut self, channel: Channel) -> Step {
        match channel {
            Channel::Email if self.config.email => {
                self.state = State::Asking(Channel::Email);
                Step::AskRecipient(Channel::Email)
            }
            _ => match &self.config.caller_id {
                CallerId::Unusable => self.ask_phone(),
                CallerId::Usable => {
                    self.state = State::OfferingCallerId;
                    Step::OfferCallerId(None)
                }
                CallerId::Known(n) => {
                    let n = n.clone();
                    self.state = State::OfferingCallerId;
                    Step::OfferCallerId(Some(n))
                }
            },
        }
    }

    fn ask_phone(&mut self) -> Step {
        if !self.config.phone_entry {
            self.state = State::Done;
            return Step::GaveUp;
        }
        self.state = State::Asking(Channel::Sms);
        Step::AskRecipient(Channel::Sms)
    }

    fn confirm(&mut self, r: Recipient) -> Step {
        if r.channel() == Channel::Email && !self.config.email {
            return self.retry(State::Choosing);
        }
        self.state = State::Confirming(r.clone());
        Step::Confirm(r)
    }

    fn send_caller_id(&mut self) -> Step {
        let r = match &self.config.caller_id {
            CallerId::Known(n) => Recipient::CallerId(Some(n.clone())),
            _ => Recipient::CallerId(None),
        };
        self.send(r)
    }

    fn send(&mut self, recipient: Recipient) -> Step {
        self.state = State::Sending(recipient.channel());
        Step::Send {
            recipient,
            intent: self.intent.clone(),
            link: self.link.clone(),
        }
    }

    /// One more try; `Some(GaveUp)` once they are spent.
    fn count_try(&mut self) -> Option<Step> {
        self.retries += 1;
        if self.retries >= self.config.retries_max {
            self.state = State::Done;
            return Some(Step::GaveUp);
        }
        None
    }

    /// Ask again in `state`, or give up.
    fn retry(&mut self, state: State) -> Step {
        self.state = state;
        if let Some(gave_up) = self.count_try() {
            return gave_up;
        }
        match &self.state {
            State::Choosing => Step::AskChannel,
            State::OfferingCallerId | State::Asking(Channel::Sms) => {
                self.state = State::Asking(Channel::Sms);
                Step::AskRecipient(Channel::Sms)
            }
            State::Asking(Channel::Email) => Step::AskRecipient(Channel::Email),
            State::Confirming(r) => Step::Confirm(r.clone()),
            State::Sending(_) | State::Done => Step::StillWaiting,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pii(s: &str) -> Pii<String> {
        Pii::new(s.to_string())
    }

    /// The text conversation's offer: both channels, the caller's number known.
    fn text_offer(retries_max: u32) -> (LinkOffer, Step) {
        let config = LinkConfig {
            caller_id: CallerId::Known(pii("2025550134")),
            phone_entry: true,
            email: true,
            retries_max,
        };
        LinkOffer::start(config, "case_status", Some("uscis.gov/casestatus".into()))
    }

    /// The voice flow's offer: the caller's number usable (known to the shell), no email.
    fn voice_offer(phone_entry: bool) -> (LinkOffer, Step) {
        let config = LinkConfig {
            caller_id: CallerId::Usable,
            phone_entry,
            email: false,
            retries_max: 3,
        };
        LinkOffer::start(config, "case_status", None)
    }

    #[test]
    fn recipients_follow_the_one_rule_of_each_kind() {
        assert_eq!(
            Recipient::phone("12025550134"),
            Some(Recipient::Phone(pii("2025550134")))
        );
        assert_eq!(Recipient::phone("9115550134"), None, "N11 area code");
        assert_eq!(Recipient::phone("202555013"), None, "nine digits");
        assert_eq!(
            Recipient::email("ann.lee@gmail.com"),
            Some(Recipient::Email(pii("ann.lee@gmail.com")))
        );
        assert_eq!(Recipient::email("ann@gmail"), None);
        assert_eq!(
            Recipient::phone("2025550134").unwrap().channel(),
            Channel::Sms
        );
        assert_eq!(Recipient::CallerId(None).channel(), Channel::Sms);
        // A caller ID that is not a US number is not offered.
        assert_eq!(
            CallerId::parse(Some(&pii("+44 20 7946 0958"))),
            CallerId::Unusable
        );
        assert_eq!(CallerId::parse(None), CallerId::Unusable);
        assert_eq!(
            CallerId::parse(Some(&pii("+1 202 555 0134"))),
            CallerId::Known(pii("2025550134"))
        );
    }

    #[test]
    fn sent_only_after_the_store_said_yes() {
        let (mut offer, step) = text_offer(3);
        assert_eq!(step, Step::AskChannel);
        assert_eq!(offer.handle_stored(true), None, "nothing to store yet");
        assert_eq!(
            offer.handle(Answer::Channel(Channel::Sms)),
            Step::OfferCallerId(Some(pii("2025550134")))
        );
        assert_eq!(offer.handle_stored(true), None);
        assert_eq!(
            offer.handle(Answer::Yes),
            Step::Send {
                recipient: Recipient::CallerId(Some(pii("2025550134"))),
                intent: "case_status".into(),
                link: Some("uscis.gov/casestatus".into()),
            }
        );
        assert_eq!(offer.awaiting(), Awaiting::Stored);
        // Answers while the store works change nothing.
        assert_eq!(offer.handle(Answer::Yes), Step::StillWaiting);
        assert_eq!(offer.handle_stored(true), Some(Step::Sent(Channel::Sms)));
        assert!(offer.is_done());
        // Said once.
        assert_eq!(offer.handle_stored(true), None);
    }

    #[test]
    fn a_failed_store_is_not_sent() {
        let (mut offer, _) = text_offer(3);
        assert_eq!(
            offer.handle(Answer::Channel(Channel::Email)),
            Step::AskRecipient(Channel::Email)
        );
        let r = Recipient::email("ann.lee@gmail.com").unwrap();
        assert_eq!(
            offer.handle(Answer::Recipient(r.clone())),
            Step::Confirm(r.clone())
        );
        assert!(
            matches!(offer.handle(Answer::Yes), Step::Send { recipient, .. } if recipient == r)
        );
        assert_eq!(
            offer.handle_stored(false),
            Some(Step::NotSent(Channel::Email))
        );
        assert_eq!(offer.handle_stored(true), None);
    }

    #[test]
    fn nothing_is_sent_before_the_read_back_is_confirmed() {
        let (mut offer, _) = text_offer(5);
        let first = Recipient::phone("2025550134").unwrap();
        let second = Recipient::phone("3125550199").unwrap();
        // A number given at the channel question goes to its read-back.
        assert_eq!(
            offer.handle(Answer::Recipient(first.clone())),
            Step::Confirm(first.clone())
        );
        // Not understood: the read-back again.
        assert_eq!(
            offer.handle(Answer::NotUnderstood),
            Step::Confirm(first.clone())
        );
        // Another number replaces it, with its own read-back.
        assert_eq!(
            offer.handle(Answer::Recipient(second.clone())),
            Step::Confirm(second.clone())
        );
        // "No": asked for the number again (the caller's own still usable by "yes").
        assert_eq!(offer.handle(Answer::No), Step::AskRecipient(Channel::Sms));
        assert_eq!(
            offer.awaiting(),
            Awaiting::Recipient {
                channel: Channel::Sms,
                caller_id: false
            }
        );
        assert!(matches!(
            offer.handle(Answer::Yes),
            Step::Send {
                recipient: Recipient::CallerId(Some(_)),
                ..
            }
        ));
    }

    #[test]
    fn tries_are_counted_across_the_offer_then_it_gives_up() {
        let (mut offer, _) = text_offer(3);
        assert_eq!(offer.handle(Answer::NotUnderstood), Step::AskChannel);
        assert_eq!(
            offer.handle(Answer::Channel(Channel::Email)),
            Step::AskRecipient(Channel::Email)
        );
        // A number where an address is asked for is no answer.
        let phone = Recipient::phone("2025550134").unwrap();
        assert_eq!(
            offer.handle(Answer::Recipient(phone)),
            Step::AskRecipient(Channel::Email)
        );
        // The third try in all, not the third at this question.
        assert_eq!(offer.handle(Answer::NotUnderstood), Step::GaveUp);
        assert!(offer.is_done());
        assert_eq!(offer.handle(Answer::Yes), Step::StillWaiting);
        assert_eq!(offer.handle_stored(true), None);
    }

    #[test]
    fn silences_count_as_tries_and_keep_the_question() {
        let (mut offer, _) = text_offer(3);
        offer.handle(Answer::Channel(Channel::Sms));
        assert_eq!(offer.handle(Answer::NoInput), Step::StillWaiting);
        assert_eq!(
            offer.awaiting(),
            Awaiting::Recipient {
                channel: Channel::Sms,
                caller_id: true
            }
        );
        assert_eq!(offer.handle(Answer::NoInput), Step::StillWaiting);
        assert_eq!(offer.handle(Answer::NoInput), Step::GaveUp);
    }

    #[test]
    fn declining_ends_the_offer_at_any_question() {
        let (mut offer, _) = text_offer(3);
        assert_eq!(offer.handle(Answer::Decline), Step::Declined);
        let (mut offer, _) = text_offer(3);
        offer.handle(Answer::Channel(Channel::Sms));
        assert_eq!(offer.handle(Answer::Decline), Step::Declined);
        let (mut offer, _) = text_offer(3);
        offer.handle(Answer::Channel(Channel::Email));
        assert_eq!(offer.handle(Answer::No), Step::Declined);
        assert!(offer.is_done());
    }

    #[test]
    fn the_voice_offer_without_email_starts_at_the_callers_number() {
        let (mut offer, step) = voice_offer(true);
        assert_eq!(step, Step::OfferCallerId(None));
        // Key 1: the caller's own number, which only the shell knows.
        assert!(matches!(
            offer.handle(Answer::UseCallerId),
            Step::Send {
                recipient: Recipient::CallerId(None),
                link: None,
                ..
            }
        ));
        // "Another number": asked for one, when one can be taken.
        let (mut offer, _) = voice_offer(true);
        assert_eq!(offer.handle(Answer::No), Step::AskRecipient(Channel::Sms));
        let (mut offer, _) = voice_offer(false);
        assert_eq!(offer.handle(Answer::No), Step::GaveUp);
        // Email asked for where it cannot be taken: the text message instead.
        let (mut offer, _) = voice_offer(true);
        offer.state = State::Choosing;
        assert_eq!(
            offer.handle(Answer::Channel(Channel::Email)),
            Step::OfferCallerId(None)
        );
        // No caller ID and no entry: nothing can be offered.
        let config = LinkConfig {
            caller_id: CallerId::Unusable,
            phone_entry: false,
            email: false,
            retries_max: 3,
        };
        let (offer, step) = LinkOffer::start(config, "case_status", None);
        assert_eq!(step, Step::GaveUp);
        assert!(offer.is_done());
    }
}
