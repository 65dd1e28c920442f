//! The menu tree as data. The engine in `flow` interprets it; nothing here is control flow.
//!
//! Keys follow telephone conventions callers know: `*` goes back to the main menu, `9` repeats
//! the main menu, `0` asks for a person.

use crate::types::Lang;

/// Index of a menu in [`Script::menus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MenuId(pub usize);

/// Where a key leads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Goto {
    /// Another menu.
    Menu(MenuId),
    /// Set the caller's language, then go to a menu.
    Language(Lang, MenuId),
    /// Play the answer of an intent (prompt `answer.<intent>`), then the after-answer menu.
    Answer(&'static str),
    /// Play the last answer again.
    RepeatAnswer,
    /// Say goodbye and hang up.
    Goodbye,
    /// Ask the shell to text the last answer's link to the caller's number.
    SendSms,
    /// Offer the link by text: confirm the caller's number when it can take a text, else ask
    /// for one.
    SmsOffer,
    /// Key in the number to text the link to (read back for confirmation).
    EnterNumber,
    /// Ask how the caller wants the link (text message or email) where email can be taken;
    /// else straight to `SmsOffer`.
    LinkOffer,
    /// Take the caller's email address (spelled by voice or with the keypad, read back) and
    /// send the last answer's link there.
    EmailEntry,
    /// Back to the menu that follows the last answer.
    AfterAnswer,
    /// Transfer to a live agent, when the policy offers it for the last answer right now.
    Transfer,
    /// The caller's answer to the text-ahead question (true only for an explicit yes).
    TextAhead(bool),
    /// The caller's answer to "did you ask about ...?" after a question heard with middling
    /// confidence.
    Confirm(bool),
}

/// What a menu lets the caller say, when the caller's language has a recognizer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// Keys only.
    Keys,
    /// The menu's choices: spoken digits and the dialog acts of [`Menu::acts`] (a closed
    /// grammar).
    Choices,
    /// An open question in the domain (and the choices): "I need to change my address".
    Question,
    /// A phone number said digit by digit (a sequence grammar of digit words).
    Digits,
    /// An email address spelled letter by letter (letters, digits, "at", "dot", domain words).
    Spelling,
}

/// A prompt of a menu; `lang` pins it to one language (the bilingual language menu).
#[derive(Clone, Copy, Debug)]
pub struct MenuPrompt {
    pub id: &'static str,
    pub lang: Option<Lang>,
}

#[derive(Clone, Copy, Debug)]
pub struct Menu {
    pub name: &'static str,
    pub prompts: &'static [MenuPrompt],
    pub options: &'static [(char, Goto)],
    /// Keys (and speech) may interrupt the prompt.
    pub barge_in: bool,
    pub listen: Listen,
    /// Spoken answers (dialog acts of `grammars/<lang>/acts.txt`) and where they lead. "repeat"
    /// and "goodbye" work everywhere unless a menu maps them.
    pub acts: &'static [(&'static str, Goto)],
    /// Played instead of `prompts` when the caller can speak (they invite a spoken answer);
    /// empty: `prompts`.
    pub speech_prompts: &'static [MenuPrompt],
}

impl Menu {
    pub fn choice(&self, key: char) -> Option<Goto> {
        self.options
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, g)| *g)
    }
}

pub struct Script {
    pub menus: &'static [Menu],
    pub start: MenuId,
    pub after_answer: MenuId,
    /// The after-answer menu when the answer's link can be texted to the caller.
    pub after_answer_link: MenuId,
    /// The text-ahead consent question before a tier-2 transfer.
    pub text_ahead: MenuId,
    /// "We will text the link to the number you are calling from."
    pub sms_confirm: MenuId,
    /// "By text message or email?"
    pub link_channel: MenuId,
    /// "Did you ask about ...?" after a question heard with middling confidence.
    pub confirm: MenuId,
    /// Where a spoken question that is not understood leads back to.
    pub main: MenuId,
    /// Answers followed by their own menu instead of the after-answer menu (special flows).
    pub answer_menus: &'static [(&'static str, MenuId)],
    /// Menus that ask once: a no-input, a no-match or the same request again goes here instead
    /// of a retry (the agent flow's one try at self-service, then the transfer).
    pub give_up: &'static [(MenuId, Goto)],
    /// The transfer offer of an intent when it is not the usual "press 0 for a representative".
    pub offer_prompts: &'static [(&'static str, &'static str)],
}

