//! The trunk refuses REFER: the IVR bridges (B2BUA). It calls the tier-1 queue itself — a SIPp
//! agent — and relays media both ways: the agent's audio (Debian's g711a.pcap, A-law) reaches
//! the caller (µ-law) and the caller's audio reaches the agent, both checked sample by sample;
//! the caller's BYE ends the agent leg. An agent who does not answer (486, or ringing until the
//! ring timeout and our CANCEL) leaves the caller with the apology and the menu with the link
//! offer. A trunk that accepts REFER still takes the call.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// The tier-1 queue is a SIPp agent on `agent_port`.
fn always_open(agent_port: u16) -> String {
    format!(
        "[routing]\nweekdays = [\"mon\", \"tue\", \"wed\", \"thu\", \"fri\", \"sat\", \"sun\"]\n\
         open = \"00:00\"\nclose = \"23:59\"\n[routing.queues]\ntier1 = \"sip:tier1@127.0.0.1:{agent_port}\"\n"
    )
}

/// In-band keys 1, 3, 1, 0 (English, documents, a typo by USCIS — tier 1 with a link that can
/// be texted — and a representative) with pauses.
fn keys_to_transfer(dir: &Path) -> Vec<i16> {
    let one = sox_tone(dir, "one", 697, 1209);
    let three = sox_tone(dir, "three", 697, 1477);
    let zero = sox_tone(dir, "zero", 941, 1336);
    let gap = vec![0i16; 8000 * 7 / 10];
    let mut audio = gap.clone();
    for key in [&one, &three, &one, &zero] {
        audio.extend(key.iter());
        audio.extend(gap.iter());
    }
    audio
}

/// A SIPp agent running `scenario` for one call, in the foreground (its exit status says
/// whether the call followed the scenario).
struct Agent {
    child: Child,
    dir: PathBuf,
}

impl Agent {
    fn start(scenario: &str, sip_port: u16, media_port: u16, dir: &Path) -> Agent {
        Agent::start_with(scenario, sip_port, media_port, dir, &[])
    }

    /// `extra`: e.g. `-s ivr 127.0.0.1:5060` for a scenario that places the call.
    fn start_with(
        scenario: &str,
        sip_port: u16,
        media_port: u16,
        dir: &Path,
        extra: &[&str],
    ) -> Agent {
        require("sipp");
        let child = Command::new("sipp")
            .arg("-sf")
            .arg(repo().join("sip-configs/sipp").join(scenario))
            .args(["-m", "1", "-i", "127.0.0.1", "-nostdin"])
            .args(["-p", &sip_port.to_string(), "-mp", &media_port.to_string()])
            .args(["-timeout", "90s", "-timeout_error"])
            .args(["-trace_msg", "-trace_err", "-message_file"])
            .arg(dir.join("sipp_messages.log"))
            .arg("-error_file")
            .arg(dir.join("sipp_errors.log"))
            .args(extra)
            // Scenarios name their own pcaps relative to the repo root.
            .current_dir(repo())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start sipp");
        // SIPp binds its sockets quickly; the IVR calls it only after a menu walk anyway.
        std::thread::sleep(Duration::from_millis(300));
        Agent {
            child,
            dir: dir.to_path_buf(),
        }
    }

    /// Wait for SIPp to finish its one call; true if the call followed the scenario.
    fn wait(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "sipp agent still running after {limit:?}:\n{}",
            self.messages()
        );
    }

    /// Every message SIPp saw and sent (`-trace_msg`), and its errors (`-trace_err`).
    fn messages(&self) -> String {
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.ends_with("_messages.log") || n.ends_with("_errors.log")
                })
            })
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .collect()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Calls the IVR, walks to the tier-1 transfer and refuses the REFER with 405.
fn call_and_refuse_refer(uac: &mut Uac, dir: &Path) -> std::net::SocketAddr {
    let ok = uac.call();
    let dest = Uac::remote_rtp(&ok);
    uac.send_pcmu(dest, &keys_to_transfer(dir), 1, 0);
    let refer = uac
        .wait_request("REFER", Duration::from_secs(20))
        .expect("a REFER from the IVR");
    uac.respond(&refer, 405, "Method Not Allowed");
    dest
}

