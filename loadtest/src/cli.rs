//! Command line: `loadtest run` and `loadtest capacity`. Exit status 0 when every call met its
//! expectation and every objective held, 1 when not, 2 when the run could not start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::impair::Impairment;
use crate::manifest::Objectives;
use crate::run::{self, DEFAULT_SEED, RunOptions};

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    about = "Replay scripted calls against the ivr, measure, report"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Place calls from the manifest's scripts and check each against its expectation.
    Run(RunArgs),
    /// Ramp concurrency until a latency or loss objective breaks; report the highest level held.
    Capacity(CapacityArgs),
}

#[derive(Args, Debug, Clone)]
pub struct CommonArgs {
    /// The IVR's SIP URI.
    #[arg(long, default_value = "sip:ivr@127.0.0.1:5060")]
    pub target: String,
    /// Manifest of call scripts (TOML).
    #[arg(long)]
    pub manifest: PathBuf,
    /// Directory of the scripts' audio files (default: the manifest's `audio_dir`).
    #[arg(long)]
    pub audio_dir: Option<PathBuf>,
    /// Write report.json and report.html here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// The IVR's admin API, where call records are checked.
    #[arg(long)]
    pub admin: Option<String>,
    /// Do not check call records (no admin API reachable).
    #[arg(long)]
    pub no_check: bool,
    /// The IVR's process id for CPU/memory (default: the process holding the target's UDP port).
    #[arg(long)]
    pub ivr_pid: Option<u32>,
    /// RTP pacing threads shared by all calls.
    #[arg(long, default_value_t = 2)]
    pub sender_threads: usize,
    /// Seconds to wait for the 200 OK.
    #[arg(long, default_value_t = 15)]
    pub answer_timeout: u64,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Impair the callers' RTP on its way out:
    /// loss=PCT,jitter=MS,reorder=PCT,dup=PCT,drift=PPM,ssrc_change=S,ts_jump=S (any subset).
    #[arg(long, value_name = "SPEC", default_value = "none")]
    pub impair: Impairment,
    /// Seed of the impairment schedules (the same seed, the same packets impaired).
    #[arg(long, default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    #[arg(long)]
    pub response_p99_ms: Option<f64>,
    #[arg(long)]
    pub invite_p99_ms: Option<f64>,
    #[arg(long)]
    pub first_audio_p99_ms: Option<f64>,
    #[arg(long)]
    pub jitter_p99_ms: Option<f64>,
    #[arg(long)]
    pub pacing_p99_ms: Option<f64>,
    #[arg(long)]
    pub loss_max_pct: Option<f64>,
    #[arg(long)]
    pub failed_max_pct: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Total calls (default: one per script, or as many as fit in --duration).
    #[arg(long)]
    pub calls: Option<usize>,
    /// Calls in progress at once.
    #[arg(long, default_value_t = 10)]
    pub concurrency: usize,
    /// New calls per second at most.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Start no new call after this many seconds.
    #[arg(long)]
    pub duration: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct CapacityArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Concurrency levels to try, in order (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,20,50,100,200,500,1000"
    )]
    pub levels: Vec<usize>,
    /// Calls per level, as a multiple of the level's concurrency.
    #[arg(long, default_value_t = 2)]
    pub calls_per_level: usize,
    /// New calls per second at most (spreads each level's call starts).
    #[arg(long)]
    pub rate: Option<f64>,
}

impl CommonArgs {
    fn options(&self) -> RunOptions {
        RunOptions {
            target: self.target.clone(),
            manifest: self.manifest.clone(),
            audio_dir: self.audio_dir.clone(),
            report_dir: self.report.clone(),
            admin: self.admin.clone(),
            no_check: self.no_check,
            ivr_pid: self.ivr_pid,
            sender_threads: self.sender_threads,
            progress: !self.quiet,
            answer_timeout: Duration::from_secs(self.answer_timeout.clamp(1, 300)),
            impair: self.impair,
            seed: self.seed,
            objectives: Objectives {
                invite_p99_ms: self.invite_p99_ms,
                first_audio_p99_ms: self.first_audio_p99_ms,
                response_p99_ms: self.response_p99_ms,
                jitter_p99_ms: self.jitter_p99_ms,
                pacing_p99_ms: self.pacing_p99_ms,
                loss_max_pct: self.loss_max_pct,
                failed_max_pct: self.failed_max_pct,
            },
            ..RunOptions::default()
        }
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => {
            let mut o = a.common.options();
            o.calls = a.calls;
            o.concurrency = a.concurrency;
            o.rate = a.rate;
            o.duration = a
                .duration
                .filter(|d| d.is_finite() && *d > 0.0)
                .map(Duration::from_secs_f64);
            let r = run::run(&o)?;
            let f = &r.figures;
            println!(
                "{} calls: {} passed, {} failed · INVITE→200 p50 {:.1} ms p99 {:.1} ms · first audio p50 {:.0} ms · \
                 response p50 {:.0} ms p99 {:.0} ms · jitter p99 {:.2} ms · loss max {:.2} % · IVR pacing p99 {:.2} ms · \
                 sender tick lateness p99 {:.2} ms",
                r.calls.total,
                r.calls.passed,
                r.calls.failed,
                f.invite_ms.p50,
                f.invite_ms.p99,
                f.first_audio_ms.p50,
                f.response_ms.p50,
                f.response_ms.p99,
                f.jitter_ms.p99,
                f.loss_pct.max,
                f.pacing_error_ms.p99,
                r.sender.lateness_p99_ms
            );
            if let Some(i) = &f.impairment {
                println!(
                    "impairment {} (seed {}): {} packets, {} dropped, {} delayed, {} reordered, {} duplicated, \
                     {} SSRC changes, {} timestamp jumps",
                    r.settings.impair,
                    r.settings.seed,
                    i.generated,
                    i.dropped,
                    i.delayed,
                    i.reordered,
                    i.duplicated,
                    i.ssrc_changes,
                    i.ts_jumps
                );
            }
            if let Some(cer) = f.tty_cer_pct {
                println!(
                    "TTY: {} characters typed, character error rate {cer:.2} %",
                    f.tty_chars
                );
            }
            for fail in &r.failures {
                println!(
                    "FAILED call #{} (script {}, Call-ID {}): {}",
                    fail.call,
                    fail.script,
                    fail.call_id,
                    fail.errors.join("; ")
                );
            }
            for o in r.objectives.iter().filter(|o| !o.ok) {
                println!(
                    "MISSED objective {}: {:.2} > {:.2}",
                    o.name, o.value, o.limit
                );
            }
            Ok(if r.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Capacity(a) => {
            let mut o = a.common.options();
            o.rate = a.rate;
            let c = run::capacity(&o, &a.levels, a.calls_per_level)?;
            for l in &c.levels {
                println!(
                    "concurrency {:>5} (peak {}): {} · response p99 {:.0} ms · loss max {:.2} % · failed {}{}",
                    l.concurrency,
                    l.peak_active,
                    if l.passed { "held" } else { "BROKE" },
                    l.response_p99_ms,
                    l.loss_max_pct,
                    l.failed_calls,
                    if l.broken.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", l.broken.join(", "))
                    }
                );
            }
            println!("sustained concurrency: {}", c.sustained_concurrency);
            Ok(if c.sustained_concurrency > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}
