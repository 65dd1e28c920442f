//! SIP over TLS and SRTP against a real peer: a baresip caller dials the IVR's TLS port and
//! hears the greeting; a capture of the loopback shows no SIP in clear on the TLS port and only
//! SRTP on the media ports; RFC 4733 over SRTP; a plain offer to `srtp = "required"` gets 488.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// A throw-away self-signed certificate and key for 127.0.0.1, made by the openssl CLI in the
/// test's own directory (never committed).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl");
    assert!(st.success(), "openssl made a certificate");
    (cert, key)
}

/// The TLS server, its port, and the test's directory.
fn tls_server(media_toml: &str) -> (Server, u16, PathBuf) {
    require("openssl");
    let dir = temp_dir("tls");
    let (cert, key) = self_signed(&dir);
    let tls_port = free_port();
    let server = Server::start(ServerOptions {
        sip_toml: format!(
            "tls_listen = \"127.0.0.1:{tls_port}\"\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
            cert.display(),
            key.display()
        ),
        media_toml: media_toml.into(),
        ..Default::default()
    });
    (server, tls_port, dir)
}

/// Run baresip in `dir` calling the IVR's TLS port for 12 s with the account's `mediaenc`
/// (empty: plain RTP); returns baresip's log.
fn baresip_over_tls(dir: &Path, tls_port: u16, mediaenc: &str) -> String {
    let mic = dir.join("mic.wav");
    let st = Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
        .arg(&mic)
        .args(["trim", "0", "15"])
        .status()
        .unwrap();
    assert!(st.success());
    let sip_port = free_port();
    let srtp_module = if mediaenc.is_empty() {
        ""
    } else {
        "module srtp.so\n"
    };
    std::fs::write(
        dir.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{sip_port}\nmodule_path /usr/lib/baresip/modules\n\
             module g711.so\nmodule aufile.so\nmodule sndfile.so\nmodule menu.so\n{srtp_module}module account.so\n\
             audio_player aufile,{dir}/played.wav\naudio_source aufile,{mic}\nsnd_path {dir}\n",
            dir = dir.display(),
            mic = mic.display()
        ),
    )
    .unwrap();
    let enc = if mediaenc.is_empty() {
        String::new()
    } else {
        format!(";mediaenc={mediaenc}")
    };
    std::fs::write(
        dir.join("accounts"),
        format!("<sip:2025550177@127.0.0.1;transport=tls>;regint=0;audio_codecs=PCMU{enc}\n"),
    )
    .unwrap();
    let out = Command::new("timeout")
        .args(["40", "baresip", "-f"])
        .arg(dir)
        .args([
            "-e",
            // The account's ;transport=tls is added to the dialled URI.
            &format!("/dial sip:ivr@127.0.0.1:{tls_port}"),
            "-t",
            "12",
        ])
        .current_dir(dir)
        .output()
        .expect("run baresip");
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

/// The greeting is in baresip's decoded-audio dump (as tests/baresip_caller_hears_greeting.rs).
fn assert_heard_greeting(dir: &Path, log: &str) {
    let dec = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("no decoded-audio dump; baresip log:\n{log}"));
    let (rate, heard) = read_wav(&dec);
    assert_eq!(rate, 8000);
    let first = heard
        .iter()
        .position(|s| s.unsigned_abs() > 300)
        .unwrap_or_else(|| panic!("the caller heard audio; baresip log:\n{log}"));
    let heard = &heard[first..];
    assert!(
        heard.len() > 8000 * 4,
        "at least 4 s of greeting heard ({} samples)",
        heard.len()
    );
    let greeting = say_prompt("en", "greeting", dir);
    let g0 = greeting
        .iter()
        .position(|s| s.unsigned_abs() > 300)
        .unwrap_or(0);
    let corr = envelope_correlation(heard, &greeting[g0..]);
    eprintln!("baresip (TLS) recording vs greeting: envelope correlation {corr:.3}");
    assert!(corr > 0.9, "the recording holds the greeting ({corr:.3})");
}