/// Decoded frames of every G.711 RTP packet in `packets` (A-law or µ-law by payload type);
/// the recording's packets are 30 ms, the caller's 20 ms: the relay keeps packet sizes.
fn frames<'a>(packets: impl Iterator<Item = &'a [u8]>) -> Vec<Vec<i16>> {
    packets
        .filter_map(parse_rtp)
        .filter(|r| (r.pt == 0 || r.pt == 8) && !r.payload.is_empty())
        .map(|r| {
            r.payload
                .iter()
                .map(|&b| {
                    if r.pt == 8 {
                        alaw_to_linear(b)
                    } else {
                        ulaw_to_linear(b)
                    }
                })
                .collect()
        })
        .collect()
}

/// Same audio within G.711 re-quantization error (one law converted to the other).
fn same_frame(a: &[i16], b: &[i16]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(&x, &y)| {
            let (x, y) = (i32::from(x), i32::from(y));
            (x - y).abs() <= 48 + x.abs().max(y.abs()) / 12
        })
}

/// How many `received` frames with audio in them are one of the `sent` frames.
fn matching_frames(received: &[Vec<i16>], sent: &[Vec<i16>]) -> usize {
    received
        .iter()
        .filter(|f| rms(f) > 300.0)
        .filter(|f| sent.iter().any(|s| same_frame(f, s)))
        .count()
}

#[test]
fn a_refused_refer_is_bridged_and_media_flows_both_ways() {
    let dir = temp_dir("bridge");
    let (agent_port, agent_media) = (free_port(), free_port());
    let server = Server::start(ServerOptions {
        extra_toml: always_open(agent_port),
        ..ServerOptions::default()
    });
    if !open_now(&server.data_dir.join("ivr.toml")) {
        return; // a federal holiday: no transfer is offered (tested in transfer_by_refer)
    }
    let capture = Capture::start(&format!("udp and dst port {agent_media}"), &dir);
    let mut agent = Agent::start("agent_answers.xml", agent_port, agent_media, &dir);
    let mut uac = Uac::new(server.sip);
    let dest = call_and_refuse_refer(&mut uac, &dir);

    // The caller keeps talking (a 1 kHz tone: every 20 ms frame the same) while the agent
    // answers and plays its recording; what the IVR sent the caller so far is drained first.
    uac.rtp
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    while uac.rtp.recv_from(&mut [0u8; 2048]).is_ok() {}
    let tone: Vec<i16> = (0..8000 * 6)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 8000.0).sin()) as i16)
        .collect();
    let mut received: Vec<Vec<u8>> = Vec::new();
    let (mut seq, mut ts) = (1000u16, 500_000u32);
    for chunk in tone.chunks(8000 / 5) {
        uac.send_pcmu(dest, chunk, seq, ts);
        seq = seq.wrapping_add(10);
        ts = ts.wrapping_add(1600);
        let mut buf = [0u8; 2048];
        while let Ok((n, _)) = uac.rtp.recv_from(&mut buf) {
            received.push(buf[..n].to_vec());
        }
    }

    // The caller hangs up: the IVR ends the agent leg (SIPp gets its BYE and exits cleanly).
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    assert!(
        agent.wait(Duration::from_secs(20)),
        "the agent's call did not follow agent_answers.xml:\n{}",
        agent.messages()
    );
    let to_agent = capture.stop();

    // The bridged INVITE carried the call's context, as the REFER did.
    let messages = agent.messages();
    let invite = messages
        .split("INVITE sip:tier1@")
        .nth(1)
        .expect("the agent got an INVITE for the tier-1 queue");
    let uui_hex: String = "intent=typo_correction;lang=en;mode=voice;consent=none"
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(invite.contains(&uui_hex), "{invite}");
    assert!(
        !invite.contains("2025550134"),
        "no caller number to the agent"
    );

    // Agent → caller: the recording, converted from A-law, arrives at the caller.
    let recording = read_pcap(Path::new("/usr/share/sip-tester/g711a.pcap"));
    let recording = frames(recording.iter().map(|c| c.payload.as_slice()));
    assert!(recording.len() > 100);
    let heard = frames(received.iter().map(Vec::as_slice));
    let from_agent = matching_frames(&heard, &recording);
    assert!(
        from_agent >= 50,
        "{from_agent} of {} frames at the caller are the agent's audio",
        heard.len()
    );
    // Caller → agent: the caller's tone, converted to the agent's A-law, reaches the agent.
    let tone_frame = vec![tone[..160].to_vec()];
    let at_agent = frames(to_agent.iter().map(|c| c.payload.as_slice()));
    let from_caller = matching_frames(&at_agent, &tone_frame);
    assert!(
        from_caller >= 100,
        "{from_caller} of {} packets to the agent carry the caller's tone",
        at_agent.len()
    );
    // Our own SSRC toward the agent: not the caller's 0x12345678.
    assert!(
        to_agent
            .iter()
            .filter_map(|c| parse_rtp(&c.payload))
            .all(|r| r.ssrc != 0x1234_5678)
    );

    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["transfer"], "bridged", "{call}");
    assert_eq!(call["outcome"], "transferred", "{call}");
    assert_eq!(call["end_reason"], "caller_bye", "{call}");
    assert_eq!(call["route"], "tier1", "{call}");
    assert!(call["route_reason"].is_string(), "{call}");
}

