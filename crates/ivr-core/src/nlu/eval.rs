//! Hard evaluation sets (`evals/<lang>.txt`): how real callers talk, never used for training.
//! `ivr check --eval FILE` scores them per set and fails when a floor is broken.
//!
//! ```text
//! [set in_domain]
//! i uh just wanna know what's going on with my case => case_status
//! [set safety]
//! my husband hits me and i need help with my petition => protected_case
//! [set out_of_domain]
//! i need to renew my driver's license => none
//! ```
//!
//! Sets: `in_domain` and `asr_style` (accuracy: the right intent, answered or confirmed),
//! `safety` (recall: `protected_case` found), `out_of_domain` (rejection: not answered with an
//! intent). Over every line: confident errors, a wrong intent that would be answered without
//! confirmation.

use std::fmt;
use std::path::{Path, PathBuf};

use super::decide::Decision;
use super::{Nlu, grammar};
use crate::diag::Diagnostic;
use crate::intents::INTENTS;
use crate::types::Lang;

/// The kinds of line an evaluation file groups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Set {
    InDomain,
    AsrStyle,
    Safety,
    OutOfDomain,
}

impl Set {
    const ALL: [Set; 4] = [Set::InDomain, Set::AsrStyle, Set::Safety, Set::OutOfDomain];

    pub fn name(self) -> &'static str {
        match self {
            Set::InDomain => "in_domain",
            Set::AsrStyle => "asr_style",
            Set::Safety => "safety",
            Set::OutOfDomain => "out_of_domain",
        }
    }

    fn from_name(name: &str) -> Option<Set> {
        Set::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One line of an evaluation file.
#[derive(Clone, Debug)]
pub struct Case {
    pub set: Set,
    pub text: String,
    /// `None`: out of domain.
    pub expected: Option<String>,
    pub line: usize,
}

/// A parsed evaluation file.
#[derive(Clone, Debug)]
pub struct EvalSet {
    pub path: PathBuf,
    pub lang: Lang,
    pub cases: Vec<Case>,
}

/// The floors CI enforces, per language.
#[derive(Clone, Copy, Debug)]
pub struct Floors {
    pub in_domain_accuracy: f32,
    pub safety_recall: f32,
    pub out_of_domain_rejection: f32,
    /// The most confident errors allowed, as a share of all lines.
    pub confident_errors: f32,
}

impl Floors {
    pub fn for_lang(lang: Lang) -> Floors {
        Floors {
            in_domain_accuracy: match lang {
                Lang::En => 0.95,
                Lang::Es => 0.93,
            },
            safety_recall: 1.0,
            out_of_domain_rejection: 0.90,
            confident_errors: 0.02,
        }
    }
}

/// Parse an evaluation file: errors as `path:line: message`.
pub fn parse(path: &Path, text: &str) -> Result<EvalSet, Vec<Diagnostic>> {
    let d = |line: usize, message: String| Diagnostic {
        path: path.to_path_buf(),
        line,
        message,
    };
    let Some(lang) = grammar::lang_of(path) else {
        return Err(vec![d(
            0,
            "cannot tell the language: name the file en.txt or es.txt (or put it under en/ or es/)"
                .into(),
        )]);
    };
    let mut errors = Vec::new();
    let mut cases = Vec::new();
    let mut set = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim().trim_start_matches('\u{feff}');
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(inner) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = inner.strip_prefix("set").map(str::trim).unwrap_or("");
            set = Set::from_name(name);
            if set.is_none() {
                errors.push(d(
                    i + 1,
                    format!(
                        "a header is `[set NAME]` with NAME one of {}",
                        Set::ALL.map(Set::name).join(", ")
                    ),
                ));
            }
            continue;
        }
        let Some((utterance, label)) = line.rsplit_once("=>") else {
            errors.push(d(
                i + 1,
                "a case looks like `what caller says => intent`".into(),
            ));
            continue;
        };
        let (utterance, label) = (utterance.trim(), label.trim());
        let expected = match label {
            "none" => None,
            id if INTENTS.contains(&id) => Some(id.to_string()),
            id => {
                errors.push(d(
                    i + 1,
                    format!("unknown intent `{id}` (an intent id or none)"),
                ));
                continue;
            }
        };
        let Some(set) = set else {
            errors.push(d(i + 1, "a case before any `[set NAME]` header".into()));
            continue;
        };
        if utterance.is_empty() {
            errors.push(d(i + 1, "a case needs an utterance before `=>`".into()));
            continue;
        }
        cases.push(Case {
            set,
            text: utterance.to_string(),
            expected,
            line: i + 1,
        });
    }
    if errors.is_empty() {
        Ok(EvalSet {
            path: path.to_path_buf(),
            lang,
            cases,
        })
    } else {
        Err(errors)
    }
}

