//! Admin HTTP: `/healthz` (the process is up), `/readyz` (taking calls), `/metrics`
//! (Prometheus text, with the standard `process_*` CPU and memory of this node, what
//! `loadtest --cluster` samples per node), `GET /calls/{call-id}` (the call's record, what the
//! load tester checks).
//! With `[admin] token_file` set, everything but `/healthz` needs `Authorization: Bearer <token>`.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};

use super::Shared;

/// The admin routes; `token`, when set, guards all of them but `/healthz` (a load balancer's
/// liveness probe carries no secret).
pub fn router(shared: Arc<Shared>, token: Option<String>) -> Router {
    let token: Option<Arc<str>> = token.map(Arc::from);
    let guarded = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/classify", get(classify))
        .route("/prompts/{lang}/{id}", get(prompt))
        .route("/calls", get(recent))
        .route("/calls/{call_id}", get(call))
        .route_layer(middleware::from_fn_with_state(token, require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(guarded)
        .with_state(shared)
}

async fn require_token(
    State(token): State<Option<Arc<str>>>,
    request: Request,
    next: Next,
) -> Response {
    match token {
        Some(token) if !authorized(request.headers(), &token) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "unauthorized\n",
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

/// `Authorization: Bearer <token>` (the scheme in any case, RFC 9110 §11.1).
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, given)| secrets_equal(given.trim().as_bytes(), token.as_bytes()))
}

/// Constant-time comparison of two secrets: no early exit on the first difference (only
/// whether the lengths are equal leaks).
fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimizer from turning the fold back into an early-exit compare.
    std::hint::black_box(diff) == 0
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
        // Call records not yet written (storage slow or failing): calls go on regardless.
        "store": {
            "backlog_records": shared.store.stats().backlog(),
            "failing": shared.store.stats().failing(),
            "dropped_records": shared.store.stats().dropped(),
        },
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
        shared.edge.render_into(&mut out);
        shared.store.render_metrics(&mut out);
        shared.reply_latency.render_into(
            &mut out,
            "ivr_asr_reply_latency_seconds",
            "From the end of a caller's utterance (endpoint) to the reply starting to play.",
        );
        if let Some(pool) = shared.asr.get() {
            out.push_str(&pool.metrics().render());
        }
        out.push_str(&shared.outbox.metrics.render());
        super::metrics::render_process(&mut out);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_in_full() {
        assert!(secrets_equal(b"s3cret-token", b"s3cret-token"));
        assert!(!secrets_equal(b"s3cret-token", b"s3cret-tokeN"));
        assert!(!secrets_equal(b"s3cret-token", b"s3cret"));
        assert!(!secrets_equal(b"", b"x"));
    }

    #[test]
    fn bearer_header_is_required_and_checked() {
        let token = "0123456789abcdef";
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert!(authorized(&with("Bearer 0123456789abcdef"), token));
        assert!(authorized(&with("bearer  0123456789abcdef "), token));
        assert!(!authorized(&with("Bearer 0123456789abcdeF"), token));
        assert!(!authorized(&with("Basic 0123456789abcdef"), token));
        assert!(!authorized(&with("Bearer"), token));
        assert!(!authorized(&with("0123456789abcdef"), token));
        assert!(!authorized(&HeaderMap::new(), token));
    }
}
