//! The manifest: call scripts (what the caller does, step by step), what the IVR must have done
//! by the end of each call, and the objectives a run must meet. TOML, documented in README.md.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Manifest {
    /// Where `audio` steps' files are, relative to the manifest; `--audio-dir` overrides.
    pub audio_dir: Option<PathBuf>,
    /// Caller number (From user) for scripts that do not name one.
    pub caller: Option<String>,
    pub objectives: Objectives,
    #[serde(rename = "script")]
    pub scripts: Vec<Script>,
}

/// What a run must achieve; each unset objective is not checked. Percentiles are over every
/// call (or every packet interval) of the run.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Objectives {
    pub invite_p99_ms: Option<f64>,
    pub first_audio_p99_ms: Option<f64>,
    pub response_p99_ms: Option<f64>,
    pub jitter_p99_ms: Option<f64>,
    pub pacing_p99_ms: Option<f64>,
    /// Packets of the IVR's streams lost, in percent of those expected.
    pub loss_max_pct: Option<f64>,
    /// Calls that failed to connect or missed an expectation, in percent. Default: none may.
    pub failed_max_pct: Option<f64>,
}

impl Objectives {
    /// Flags override the manifest, field by field.
    pub fn merged(&self, over: &Objectives) -> Objectives {
        Objectives {
            invite_p99_ms: over.invite_p99_ms.or(self.invite_p99_ms),
            first_audio_p99_ms: over.first_audio_p99_ms.or(self.first_audio_p99_ms),
            response_p99_ms: over.response_p99_ms.or(self.response_p99_ms),
            jitter_p99_ms: over.jitter_p99_ms.or(self.jitter_p99_ms),
            pacing_p99_ms: over.pacing_p99_ms.or(self.pacing_p99_ms),
            loss_max_pct: over.loss_max_pct.or(self.loss_max_pct),
            failed_max_pct: over.failed_max_pct.or(self.failed_max_pct),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Script {
    pub name: String,
    /// Relative share of the calls this script gets (default 1).
    pub weight: Option<u32>,
    /// Caller number sent as the From user; it decides e.g. whether a link can go by SMS.
    pub caller: Option<String>,
    /// User part of the Request-URI (e.g. the TTY line's number); default: the target's.
    pub dialed: Option<String>,
    /// "pcmu" (default) or "pcma": the codec offered first.
    pub codec: Option<String>,
    pub steps: Vec<Step>,
    pub expect: Expect,
}

impl Script {
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(1).min(1000)
    }
}

/// One thing the caller does. Steps run in order; each ends before the next starts.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Play a WAV file (any rate, mono or first channel), resampled to 8 kHz.
    Audio { file: PathBuf },
    /// Key presses, each `key_ms` long, `gap_ms` apart, then `wait_ms` of silence: RFC 4733
    /// telephone-events, or with `inband` the DTMF tones in the audio (as an analog line or a
    /// gateway without RFC 4733 sends them).
    Dtmf {
        digits: String,
        #[serde(default)]
        wait_ms: Option<u64>,
        #[serde(default)]
        key_ms: Option<u64>,
        #[serde(default)]
        gap_ms: Option<u64>,
        #[serde(default)]
        inband: bool,
    },
    /// Text typed on a Baudot TTY (45.45 baud FSK audio).
    Tty { text: String },
    /// Send silence for `ms`.
    Silence { ms: u64 },
    /// Like silence (the caller's stream keeps running); named for readability.
    Wait { ms: u64 },
    /// Wait until the IVR has spoken since the caller's last input and then been quiet for
    /// `quiet_ms` (default 1500: pauses between menu options reach 0.9 s), or `timeout_ms` (default 30000) passed: a timeout fails the
    /// call unless `optional`.
    WaitPrompt {
        #[serde(default)]
        quiet_ms: Option<u64>,
        #[serde(default)]
        timeout_ms: Option<u64>,
        #[serde(default)]
        optional: bool,
    },
    /// Send BYE. Without it the call ends when the IVR hangs up (or after the last step).
    Hangup,
}

impl Step {
    /// A step in which the caller says or keys something the IVR responds to.
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            Step::Audio { .. } | Step::Dtmf { .. } | Step::Tty { .. }
        )
    }
}

