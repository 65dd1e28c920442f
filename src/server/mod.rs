//! The shell: the only code that touches sockets, clocks, threads, files and databases.
//!
//! - `sip_task` owns the SIP endpoint and sockets and spawns a task per call;
//! - `call` is the per-call media loop (RTP in/out, DTMF, the call flow);
//! - `admin` serves `/healthz`, `/readyz`, `/metrics`, `/calls/{id}`;
//! - `store` keeps call records (SQLite or PostgreSQL) from its own writer thread, buffering
//!   them in memory while storage fails;
//! - `reload` watches `prompts/` and swaps in a new prompt set when a valid edit lands.

pub mod admin;
pub mod asr_pool;
pub mod bridge;
pub mod call;
pub mod call_asr;
pub mod lag;
pub mod media;
pub mod metrics;
mod mmsg;
pub mod outgoing;
pub mod reload;
pub mod rtt_session;
pub mod sip_task;
pub mod store;
pub mod store_pg;
mod uring;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, UdpSocket};

use crate::config::Config;
use crate::speech::cache::{self, PromptSet, RenderConfig};
use crate::speech::tts::Voice;
use metrics::Metrics;
use store::Store;

/// An immutable value swapped whole on reload; readers keep the `Arc` they loaded.
pub struct Snapshot<T>(RwLock<Arc<T>>);

impl<T> Snapshot<T> {
    pub fn new(value: T) -> Self {
        Snapshot(RwLock::new(Arc::new(value)))
    }
    pub fn load(&self) -> Arc<T> {
        // A poisoned lock still holds a valid Arc: a panic cannot leave it half-written.
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
    pub fn store(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = value;
    }
}

/// State shared by the shell's tasks.
pub struct Shared {
    pub config: Config,
    pub metrics: Arc<Metrics>,
    /// What the SIP edge guard dropped, refused and banned.
    pub edge: metrics::EdgeMetrics,
    /// Lateness of every outgoing RTP packet against its deadline (pacing quality).
    pub send_lateness: metrics::Histogram,
    pub store: Arc<Store>,
    pub prompts: Snapshot<PromptSet>,
    pub nlu: Snapshot<crate::nlu::Nlu>,
    /// The routing policy and business calendar.
    pub router: crate::routing::Router,
    /// Intents whose answer has a link with an address (sendable by SMS or email).
    pub sms_links: std::collections::HashSet<String>,
    /// Links to send, stored durably before the caller hears "sent".
    pub outbox: Arc<crate::outbox::Store>,
    /// Prompts loaded and SIP running.
    pub ready: std::sync::atomic::AtomicBool,
    /// Speech recognition workers, set once at start-up (before `ready`); empty when no
    /// language has a recognizer.
    pub asr: std::sync::OnceLock<asr_pool::AsrPool>,
    /// Time from the end of a caller's utterance to the reply starting to play.
    pub reply_latency: metrics::Histogram,
    /// Read-backs rendered on demand.
    pub dynamic: Arc<crate::speech::dynamic::DynamicPrompts>,
}

impl Shared {
    /// The languages callers can speak in now.
    pub fn speech_langs(&self) -> std::collections::HashSet<crate::types::Lang> {
        // Only languages a recognizer serves: listening in the others would tell every caller
        // "I can't take spoken answers right now".
        self.asr
            .get()
            .map(|p| p.engines().languages())
            .unwrap_or_default()
    }

