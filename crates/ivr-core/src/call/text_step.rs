//! What a text conversation — a TTY call ([`super::tty`]) or an RTT call ([`super::rtt`]) —
//! asks of the call beyond its own line, in one vocabulary, so the
//! call task carries both out the same way: store a link (and tell the conversation whether it
//! was stored before it types "SENT"), hand the call to the TTY agent queue with the one
//! transfer context, or hang up once what was typed has gone out.

use crate::flow::tty::{Channel, TtyConversation, TtyOutput};
use crate::flow::{CallMode, TransferContext};
use crate::pii::Pii;
use crate::types::Lang;

#[derive(Debug, PartialEq, Eq)]
pub enum TextStep {
    /// Store the link of `intent` for `to`; the conversation waits for `handle_link_stored`.
    SendLink {
        channel: Channel,
        to: Pii<String>,
        intent: String,
        lang: Lang,
    },
    /// REFER the caller to the TTY agent queue (what was typed before has been sent).
    Transfer { context: TransferContext },
    /// End the call (what was typed before has been sent).
    Hangup,
}

impl TextStep {
    /// The step for a conversation's output; `None` for typed text, which the line carries.
    pub fn of(out: TtyOutput, conv: &TtyConversation, mode: CallMode) -> Option<TextStep> {
        match out {
            TtyOutput::Type(_) => None,
            TtyOutput::SendLink {
                channel,
                to,
                intent,
                link: _,
            } => Some(TextStep::SendLink {
                channel,
                to,
                intent,
                lang: conv.lang(),
            }),
            TtyOutput::Transfer { queue: _ } => Some(TextStep::Transfer {
                context: transfer_context(conv, mode),
            }),
            TtyOutput::Hangup => Some(TextStep::Hangup),
        }
    }
}

/// What the agent sees with a text call's transfer: its last understood intent, its language
/// and its mode (no personal data).
pub fn transfer_context(conv: &TtyConversation, mode: CallMode) -> TransferContext {
    let intent = conv
        .record()
        .intents
        .iter()
        .rev()
        .find_map(|(i, _)| i.clone())
        .unwrap_or_default();
    TransferContext {
        intent,
        lang: conv.lang(),
        mode,
        consent: None,
    }
}
