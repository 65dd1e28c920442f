//! The product's public intent vocabulary (docs/intents.md). `ivr classify` prints these ids,
//! call records store them, grammars and prompts are keyed by them. Keep them stable.

/// Every intent id, in the order of the menu and of intents.md.
pub const INTENTS: &[&str] = &[
    "case_status",
    "processing_times",
    "typo_correction",
    "notice_not_received",
    "accommodation",
    "change_of_address",
    "reschedule_biometrics",
    "reschedule_appointment",
    "expedite",
    "withdraw",
    "online_account",
    "online_filing",
    "tech_support",
    "military",
    "in_person_appointment",
    "green_card_expired",
    "protected_case",
    "agent",
    "hours",
    "contact_info",
];

/// Dialog acts: not questions, answers to the IVR's own prompts.
pub const ACTS: &[&str] = &[
    "yes", "no", "repeat", "help", "goodbye", "spanish", "english", "text", "email",
];

pub fn is_intent(id: &str) -> bool {
    INTENTS.contains(&id)
}