    /// Which recognizer serves each language (`/readyz`, the start-up log).
    pub fn asr_backends(&self) -> serde_json::Value {
        let engines = self.asr.get().map(|p| p.engines());
        let mut out = serde_json::Map::new();
        for lang in crate::types::Lang::ALL {
            let backend = engines
                .as_ref()
                .and_then(|e| e.engine(lang).map(|e| e.backend().to_string()))
                .unwrap_or_else(|| "none".into());
            out.insert(lang.code().into(), backend.into());
        }
        out.into()
    }
}

/// Where PocketSphinx's generated language model and dictionary go.
pub fn asr_work_dir(config: &Config) -> std::path::PathBuf {
    config.paths.data_dir.join("asr")
}

/// Load the recognizers of `[asr]` for the grammars of `nlu`. A backend the operator configured
/// that cannot load stops the start with the reason; the embedded default's PocketSphinx missing
/// (Debian package not installed) leaves English to the keypad, with a warning.
pub fn load_engines(config: &Config, nlu: &crate::nlu::Nlu) -> anyhow::Result<crate::asr::Engines> {
    let work = asr_work_dir(config);
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    match crate::asr::Engines::load(&config.asr, nlu, &work) {
        Ok(e) => Ok(e),
        Err(e) => {
            let explicit =
                config.asr.en != Default::default() || config.asr.es != Default::default();
            if explicit {
                Err(anyhow::anyhow!("speech recognition: {e}"))
            } else {
                tracing::warn!(error = %e, "no speech recognizer: callers use the keypad");
                Ok(crate::asr::Engines::default())
            }
        }
    }
}

pub fn render_config(config: &Config) -> RenderConfig {
    RenderConfig {
        voice_en: Voice {
            name: config.tts.voice_en.clone(),
            speed: config.tts.speed,
        },
        voice_es: Voice {
            name: config.tts.voice_es.clone(),
            speed: config.tts.speed,
        },
        cache_dir: config.paths.tts_cache(),
        seed_dir: (!config.paths.tts_seed_dir.as_os_str().is_empty())
            .then(|| config.paths.tts_seed_dir.clone()),
    }
}

/// The intents whose policy names a link with an address: their answer can be texted.
pub fn sendable_links(router: &crate::routing::Router) -> std::collections::HashSet<String> {
    let policy = router.policy();
    crate::intents::INTENTS
        .iter()
        .filter(|id| {
            policy
                .intent(id)
                .and_then(|p| p.link.as_deref())
                .and_then(|l| policy.link(l))
                .is_some_and(|l| l.url.is_some())
        })
        .map(|id| id.to_string())
        .collect()
}

/// Every `*.txt` under `<dir>/en` and `<dir>/es`, sorted, as grammar sources; the grammars
/// built into the binary (`assets`) when `dir` does not exist.
pub fn load_grammar_sources(dir: &std::path::Path) -> anyhow::Result<Vec<crate::nlu::Source>> {
    if crate::assets::use_embedded(dir) {
        tracing::info!(dir = %dir.display(), "grammars: directory not found, using the built-in grammars");
        return Ok(crate::assets::grammar_sources());
    }
    tracing::debug!(dir = %dir.display(), "grammars: from the directory");
    let mut sources = Vec::new();
    for lang in crate::types::Lang::ALL {
        let sub = dir.join(lang.code());
        let mut paths: Vec<_> = std::fs::read_dir(&sub)
            .with_context(|| format!("reading {}", sub.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "txt"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            sources.push(crate::nlu::Source { path, text });
        }
    }
    Ok(sources)
}

/// The prompt files under `dir`; the prompts built into the binary when `dir` does not exist.
pub fn load_prompt_sources(dir: &std::path::Path) -> anyhow::Result<Vec<crate::speech::Source>> {
    if crate::assets::use_embedded(dir) {
        tracing::info!(dir = %dir.display(), "prompts: directory not found, using the built-in prompts");
        return Ok(crate::assets::prompt_sources());
    }
    tracing::debug!(dir = %dir.display(), "prompts: from the directory");
    crate::speech::read_sources(dir).with_context(|| format!("reading {}", dir.display()))
}

/// Parse, validate and train the grammars; any diagnostic rejects the whole set.
pub fn load_grammars(dir: &std::path::Path) -> anyhow::Result<crate::nlu::Nlu> {
    let sources = load_grammar_sources(dir)?;
    crate::nlu::build(&sources).map_err(|errs| {
        anyhow::anyhow!(
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

/// Read and parse `prompts/`; every diagnostic (`file:line: message`) in the error.
pub fn load_catalog(dir: &std::path::Path) -> anyhow::Result<crate::speech::Catalog> {
    let sources = load_prompt_sources(dir)?;
    crate::speech::Catalog::parse(&sources).map_err(|errs| diagnostics(&errs))
}

/// Diagnostics as one error, a line each.
pub fn diagnostics(errs: &[crate::diag::Diagnostic]) -> anyhow::Error {
    anyhow::anyhow!(
        errs.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    )
}

/// Load, check, render and encode the prompts under the configured directory.
/// Prompts unchanged since `previous` (same text, voice and recording) are reused as they are,
/// so an edit re-renders only what changed.
pub fn load_prompts(config: &Config, previous: Option<&PromptSet>) -> anyhow::Result<PromptSet> {
    let dir = &config.paths.prompts_dir;
    let catalog = load_catalog(dir)?;
    let missing = catalog.check_complete(&crate::speech::required_prompts(), dir);
    if !missing.is_empty() {
        anyhow::bail!(
            missing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    cache::build(catalog, dir, &render_config(config), threads, previous)
        .map_err(|e| anyhow::anyhow!(e))
}

/// Run the server until SIGTERM/SIGINT and a drain.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // Before anything slow: an admin API open to the network is refused at once.
    config.admin.check_exposure()?;
    let admin_token = config.admin.read_token()?;
    // Sockets first: a port conflict is reported at once, and SIP answers OPTIONS and INVITE
    // with 503 + Retry-After (what arrives while the grammars build waits in the buffers) while
    // the recognizers load and the prompts render, so a proxy probing this node sees it out of
    // service, not dead; /healthz answers and /readyz is 503 until then.
    let udp = UdpSocket::bind(config.sip.listen)
        .await
        .with_context(|| format!("binding SIP UDP {}", config.sip.listen))?;
    set_receive_buffer(&udp, SIP_RCVBUF_BYTES);
    let tcp = TcpListener::bind(config.sip.listen)
        .await
        .with_context(|| format!("binding SIP TCP {}", config.sip.listen))?;
    let tls = match config.sip.tls_listen_addr()? {
        Some(addr) => Some(sip_task::TlsListener {
            acceptor: sip_task::tls_acceptor(&config.sip.tls_cert, &config.sip.tls_key)?,
            listener: TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding SIP TLS {addr}"))?,
        }),
        None => None,
    };
    let admin = TcpListener::bind(config.admin.listen)
        .await
        .with_context(|| format!("binding admin {}", config.admin.listen))?;
    // Grammars are quick to build: a broken set stops the start with its file:line diagnostics.
    let nlu = load_grammars(&config.paths.grammars_dir)?;
    let policy_text = match &config.routing.policy {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let router = crate::routing::Router::from_config(&config.routing, policy_text.as_deref())
        .map_err(|e| anyhow::anyhow!("routing: {e}"))?;
    let sms_links = sendable_links(&router);
    let store = Arc::new(Store::from_config(&config)?);
    let outbox = Arc::new(
        crate::outbox::Store::from_config(&config).map_err(|e| anyhow::anyhow!("outbox: {e}"))?,
    );
    let shared = Arc::new(Shared {
        config: config.clone(),
        metrics: Arc::new(Metrics::default()),
        edge: Default::default(),
        send_lateness: metrics::Histogram::pacing(),
        store,
        prompts: Snapshot::new(PromptSet::default()),
        nlu: Snapshot::new(nlu),
        router,
        sms_links,
        outbox: outbox.clone(),
        ready: std::sync::atomic::AtomicBool::new(false),
        asr: std::sync::OnceLock::new(),
        reply_latency: metrics::Histogram::new(&metrics::LATENCY_BOUNDS_US),
        dynamic: Arc::new(crate::speech::dynamic::DynamicPrompts::new(
            config.tts.dynamic.clone(),
        )),
    });
    tokio::spawn(lag::watch(shared.metrics.clone()));
    let router = admin::router(shared.clone(), admin_token);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(admin, router).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });
    let (drain_tx, drain_rx) = tokio::sync::watch::channel(false);
    let sip = tokio::spawn(sip_task::run(
        shared.clone(),
        udp,
        tcp,
        tls,
        drain_rx.clone(),
    ));
    println!(
        "ivr: loading; SIP on {} answers 503 until ready",
        config.sip.listen
    );

    let asr_started = std::time::Instant::now();
    let engine_config = config.clone();
    let engine_nlu = shared.nlu.load();
    let engines =
        tokio::task::spawn_blocking(move || load_engines(&engine_config, &engine_nlu)).await??;
    let backends = engines.backends();
    if !backends.is_empty() {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        let pool = asr_pool::AsrPool::start(
            Arc::new(engines),
            config.asr.worker_count(cores),
            config.asr.queue_jobs_max,
            asr_pool::Limits {
                recognizers: config.asr.recognizers_per_worker,
                waiting: config.asr.waiting_per_worker,
                // Audio of a whole utterance at the highest engine rate (16 kHz).
                wait_samples: config.asr.max_utterance_ms as usize * 16,
                wait_after_end: Duration::from_millis(config.asr.wait_after_end_ms.into()),
                max_lag: Duration::from_millis(config.asr.admission_max_lag_ms.into()),
            },
        );
        // Set once, here, before `ready`: nothing reads it while SIP still refuses calls.
        let _ = shared.asr.set(pool);
    }
    for lang in crate::types::Lang::ALL {
        let backend = backends
            .iter()
            .find(|(l, _)| *l == lang)
            .map(|(_, b)| b.to_string())
            .unwrap_or_else(|| "none (keypad only)".into());
        tracing::info!(%lang, %backend, "speech recognition");
        println!("ivr: speech recognition {lang}: {backend}");
    }
    tracing::info!(
        ms = asr_started.elapsed().as_millis() as u64,
        "recognizers loaded"
    );

    let prompt_config = config.clone();
    let prompts = tokio::task::spawn_blocking(move || load_prompts(&prompt_config, None)).await??;
    let [_, cached, seeded, rendered] = prompts.origins;
    tracing::info!(
        prompts = prompts.len(),
        cached,
        seeded,
        rendered,
        ms = started.elapsed().as_millis() as u64,
        "prompts rendered and encoded"
    );
    shared.prompts.store(Arc::new(prompts));
    // The delivery worker finishes the sends in flight when the server drains.
    let worker = tokio::spawn(crate::outbox::run_worker(
        outbox,
        config.outbox.clone(),
        drain_rx.clone(),
    ));
    tokio::spawn(reload::watch(shared.clone()));
    shared.ready.store(true, Relaxed);
    tracing::info!(sip = %config.sip.listen, admin = %config.admin.listen, rtp = %config.media.rtp_ports,
        data = %config.paths.data_dir.display(), ms = started.elapsed().as_millis() as u64, "ivr serving");
    println!(
        "ivr: listening on sip:{} (udp+tcp), admin http://{}",
        config.sip.listen, config.admin.listen
    );

    tokio::select! {
        r = sip => { r??; return Ok(()); }
        _ = shutdown_signal() => {}
    }
    // Drain: no new calls, live calls finish (bounded by the drain timeout), then exit.
    shared.metrics.draining.store(1, Relaxed);
    let _ = drain_tx.send(true);
    let deadline =
        tokio::time::Instant::now() + Duration::from_secs(config.calls.drain_timeout_secs + 5);
    while shared.metrics.calls_active.load(Relaxed) > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Give the final BYEs and records a moment to leave.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let store = shared.store.clone();
    tokio::task::spawn_blocking(move || store.flush()).await?;
    if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(5), worker)
        .await
        .unwrap_or(Ok(Ok(())))
    {
        tracing::error!(error = %e, "outbox worker");
    }
    tracing::info!("drained; bye");
    Ok(())
}

/// A burst of INVITEs (a trunk failing over, a load test's level starting) overflowed the default
/// receive buffer (~200 KiB): a few were dropped and came back only with the 500 ms T1
/// retransmission. 4 MiB holds several thousand INVITEs (the kernel caps it at rmem_max).
const SIP_RCVBUF_BYTES: libc::c_int = 4 << 20;

fn set_receive_buffer(sock: &UdpSocket, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket fd owned by `sock` for the call, and a c_int option value of the
    // size given.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "SIP receive buffer not raised");
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
}
