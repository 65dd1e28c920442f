//! The admin API behind a bearer token: with `[admin] token_file`, `GET /calls` without the
//! token is 401 and with it 200 (`/healthz` stays open for liveness probes); `ivr serve` with the
//! admin API on 0.0.0.0 and no token refuses to start, says why, and exits non-zero.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn calls_need_the_token_when_one_is_set() {
    let token = format!("tok-{:08x}{:08x}", rand_u32(), rand_u32().rotate_left(13));
    let server = Server::start(ServerOptions {
        admin_token: Some(token.clone()),
        ..ServerOptions::default()
    });
    for path in [
        "/calls",
        "/calls/nope",
        "/metrics",
        "/readyz",
        "/classify?text=hi",
    ] {
        let (status, _) = http_get(server.admin, path).unwrap();
        assert_eq!(status, 401, "{path} without the token");
        let (status, _) =
            http_get_auth(server.admin, path, Some("tok-wrong-but-long-enough")).unwrap();
        assert_eq!(status, 401, "{path} with a wrong token");
    }
    let (status, body) = http_get_auth(server.admin, "/calls", Some(&token)).unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.trim_start().starts_with('['), "{body}");
    let (status, _) = http_get_auth(server.admin, "/calls/nope", Some(&token)).unwrap();
    assert_eq!(status, 404);
    let (status, body) = http_get(server.admin, "/healthz").unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
}

#[test]
fn an_open_admin_api_off_loopback_refuses_to_start() {
    let data = temp_dir("admin-open");
    let config = data.join("ivr.toml");
    std::fs::write(
        &config,
        format!(
            "[sip]\nlisten = \"127.0.0.1:{}\"\n[admin]\nlisten = \"0.0.0.0:{}\"\n[paths]\ndata_dir = \"{}\"\n",
            free_port(),
            free_port(),
            data.display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ivr"))
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It must stop at once (before loading grammars, models, prompts): 20 s is generous.
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("ivr serve kept running with an open admin API on 0.0.0.0");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success(), "exit {status}: {stderr}");
    assert!(
        stderr.contains("admin.listen") && stderr.contains("token_file"),
        "the error says why: {stderr}"
    );
}