/// tshark's count of frames in `pcap` matching `display_filter`.
fn tshark_count(pcap: &Path, display_filter: &str) -> usize {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", display_filter])
        .output()
        .expect("run tshark");
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// The TCP payloads in `pcap` that hold SIP in clear ("SIP/2.0" anywhere in the segment).
fn clear_sip_segments(pcap: &Path) -> usize {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-Y", "tcp.len > 0", "-T", "fields", "-e", "tcp.payload"])
        .output()
        .expect("run tshark");
    let needle = "5349502f322e30"; // "SIP/2.0"
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|hex| hex.replace(':', "").to_ascii_lowercase().contains(needle))
        .count()
}

/// A call over TLS (plain RTP): established, greeting heard, no SIP in clear on the TLS port, and
/// the call record says tls.
#[test]
fn baresip_over_tls_hears_the_greeting() {
    require("baresip");
    require("sox");
    let (server, tls_port, dir) = tls_server("");
    let cap = Capture::start(&format!("tcp port {tls_port}"), &dir);
    let log = baresip_over_tls(&dir, tls_port, "");
    let pcap = cap.path.clone();
    drop(cap.stop());
    assert!(log.contains("Call established"), "baresip log:\n{log}");
    assert_heard_greeting(&dir, &log);
    let tls_frames = tshark_count(&pcap, "tls.app_data");
    let sip_frames = clear_sip_segments(&pcap);
    eprintln!("TLS port capture: {tls_frames} TLS frames, {sip_frames} SIP frames in clear");
    assert!(
        tls_frames >= 4,
        "the signalling went over TLS ({tls_frames} frames)"
    );
    assert_eq!(sip_frames, 0, "no SIP in clear on the TLS port");

    let (_, body) = server.get("/calls?limit=1");
    let calls: serde_json::Value = serde_json::from_str(&body).unwrap();
    let call = server.ended_call(
        calls[0]["call_id"].as_str().unwrap(),
        Duration::from_secs(10),
    );
    assert_eq!(call["transport"], "tls", "{call}");
    assert_eq!(call["end_reason"], "caller_bye", "{call}");
}