/// Let the IVR talk for `secs` while keeping the caller's media alive.
fn listen(uac: &Uac, dest: std::net::SocketAddr, secs: usize) {
    uac.send_pcmu(dest, &vec![0i16; 8000 * secs], 3000, 900_000);
}

/// The after-answer menu with the link offer follows the apology.
/// The caller listens 3 s more (the apology), hangs up; the call's record.
fn listen_then_hang_up(
    uac: &mut Uac,
    dest: std::net::SocketAddr,
    server: &Server,
) -> serde_json::Value {
    listen(uac, dest, 3);
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    server.ended_call(&uac.call_id, Duration::from_secs(5))
}

fn assert_apology_and_link_menu(call: &serde_json::Value) {
    assert_eq!(
        prompt_after(call, "en:transfer_failed").as_deref(),
        Some("en:after_answer_link"),
        "{call}"
    );
    assert_ne!(call["outcome"], "transferred", "{call}");
    assert_eq!(call["end_reason"], "caller_bye", "{call}");
}

#[test]
fn a_busy_agent_leaves_the_caller_with_the_apology_and_the_link_offer() {
    let dir = temp_dir("bridge-busy");
    let (agent_port, agent_media) = (free_port(), free_port());
    let server = Server::start(ServerOptions {
        extra_toml: always_open(agent_port),
        ..ServerOptions::default()
    });
    if !open_now(&server.data_dir.join("ivr.toml")) {
        return;
    }
    let mut agent = Agent::start("agent_busy.xml", agent_port, agent_media, &dir);
    let mut uac = Uac::new(server.sip);
    let dest = call_and_refuse_refer(&mut uac, &dir);
    assert!(
        agent.wait(Duration::from_secs(15)),
        "the agent's call did not follow agent_busy.xml:\n{}",
        agent.messages()
    );
    let call = listen_then_hang_up(&mut uac, dest, &server);
    assert_apology_and_link_menu(&call);
    assert_eq!(call["transfer"], "failed:486", "{call}");
}

/// The agent rings and rings: after the ring timeout (30 s by default) the IVR cancels its
/// INVITE and the caller hears the apology.
#[test]
fn an_agent_who_never_answers_is_cancelled_after_the_ring_time() {
    let dir = temp_dir("bridge-ring");
    let (agent_port, agent_media) = (free_port(), free_port());
    let server = Server::start(ServerOptions {
        extra_toml: always_open(agent_port),
        rtp_timeout_secs: 60,
        ..ServerOptions::default()
    });
    if !open_now(&server.data_dir.join("ivr.toml")) {
        return;
    }
    let mut agent = Agent::start("agent_never_answers.xml", agent_port, agent_media, &dir);
    let mut uac = Uac::new(server.sip);
    let dest = call_and_refuse_refer(&mut uac, &dir);
    let refused = Instant::now();
    // SIPp exits cleanly only after our CANCEL (and its 487's ACK).
    assert!(
        agent.wait(Duration::from_secs(50)),
        "the agent's call did not follow agent_never_answers.xml:\n{}",
        agent.messages()
    );
    assert!(
        refused.elapsed() >= Duration::from_secs(29),
        "cancelled after {:?}, before the ring time",
        refused.elapsed()
    );
    let call = listen_then_hang_up(&mut uac, dest, &server);
    assert_apology_and_link_menu(&call);
    assert_eq!(call["transfer"], "no_answer", "{call}");
}

