//! `ivr route --intent ID --at RFC3339 [--lang en|es] [--tty]`: what the routing policy decides
//! for a question at an instant, as one JSON object, so ops can check the calendar and policy.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use jiff::Timestamp;
use serde::Serialize;

use crate::routing::{Action, Condition, Decision, Facts, Router, RoutingConfig};
use crate::types::Lang;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// An intent id (see `ivr classify`), e.g. expedite.
    #[arg(long)]
    pub intent: String,
    /// The instant, RFC 3339 with an offset, e.g. 2026-03-09T08:00:00-04:00 or ...Z.
    #[arg(long)]
    pub at: Timestamp,
    /// The caller's language: en or es.
    #[arg(long, default_value = "en")]
    pub lang: String,
    /// The caller is on the TTY line.
    #[arg(long)]
    pub tty: bool,
    /// A condition known true (repeatable): biometrics_not_scheduled,
    /// biometrics_reschedule_blocked, asylum_applicant, expedite_biometrics.
    #[arg(long = "condition", value_name = "NAME")]
    pub conditions: Vec<String>,
    /// The caller's reply to the text-ahead question: yes or no (absent: not asked yet).
    #[arg(long, value_name = "yes|no")]
    pub text_ahead: Option<String>,
    /// `agent`: the one try to find the question self-service could answer found nothing.
    #[arg(long)]
    pub question_attempted: bool,
    /// `protected_case`: the caller asked for enhanced identity verification.
    #[arg(long)]
    pub verification_requested: bool,
    /// A policy file instead of the embedded sip-configs/policy.toml.
    #[arg(long)]
    pub policy: Option<PathBuf>,
}

#[derive(Serialize)]
struct LinkOut<'a> {
    id: &'a str,
    title: &'a str,
    url: Option<&'a str>,
}

/// The printed object. Field order is the order ops read it in.
#[derive(Serialize)]
struct Out<'a> {
    intent: &'a str,
    route: &'a str,
    open: bool,
    action: &'a str,
    next_open: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    special: Option<&'a str>,
    queue: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    needs_text_ahead_consent: Option<bool>,
    send_text_ahead: bool,
    link: Option<LinkOut<'a>>,
    reason: &'a str,
}

/// Runs with the default `[routing]` settings, printing to stdout.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    run_with(
        args,
        &RoutingConfig::default(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    )
}

/// Runs with `cfg` (the config file's `[routing]` section), writing the JSON object to `out`
/// and usage errors to `err`. Exit 2 on an unknown intent, language or condition.
pub fn run_with(
    args: Args,
    cfg: &RoutingConfig,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let policy_path = args.policy.as_ref().or(cfg.policy.as_ref());
    let policy_text = match policy_path {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let router = Router::from_config(cfg, policy_text.as_deref())?;

    let usage = |err: &mut dyn Write, msg: String| -> anyhow::Result<ExitCode> {
        writeln!(err, "ivr route: {msg}")?;
        Ok(ExitCode::from(2))
    };
    let Some(lang) = Lang::from_code(&args.lang) else {
        return usage(
            err,
            format!("unknown language {:?}: use en or es", args.lang),
        );
    };
    let mut facts = Facts::new(lang)
        .tty(args.tty)
        .question_attempted(args.question_attempted)
        .verification_requested(args.verification_requested);
    for name in &args.conditions {
        let Some(c) = Condition::from_name(name) else {
            let known: Vec<&str> = Condition::ALL.iter().map(|c| c.name()).collect();
            return usage(
                err,
                format!("unknown condition {name:?}; known: {}", known.join(", ")),
            );
        };
        facts = facts.condition(c, true);
    }
    facts.text_ahead = match args.text_ahead.as_deref() {
        None => None,
        Some("yes") => Some(true),
        Some("no") => Some(false),
        Some(other) => return usage(err, format!("--text-ahead {other:?}: use yes or no")),
    };

    let decision = match router.decide(&args.intent, &facts, args.at) {
        Ok(d) => d,
        Err(e) => return usage(err, e.to_string()),
    };
    serde_json::to_writer(&mut *out, &output(&router, &decision))?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}

fn output<'a>(router: &Router, d: &'a Decision) -> Out<'a> {
    let (special, needs_consent) = match &d.action {
        Action::Special(kind) => (Some(kind.name()), None),
        Action::OfferTransfer {
            needs_text_ahead_consent,
            ..
        } => (None, Some(*needs_text_ahead_consent)),
        _ => (None, None),
    };
    Out {
        intent: d.intent,
        route: d.route.name(),
        open: d.open,
        action: d.action.name(),
        next_open: d.next_open.map(|t| router.calendar().format_local(t)),
        special,
        queue: d.queue.map(|q| q.name()),
        needs_text_ahead_consent: needs_consent,
        send_text_ahead: d.send_text_ahead,
        link: d.link.as_ref().map(|l| LinkOut {
            id: &l.id,
            title: &l.title,
            url: l.url.as_deref(),
        }),
        reason: &d.reason,
    }
}
