//! Command line: `loadtest run`, `loadtest capacity` and `loadtest soak`. Exit status 0 when
//! every call met its expectation and every objective held (a soak: and nothing grew), 1 when
//! not, 2 when the run could not start.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::impair::Impairment;
use crate::manifest::Objectives;
use crate::run::{self, DEFAULT_SEED, RunOptions};
use crate::soak::{self, Bounds, SoakOptions};

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
    /// The mix at a steady concurrency for a long time, the IVR sampled every interval; flags
    /// failed calls and memory, files, threads or queues that grow.
    Soak(SoakArgs),
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
    /// The IVR's process id for CPU/memory (default: the process holding the target's UDP port,
    /// unless the target is a proxy in front of --cluster / --node-admin nodes).
    #[arg(long)]
    pub ivr_pid: Option<u32>,
    /// A `scripts/cluster` cluster.json: the target is its proxy (Kamailio), and every node's CPU,
    /// memory and calls are read from its admin API (`/metrics`) during the run.
    #[arg(long, value_name = "FILE")]
    pub cluster: Option<PathBuf>,
    /// A node behind the target, measured through its admin API (repeat per node):
    /// `http://host:port` or `NAME=http://host:port`.
    #[arg(long, value_name = "[NAME=]URL")]
    pub node_admin: Vec<String>,
    /// File holding the admin API's bearer token (the IVR's `[admin] token_file`), sent to
    /// every admin API (call records and /metrics).
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
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

#[derive(Args, Debug, Clone)]
pub struct SoakArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// How long new calls start: 1h, 30m, 90s, 1h30m, or seconds.
    #[arg(long, value_parser = soak::parse_duration, default_value = "1h")]
    pub duration: Duration,
    /// Calls in progress at once.
    #[arg(
        long,
        required_unless_present = "capacity",
        conflicts_with = "capacity"
    )]
    pub concurrency: Option<usize>,
    /// A measured capacity (concurrent calls, e.g. `capacity`'s sustained level): soak at 80 % of it.
    #[arg(long)]
    pub capacity: Option<usize>,
    /// New calls per second at most (default: a fifth of the concurrency, so the level fills in 5 s
    /// without a burst of INVITEs).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Time between samples of the IVR.
    #[arg(long, value_parser = soak::parse_duration, default_value = "10s")]
    pub interval: Duration,
    /// Samples before this are not checked for growth (default: a third of the soak, at most 10m).
    #[arg(long, value_parser = soak::parse_duration)]
    pub warmup: Option<Duration>,
    /// After the last call: wait this long before the idle sample.
    #[arg(long, value_parser = soak::parse_duration, default_value = "15s")]
    pub settle: Duration,
    /// Flag resident memory growing faster than this after the warm-up (MiB per hour)...
    #[arg(long, default_value_t = 16.0)]
    pub rss_slope_max: f64,
    /// ...when its fitted rise over the checked window also exceeds this (MiB).
    #[arg(long, default_value_t = 16.0)]
    pub rss_rise_min: f64,
    /// Flag open files whose floor rises by more than this (and more left open after the drain).
    #[arg(long, default_value_t = 16.0)]
    pub fd_growth_max: f64,
    /// Flag threads whose floor rises by more than this.
    #[arg(long, default_value_t = 8.0)]
    pub thread_growth_max: f64,
    /// Flag ASR waiting utterances, outbox or call-record backlogs whose floor rises by more.
    #[arg(long, default_value_t = 20.0)]
    pub queue_growth_max: f64,
}

impl CommonArgs {
    fn options(&self) -> anyhow::Result<RunOptions> {
        let mut nodes = match &self.cluster {
            Some(path) => crate::nodes::load_cluster(path).map_err(anyhow::Error::msg)?,
            None => Vec::new(),
        };
        nodes.extend(crate::nodes::from_args(&self.node_admin).map_err(anyhow::Error::msg)?);
        let admin_token = match &self.admin_token_file {
            Some(path) => {
                let t = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                let t = t.trim();
                anyhow::ensure!(!t.is_empty(), "{}: empty token", path.display());
                Some(std::sync::Arc::from(t))
            }
            None => None,
        };
        Ok(RunOptions {
            target: self.target.clone(),
            manifest: self.manifest.clone(),
            audio_dir: self.audio_dir.clone(),
            report_dir: self.report.clone(),
            admin: self.admin.clone(),
            no_check: self.no_check,
            ivr_pid: self.ivr_pid,
            nodes,
            admin_token,
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
        })
    }
}

/// One line per node: its share of the calls and what they cost it.
fn print_nodes(nodes: &[crate::nodes::NodeFigures], indent: &str) {
    for n in nodes {
        println!(
            "{indent}node {} ({}): {} calls taken, {} rejected · CPU mean {:.1} % max {:.1} % of a core{} · \
             RSS {:.1} → {:.1} MiB (max {:.1}){}",
            n.name,
            n.admin,
            n.calls_taken,
            n.calls_rejected,
            n.cpu_pct_mean,
            n.cpu_pct_max,
            n.cpu_ms_per_call
                .map_or(String::new(), |c| format!(" ({c:.0} CPU-ms per call)")),
            n.rss_mib_start,
            n.rss_mib_end,
            n.rss_mib_max,
            if n.failed_samples > 0 {
                format!(
                    " · {} of {} samples failed: {}",
                    n.failed_samples,
                    n.samples + n.failed_samples,
                    n.last_error.as_deref().unwrap_or("-")
                )
            } else {
                String::new()
            }
        );
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => {
            let mut o = a.common.options()?;
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
                 sender tick lateness p99 {:.2} ms · tester CPU {:.0} % of a core, RSS {:.0} MiB",
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
                r.sender.lateness_p99_ms,
                r.sender.tester_cpu_pct,
                r.sender.tester_rss_mib
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
            print_nodes(&r.nodes, "");
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
        Command::Soak(a) => {
            let mut o = a.common.options()?;
            let concurrency = a
                .concurrency
                .or(a.capacity.map(soak::eighty_percent))
                .unwrap_or(1)
                .max(1);
            o.concurrency = concurrency;
            o.calls = None;
            o.duration = Some(a.duration);
            o.rate = a
                .rate
                .filter(|r| *r > 0.0)
                .or(Some((concurrency as f64 / 5.0).max(1.0)));
            let so = SoakOptions {
                run: o,
                capacity: a.capacity.filter(|_| a.concurrency.is_none()),
                interval: a.interval,
                warmup: a.warmup.unwrap_or(soak::default_warmup(a.duration)),
                settle: a.settle,
                bounds: Bounds {
                    rss_slope_mib_per_h: a.rss_slope_max,
                    rss_rise_min_mib: a.rss_rise_min,
                    fds: a.fd_growth_max,
                    threads: a.thread_growth_max,
                    queue: a.queue_growth_max,
                },
            };
            let r = soak::soak(&so)?;
            println!("{}", soak::summary_text(&r));
            Ok(if r.soak.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Capacity(a) => {
            let mut o = a.common.options()?;
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
                print_nodes(&l.nodes, "    ");
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