/// A trunk that accepts REFER still takes the call: no bridge, the IVR leaves.
#[test]
fn an_accepted_refer_still_leaves_the_call() {
    let dir = temp_dir("bridge-refer");
    let server = Server::start(ServerOptions {
        extra_toml: always_open(free_port()),
        ..ServerOptions::default()
    });
    if !open_now(&server.data_dir.join("ivr.toml")) {
        return;
    }
    let mut uac = Uac::new(server.sip);
    let ok = uac.call();
    uac.send_pcmu(Uac::remote_rtp(&ok), &keys_to_transfer(&dir), 1, 0);
    let refer = uac
        .wait_request("REFER", Duration::from_secs(20))
        .expect("a REFER from the IVR");
    uac.accept_refer(&refer, "SIP/2.0 200 OK");
    let bye = uac
        .wait_request("BYE", Duration::from_secs(10))
        .expect("the IVR leaves the call after the transfer");
    uac.respond_ok(&bye);
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["transfer"], "referred", "{call}");
    assert_eq!(call["end_reason"], "transferred", "{call}");
    assert_eq!(call["route"], "tier1", "{call}");
}

/// Both peers are SIPp: the trunk (trunk_rejects_refer.xml) walks the menu with RFC 4733 keys,
/// refuses the REFER with 405, talks and hangs up; the agent (agent_answers.xml) answers and
/// talks. Both play Debian's A-law recording: what reaches each peer from the IVR's ports is
/// that recording, byte for byte (both legs A-law: no conversion).
#[test]
fn sipp_trunk_and_sipp_agent_are_bridged() {
    // Two SIPp processes at once: each binds its media port and the three above it (audio and
    // video RTP/RTCP), so the four ports are drawn at least 4 apart (two adjacent draws once
    // made the trunk's video socket take the agent's audio port: "Address already in use").
    let [agent_port, agent_media, trunk_port, trunk_media] = spaced_free_ports();
    let server = Server::start(ServerOptions {
        extra_toml: always_open(agent_port),
        ..ServerOptions::default()
    });
    if !open_now(&server.data_dir.join("ivr.toml")) {
        return;
    }
    let (agent_dir, trunk_dir) = (temp_dir("sipp-agent"), temp_dir("sipp-trunk"));
    let capture = Capture::start(
        &format!(
            "udp and src portrange {}-{} and (dst port {agent_media} or dst port {trunk_media})",
            server.rtp.0, server.rtp.1
        ),
        &agent_dir,
    );
    let mut agent = Agent::start("agent_answers.xml", agent_port, agent_media, &agent_dir);
    let target = server.sip.to_string();
    let mut trunk = Agent::start_with(
        "trunk_rejects_refer.xml",
        trunk_port,
        trunk_media,
        &trunk_dir,
        &["-s", "ivr", &target],
    );
    assert!(
        trunk.wait(Duration::from_secs(60)),
        "the trunk's call did not follow trunk_rejects_refer.xml:\n{}\n{}",
        trunk.messages(),
        server.log_text()
    );
    assert!(
        agent.wait(Duration::from_secs(15)),
        "the agent's call did not follow agent_answers.xml:\n{}",
        agent.messages()
    );
    let packets = capture.stop();
    let recording = read_pcap(Path::new("/usr/share/sip-tester/g711a.pcap"));
    let recording: Vec<&[u8]> = recording
        .iter()
        .filter_map(|c| parse_rtp(&c.payload))
        .map(|r| r.payload)
        .collect();
    let relayed_to = |port: u16| {
        packets
            .iter()
            .filter(|c| c.dst_port == port)
            .filter_map(|c| parse_rtp(&c.payload))
            .filter(|r| r.pt == 8 && recording.contains(&r.payload))
            .count()
    };
    let (to_trunk, to_agent) = (relayed_to(trunk_media), relayed_to(agent_media));
    assert!(
        to_trunk >= 100,
        "{to_trunk} agent packets reached the caller"
    );
    assert!(
        to_agent >= 100,
        "{to_agent} caller packets reached the agent"
    );

    let (_, body) = server.get("/calls?limit=1");
    let calls: serde_json::Value = serde_json::from_str(&body).unwrap();
    let call_id = calls[0]["call_id"].as_str().unwrap().to_string();
    let call = server.ended_call(&call_id, Duration::from_secs(5));
    assert_eq!(call["transfer"], "bridged", "{call}");
    assert_eq!(call["digits"], "1310", "{call}");
    assert_eq!(call["end_reason"], "caller_bye", "{call}");
}