/// What the call record (`GET /calls/{call-id}`) must show once the call ended. Unset fields are
/// not checked.
#[derive(Debug, Clone, Deserialize, Default, PartialEq, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Expect {
    pub lang: Option<String>,
    /// The last intent answered.
    pub intent: Option<String>,
    /// Keys the IVR recorded, in order.
    pub digits: Option<String>,
    /// "completed", "caller_hangup", "transferred", "no_input", ...
    pub outcome: Option<String>,
    /// "voice" or "tty".
    pub mode: Option<String>,
    /// A link was sent on this channel ("sms", "email"): an action `send_link:<channel>:..`.
    pub link_sent: Option<String>,
    /// A transfer happened for this intent (an action `transfer:<intent>`); "any" for any.
    pub transfer: Option<String>,
    /// Each of these actions appears.
    pub actions: Vec<String>,
    /// Each of these prompts (`lang:id`) was played.
    pub prompts: Vec<String>,
}

impl Expect {
    /// The mismatches between this expectation and a call record; empty when it holds.
    pub fn check(&self, record: &serde_json::Value) -> Vec<String> {
        let mut bad = Vec::new();
        let field = |name: &str| record[name].as_str().unwrap_or("").to_string();
        let list = |name: &str| -> Vec<String> {
            record[name]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        for (name, want) in [
            ("lang", &self.lang),
            ("intent", &self.intent),
            ("digits", &self.digits),
            ("outcome", &self.outcome),
            ("mode", &self.mode),
        ] {
            if let Some(want) = want
                && field(name) != *want
            {
                bad.push(format!("{name}: expected {want:?}, got {:?}", field(name)));
            }
        }
        let actions = list("actions");
        if let Some(ch) = &self.link_sent {
            let prefix = format!("send_link:{ch}:");
            if !actions.iter().any(|a| a.starts_with(&prefix)) {
                bad.push(format!("link by {ch}: not sent (actions {actions:?})"));
            }
        }
        if let Some(t) = &self.transfer {
            let ok = if t == "any" {
                actions.iter().any(|a| a.starts_with("transfer:"))
            } else {
                actions.contains(&format!("transfer:{t}"))
            };
            if !ok {
                bad.push(format!("transfer {t}: not done (actions {actions:?})"));
            }
        }
        for a in &self.actions {
            if !actions.contains(a) {
                bad.push(format!("action {a}: missing (actions {actions:?})"));
            }
        }
        let prompts = list("prompts");
        for p in &self.prompts {
            if !prompts.contains(p) {
                bad.push(format!("prompt {p}: not played"));
            }
        }
        bad
    }
}

#[derive(Debug)]
pub enum ManifestError {
    Read(PathBuf, std::io::Error),
    Parse(PathBuf, String),
    Invalid(String),
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ManifestError::Read(p, e) => write!(f, "{}: {e}", p.display()),
            ManifestError::Parse(p, e) => write!(f, "{}: {e}", p.display()),
            ManifestError::Invalid(e) => f.write_str(e),
        }
    }
}

impl std::error::Error for ManifestError {}

impl Manifest {
    pub fn parse(text: &str, origin: &Path) -> Result<Manifest, ManifestError> {
        let m: Manifest = toml::from_str(text)
            .map_err(|e| ManifestError::Parse(origin.to_path_buf(), e.to_string()))?;
        m.validate()?;
        Ok(m)
    }