const fn p(id: &'static str) -> MenuPrompt {
    MenuPrompt { id, lang: None }
}

const fn pin(id: &'static str, lang: Lang) -> MenuPrompt {
    MenuPrompt {
        id,
        lang: Some(lang),
    }
}

const LANGUAGE: MenuId = MenuId(0);
const MAIN: MenuId = MenuId(1);
const DOCUMENTS: MenuId = MenuId(2);
const APPOINTMENTS: MenuId = MenuId(3);
const ONLINE: MenuId = MenuId(4);
const MORE: MenuId = MenuId(5);
const AFTER_ANSWER: MenuId = MenuId(6);
const AFTER_ANSWER_LINK: MenuId = MenuId(7);
const SMS_CONFIRM: MenuId = MenuId(8);
const TEXT_AHEAD: MenuId = MenuId(9);
const CONFIRM: MenuId = MenuId(10);
const AGENT_QUESTION: MenuId = MenuId(11);
const LINK_CHANNEL: MenuId = MenuId(12);

const NO_PROMPTS: &[MenuPrompt] = &[];
const SUBMENU_ACTS: &[(&str, Goto)] = &[("no", Goto::Menu(MAIN)), ("help", Goto::Menu(MAIN))];
const AFTER_ANSWER_ACTS: &[(&str, Goto)] = &[
    ("repeat", Goto::RepeatAnswer),
    ("no", Goto::Goodbye),
    ("goodbye", Goto::Goodbye),
    ("help", Goto::Menu(MAIN)),
];

/// After an answer whose link can be sent: the after-answer acts, plus asking for the link.
const AFTER_ANSWER_LINK_ACTS: &[(&str, Goto)] = &[
    ("repeat", Goto::RepeatAnswer),
    ("no", Goto::Goodbye),
    ("goodbye", Goto::Goodbye),
    ("help", Goto::Menu(MAIN)),
    ("text", Goto::SmsOffer),
    ("email", Goto::EmailEntry),
];