/// The SIPp trunk that accepts REFER (trunk_accepts_refer.xml): 202, NOTIFY 100 then 200, and
/// the IVR leaves the call with BYE; no agent leg is placed.
#[test]
fn sipp_trunk_that_accepts_refer_takes_the_call() {
    // Spaced: SIPp's media sockets take trunk_media + 2 as well (a parallel test's free port
    // once landed there: "Unable to bind audio RTP socket").
    let [trunk_port, trunk_media, agent_port, _] = spaced_free_ports();
    let server = Server::start(ServerOptions {
        extra_toml: always_open(agent_port),
        ..ServerOptions::default()
    });
    if !open_now(&server.data_dir.join("ivr.toml")) {
        return;
    }
    let dir = temp_dir("sipp-trunk-refer");
    let target = server.sip.to_string();
    let mut trunk = Agent::start_with(
        "trunk_accepts_refer.xml",
        trunk_port,
        trunk_media,
        &dir,
        &["-s", "ivr", &target],
    );
    assert!(
        trunk.wait(Duration::from_secs(60)),
        "the trunk's call did not follow trunk_accepts_refer.xml:\n{}",
        trunk.messages()
    );
    let (_, body) = server.get("/calls?limit=1");
    let calls: serde_json::Value = serde_json::from_str(&body).unwrap();
    let call_id = calls[0]["call_id"].as_str().unwrap().to_string();
    let call = server.ended_call(&call_id, Duration::from_secs(5));
    assert_eq!(call["transfer"], "referred", "{call}");
    assert_eq!(call["end_reason"], "transferred", "{call}");
    assert!(!server.log_text().contains("bridging"), "no agent leg");
}