/// A baresip caller over TLS with `mediaenc=srtp-mand` (RTP/SAVP, SDES) to an IVR with
/// `srtp = "required"`: the call completes, the caller hears the greeting (its SRTP decrypted by
/// baresip's libsrtp-free `srtp` module), and on the wire every RTP packet to and from the IVR's
/// port is SRTP: an auth tag on each, and the IVR's payloads are not the G.711 greeting.
#[test]
fn baresip_srtp_mandatory_over_tls_hears_the_greeting_and_the_wire_is_encrypted() {
    require("baresip");
    require("sox");
    let (server, tls_port, dir) = tls_server("srtp = \"required\"\n");
    let (lo, hi) = server.rtp;
    let cap = Capture::start(
        &format!("udp portrange {lo}-{hi} or tcp port {tls_port}"),
        &dir,
    );
    let log = baresip_over_tls(&dir, tls_port, "srtp-mand");
    let pcap = cap.path.clone();
    let packets = cap.stop();
    assert!(log.contains("Call established"), "baresip log:\n{log}");
    assert_heard_greeting(&dir, &log);
    assert_eq!(
        clear_sip_segments(&pcap),
        0,
        "no SIP in clear on the TLS port"
    );

    let ivr_port = |p: u16| (lo..=hi).contains(&p);
    let (mut from_ivr, mut to_ivr) = (Vec::new(), 0usize);
    for c in &packets {
        let Some(rtp) = parse_rtp(&c.payload) else {
            continue;
        };
        if rtp.pt >= 72 && rtp.pt <= 76 {
            continue; // RTCP (SRTCP) on a port pair.
        }
        if ivr_port(c.src_port) && rtp.pt == 0 {
            from_ivr.push(rtp.payload.to_vec());
        } else if ivr_port(c.dst_port) && rtp.pt == 0 {
            to_ivr += 1;
            // 20 ms of PCMU is 160 bytes; SRTP adds a 4- or 10-byte tag.
            let tag = rtp.payload.len().checked_sub(160);
            assert!(
                matches!(tag, Some(4) | Some(10)),
                "caller packet of {} bytes: not SRTP",
                rtp.payload.len()
            );
        }
    }
    eprintln!(
        "captured {} IVR → caller and {to_ivr} caller → IVR PCMU packets",
        from_ivr.len()
    );
    assert!(
        from_ivr.len() > 200,
        "the IVR sent the greeting ({} packets)",
        from_ivr.len()
    );
    assert!(to_ivr > 200, "the caller sent audio ({to_ivr} packets)");
    for p in &from_ivr {
        let tag = p.len().checked_sub(160);
        assert!(
            matches!(tag, Some(4) | Some(10)),
            "IVR packet of {} bytes: not SRTP",
            p.len()
        );
    }
    // Decoded as if plain PCMU, the IVR's payloads are noise, not the greeting: the plain
    // greeting's envelope correlates > 0.9 (above), encrypted bytes do not.
    let as_plain: Vec<i16> = from_ivr
        .iter()
        .flat_map(|p| p[..160].iter().map(|&b| ulaw_to_linear(b)))
        .collect();
    let greeting = say_prompt("en", "greeting", &dir);
    let g0 = greeting
        .iter()
        .position(|s| s.unsigned_abs() > 300)
        .unwrap_or(0);
    let first = as_plain
        .iter()
        .position(|s| s.unsigned_abs() > 300)
        .unwrap_or(0);
    let corr = envelope_correlation(&as_plain[first..], &greeting[g0..]);
    eprintln!("wire payload decoded as plain PCMU vs greeting: envelope correlation {corr:.3}");
    assert!(
        corr < 0.5,
        "the wire does not carry the greeting in clear ({corr:.3})"
    );

    let (_, body) = server.get("/calls?limit=1");
    let calls: serde_json::Value = serde_json::from_str(&body).unwrap();
    let call = server.ended_call(
        calls[0]["call_id"].as_str().unwrap(),
        Duration::from_secs(10),
    );
    assert_eq!(call["transport"], "tls", "{call}");
    assert_eq!(call["end_reason"], "caller_bye", "{call}");
}

/// With `srtp = "required"`, a plain RTP/AVP offer gets 488; an RTP/SAVP offer with a usable
/// a=crypto is answered with RTP/SAVP and one a=crypto line under the offer's tag.
#[test]
fn plain_rtp_offer_to_srtp_required_gets_488() {
    let server = Server::start(ServerOptions {
        media_toml: "srtp = \"required\"\n".into(),
        ..Default::default()
    });
    let mut uac = Uac::new(server.sip);
    let sdp = uac.sdp("sendrecv");
    assert!(sdp.contains("RTP/AVP") && !sdp.contains("crypto"));
    uac.request("INVITE", &sdp, true);
    let resp = uac.final_response(Duration::from_secs(5));
    assert_eq!(resp.status(), Some(488), "{resp:?}");

    let mut uac = Uac::new(server.sip);
    let savp = uac.sdp("sendrecv").replace("RTP/AVP", "RTP/SAVP")
        + "a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n";
    uac.request("INVITE", &savp, true);
    let ok = uac.final_response(Duration::from_secs(5));
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    assert!(ok.body.contains("RTP/SAVP"), "{}", ok.body);
    let crypto: Vec<&str> = ok
        .body
        .lines()
        .filter(|l| l.starts_with("a=crypto:"))
        .collect();
    assert_eq!(crypto.len(), 1, "{}", ok.body);
    assert!(
        crypto[0].starts_with("a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:"),
        "{}",
        crypto[0]
    );
    // Our key is ours, not the offerer's echoed back.
    assert!(
        !crypto[0].contains("PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR"),
        "{}",
        crypto[0]
    );
}