    pub fn load(path: &Path) -> Result<Manifest, ManifestError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ManifestError::Read(path.to_path_buf(), e))?;
        Manifest::parse(&text, path)
    }

    fn validate(&self) -> Result<(), ManifestError> {
        if self.scripts.is_empty() {
            return Err(ManifestError::Invalid(
                "no [[script]] in the manifest".into(),
            ));
        }
        for s in &self.scripts {
            if s.name.is_empty() {
                return Err(ManifestError::Invalid("a script has no name".into()));
            }
            if s.steps.is_empty() {
                return Err(ManifestError::Invalid(format!(
                    "script {}: no steps",
                    s.name
                )));
            }
            if let Some(c) = &s.codec
                && c != "pcmu"
                && c != "pcma"
            {
                return Err(ManifestError::Invalid(format!(
                    "script {}: codec {c:?} (pcmu or pcma)",
                    s.name
                )));
            }
            for step in &s.steps {
                if let Step::Dtmf { digits, .. } = step
                    && let Some(bad) = digits
                        .chars()
                        .find(|&c| ivr_proto::rtp::dtmf::digit_event(c).is_none())
                {
                    return Err(ManifestError::Invalid(format!(
                        "script {}: {bad:?} is not a DTMF key",
                        s.name
                    )));
                }
            }
        }
        Ok(())
    }

    /// The script of the `n`th call: weighted round robin, deterministic.
    pub fn script_for(&self, n: usize) -> &Script {
        let total: usize = self.scripts.iter().map(|s| s.weight() as usize).sum();
        let mut k = n % total.max(1);
        for s in &self.scripts {
            let w = s.weight() as usize;
            if k < w {
                return s;
            }
            k -= w;
        }
        // total ≥ 1 only when some script has weight ≥ 1; with all weights 0 take the first
        // (validate guarantees there is one).
        &self.scripts[0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
caller = "2025550134"
[objectives]
response_p99_ms = 1500
[[script]]
name = "case-status"
weight = 2
steps = [
  { type = "wait_prompt" },
  { type = "dtmf", digits = "11", wait_ms = 500 },
  { type = "audio", file = "x.wav" },
  { type = "hangup" },
]
[script.expect]
intent = "case_status"
link_sent = "sms"
[[script]]
name = "tty"
steps = [{ type = "tty", text = "hello" }, { type = "silence", ms = 100 }]
"#;

    #[test]
    fn parses_steps_expectations_and_weights() {
        let m = Manifest::parse(SAMPLE, Path::new("m.toml")).unwrap();
        assert_eq!(m.scripts.len(), 2);
        assert_eq!(m.objectives.response_p99_ms, Some(1500.0));
        let s = &m.scripts[0];
        assert_eq!(s.steps.len(), 4);
        assert!(
            matches!(&s.steps[1], Step::Dtmf { digits, wait_ms: Some(500), .. } if digits == "11")
        );
        assert_eq!(s.expect.link_sent.as_deref(), Some("sms"));
        // Weighted round robin: two of every three calls run the first script.
        let names: Vec<&str> = (0..6).map(|n| m.script_for(n).name.as_str()).collect();
        assert_eq!(
            names,
            [
                "case-status",
                "case-status",
                "tty",
                "case-status",
                "case-status",
                "tty"
            ]
        );
    }

    #[test]
    fn rejects_unknown_fields_bad_keys_and_empty() {
        let bad_field = SAMPLE.replace("link_sent", "link_snet");
        assert!(Manifest::parse(&bad_field, Path::new("m")).is_err());
        let bad_key = SAMPLE.replace("digits = \"11\"", "digits = \"1x\"");
        let e = Manifest::parse(&bad_key, Path::new("m")).unwrap_err();
        assert!(e.to_string().contains("'x'"), "{e}");
        assert!(Manifest::parse("", Path::new("m")).is_err());
        for junk in ["[[script]]\nname=1", "steps = 3", "\u{0}"] {
            assert!(Manifest::parse(junk, Path::new("m")).is_err());
        }
    }

    #[test]
    fn expectation_names_each_mismatch() {
        let e = Expect {
            intent: Some("case_status".into()),
            link_sent: Some("sms".into()),
            transfer: Some("any".into()),
            digits: Some("114".into()),
            ..Expect::default()
        };
        let good = serde_json::json!({"intent": "case_status", "digits": "114",
            "actions": ["send_link:sms:case_status", "transfer:tier1"]});
        assert!(e.check(&good).is_empty());
        let bad = serde_json::json!({"intent": "hours", "digits": "11", "actions": []});
        let errs = e.check(&bad);
        assert_eq!(errs.len(), 4, "{errs:?}");
        assert!(errs[0].contains("intent") && errs[0].contains("hours"));
        // A record that is not an object at all fails every set field, without panicking.
        assert_eq!(e.check(&serde_json::json!(null)).len(), 4);
    }

    #[test]
    fn flags_override_objectives() {
        let a = Objectives {
            response_p99_ms: Some(1.0),
            loss_max_pct: Some(2.0),
            ..Objectives::default()
        };
        let b = Objectives {
            response_p99_ms: Some(5.0),
            ..Objectives::default()
        };
        let m = a.merged(&b);
        assert_eq!(m.response_p99_ms, Some(5.0));
        assert_eq!(m.loss_max_pct, Some(2.0));
    }
}