static MENUS: [Menu; 13] = [
    Menu {
        name: "language",
        prompts: &[
            pin("greeting", Lang::En),
            pin("language_menu", Lang::En),
            pin("language_menu", Lang::Es),
        ],
        options: &[
            ('1', Goto::Language(Lang::En, MAIN)),
            ('2', Goto::Language(Lang::Es, MAIN)),
        ],
        barge_in: true,
        listen: Listen::Question,
        acts: &[
            ("english", Goto::Language(Lang::En, MAIN)),
            ("spanish", Goto::Language(Lang::Es, MAIN)),
        ],
        speech_prompts: &[
            pin("greeting", Lang::En),
            pin("ask_question", Lang::En),
            pin("language_menu", Lang::En),
            pin("language_menu", Lang::Es),
        ],
    },
    Menu {
        name: "main",
        prompts: &[p("main_menu")],
        options: &[
            ('1', Goto::Answer("case_status")),
            ('2', Goto::Answer("processing_times")),
            ('3', Goto::Menu(DOCUMENTS)),
            ('4', Goto::Menu(APPOINTMENTS)),
            ('5', Goto::Answer("change_of_address")),
            ('6', Goto::Menu(ONLINE)),
            ('7', Goto::Answer("green_card_expired")),
            ('8', Goto::Menu(MORE)),
            ('9', Goto::Menu(MAIN)),
            ('0', Goto::Answer("agent")),
        ],
        barge_in: true,
        listen: Listen::Question,
        acts: &[("help", Goto::Menu(MAIN)), ("repeat", Goto::Menu(MAIN))],
        speech_prompts: &[p("ask_question"), p("main_menu")],
    },
    Menu {
        name: "documents",
        prompts: &[p("menu.documents")],
        options: &[
            ('1', Goto::Answer("typo_correction")),
            ('2', Goto::Answer("notice_not_received")),
            ('*', Goto::Menu(MAIN)),
        ],
        barge_in: true,
        listen: Listen::Question,
        acts: SUBMENU_ACTS,
        speech_prompts: NO_PROMPTS,
    },
    Menu {
        name: "appointments",
        prompts: &[p("menu.appointments")],
        options: &[
            ('1', Goto::Answer("reschedule_biometrics")),
            ('2', Goto::Answer("reschedule_appointment")),
            ('3', Goto::Answer("accommodation")),
            ('4', Goto::Answer("in_person_appointment")),
            ('*', Goto::Menu(MAIN)),
        ],
        barge_in: true,
        listen: Listen::Question,
        acts: SUBMENU_ACTS,
        speech_prompts: NO_PROMPTS,
    },
    Menu {
        name: "online",
        prompts: &[p("menu.online")],
        options: &[
            ('1', Goto::Answer("online_account")),
            ('2', Goto::Answer("online_filing")),
            ('3', Goto::Answer("tech_support")),
            ('*', Goto::Menu(MAIN)),
        ],
        barge_in: true,
        listen: Listen::Question,
        acts: SUBMENU_ACTS,
        speech_prompts: NO_PROMPTS,
    },
    Menu {
        name: "more",
        prompts: &[p("menu.more")],
        options: &[
            ('1', Goto::Answer("expedite")),
            ('2', Goto::Answer("withdraw")),
            ('3', Goto::Answer("military")),
            ('4', Goto::Answer("protected_case")),
            ('5', Goto::Answer("hours")),
            ('6', Goto::Answer("contact_info")),
            ('*', Goto::Menu(MAIN)),
        ],
        barge_in: true,
        listen: Listen::Question,
        acts: SUBMENU_ACTS,
        speech_prompts: NO_PROMPTS,
    },
    Menu {
        name: "after_answer",
        prompts: &[p("after_answer")],
        options: &[
            ('1', Goto::RepeatAnswer),
            ('2', Goto::Menu(MAIN)),
            ('3', Goto::Goodbye),
            ('0', Goto::Transfer),
            ('*', Goto::Menu(MAIN)),
        ],
        barge_in: true,
        listen: Listen::Question,
        acts: AFTER_ANSWER_ACTS,
        speech_prompts: NO_PROMPTS,
    },
    // After an answer whose link can be sent, to a caller whose number can receive a text.
    Menu {
        name: "after_answer_link",
        prompts: &[p("after_answer_link")],
        options: &[
            ('1', Goto::RepeatAnswer),
            ('2', Goto::Menu(MAIN)),
            ('3', Goto::Goodbye),
            ('4', Goto::LinkOffer),
            ('0', Goto::Transfer),
            ('*', Goto::Menu(MAIN)),
        ],
        barge_in: true,
        listen: Listen::Question,
        acts: AFTER_ANSWER_LINK_ACTS,
        speech_prompts: NO_PROMPTS,
    },
    Menu {
        name: "sms_confirm",
        prompts: &[p("sms_confirm")],
        options: &[
            ('1', Goto::SendSms),
            ('2', Goto::AfterAnswer),
            ('3', Goto::EnterNumber),
            ('*', Goto::AfterAnswer),
        ],
        barge_in: true,
        listen: Listen::Choices,
        acts: &[("yes", Goto::SendSms), ("no", Goto::AfterAnswer)],
        speech_prompts: NO_PROMPTS,
    },
    // Tier 2, before the transfer: may an officer's call be announced by a text message?
    Menu {
        name: "text_ahead",
        prompts: &[p("text_ahead")],
        options: &[('1', Goto::TextAhead(true)), ('2', Goto::TextAhead(false))],
        barge_in: true,
        listen: Listen::Choices,
        acts: &[
            ("yes", Goto::TextAhead(true)),
            ("no", Goto::TextAhead(false)),
        ],
        speech_prompts: NO_PROMPTS,
    },
    // After a question heard with middling confidence: the lead prompt names the intent.
    Menu {
        name: "confirm",
        prompts: &[p("confirm_menu")],
        options: &[('1', Goto::Confirm(true)), ('2', Goto::Confirm(false))],
        barge_in: true,
        listen: Listen::Choices,
        acts: &[("yes", Goto::Confirm(true)), ("no", Goto::Confirm(false))],
        speech_prompts: NO_PROMPTS,
    },
    // The agent flow: one try to find the question self-service can answer, then the transfer
    // (when the center is open).
    Menu {
        name: "agent_question",
        prompts: &[p("agent_question")],
        options: &[
            ('0', Goto::Transfer),
            ('*', Goto::Menu(MAIN)),
            ('9', Goto::Menu(MAIN)),
        ],
        barge_in: true,
        listen: Listen::Question,
        acts: &[("no", Goto::Transfer), ("help", Goto::Menu(MAIN))],
        speech_prompts: &[p("agent_question_speech")],
    },
    Menu {
        name: "link_channel",
        prompts: &[p("link_channel")],
        options: &[
            ('1', Goto::SmsOffer),
            ('2', Goto::EmailEntry),
            ('*', Goto::AfterAnswer),
        ],
        barge_in: true,
        listen: Listen::Choices,
        acts: &[
            ("text", Goto::SmsOffer),
            ("email", Goto::EmailEntry),
            ("no", Goto::AfterAnswer),
        ],
        speech_prompts: &[p("link_channel_speech")],
    },
];