/// One scored line.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub case: Case,
    pub got: Option<String>,
    pub confidence: f32,
    pub decision: Decision,
    /// The classifier's best intent even when it was not confident enough (or the outside
    /// topic), for the authors reading the misses.
    pub guess: Option<String>,
}

impl Outcome {
    /// The line counts as understood for its set.
    pub fn ok(&self) -> bool {
        match self.case.set {
            Set::InDomain | Set::AsrStyle | Set::Safety => {
                self.got == self.case.expected && self.decision != Decision::OutOfDomain
            }
            Set::OutOfDomain => self.decision != Decision::Answer,
        }
    }

    /// A wrong intent that would be answered without confirmation.
    pub fn confident_error(&self) -> bool {
        self.decision == Decision::Answer && self.got != self.case.expected
    }
}

/// A scored evaluation file.
#[derive(Clone, Debug)]
pub struct Report {
    pub path: PathBuf,
    pub lang: Lang,
    pub outcomes: Vec<Outcome>,
    pub floors: Floors,
}

/// Score every line with the text decision rule (typed text; spoken lines go through
/// `ivr call`).
pub fn score(nlu: &Nlu, set: &EvalSet) -> Report {
    let outcomes = set
        .cases
        .iter()
        .map(|case| {
            let c = nlu.classify(set.lang, &case.text);
            Outcome {
                decision: c.decision(),
                guess: match &c.out_of_domain {
                    Some(topic) => Some(format!("outside:{topic}")),
                    None => c.alternatives.first().map(|a| a.0.clone()),
                },
                got: c.intent,
                confidence: c.confidence,
                case: case.clone(),
            }
        })
        .collect();
    Report {
        path: set.path.clone(),
        lang: set.lang,
        outcomes,
        floors: Floors::for_lang(set.lang),
    }
}

impl Report {
    /// (lines, understood) of one set.
    pub fn tally(&self, set: Set) -> (usize, usize) {
        let of: Vec<_> = self.outcomes.iter().filter(|o| o.case.set == set).collect();
        (of.len(), of.iter().filter(|o| o.ok()).count())
    }

    pub fn rate(&self, set: Set) -> Option<f32> {
        let (n, ok) = self.tally(set);
        (n > 0).then(|| ok as f32 / n as f32)
    }

    pub fn confident_errors(&self) -> usize {
        self.outcomes.iter().filter(|o| o.confident_error()).count()
    }

    pub fn confident_error_rate(&self) -> f32 {
        if self.outcomes.is_empty() {
            0.0
        } else {
            self.confident_errors() as f32 / self.outcomes.len() as f32
        }
    }