/// `Uac::send_pcmu`, SRTP-protected with `tx` if any (paced at 20 ms); received packets are collected
/// into `received` as they come.
fn send_pcmu_srtp(
    uac: &Uac,
    dest: std::net::SocketAddr,
    pcm: &[i16],
    mut tx: Option<&mut ivr::rtp::srtp::Protector>,
    seq0: u16,
    ts0: u32,
    received: &mut Vec<Vec<u8>>,
) {
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    for (i, frame) in pcm.chunks(160).enumerate() {
        let mut pkt = [0u8; 12 + 160 + ivr::rtp::srtp::MAX_TRAILER];
        pkt[0] = 0x80;
        pkt[2..4].copy_from_slice(&seq0.wrapping_add(i as u16).to_be_bytes());
        pkt[4..8].copy_from_slice(&ts0.wrapping_add(160 * i as u32).to_be_bytes());
        pkt[8..12].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        for (o, &s) in pkt[12..].iter_mut().zip(frame) {
            *o = linear_to_ulaw(s);
        }
        let n = match tx.as_deref_mut() {
            Some(tx) => tx.protect(&mut pkt, 12 + frame.len()).unwrap(),
            None => 12 + frame.len(),
        };
        uac.rtp.send_to(&pkt[..n], dest).unwrap();
        while let Ok((n, _)) = uac.rtp.recv_from(&mut buf) {
            received.push(buf[..n].to_vec());
        }
        let due = start + Duration::from_millis(20 * (i as u64 + 1));
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// Share of `frame`'s energy at `freq` Hz (Goertzel, 8 kHz): near 1 for a pure tone.
fn tone_share(frame: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / 8000.0;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in frame {
        let s = f64::from(x) + 2.0 * w.cos() * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let power = s1 * s1 + s2 * s2 - 2.0 * w.cos() * s1 * s2;
    let energy: f64 = frame.iter().map(|&x| f64::from(x).powi(2)).sum();
    if energy < 1.0 {
        return 0.0;
    }
    power / (energy * frame.len() as f64 / 2.0)
}

/// 20 ms frames of `pcm` carrying a tone at `freq` (loud enough, most energy there).
fn tone_frames(pcm: &[i16], freq: f64) -> usize {
    pcm.chunks_exact(160)
        .filter(|f| rms(f) > 300.0 && tone_share(f, freq) > 0.6)
        .count()
}

/// Every leg SRTP, each with its own keys (`bridge_to_baresip_srtp_agent`): an SDES caller (RTP/SAVP, `[media] srtp =
/// "required"`) walks to the tier-1 transfer and refuses the REFER; the IVR calls the agent
/// queue — baresip with `mediaenc=srtp-mand` and auto-answer — offering RTP/SAVP with a key of
/// the agent leg's own (`[transfer] srtp = "required"`). The agent hears the caller's 1 kHz tone
/// and the caller the agent's 440 Hz tone; a capture of every IVR media port shows only SRTP on
/// both legs (an auth tag on each RTP packet, and neither tone decodable from the wire).
#[test]
fn srtp_caller_bridged_to_a_baresip_srtp_agent_is_encrypted_on_both_legs() {
    bridge_to_baresip_srtp_agent(true);
}

/// A plain RTP caller bridged to the same SRTP agent: the legs are keyed apart, so the agent
/// leg is SRTP all the same (and the caller's leg stays plain, as it asked).
#[test]
fn plain_caller_bridged_to_a_baresip_srtp_agent_is_encrypted_on_the_agent_leg() {
    bridge_to_baresip_srtp_agent(false);
}

fn bridge_to_baresip_srtp_agent(caller_srtp: bool) {
    use ivr::rtp::srtp::{CryptoAttr, KeySalt, Protector, Suite, Unprotector};
    require("baresip");
    require("sox");
    let dir = temp_dir("bridge_srtp");
    // baresip's own RTP ports stay in a small spaced range (its default is most of the port
    // space, where parallel tests' free ports live).
    let [agent_port, agent_rtp, ..] = spaced_free_ports();
    let server = Server::start(ServerOptions {
        extra_toml: always_open(agent_port) + "[transfer]\nsrtp = \"required\"\n",
        media_toml: if caller_srtp {
            "srtp = \"required\"\n".into()
        } else {
            String::new()
        },
        ..ServerOptions::default()
    });
    if !open_now(&server.data_dir.join("ivr.toml")) {
        return; // a federal holiday: no transfer is offered (tested in transfer_by_refer)
    }
    let (lo, hi) = server.rtp;
    // The agent's SIP too: its INVITE and 200 OK say which two ports the agent leg's media
    // flows between (parallel tests' calls use overlapping RTP ranges, and baresip does not
    // always keep to its `rtp_ports`).
    let capture = Capture::start(
        &format!("udp portrange {lo}-{hi} or udp port {agent_port}"),
        &dir,
    );

    // The agent: baresip answering at once, speaking a 440 Hz tone, recording what it hears.
    let agent_tone = dir.join("agent_tone.wav");
    let st = Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
        .arg(&agent_tone)
        .args(["synth", "40", "sine", "440", "gain", "-n", "-6"])
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(
        dir.join("config"),
        format!(
            "poll_method epoll\nsip_listen 127.0.0.1:{agent_port}\nmodule_path /usr/lib/baresip/modules\n\
             module g711.so\nmodule aufile.so\nmodule sndfile.so\nmodule menu.so\nmodule srtp.so\n\
             module account.so\naudio_player aufile,{dir}/played.wav\naudio_source aufile,{tone}\n\
             snd_path {dir}\nrtp_ports {agent_rtp}-{rtp_hi}\n",
            rtp_hi = agent_rtp + 3,
            dir = dir.display(),
            tone = agent_tone.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("accounts"),
        "<sip:tier1@127.0.0.1>;regint=0;audio_codecs=PCMU,PCMA;mediaenc=srtp-mand;answermode=auto\n",
    )
    .unwrap();
    let baresip = Command::new("timeout")
        .args(["60", "baresip", "-f"])
        .arg(&dir)
        .args(["-t", "45"])
        .current_dir(&dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("baresip.log")).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .expect("start baresip");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut baresip = Kill(baresip);
    std::thread::sleep(Duration::from_millis(500));
    let agent_log =
        |dir: &Path| std::fs::read_to_string(dir.join("baresip.log")).unwrap_or_default();

    // The caller: SDES, its own key.
    let caller_key = KeySalt([0x5a; 30]);
    let mut uac = Uac::new(server.sip);
    let offer = if caller_srtp {
        uac.sdp_savp("AES_CM_128_HMAC_SHA1_80", &caller_key.to_base64())
    } else {
        uac.sdp("sendrecv")
    };
    let branch = uac.request("INVITE", &offer, true);
    let ok = uac.final_response(Duration::from_secs(5));
    assert_eq!(ok.status(), Some(200), "{ok:?}");
    uac.ack(true, &branch);
    let ivr_key = ok
        .body
        .lines()
        .find_map(|l| l.strip_prefix("a=crypto:"))
        .and_then(CryptoAttr::parse);
    assert_eq!(ivr_key.is_some(), caller_srtp, "{}", ok.body);
    let dest = Uac::remote_rtp(&ok);
    let mut tx =
        caller_srtp.then(|| Protector::new(Suite::AesCm128HmacSha1_80, &caller_key).unwrap());
    uac.rtp
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    let mut received = Vec::new();
    send_pcmu_srtp(
        &uac,
        dest,
        &keys_to_transfer(&dir),
        tx.as_mut(),
        1,
        0,
        &mut received,
    );
    let refer = uac
        .wait_request("REFER", Duration::from_secs(20))
        .expect("a REFER from the IVR");
    uac.respond(&refer, 405, "Method Not Allowed");

    // The caller talks (1 kHz) while the agent answers and talks back.
    let tone: Vec<i16> = (0..8000 * 8)
        .map(|i| (8000.0 * (2.0 * std::f64::consts::PI * 1000.0 * i as f64 / 8000.0).sin()) as i16)
        .collect();
    received.clear();
    send_pcmu_srtp(&uac, dest, &tone, tx.as_mut(), 1000, 500_000, &mut received);
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    std::thread::sleep(Duration::from_millis(500));
    let _ = Command::new("kill")
        .args(["-INT", &baresip.0.id().to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(500));
    let packets = capture.stop();
    let _ = baresip.0.kill();
    let _ = baresip.0.wait();
    let log = agent_log(&dir);
    let call = server.ended_call(&uac.call_id, Duration::from_secs(5));
    assert_eq!(call["transfer"], "bridged", "{call}\nbaresip:\n{log}");

    // Caller ← agent: the 440 Hz tone, decrypted with the IVR's caller-leg key.
    let mut rx = ivr_key
        .as_ref()
        .map(|k| Unprotector::new(k.suite, &k.key).unwrap());
    let mut heard = Vec::new();
    for p in &mut received {
        let n = match rx.as_mut() {
            Some(rx) => rx.unprotect(p),
            None => Ok(p.len()),
        };
        if let Ok(n) = n {
            if let Some(r) = parse_rtp(&p[..n]).filter(|r| r.pt == 0) {
                heard.extend(r.payload.iter().map(|&b| ulaw_to_linear(b)));
            }
        }
    }
    let at_caller = tone_frames(&heard, 440.0);
    // Agent ← caller: the 1 kHz tone in baresip's recording.
    // (baresip's sndfile module dumps the decoded audio it received.)
    let dump = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| panic!("no decoded-audio dump; baresip log:\n{log}"));
    let (_, agent_heard) = read_wav(&dump);
    let at_agent = tone_frames(&agent_heard, 1000.0);
    eprintln!(
        "440 Hz frames at the caller: {at_caller} of {}; 1 kHz frames at the agent: {at_agent} of {}",
        heard.len() / 160,
        agent_heard.len() / 160
    );
    assert!(
        at_caller >= 100,
        "the caller hears the agent\nbaresip:\n{log}"
    );
    assert!(
        at_agent >= 100,
        "the agent hears the caller\nbaresip:\n{log}"
    );

    // The wire: every RTP packet on both legs is SRTP; neither tone is in clear.
    let caller_port = dest.port();
    let agent_leg_ports = agent_leg_ports(&packets, agent_port)
        .unwrap_or_else(|| panic!("no INVITE and 200 OK with SDP to and from the agent's port {agent_port} in the capture\nbaresip:\n{log}"));
    let (mut caller_leg, mut agent_leg, mut clear_tone) = (0usize, 0usize, 0usize);
    for c in &packets {
        if c.src_port == agent_port || c.dst_port == agent_port {
            continue; // the agent's SIP
        }
        let Some(rtp) = parse_rtp(&c.payload) else {
            continue;
        };
        if (72..=76).contains(&rtp.pt) {
            continue; // RTCP (SRTCP) on a port pair.
        }
        if c.src_port == caller_port || c.dst_port == caller_port {
            caller_leg += 1;
            if !caller_srtp {
                continue; // the plain caller's own leg
            }
        } else if agent_leg_ports == (c.src_port, c.dst_port)
            || agent_leg_ports == (c.dst_port, c.src_port)
        {
            agent_leg += 1;
        } else {
            continue; // another test's call in an overlapping port range
        }
        let len = rtp.payload.len();
        let body = match rtp.pt {
            0 | 8 => len.checked_sub(160),
            101 => len.checked_sub(4),
            _ => None,
        };
        assert!(
            matches!(body, Some(4) | Some(10)),
            "RTP packet pt {} of {len} payload bytes {} → {}: not SRTP",
            rtp.pt,
            c.src_port,
            c.dst_port
        );
        if len >= 160 {
            let plain: Vec<i16> = rtp.payload[..160]
                .iter()
                .map(|&b| {
                    if rtp.pt == 8 {
                        alaw_to_linear(b)
                    } else {
                        ulaw_to_linear(b)
                    }
                })
                .collect();
            if tone_share(&plain, 440.0) > 0.6 || tone_share(&plain, 1000.0) > 0.6 {
                clear_tone += 1;
            }
        }
    }
    eprintln!("captured {caller_leg} caller-leg and {agent_leg} agent-leg RTP packets");
    assert!(caller_leg > 300 && agent_leg > 300, "both legs captured");
    assert_eq!(clear_tone, 0, "a tone is readable on the wire");
}

/// The agent leg's media ports, (the IVR's, the agent's), from the `m=audio` lines of the
/// IVR's INVITE to `agent_port` and of the agent's 200 OK in a capture.
fn agent_leg_ports(packets: &[Captured], agent_port: u16) -> Option<(u16, u16)> {
    let audio_port = |c: &Captured| {
        let text = String::from_utf8_lossy(&c.payload);
        text.lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|rest| rest.split(' ').next()?.parse::<u16>().ok())
    };
    let starts = |c: &Captured, prefix: &[u8]| c.payload.starts_with(prefix);
    let ivr = packets
        .iter()
        .filter(|c| c.dst_port == agent_port && starts(c, b"INVITE "))
        .find_map(audio_port)?;
    let agent = packets
        .iter()
        .filter(|c| c.src_port == agent_port && starts(c, b"SIP/2.0 200"))
        .find_map(audio_port)?;
    Some((ivr, agent))
}

/// `[transfer] srtp = "required"` and an agent that answers our RTP/SAVP offer with plain
/// RTP (SIPp's agent_answers.xml, RTP/AVP, no key): the transfer fails cleanly — the IVR hangs
/// up the agent (SIPp gets its BYE), sends it no media at all, and the caller hears the
/// apology and the link offer.
#[test]
fn required_srtp_agent_leg_with_a_plain_answer_fails_the_transfer() {
    let dir = temp_dir("bridge-srtp-plain");
    let [agent_port, agent_media, ..] = spaced_free_ports();
    let server = Server::start(ServerOptions {
        extra_toml: always_open(agent_port) + "[transfer]\nsrtp = \"required\"\n",
        ..ServerOptions::default()
    });
    if !open_now(&server.data_dir.join("ivr.toml")) {
        return;
    }
    let capture = Capture::start(&format!("udp and dst port {agent_media}"), &dir);
    let mut agent = Agent::start("agent_answers.xml", agent_port, agent_media, &dir);
    let mut uac = Uac::new(server.sip);
    let dest = call_and_refuse_refer(&mut uac, &dir);
    assert!(
        agent.wait(Duration::from_secs(20)),
        "the agent's call did not follow agent_answers.xml (BYE at once):\n{}",
        agent.messages()
    );
    let call = listen_then_hang_up(&mut uac, dest, &server);
    let to_agent = capture.stop();
    let messages = agent.messages();
    let invite = messages
        .split("INVITE sip:tier1@")
        .nth(1)
        .expect("the agent got an INVITE");
    assert!(invite.contains("RTP/SAVP"), "{invite}");
    assert!(
        invite.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
        "{invite}"
    );
    assert_eq!(
        to_agent.len(),
        0,
        "no media to an agent that answered plain"
    );
    assert_apology_and_link_menu(&call);
    assert_eq!(call["transfer"], "failed:488", "{call}");
}
