//! A source flooding the IVR with SIP is banned within a second (Kamailio pike's behaviour:
//! silent drop while banned, UDP and TCP), while a second source's SIPp call goes on; the ban
//! shows on `/metrics` and as one log line that fail2ban's own `fail2ban-regex` matches with the
//! shipped filter.

mod common;

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;

/// The flood: this many OPTIONS per 10 ms step (5000/s) for 1.5 s.
const PER_STEP: usize = 50;
const FLOOD: Duration = Duration::from_millis(1500);

#[test]
fn a_flooding_source_is_banned_within_a_second_and_others_call_on() {
    require("sipp");
    require("fail2ban-regex");
    let server = Server::start(ServerOptions {
        extra_toml: "[security]\ntrusted = [\"127.0.0.0/8\"]\nrate_limit_per_sec = 100\n\
                     rate_limit_burst = 200\nban_secs = 60\n"
            .into(),
        ..ServerOptions::default()
    });
    let dir = temp_dir("flood");

    // Replies to the flooder, with their arrival times.
    let flooder = UdpSocket::bind("127.0.0.3:0").unwrap();
    let local = flooder.local_addr().unwrap();
    let replies: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let listener = {
        let sock = flooder.try_clone().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let replies = replies.clone();
        let until = Instant::now() + FLOOD + Duration::from_secs(2);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while Instant::now() < until {
                if let Ok((n, _)) = sock.recv_from(&mut buf)
                    && buf[..n].starts_with(b"SIP/2.0 ")
                {
                    replies.lock().unwrap().push(Instant::now());
                }
            }
        })
    };
    // A second source places a call while the flood runs.
    let caller = {
        let (sip, dir) = (server.sip, dir.clone());
        std::thread::spawn(move || sipp_call(sip, "127.0.0.4", 2000, &dir))
    };

    let start = Instant::now();
    let mut sent = 0usize;
    while start.elapsed() < FLOOD {
        for _ in 0..PER_STEP {
            let msg = format!(
                "OPTIONS sip:ivr@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-fl{sent}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:flood@{local}>;tag=f{sent}\r\nTo: <sip:ivr@{server}>\r\n\
                 Call-ID: flood-{sent}@{local}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                server = server.sip
            );
            let _ = flooder.send_to(msg.as_bytes(), server.sip);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let flood_time = start.elapsed();
    listener.join().unwrap();
    let replies = replies.lock().unwrap().clone();
    let last = replies
        .last()
        .map(|t| t.duration_since(start))
        .expect("the first messages of the burst are answered");
    eprintln!(
        "flood: {sent} OPTIONS in {flood_time:?}, {} answered, the last {last:?} after the start",
        replies.len()
    );
    assert!(
        last < Duration::from_secs(1),
        "the flooder was still answered {last:?} after it started"
    );
    assert!(
        replies.len() < sent / 4,
        "most of the flood went unanswered: {} of {sent}",
        replies.len()
    );

    // The other source's call went through, during the flood.
    let (ok, sipp) = caller.join().unwrap();
    assert!(
        ok,
        "the second source's call failed:\n{sipp}\n{}",
        server.log_text()
    );

    // Still banned, over UDP and TCP; everyone else is answered.
    let again = UdpSocket::bind("127.0.0.3:0").unwrap();
    assert_eq!(
        options_from(&again, server.sip, Duration::from_secs(2)),
        None,
        "the banned source is ignored"
    );
    let mut tcp = tcp_from("127.0.0.3", server.sip);
    let _ = tcp.write_all(b"OPTIONS sip:ivr@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.3:1;branch=z9hG4bK-t\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:ivr@c>\r\nCall-ID: t@1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n");
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut reply = Vec::new();
    let _ = tcp.read_to_end(&mut reply);
    assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
    let other = UdpSocket::bind("127.0.0.5:0").unwrap();
    assert_eq!(
        options_from(&other, server.sip, Duration::from_secs(5)),
        Some(200)
    );

    // Metrics: one ban, the rest of the flood dropped as banned.
    assert_eq!(server.metric("ivr_sip_bans_total"), 1);
    assert_eq!(server.metric("ivr_sip_dropped_total{reason=\"flood\"}"), 1);
    let banned = server.metric("ivr_sip_dropped_total{reason=\"banned\"}");
    assert!(
        banned as usize >= sent / 2,
        "{banned} of {sent} dropped as banned"
    );

    // One log line per ban, which fail2ban matches with the shipped filter.
    let log = server.log_text();
    let bans: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("SIP source banned"))
        .collect();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert!(
        bans[0].contains("SIP source banned src=127.0.0.3 reason=flood"),
        "{bans:?}"
    );
    let out = std::process::Command::new("fail2ban-regex")
        .arg(&server.log)
        .arg(repo().join("sip-configs/fail2ban/filter.d/ivr.conf"))
        .output()
        .expect("run fail2ban-regex");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let matched = text
        .lines()
        .find(|l| l.starts_with("Lines:"))
        .unwrap_or_default();
    assert!(
        matched.contains(" 1 matched"),
        "fail2ban matches the ban line and nothing else: {matched}\n{text}"
    );
}