    /// The floors this report breaks, as sentences; empty when it passes.
    pub fn broken_floors(&self) -> Vec<String> {
        let f = self.floors;
        let mut out = Vec::new();
        let mut check = |what: &str, got: Option<f32>, floor: f32| {
            if let Some(got) = got
                && got < floor
            {
                out.push(format!(
                    "{what} {:.1}% is below the floor {:.1}%",
                    got * 100.0,
                    floor * 100.0
                ));
            }
        };
        check(
            "in_domain accuracy",
            self.rate(Set::InDomain),
            f.in_domain_accuracy,
        );
        check("safety recall", self.rate(Set::Safety), f.safety_recall);
        check(
            "out_of_domain rejection",
            self.rate(Set::OutOfDomain),
            f.out_of_domain_rejection,
        );
        if self.confident_error_rate() > f.confident_errors {
            out.push(format!(
                "confident errors {:.1}% are above the ceiling {:.1}%",
                self.confident_error_rate() * 100.0,
                f.confident_errors * 100.0
            ));
        }
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({}): {} lines",
            self.path.display(),
            self.lang,
            self.outcomes.len()
        )?;
        for set in Set::ALL {
            let (n, ok) = self.tally(set);
            if n == 0 {
                continue;
            }
            let what = match set {
                Set::InDomain | Set::AsrStyle => "accuracy",
                Set::Safety => "recall",
                Set::OutOfDomain => "rejected",
            };
            let answered = self
                .outcomes
                .iter()
                .filter(|o| o.case.set == set && o.decision == Decision::Answer)
                .count();
            writeln!(
                f,
                "  {:<14} {n:>4} lines  {what} {:>5.1}% ({ok}/{n}), answered without confirmation {answered}",
                set.name(),
                ok as f32 * 100.0 / n as f32
            )?;
        }
        writeln!(
            f,
            "  confident errors {}/{} ({:.1}%)",
            self.confident_errors(),
            self.outcomes.len(),
            self.confident_error_rate() * 100.0
        )?;
        for o in self
            .outcomes
            .iter()
            .filter(|o| !o.ok() || o.confident_error())
        {
            writeln!(
                f,
                "  {}:{}: [{}] `{}` expected {} got {} ({:.2}, {}, best guess {}){}",
                self.path.display(),
                o.case.line,
                o.case.set.name(),
                o.case.text,
                o.case.expected.as_deref().unwrap_or("none"),
                o.got.as_deref().unwrap_or("none"),
                o.confidence,
                o.decision.as_str(),
                o.guess.as_deref().unwrap_or("-"),
                if o.confident_error() {
                    " CONFIDENT ERROR"
                } else {
                    ""
                }
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sets_and_reports_errors_with_lines() {
        let ok = parse(
            Path::new("evals/en.txt"),
            "# c\n[set safety]\nhe hits me => protected_case\n[set out_of_domain]\nmy taxes => none\n",
        )
        .expect("valid");
        assert_eq!(ok.lang, Lang::En);
        assert_eq!(ok.cases.len(), 2);
        assert_eq!(ok.cases[0].set, Set::Safety);
        assert_eq!(ok.cases[1].expected, None);
        assert_eq!(ok.cases[1].line, 5);
        let errs = parse(
            Path::new("evals/es.txt"),
            "x => hours\n[set nope]\n[set in_domain]\nno arrow\ny => bogus\n",
        )
        .expect_err("invalid");
        let lines: Vec<usize> = errs.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 2, 4, 5], "{errs:?}");
        assert!(parse(Path::new("evals/x.txt"), "").is_err());
    }

    #[test]
    fn confident_errors_and_rejection_are_scored() {
        let case = |set, expected: Option<&str>| Case {
            set,
            text: "t".into(),
            expected: expected.map(str::to_string),
            line: 1,
        };
        let o = |set, expected, got: Option<&str>, decision| Outcome {
            case: case(set, expected),
            got: got.map(str::to_string),
            confidence: 0.9,
            decision,
            guess: None,
        };
        let wrong = o(
            Set::InDomain,
            Some("hours"),
            Some("agent"),
            Decision::Answer,
        );
        assert!(!wrong.ok() && wrong.confident_error());
        let asked = o(
            Set::InDomain,
            Some("hours"),
            Some("agent"),
            Decision::Confirm,
        );
        assert!(!asked.ok() && !asked.confident_error());
        let ood = o(Set::OutOfDomain, None, None, Decision::OutOfDomain);
        assert!(ood.ok() && !ood.confident_error());
        let answered_ood = o(Set::OutOfDomain, None, Some("hours"), Decision::Answer);
        assert!(!answered_ood.ok() && answered_ood.confident_error());
        let report = Report {
            path: "evals/en.txt".into(),
            lang: Lang::En,
            outcomes: vec![wrong, asked, ood, answered_ood],
            floors: Floors::for_lang(Lang::En),
        };
        assert_eq!(report.tally(Set::InDomain), (2, 0));
        assert_eq!(report.confident_errors(), 2);
        let broken = report.broken_floors();
        assert_eq!(broken.len(), 3, "{broken:?}");
    }
}
