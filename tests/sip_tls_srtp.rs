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
/// (empty: plain RTP), its RTP on the ports `rtp` (`common::rtp_ports`); returns baresip's log.
fn baresip_over_tls(dir: &Path, tls_port: u16, mediaenc: &str, rtp: (u16, u16)) -> String {
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
             audio_player aufile,{dir}/played.wav\naudio_source aufile,{mic}\nsnd_path {dir}\n\
             rtp_ports {rtp_lo}-{rtp_hi}\n",
            dir = dir.display(),
            mic = mic.display(),
            rtp_lo = rtp.0,
            rtp_hi = rtp.1,
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
    let log = baresip_over_tls(&dir, tls_port, "", rtp_ports());
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
/// baresip's libsrtp-free `srtp` module), and on the wire every RTP packet to and from the caller's
/// port is SRTP: an auth tag on each, and the IVR's payloads are not the G.711 greeting.
#[test]
fn baresip_srtp_mandatory_over_tls_hears_the_greeting_and_the_wire_is_encrypted() {
    require("baresip");
    require("sox");
    let (server, tls_port, dir) = tls_server("srtp = \"required\"\n");
    // Only this call's packets: baresip's RTP ports are pinned. (The IVR's range is random per
    // test server and may overlap a parallel test's; a plain-RTP call of the other TLS test
    // once landed in it and failed this check.)
    let (lo, hi) = rtp_ports();
    let cap = Capture::start(
        &format!("udp portrange {lo}-{hi} or tcp port {tls_port}"),
        &dir,
    );
    let log = baresip_over_tls(&dir, tls_port, "srtp-mand", (lo, hi));
    let pcap = cap.path.clone();
    let packets = cap.stop();
    assert!(log.contains("Call established"), "baresip log:\n{log}");
    assert_heard_greeting(&dir, &log);
    assert_eq!(
        clear_sip_segments(&pcap),
        0,
        "no SIP in clear on the TLS port"
    );

    let caller_port = |p: u16| (lo..=hi).contains(&p);
    let (mut from_ivr, mut to_ivr) = (Vec::new(), 0usize);
    for c in &packets {
        let Some(rtp) = parse_rtp(&c.payload) else {
            continue;
        };
        if rtp.pt >= 72 && rtp.pt <= 76 {
            continue; // RTCP (SRTCP) on a port pair.
        }
        if caller_port(c.dst_port) && rtp.pt == 0 {
            from_ivr.push(rtp.payload.to_vec());
        } else if caller_port(c.src_port) && rtp.pt == 0 {
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
    use ivr::rtp::srtp::{KeySalt, Protector, Suite, Unprotector};
    let server = Server::start(ServerOptions {
        media_toml: "srtp = \"required\"\n".into(),
        ..Default::default()
    });
    let ours = KeySalt([0x42; 30]);
    for protect in [true, false] {
        let mut uac = Uac::new(server.sip);
        let offer = uac.sdp_savp("AES_CM_128_HMAC_SHA1_80", &ours.to_base64());
        let branch = uac.request("INVITE", &offer, true);
        let ok = uac.final_response(Duration::from_secs(5));
        assert_eq!(ok.status(), Some(200), "{ok:?}");
        uac.ack(true, &branch);
        let theirs = answered_crypto(&ok);
        assert_eq!(theirs.suite, Suite::AesCm128HmacSha1_80);
        let ivr_rtp = Uac::remote_rtp(&ok);
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
        send_event(&uac, ivr_rtp, protect.then_some(&mut tx), 1, 0, 4096);
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

/// One RFC 4733 key press (start, two updates, three ends) from the UAC to `dest`, protected
/// with `tx` (or in clear without), sequence numbers from `seq`.
fn send_event(
    uac: &Uac,
    dest: std::net::SocketAddr,
    mut tx: Option<&mut ivr::rtp::srtp::Protector>,
    digit: u8,
    seq: u16,
    ts: u32,
) {
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
        out[..12].copy_from_slice(&[0x80, 101, 0, 0, 0, 0, 0, 0, 0xca, 0xfe, 0xba, 0xbe]);
        out[2..4].copy_from_slice(&seq.wrapping_add(i as u16).to_be_bytes());
        out[4..8].copy_from_slice(&ts.to_be_bytes());
        if i == 0 {
            out[1] |= 0x80;
        }
        out[12] = digit;
        out[13] = if end { 0x80 | 10 } else { 10 };
        out[14..16].copy_from_slice(&dur.to_be_bytes());
        let n = match tx.as_deref_mut() {
            Some(tx) => tx.protect(&mut out, 16).unwrap(),
            None => 16,
        };
        uac.rtp.send_to(&out[..n], dest).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends a re-INVITE with `offer`; returns the final response (ACKed).
fn reinvite(uac: &mut Uac, offer: &str) -> SipMsg {
    let branch = uac.request("INVITE", offer, true);
    let resp = uac.final_response(Duration::from_secs(5));
    uac.ack(resp.status() == Some(200), &branch);
    resp
}

fn answered_crypto(resp: &SipMsg) -> ivr::rtp::srtp::CryptoAttr {
    resp.body
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .and_then(ivr::rtp::srtp::CryptoAttr::parse)
        .unwrap_or_else(|| panic!("an a=crypto in {}", resp.body))
}

/// `n` of the IVR's packets unprotect under `key` (packets sent under an older key may still
/// be in flight: up to 25 are skipped).
fn ivr_packets_unprotect(uac: &Uac, crypto: &ivr::rtp::srtp::CryptoAttr, n: usize) {
    let mut rx = ivr::rtp::srtp::Unprotector::new(crypto.suite, &crypto.key).unwrap();
    let mut buf = [0u8; 2048];
    let (mut good, mut bad) = (0, 0);
    while good < n {
        let (len, _) = uac.rtp.recv_from(&mut buf).expect("IVR RTP");
        match rx.unprotect(&mut buf[..len]) {
            Ok(m) => {
                assert_eq!(parse_rtp(&buf[..m]).unwrap().payload.len(), 160);
                good += 1;
            }
            Err(_) => {
                bad += 1;
                assert!(
                    bad <= 25,
                    "the IVR's packets do not unprotect under the answered key"
                );
            }
        }
    }
}

/// Re-keying by re-INVITE (RFC 4568 §7.1.4) on an SRTP call: the caller's re-INVITE with a new
/// key (same suite) is answered with the IVR's unchanged key, and from then on a key press
/// protected with the caller's new key is heard while one under its old key is dropped. A
/// re-INVITE dropping SRTP on a `required` call gets 488 and the call goes on under its keys; one
/// changing the suite gets a fresh IVR key, and the IVR's audio then comes under it.
#[test]
fn reinvite_with_a_new_key_rekeys_the_caller_leg() {
    use ivr::rtp::srtp::{KeySalt, Protector, Suite};
    let server = Server::start(ServerOptions {
        media_toml: "srtp = \"required\"\n".into(),
        ..Default::default()
    });
    let (old, new) = (KeySalt([0x42; 30]), KeySalt([0x43; 30]));
    let savp =
        |uac: &Uac, suite: Suite, key: &KeySalt| uac.sdp_savp(suite.name(), &key.to_base64());
    let s80 = Suite::AesCm128HmacSha1_80;
    let mut uac = Uac::new(server.sip);
    let offer = savp(&uac, s80, &old);
    let ok = reinvite(&mut uac, &offer);
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    let ivr_key = answered_crypto(&ok);
    let ivr_rtp = Uac::remote_rtp(&ok);
    ivr_packets_unprotect(&uac, &ivr_key, 10);

    // New key, same suite: the IVR keeps its key; its stream goes on undisturbed.
    let offer = savp(&uac, s80, &new);
    let ok = reinvite(&mut uac, &offer);
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    assert_eq!(answered_crypto(&ok), ivr_key, "same suite: our key stays");
    ivr_packets_unprotect(&uac, &ivr_key, 10);
    // Key 3 under the old key (dropped), then key 1 under the new one (heard).
    let mut tx_old = Protector::new(s80, &old).unwrap();
    send_event(&uac, ivr_rtp, Some(&mut tx_old), 3, 100, 8000);
    let mut tx_new = Protector::new(s80, &new).unwrap();
    send_event(&uac, ivr_rtp, Some(&mut tx_new), 1, 200, 16000);

    // Dropping SRTP on a `required` call: 488, the session stays.
    let plain = uac.sdp("sendrecv");
    let refused = reinvite(&mut uac, &plain);
    assert_eq!(refused.status(), Some(488), "{refused:?}");
    ivr_packets_unprotect(&uac, &ivr_key, 10);

    // A new suite: a fresh key of ours, under which the IVR's audio now comes.
    let offer = savp(&uac, Suite::AesCm128HmacSha1_32, &new);
    let ok = reinvite(&mut uac, &offer);
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    let fresh = answered_crypto(&ok);
    assert_eq!(fresh.suite, Suite::AesCm128HmacSha1_32);
    assert_ne!(fresh.key, ivr_key.key, "a new suite gets a new key");
    ivr_packets_unprotect(&uac, &fresh, 10);

    std::thread::sleep(Duration::from_millis(300));
    uac.request("BYE", "", true);
    let call = server.ended_call(&uac.call_id, Duration::from_secs(10));
    let digits = call["digits"].as_str().unwrap_or_default().to_string();
    eprintln!("digits recorded after re-keying: {digits:?}");
    assert!(
        digits.contains('1'),
        "the new key's key press is heard: {call}"
    );
    assert!(
        !digits.contains('3'),
        "the old key's key press is dropped: {call}"
    );
    // And counted: every packet of the old key's key press failed authentication.
    let refused = server.metric("ivr_srtp_refused_total");
    assert!(refused > 0, "ivr_srtp_refused_total {refused}");
}