static STANDARD: Script = Script {
    menus: &MENUS,
    start: LANGUAGE,
    after_answer: AFTER_ANSWER,
    after_answer_link: AFTER_ANSWER_LINK,
    text_ahead: TEXT_AHEAD,
    sms_confirm: SMS_CONFIRM,
    link_channel: LINK_CHANNEL,
    confirm: CONFIRM,
    main: MAIN,
    answer_menus: &[("agent", AGENT_QUESTION)],
    give_up: &[(AGENT_QUESTION, Goto::Transfer)],
    offer_prompts: &[("protected_case", "offer_verification")],
};

impl Script {
    /// The contact center's menu tree.
    pub fn standard() -> &'static Script {
        &STANDARD
    }

    pub fn menu(&self, id: MenuId) -> &Menu {
        // MenuIds only come from this table (the constants above), so the index is in range;
        // `every_menu_option_leads_somewhere_known` checks it.
        &self.menus[id.0]
    }

    /// Every prompt id the script can play in a language, besides the per-intent answers:
    /// `ivr check` requires each of them in every language.
    pub fn prompt_ids(&self) -> Vec<&'static str> {
        let mut ids: Vec<&'static str> = self
            .menus
            .iter()
            .flat_map(|m| m.prompts.iter().chain(m.speech_prompts).map(|p| p.id))
            .collect();
        ids.extend([
            "no_input",
            "no_match",
            "goodbye",
            "sms_sent",
            "sms_failed",
            "offer_transfer",
            "transfer_start",
            "transfer_failed",
            "not_understood",
            "out_of_domain",
            "speech_fallback",
            "after_hours",
            "after_hours_next",
            "after_hours_next_tail",
        ]);
        ids.extend(self.offer_prompts.iter().map(|(_, p)| *p));
        ids.extend(super::entry::PROMPT_IDS);
        ids.sort_unstable();
        ids.dedup();
        ids
    }
}