/// RFC 4733 over SRTP (here over UDP signalling, the media path is the same): a caller keyed
/// with its own SDES key presses 1 in protected telephone-events and the IVR records the digit;
/// the same events sent in clear on the SRTP call are dropped (no digit). The IVR's own packets
/// unprotect with the key it announced and carry PCMU.
#[test]
fn rfc4733_digits_over_srtp_are_heard_and_clear_ones_are_not() {
    use ivr::rtp::srtp::{CryptoAttr, KeySalt, Protector, Suite, Unprotector};
    let server = Server::start(ServerOptions {
        media_toml: "srtp = \"required\"\n".into(),
        ..Default::default()
    });
    let ours = KeySalt([0x42; 30]);
    for protect in [true, false] {
        let mut uac = Uac::new(server.sip);
        let offer = uac.sdp("sendrecv").replace("RTP/AVP", "RTP/SAVP")
            + &format!(
                "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:{}\r\n",
                ours.to_base64()
            );
        let branch = uac.request("INVITE", &offer, true);
        let ok = uac.final_response(Duration::from_secs(5));
        assert_eq!(ok.status(), Some(200), "{ok:?}");
        uac.ack(true, &branch);
        let theirs = ok
            .body
            .lines()
            .find_map(|l| l.strip_prefix("a=crypto:"))
            .and_then(CryptoAttr::parse)
            .expect("the IVR's a=crypto");
        assert_eq!(theirs.suite, Suite::AesCm128HmacSha1_80);
        let port: u16 = ok
            .body
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|l| l.split(' ').next())
            .and_then(|p| p.parse().ok())
            .expect("m=audio port");
        let ivr_rtp = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        // The IVR's greeting arrives protected with its key.
        let mut rx = Unprotector::new(theirs.suite, &theirs.key).unwrap();
        let mut buf = [0u8; 2048];
        let mut heard = 0;
        while heard < 20 {
            let (n, _) = uac.rtp.recv_from(&mut buf).expect("IVR RTP");
            let m = rx
                .unprotect(&mut buf[..n])
                .expect("the IVR's packet unprotects");
            let rtp = parse_rtp(&buf[..m]).unwrap();
            assert_eq!((rtp.pt, rtp.payload.len()), (0, 160));
            heard += 1;
        }
        // Key 1 as RFC 4733 events: start, two updates, three end packets (same timestamp).
        let mut tx = Protector::new(Suite::AesCm128HmacSha1_80, &ours).unwrap();
        let mut out = [0u8; 12 + 4 + ivr::rtp::srtp::MAX_TRAILER];
        for (i, (dur, end)) in [
            (160u16, false),
            (320, false),
            (480, false),
            (640, true),
            (640, true),
            (640, true),
        ]
        .into_iter()
        .enumerate()
        {
            out[..12]
                .copy_from_slice(&[0x80, 101, 0, i as u8, 0, 0, 0x10, 0, 0xca, 0xfe, 0xba, 0xbe]);
            if i == 0 {
                out[1] |= 0x80;
            }
            out[12] = 1;
            out[13] = if end { 0x80 | 10 } else { 10 };
            out[14..16].copy_from_slice(&dur.to_be_bytes());
            let n = if protect {
                tx.protect(&mut out, 16).unwrap()
            } else {
                16
            };
            uac.rtp.send_to(&out[..n], ivr_rtp).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(500));
        uac.request("BYE", "", true);
        let call = server.ended_call(&uac.call_id, Duration::from_secs(10));
        let digits = call["digits"].as_str().unwrap_or_default().to_string();
        eprintln!("protected {protect}: digits recorded {digits:?}");
        if protect {
            assert!(
                digits.contains('1'),
                "the protected key press is heard: {call}"
            );
        } else {
            assert!(
                !digits.contains('1'),
                "a key press in clear on an SRTP call is dropped: {call}"
            );
        }
    }
}
