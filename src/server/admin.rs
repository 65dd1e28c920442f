//! Admin HTTP: `/healthz` (the process is up), `/readyz` (taking calls), `/metrics`
//! (Prometheus text), `GET /calls/{call-id}` (the call's record, what the load tester checks).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::Shared;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/classify", get(classify))
        .route("/prompts/{lang}/{id}", get(prompt))
        .route("/calls", get(recent))
        .route("/calls/{call_id}", get(call))
        .with_state(shared)
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    let draining = shared.metrics.draining.load(Relaxed) != 0;
    let ready = shared.ready.load(Relaxed) && !draining;
    let body = serde_json::json!({
        "ready": ready,
        "draining": draining,
        "calls_active": shared.metrics.calls_active.load(Relaxed),
        "prompts": shared.prompts.load().len(),
        "asr": shared.asr_backends(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        let mut out = shared.metrics.render_all(&shared.send_lateness);
        shared.reply_latency.render_into(
            &mut out,
            "ivr_asr_reply_latency_seconds",
            "From the end of a caller's utterance (endpoint) to the reply starting to play.",
        );
        if let Some(pool) = &shared.asr {
            out.push_str(&pool.metrics().render());
        }
        out
    })
        .into_response()
}

async fn call(State(shared): State<Arc<Shared>>, Path(call_id): Path<String>) -> Response {
    let store = shared.store.clone();
    let found = tokio::task::spawn_blocking(move || store.call(&call_id)).await;
    match found {
        Ok(Ok(Some(record))) => Json(record).into_response(),
        Ok(Ok(None)) => (StatusCode::NOT_FOUND, "no such call\n").into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct Recent {
    limit: Option<usize>,
}

/// `GET /calls?limit=N`: the newest calls first (at most 1000).
async fn recent(State(shared): State<Arc<Shared>>, Query(q): Query<Recent>) -> Response {
    let store = shared.store.clone();
    let limit = q.limit.unwrap_or(20).min(1000);
    match tokio::task::spawn_blocking(move || store.recent(limit)).await {
        Ok(Ok(records)) => Json(records).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

#[derive(serde::Deserialize)]
struct ClassifyQuery {
    lang: Option<String>,
    text: String,
}

/// `GET /classify?lang=en&text=...`: what the running server's grammars make of a text (the same
/// JSON as `ivr classify`, slots redacted) — how ops and authors see a reload is live.
async fn classify(State(shared): State<Arc<Shared>>, Query(q): Query<ClassifyQuery>) -> Response {
    let Some(lang) = crate::types::Lang::from_code(q.lang.as_deref().unwrap_or("en")) else {
        return (StatusCode::BAD_REQUEST, "lang: en or es\n").into_response();
    };
    let nlu = shared.nlu.load();
    Json(nlu.classify_json_with(lang, &q.text, false)).into_response()
}

/// `GET /prompts/{lang}/{id}`: the prompt the server currently plays.
async fn prompt(
    State(shared): State<Arc<Shared>>,
    Path((lang, id)): Path<(String, String)>,
) -> Response {
    let Some(lang) = crate::types::Lang::from_code(&lang) else {
        return (StatusCode::BAD_REQUEST, "lang: en or es\n").into_response();
    };
    let set = shared.prompts.load();
    match set.get(lang, &id) {
        Some(p) => Json(serde_json::json!({
            "id": p.id,
            "lang": p.lang,
            "text": p.display,
            "barge_in": p.barge_in,
            "source": p.source,
            "duration_ms": p.duration_ms(),
        }))
        .into_response(),
        None => (StatusCode::NOT_FOUND, "no such prompt\n").into_response(),
    }
}
