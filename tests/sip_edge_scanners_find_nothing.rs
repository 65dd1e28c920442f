//! The IVR at the edge, against real scanners: with `trusted = ["127.0.0.1/32"]` a request from
//! 127.0.0.2 (UDP or TCP) gets no reply while one from 127.0.0.1 gets 200; SIPVicious `svmap`
//! and `svwar` (PyPI 0.3.x, from a trusted address) find nothing; a SIPp call placed right after
//! the scan succeeds; `/metrics` counts the drops by reason and the log has the fail2ban line.

mod common;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn untrusted_get_silence_scanners_find_nothing_and_calls_go_on() {
    require("sipp");
    let svmap = match sipvicious("svmap") {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let svwar = sipvicious("svwar").expect("svwar beside svmap");
    let server = Server::start(ServerOptions {
        extra_toml: "[security]\ntrusted = [\"127.0.0.1/32\"]\n".into(),
        ..ServerOptions::default()
    });

    // An untrusted source is answered by nothing, over UDP and over TCP; a trusted one gets 200.
    let untrusted = UdpSocket::bind("127.0.0.2:0").unwrap();
    assert_eq!(
        options_from(&untrusted, server.sip, Duration::from_secs(2)),
        None,
        "127.0.0.2 is not trusted: no reply"
    );
    let trusted = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        options_from(&trusted, server.sip, Duration::from_secs(5)),
        Some(200),
        "OPTIONS from a trusted source (a proxy's health probe) still gets 200"
    );
    assert_eq!(
        untrusted_tcp_reply(server.sip),
        "",
        "an untrusted TCP peer is closed without a reply"
    );

    // svmap: an OPTIONS sweep with User-Agent friendly-scanner, from the trusted address.
    let dir = temp_dir("scan");
    let scan_started = Instant::now();
    let out = run(
        svmap,
        &[
            "-b",
            "127.0.0.1",
            "-P",
            &free_port().to_string(),
            "-p",
            &server.sip.port().to_string(),
            "127.0.0.1",
        ],
        &dir,
    );
    eprintln!("svmap ({:?}):\n{out}", scan_started.elapsed());
    assert!(out.contains("found nothing"), "svmap found the IVR:\n{out}");
    assert!(!out.contains("ivr/"), "svmap read our User-Agent:\n{out}");

    // svwar: extension enumeration (REGISTER, then its fallbacks) from the trusted address.
    let war_started = Instant::now();
    let out = run(
        svwar,
        &[
            "-b",
            "127.0.0.1",
            "-P",
            &free_port().to_string(),
            "-p",
            &server.sip.port().to_string(),
            "-e",
            "100-199",
            "-D",
            "127.0.0.1",
        ],
        &dir,
    );
    eprintln!("svwar ({:?}):\n{out}", war_started.elapsed());
    let found_lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("| reqauth") || l.contains("| noauth") || l.contains("| weird"))
        .collect();
    assert!(
        found_lines.is_empty(),
        "svwar found extensions: {found_lines:?}\n{out}"
    );
    assert!(
        out.contains("found nothing")
            || out.contains("did not respond")
            || out.contains("not respond"),
        "svwar got no answer:\n{out}"
    );

    // A real caller from the same trusted address, right after the scan, is answered.
    let (ok, sipp) = sipp_call(server.sip, "127.0.0.1", 1000, &dir);
    assert!(
        ok,
        "the SIPp call after the scan failed:\n{sipp}\n{}",
        server.log_text()
    );
    let (_, body) = server.get("/calls?limit=5");
    let calls: serde_json::Value = serde_json::from_str(&body).unwrap();
    let call = server.ended_call(
        calls[0]["call_id"].as_str().expect("the call's record"),
        Duration::from_secs(10),
    );
    assert_eq!(call["end_reason"], "caller_bye", "{call}");

    // What the operator sees: drops by reason on /metrics, one fail2ban line for the scanner.
    let scanner = server.metric("ivr_sip_dropped_total{reason=\"scanner\"}");
    let untrusted = server.metric("ivr_sip_dropped_total{reason=\"untrusted\"}");
    assert!(scanner >= 2, "svmap's and svwar's probes: {scanner}");
    assert!(
        untrusted >= 1,
        "the UDP OPTIONS from 127.0.0.2: {untrusted}"
    );
    assert!(server.metric("ivr_sip_tcp_refused_total") >= 1);
    assert_eq!(
        server.metric("ivr_sip_bans_total"),
        0,
        "a scan is not a flood"
    );
    let log = server.log_text();
    let noted: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("SIP scanner dropped"))
        .collect();
    assert_eq!(noted.len(), 1, "one line per scanning source: {noted:?}");
    assert!(
        noted[0].ends_with("SIP scanner dropped src=127.0.0.1"),
        "{noted:?}"
    );
}

/// Connect from 127.0.0.2, send an OPTIONS, and return whatever came back before the close.
fn untrusted_tcp_reply(server: std::net::SocketAddr) -> String {
    let mut sock = tcp_from("127.0.0.2", server);
    let msg = format!(
        "OPTIONS sip:ivr@{server} SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.2:5999;branch=z9hG4bK-tcp1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@127.0.0.2>;tag=t1\r\nTo: <sip:ivr@{server}>\r\n\
         Call-ID: tcp-probe@127.0.0.2\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    // The server may already have closed it: a failed write is silence too.
    let _ = sock.write_all(msg.as_bytes());
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut reply = Vec::new();
    let _ = sock.read_to_end(&mut reply);
    String::from_utf8_lossy(&reply).into_owned()
}

/// Run a scanner to its end (bounded: svmap and svwar give up on silence within seconds; the
/// 60 s limit only guards against a hung interpreter) and return stdout + stderr.
fn run(mut cmd: std::process::Command, args: &[&str], dir: &std::path::Path) -> String {
    let log = dir.join(format!("scanner-{}.txt", rand_u32()));
    let file = std::fs::File::create(&log).unwrap();
    let mut child = cmd
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start the scanner");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.wait();
    std::fs::read_to_string(&log).unwrap_or_default()
}
