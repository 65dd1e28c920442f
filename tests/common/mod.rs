//! Shared harness for behaviour and interop tests: start `ivr serve` on free loopback ports,
//! talk to its admin API, capture and decode RTP.
#![allow(dead_code)]

pub mod pg;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A free UDP+TCP port on loopback (both protocols are free when this returns).
pub fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Four free ports, each at least 4 away from the others (room for a peer's RTP and RTCP).
pub fn spaced_free_ports() -> [u16; 4] {
    let mut ports: Vec<u16> = Vec::with_capacity(4);
    for _ in 0..1000 {
        let p = free_port();
        if p <= u16::MAX - 4 && ports.iter().all(|q| p.abs_diff(*q) >= 4) {
            ports.push(p);
            if ports.len() == 4 {
                return [ports[0], ports[1], ports[2], ports[3]];
            }
        }
    }
    panic!("no four spaced free ports");
}

/// Four free UDP ports from an even one up (a peer's `rtp_ports`, so a test can pin the peer's
/// media and capture only that call's packets).
pub fn rtp_ports() -> (u16, u16) {
    for _ in 0..1000 {
        let lo = free_port() & !1;
        if !(1024..=u16::MAX - 4).contains(&lo) {
            continue;
        }
        if (lo..lo + 4).all(|p| UdpSocket::bind(("127.0.0.1", p)).is_ok()) {
            return (lo, lo + 3);
        }
    }
    panic!("no four free UDP ports in a row");
}

/// An RTP range for one test server, below the kernel's ephemeral ports (32768+). Ranges of
/// parallel tests may overlap: the server skips ports it cannot bind.
pub fn rtp_range(span: u16) -> (u16, u16) {
    let span = span.clamp(20, 2000);
    let lo = (10000 + (rand_u32() % u32::from(22000 - span)) as u16) & !1;
    (lo, lo + span - 1)
}

/// A config for offline `ivr call` runs: the repo's prompts and grammars, the shared TTS cache,
/// a private data dir under `dir` (PocketSphinx's generated LM goes there).
pub fn offline_config(dir: &Path) -> PathBuf {
    let path = dir.join("ivr.toml");
    std::fs::write(
        &path,
        format!(
            "[paths]\ndata_dir = \"{}\"\nprompts_dir = \"{}\"\ngrammars_dir = \"{}\"\ntts_cache_dir = \"{}\"\n",
            dir.join("data").display(),
            repo().join("prompts").display(),
            repo().join("grammars").display(),
            repo().join("target/tts-cache").display()
        ),
    )
    .expect("write config");
    path
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ivr-test-{name}-{}-{}",
        std::process::id(),
        rand_u32()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ (t.as_secs() as u32).rotate_left(7) ^ std::process::id()
}

/// Options for a test server.
pub struct ServerOptions {
    pub max_calls: usize,
    pub rtp_timeout_secs: u64,
    pub no_input_timeout_secs: u64,
    pub prompts_dir: PathBuf,
    pub grammars_dir: PathBuf,
    pub rtp_span: u16,
    pub answer_delay_ms: u64,
    pub extra_toml: String,
    /// More keys for the `[sip]` and `[media]` tables (the harness writes those tables itself).
    pub sip_toml: String,
    pub media_toml: String,
    /// `[admin] token_file` holding this token; the harness then sends it on every admin call.
    pub admin_token: Option<String>,
    /// The server's working directory (default: the test's).
    pub cwd: Option<PathBuf>,
    /// Rendered prompts; `None`: the cache shared by all tests (each prompt rendered once).
    pub tts_cache: Option<PathBuf>,
    /// `[paths] data_dir` somewhere else than the test's directory (which keeps the config and
    /// the log): a small file system for storage faults.
    pub storage_dir: Option<PathBuf>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_calls: 100,
            rtp_timeout_secs: 30,
            no_input_timeout_secs: 6,
            prompts_dir: repo().join("prompts"),
            grammars_dir: repo().join("grammars"),
            rtp_span: 200,
            answer_delay_ms: 0,
            extra_toml: String::new(),
            sip_toml: String::new(),
            media_toml: String::new(),
            admin_token: None,
            cwd: None,
            tts_cache: None,
            storage_dir: None,
        }
    }
}

impl ServerOptions {
    pub fn with_grammars(mut self, dir: PathBuf) -> Self {
        self.grammars_dir = dir;
        self
    }

    pub fn with_answer_delay(mut self, ms: u64) -> Self {
        self.answer_delay_ms = ms;
        self
    }
}

/// A running `ivr serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub sip: SocketAddr,
    pub admin: SocketAddr,
    pub rtp: (u16, u16),
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub admin_token: Option<String>,
}

impl Server {
    /// Start a server on free loopback ports. A port picked free can be taken by another test
    /// before the server binds it: such a start is retried on new ports (a few times at most).
    pub fn start(opts: ServerOptions) -> Server {
        for _ in 0..4 {
            match Server::try_start(&opts) {
                Ok(server) => return server,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("ivr serve exited:\n{log}"),
            }
        }
        panic!("ivr serve could not bind free ports four times");
    }

    fn try_start(opts: &ServerOptions) -> Result<Server, String> {
        let mut server = Server::spawn(opts);
        server.wait_ready(Duration::from_secs(240))?;
        Ok(server)
    }

    /// Start `ivr serve` on free loopback ports and return at once, without waiting for it to
    /// be ready (or even to have bound its sockets).
    pub fn spawn(opts: &ServerOptions) -> Server {
        let sip_port = free_port();
        let admin_port = free_port();
        let rtp = rtp_range(opts.rtp_span);
        let data_dir = temp_dir("data");
        // Rendered speech is shared by all tests: each prompt is synthesized once per machine.
        let tts_cache = opts
            .tts_cache
            .clone()
            .unwrap_or_else(|| repo().join("target/tts-cache"));
        let token_toml = match &opts.admin_token {
            Some(token) => {
                let path = data_dir.join("admin-token");
                std::fs::write(&path, format!("{token}\n")).unwrap();
                format!("token_file = \"{}\"\n", path.display())
            }
            None => String::new(),
        };
        let config = format!(
            "[sip]\nlisten = \"127.0.0.1:{sip_port}\"\n{}[media]\nrtp_ports = \"{}-{}\"\nrtp_timeout_secs = {}\n{}\
             [calls]\nmax_concurrent = {}\nno_input_timeout_secs = {}\ndrain_timeout_secs = 5\nanswer_delay_ms = {}\n\
             [admin]\nlisten = \"127.0.0.1:{admin_port}\"\n{token_toml}\
             [paths]\ndata_dir = \"{}\"\nprompts_dir = \"{}\"\ngrammars_dir = \"{}\"\ntts_cache_dir = \"{}\"\n{}",
            opts.sip_toml,
            rtp.0,
            rtp.1,
            opts.rtp_timeout_secs,
            opts.media_toml,
            opts.max_calls,
            opts.no_input_timeout_secs,
            opts.answer_delay_ms,
            opts.storage_dir.as_ref().unwrap_or(&data_dir).display(),
            opts.prompts_dir.display(),
            opts.grammars_dir.display(),
            tts_cache.display(),
            opts.extra_toml,
        );
        let config_path = data_dir.join("ivr.toml");
        std::fs::write(&config_path, config).unwrap();
        let log = data_dir.join("server.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ivr"));
        if let Some(cwd) = &opts.cwd {
            cmd.current_dir(cwd);
        }
        let child = cmd
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env(
                "IVR_LOG",
                std::env::var("IVR_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start ivr serve");
        Server {
            child,
            sip: SocketAddr::from(([127, 0, 0, 1], sip_port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            rtp,
            data_dir,
            log,
            admin_token: opts.admin_token.clone(),
        }
    }

    pub fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exit status {status}\n{}", self.log_text()));
            }
            if let Ok((200, _)) = http_get_auth(self.admin, "/readyz", self.admin_token.as_deref())
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("ivr serve not ready after {limit:?}:\n{}", self.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http_get_auth(self.admin, path, self.admin_token.as_deref())
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// The call record, waiting (up to `limit`) until it has ended.
    pub fn ended_call(&self, call_id: &str, limit: Duration) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let (status, body) = self.get(&format!("/calls/{call_id}"));
            if status == 200 {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                if !v["ended_at"].is_null() {
                    return v;
                }
            }
            if start.elapsed() > limit {
                panic!(
                    "call {call_id} did not end within {limit:?} (last: {status} {body})\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn metric(&self, name: &str) -> i64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find_map(|l| {
                l.strip_prefix(&format!("{name} "))
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("metric {name} missing"))
    }

    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe_kill(self.child.id(), "TERM");
        let start = Instant::now();
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if start.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                panic!("ivr did not exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Server {
    /// SIGKILL: no drain, no final writes.
    pub fn kill9(&mut self) {
        unsafe_kill(self.child.id(), "KILL");
        let _ = self.child.wait();
    }

    /// `ivr serve` again with this server's config (ports, data directory); it must be dead.
    pub fn restart(&self) -> Server {
        let log = self.data_dir.join("server-restart.log");
        let child = Command::new(env!("CARGO_BIN_EXE_ivr"))
            .arg("serve")
            .arg("--config")
            .arg(self.data_dir.join("ivr.toml"))
            .env("IVR_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("restart ivr serve");
        let mut server = Server {
            child,
            sip: self.sip,
            admin: self.admin,
            rtp: self.rtp,
            data_dir: self.data_dir.clone(),
            log,
            admin_token: self.admin_token.clone(),
        };
        if let Err(log) = server.wait_ready(Duration::from_secs(120)) {
            panic!("restarted ivr exited:\n{log}");
        }
        server
    }
}

/// In-band keys asking for the answer's link by text message (English 1, case status 1, the
/// link 4, by text 1, confirm 1; tests/voice_link_by_sms.rs), 0.7 s apart, then
/// `trailing_secs` of silence: 8 kHz audio for `Uac::send_pcmu`.
pub fn sms_link_keys(trailing_secs: usize) -> Vec<i16> {
    let dir = temp_dir("sms-keys");
    let one = sox_tone(&dir, "one", 697, 1209);
    let four = sox_tone(&dir, "four", 770, 1209);
    let gap = vec![0i16; 8000 * 7 / 10];
    let mut audio = gap.clone();
    for key in [&one, &one, &four, &one, &one] {
        audio.extend(key.iter());
        audio.extend(gap.iter());
    }
    audio.extend(vec![0i16; 8000 * trailing_secs]);
    audio
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ivr outbox list --json` on a data directory (what ops would run).
pub fn outbox_list(data_dir: &Path) -> Vec<serde_json::Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_ivr"))
        .args(["outbox", "list", "--json", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Whether the server's routing config counts this instant as open hours (`ivr route`; federal
/// holidays stay closed even with an always-open week).
pub fn open_now(config: &Path) -> bool {
    let now = jiff::Timestamp::now().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_ivr"))
        .args(["route", "--intent", "expedite", "--at", &now, "--config"])
        .arg(config)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ivr route prints JSON");
    v["open"] == true
}

pub fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// A minimal HTTP/1.1 GET (the admin API is on loopback; no client crate needed).
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    http_get_auth(addr, path, None)
}

/// GET with `Authorization: Bearer <token>` when a token is given.
pub fn http_get_auth(
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Require a program on PATH; CI installs every peer, so absence is a failure, not a skip.
pub fn require(program: &str) {
    let ok = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{program} is not installed (scripts/dev setup installs it)"
    );
}

/// A UDP packet captured on loopback.
#[derive(Clone, Debug)]
pub struct Captured {
    pub time: Duration,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: Vec<u8>,
}

/// Read a classic pcap file (as tshark/dumpcap write with `-F pcap`) and return its UDP packets.
pub fn read_pcap(path: &Path) -> Vec<Captured> {
    read_pcap_without_port(path, None)
}

/// `read_pcap`, leaving out the datagrams to `skip` (a capture's probes); times count from the
/// first packet kept.
fn read_pcap_without_port(path: &Path, skip: Option<u16>) -> Vec<Captured> {
    let data = std::fs::read(path).unwrap_or_default();
    if data.len() < 24 {
        return vec![];
    }
    let le = data[0..4] == [0xd4, 0xc3, 0xb2, 0xa1] || data[0..4] == [0x4d, 0x3c, 0xb2, 0xa1];
    let nanos = data[0..4] == [0x4d, 0x3c, 0xb2, 0xa1] || data[0..4] == [0xa1, 0xb2, 0x3c, 0x4d];
    let u32_at = |b: &[u8]| {
        if le {
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        } else {
            u32::from_be_bytes([b[0], b[1], b[2], b[3]])
        }
    };
    let linktype = u32_at(&data[20..24]);
    let mut out = Vec::new();
    let mut at = 24;
    let mut first: Option<Duration> = None;
    while at + 16 <= data.len() {
        let secs = u32_at(&data[at..]);
        let frac = u32_at(&data[at + 4..]);
        let caplen = u32_at(&data[at + 8..]) as usize;
        at += 16;
        if at + caplen > data.len() {
            break;
        }
        let frame = &data[at..at + caplen];
        at += caplen;
        let t = Duration::from_secs(u64::from(secs))
            + if nanos {
                Duration::from_nanos(u64::from(frac))
            } else {
                Duration::from_micros(u64::from(frac))
            };
        let ip = match linktype {
            1 => frame.get(14..),   // Ethernet (Linux lo)
            113 => frame.get(16..), // Linux cooked (any)
            276 => frame.get(20..), // Linux cooked v2
            0 | 101 => frame.get(4..).filter(|_| linktype == 0).or(Some(frame)),
            _ => None,
        };
        let Some(ip) = ip else { continue };
        if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != 17 {
            continue;
        }
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let udp = &ip[ihl..];
        if udp.len() < 8 {
            continue;
        }
        if skip.is_some_and(|p| u16::from_be_bytes([udp[2], udp[3]]) == p) {
            continue;
        }
        let first_t = *first.get_or_insert(t);
        out.push(Captured {
            time: t.saturating_sub(first_t),
            src_port: u16::from_be_bytes([udp[0], udp[1]]),
            dst_port: u16::from_be_bytes([udp[2], udp[3]]),
            payload: udp[8..].to_vec(),
        });
    }
    out
}

/// tshark capturing UDP on loopback into a pcap file until dropped.
pub struct Capture {
    child: Child,
    pub path: PathBuf,
    /// The port of the probe datagrams that proved the capture live; left out of `stop()`.
    probe_port: u16,
}

impl Capture {
    /// Start tshark with the capture filter `filter` and return once it is capturing. tshark's
    /// "Capturing on" is printed before the capture is live (a pcap once began after a TLS
    /// handshake), so the filter also takes probe datagrams to a port of our own, sent until
    /// tshark reports one (`-l -P`: a line per packet on stdout while it writes the file).
    pub fn start(filter: &str, dir: &Path) -> Capture {
        require("tshark");
        let path = dir.join("capture.pcap");
        let probe = UdpSocket::bind("127.0.0.1:0").expect("bind the probe socket");
        let probe_port = probe.local_addr().unwrap().port();
        let filter = format!("({filter}) or (udp and dst port {probe_port})");
        let mut child = Command::new("tshark")
            .args(["-i", "lo", "-l", "-P", "-F", "pcap", "-f", &filter, "-w"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tshark");
        let mut out = child.stdout.take().unwrap();
        let (seen_tx, seen_rx) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if buf[..n].contains(&b'\n') {
                    let _ = seen_tx.send(());
                }
            }
        });
        let start = Instant::now();
        loop {
            let _ = probe.send_to(b"capture probe", ("127.0.0.1", probe_port));
            if seen_rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "tshark did not capture a probe datagram in 30 s (filter {filter})"
            );
        }
        Capture {
            child,
            path,
            probe_port,
        }
    }

    pub fn stop(mut self) -> Vec<Captured> {
        // Let the last packets reach the file, then stop tshark cleanly so it flushes.
        std::thread::sleep(Duration::from_millis(500));
        unsafe_kill(self.child.id(), "INT");
        let _ = self.child.wait();
        read_pcap_without_port(&self.path, Some(self.probe_port))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// An RTP packet's fields, parsed in the test without the product's parser.
#[derive(Clone, Debug)]
pub struct Rtp<'a> {
    pub pt: u8,
    pub marker: bool,
    pub seq: u16,
    pub ts: u32,
    pub ssrc: u32,
    pub payload: &'a [u8],
}

/// Sequence numbers in arrival order, unwrapped past 65535 (for sorting a long capture).
pub struct SeqUnwrapper(Option<(u16, i64)>);

impl SeqUnwrapper {
    pub fn new() -> Self {
        SeqUnwrapper(None)
    }
    pub fn extend(&mut self, seq: u16) -> i64 {
        let ext = match self.0 {
            Some((last, ext)) => ext + i64::from(seq.wrapping_sub(last) as i16),
            None => i64::from(seq),
        };
        self.0 = Some((seq, ext));
        ext
    }
}

pub fn parse_rtp(b: &[u8]) -> Option<Rtp<'_>> {
    if b.len() < 12 || b[0] >> 6 != 2 {
        return None;
    }
    let cc = usize::from(b[0] & 0x0f);
    let start = 12 + 4 * cc;
    if b.len() < start || (200..=204).contains(&b[1]) {
        return None;
    }
    Some(Rtp {
        pt: b[1] & 0x7f,
        marker: b[1] & 0x80 != 0,
        seq: u16::from_be_bytes([b[2], b[3]]),
        ts: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        ssrc: u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        payload: &b[start..],
    })
}

/// G.711 decoders written from the standard here, independent of the product's codec.
pub fn ulaw_to_linear(u: u8) -> i16 {
    let u = !u;
    let sign = u & 0x80;
    let exponent = (u >> 4) & 0x07;
    let mantissa = u & 0x0f;
    let magnitude = ((i32::from(mantissa) << 3) + 0x84) << exponent;
    let v = magnitude - 0x84;
    (if sign != 0 { -v } else { v }) as i16
}

pub fn alaw_to_linear(a: u8) -> i16 {
    let a = a ^ 0x55;
    let sign = a & 0x80;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0f);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    (if sign != 0 { magnitude } else { -magnitude }) as i16
}

/// Read a 16-bit mono WAV.
pub fn read_wav(path: &Path) -> (u32, Vec<i16>) {
    let mut r = hound::WavReader::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rate = r.spec().sample_rate;
    let s: Vec<i16> = r.samples::<i16>().map(|s| s.unwrap()).collect();
    (rate, s)
}

pub fn rms(x: &[i16]) -> f64 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|&v| f64::from(v) * f64::from(v)).sum::<f64>() / x.len() as f64).sqrt()
}

/// Envelope correlation of two 8 kHz signals: RMS per 20 ms frame, then Pearson correlation over
/// the common length. Robust to codec differences (µ-law vs A-law) and small offsets.
pub fn envelope_correlation(a: &[i16], b: &[i16]) -> f64 {
    let env = |x: &[i16]| x.chunks(160).map(rms).collect::<Vec<f64>>();
    let (ea, eb) = (env(a), env(b));
    let n = ea.len().min(eb.len());
    if n < 5 {
        return 0.0;
    }
    let (ea, eb) = (&ea[..n], &eb[..n]);
    let ma = ea.iter().sum::<f64>() / n as f64;
    let mb = eb.iter().sum::<f64>() / n as f64;
    let cov: f64 = ea.iter().zip(eb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = ea.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = eb.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        0.0
    } else {
        cov / (va.sqrt() * vb.sqrt())
    }
}

/// Render a prompt as callers hear it with `ivr say` (8 kHz).
pub fn say_prompt(lang: &str, id: &str, dir: &Path) -> Vec<i16> {
    let out = dir.join(format!("say-{lang}-{id}.wav"));
    let cfg = dir.join("say.toml");
    std::fs::write(
        &cfg,
        format!(
            "[paths]\ndata_dir = \"{}\"\nprompts_dir = \"{}\"\ntts_cache_dir = \"{}\"\n",
            dir.display(),
            repo().join("prompts").display(),
            repo().join("target/tts-cache").display()
        ),
    )
    .unwrap();
    let st = Command::new(env!("CARGO_BIN_EXE_ivr"))
        .args(["say", "--lang", lang, "--prompt", id, "-o"])
        .arg(&out)
        .arg("--config")
        .arg(&cfg)
        .status()
        .unwrap();
    assert!(st.success(), "ivr say failed");
    read_wav(&out).1
}

/// A bare-bones SIP caller over UDP for behaviour tests: it writes messages by hand so the tests
/// do not depend on the product's own SIP printer.
pub struct Uac {
    pub sock: UdpSocket,
    pub server: SocketAddr,
    pub call_id: String,
    pub from_tag: String,
    pub to_tag: Option<String>,
    pub cseq: u32,
    pub rtp: UdpSocket,
    /// The user dialed (Request-URI and To): "ivr", or the TTY line's number.
    pub dialed: String,
    /// The caller ID (From user): a US number by default.
    pub caller: String,
    branch_n: u32,
}

#[derive(Clone, Debug)]
pub struct SipMsg {
    pub first_line: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl SipMsg {
    pub fn status(&self) -> Option<u16> {
        self.first_line
            .strip_prefix("SIP/2.0 ")
            .and_then(|r| r.get(..3))
            .and_then(|c| c.parse().ok())
    }
    pub fn method(&self) -> Option<&str> {
        if self.first_line.starts_with("SIP/2.0") {
            None
        } else {
            self.first_line.split(' ').next()
        }
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn parse(data: &[u8]) -> Option<SipMsg> {
        let text = String::from_utf8_lossy(data);
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.split("\r\n");
        let first_line = lines.next()?.to_string();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        Some(SipMsg {
            first_line,
            headers,
            body: body.to_string(),
        })
    }
}

impl Uac {
    pub fn new(server: SocketAddr) -> Uac {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let rtp = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtp.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let n = rand_u32();
        Uac {
            sock,
            server,
            call_id: format!("test-{n}@127.0.0.1"),
            from_tag: format!("ft{n}"),
            to_tag: None,
            cseq: 0,
            rtp,
            dialed: "ivr".into(),
            caller: "2025550134".into(),
            branch_n: 0,
        }
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn branch(&mut self) -> String {
        self.branch_n += 1;
        format!("z9hG4bK-{}-{}", self.from_tag, self.branch_n)
    }

    pub fn sdp(&self, direction: &str) -> String {
        let port = self.rtp.local_addr().unwrap().port();
        format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio {port} RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n\
             a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\na={direction}\r\n"
        )
    }

    /// An SRTP offer (SDES, RFC 4568): `sdp("sendrecv")` as RTP/SAVP with one crypto line.
    pub fn sdp_savp(&self, suite: &str, key_base64: &str) -> String {
        self.sdp("sendrecv").replace("RTP/AVP", "RTP/SAVP")
            + &format!("a=crypto:1 {suite} inline:{key_base64}\r\n")
    }

    /// Send a request in this call; returns the branch used.
    pub fn request(&mut self, method: &str, body: &str, new_cseq: bool) -> String {
        let ctype = if body.is_empty() {
            None
        } else {
            Some("application/sdp")
        };
        self.send_request(method, &[], ctype, body, new_cseq)
    }

    /// An in-dialog request with its own headers and body type (NOTIFY with a sipfrag...).
    pub fn request_custom(
        &mut self,
        method: &str,
        headers: &[(&str, &str)],
        content_type: &str,
        body: &str,
    ) {
        self.send_request(method, headers, Some(content_type), body, true);
    }

    fn send_request(
        &mut self,
        method: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: &str,
        new_cseq: bool,
    ) -> String {
        if new_cseq {
            self.cseq += 1;
        }
        let branch = self.branch();
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let local = self.local();
        let mut extra: String = headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        if let Some(ct) = content_type {
            extra.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        let msg = format!(
            "{method} sip:{dialed}@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{caller}@127.0.0.1>;tag={ft}\r\nTo: <sip:{dialed}@{server}>{to_tag}\r\n\
             Call-ID: {cid}\r\nCSeq: {cseq} {method}\r\nContact: <sip:caller@{local}>\r\n{extra}Content-Length: {len}\r\n\r\n{body}",
            server = self.server,
            dialed = self.dialed,
            ft = self.from_tag,
            caller = self.caller,
            cid = self.call_id,
            cseq = self.cseq,
            len = body.len(),
        );
        self.sock.send_to(msg.as_bytes(), self.server).unwrap();
        branch
    }

    /// Wait up to `limit` for a request of `method` from the server.
    pub fn wait_request(&self, method: &str, limit: Duration) -> Option<SipMsg> {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(m) = self.recv(Duration::from_millis(100)) {
                if m.method() == Some(method) {
                    return Some(m);
                }
            }
        }
        None
    }

    /// CANCEL for the INVITE sent with `branch` (same branch and CSeq number, RFC 3261 §9.1).
    pub fn cancel(&mut self, invite_branch: &str) {
        let local = self.local();
        let msg = format!(
            "CANCEL sip:ivr@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={invite_branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{caller}@127.0.0.1>;tag={ft}\r\nTo: <sip:ivr@{server}>\r\n\
             Call-ID: {cid}\r\nCSeq: {cseq} CANCEL\r\nContent-Length: 0\r\n\r\n",
            server = self.server,
            ft = self.from_tag,
            caller = self.caller,
            cid = self.call_id,
            cseq = self.cseq,
        );
        self.sock.send_to(msg.as_bytes(), self.server).unwrap();
    }

    pub fn ack(&mut self, for_2xx: bool, invite_branch: &str) {
        let branch = if for_2xx {
            self.branch()
        } else {
            invite_branch.to_string()
        };
        let to_tag = self
            .to_tag
            .as_ref()
            .map(|t| format!(";tag={t}"))
            .unwrap_or_default();
        let local = self.local();
        let msg = format!(
            "ACK sip:ivr@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{caller}@127.0.0.1>;tag={ft}\r\nTo: <sip:ivr@{server}>{to_tag}\r\n\
             Call-ID: {cid}\r\nCSeq: {cseq} ACK\r\nContent-Length: 0\r\n\r\n",
            server = self.server,
            ft = self.from_tag,
            caller = self.caller,
            cid = self.call_id,
            cseq = self.cseq,
        );
        self.sock.send_to(msg.as_bytes(), self.server).unwrap();
    }

    /// Next SIP message from the server within `limit`.
    pub fn recv(&self, limit: Duration) -> Option<SipMsg> {
        let start = Instant::now();
        let mut buf = [0u8; 65536];
        while start.elapsed() < limit {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                return SipMsg::parse(&buf[..n]);
            }
        }
        None
    }

    /// Wait for a final response (skipping 1xx) within `limit`; remembers the To tag.
    pub fn final_response(&mut self, limit: Duration) -> SipMsg {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(m) = self.recv(Duration::from_millis(200)) {
                if let Some(code) = m.status() {
                    if code >= 200 {
                        if let Some(tag) = m.header("To").and_then(|t| t.split(";tag=").nth(1)) {
                            self.to_tag = Some(tag.split(';').next().unwrap_or(tag).to_string());
                        }
                        return m;
                    }
                }
            }
        }
        panic!("no final response within {limit:?}");
    }

    /// Make a call and complete the handshake; returns the 200 OK.
    pub fn call(&mut self) -> SipMsg {
        let sdp = self.sdp("sendrecv");
        let branch = self.request("INVITE", &sdp, true);
        let ok = self.final_response(Duration::from_secs(5));
        assert_eq!(ok.status(), Some(200), "{ok:?}");
        self.ack(true, &branch);
        ok
    }

    /// As a trunk that transferred the call: accept the IVR's REFER (202), then report the
    /// agent's answer in a final NOTIFY whose sipfrag is `status_line` ("SIP/2.0 200 OK").
    pub fn accept_refer(&mut self, refer: &SipMsg, status_line: &str) {
        self.respond(refer, 202, "Accepted");
        self.request_custom(
            "NOTIFY",
            &[
                ("Event", "refer"),
                ("Subscription-State", "terminated;reason=noresource"),
            ],
            "message/sipfrag",
            &format!("{status_line}\r\n"),
        );
    }

    /// Answer a request the server sent (e.g. its BYE) with 200.
    pub fn respond_ok(&self, req: &SipMsg) {
        self.respond(req, 200, "OK");
    }

    /// Answer a request the server sent with any status.
    pub fn respond(&self, req: &SipMsg, code: u16, reason: &str) {
        let mut msg = format!("SIP/2.0 {code} {reason}\r\n");
        for name in ["Via", "From", "To", "Call-ID", "CSeq"] {
            for (n, v) in req
                .headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            {
                msg.push_str(&format!("{n}: {v}\r\n"));
            }
        }
        msg.push_str("Content-Length: 0\r\n\r\n");
        self.sock.send_to(msg.as_bytes(), self.server).unwrap();
    }

    /// The RTP address the IVR's SDP answer names.
    pub fn remote_rtp(answer: &SipMsg) -> SocketAddr {
        let port: u16 = answer
            .body
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .and_then(|r| r.split(' ').next())
            .and_then(|p| p.parse().ok())
            .expect("m=audio port in the answer");
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Send `n` 20 ms PCMU frames of `pcm` (8 kHz) to `dest`, paced in real time.
    pub fn send_pcmu(&self, dest: SocketAddr, pcm: &[i16], seq0: u16, ts0: u32) {
        let start = Instant::now();
        for (i, frame) in pcm.chunks(160).enumerate() {
            let mut pkt = vec![0x80, 0x00];
            pkt.extend_from_slice(&(seq0.wrapping_add(i as u16)).to_be_bytes());
            pkt.extend_from_slice(&(ts0.wrapping_add(160 * i as u32)).to_be_bytes());
            pkt.extend_from_slice(&0x1234_5678u32.to_be_bytes());
            pkt.extend(frame.iter().map(|&s| linear_to_ulaw(s)));
            self.rtp.send_to(&pkt, dest).unwrap();
            let due = start + Duration::from_millis(20 * (i as u64 + 1));
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
    }
}

/// µ-law encoder (G.711 reference, written here independently of the product's).
pub fn linear_to_ulaw(sample: i16) -> u8 {
    const BIAS: i32 = 0x84;
    let mut s = i32::from(sample);
    let sign = if s < 0 {
        s = -s;
        0x80
    } else {
        0
    };
    s = (s.min(32635)) + BIAS;
    let mut exponent = 7;
    let mut mask = 0x4000;
    while exponent > 0 && s & mask == 0 {
        exponent -= 1;
        mask >>= 1;
    }
    let mantissa = (s >> (exponent + 3)) & 0x0f;
    !(sign | (exponent << 4) | mantissa) as u8
}

/// A DTMF key as a gateway sends it in-band: two sines synthesized by sox (120 ms, 8 kHz).
pub fn sox_tone(dir: &Path, name: &str, low: u32, high: u32) -> Vec<i16> {
    require("sox");
    let path = dir.join(format!("{name}.wav"));
    let st = Command::new("sox")
        .args(["-n", "-r", "8000", "-c", "1", "-b", "16"])
        .arg(&path)
        .args([
            "synth",
            "0.12",
            "sine",
            &low.to_string(),
            "sine",
            &high.to_string(),
            "remix",
            "-",
            "gain",
            "-n",
            "-8",
        ])
        .status()
        .expect("run sox");
    assert!(st.success());
    read_wav(&path).1
}

/// `text` spoken by espeak-ng at 8 kHz (the PSTN path).
pub fn speak_8k(dir: &Path, text: &str) -> Vec<i16> {
    require("espeak-ng");
    require("sox");
    let raw = dir.join("q-raw.wav");
    let out = dir.join("q.wav");
    assert!(
        Command::new("espeak-ng")
            .args(["-v", "en-us", "-s", "150", "-w"])
            .arg(&raw)
            .arg(text)
            .status()
            .unwrap()
            .success()
    );
    assert!(
        Command::new("sox")
            .arg(&raw)
            .args(["-r", "8000", "-c", "1", "-b", "16"])
            .arg(&out)
            .status()
            .unwrap()
            .success()
    );
    read_wav(&out).1
}

/// The DTMF pair of a key (`0`-`9`, `*`, `#`), synthesized by sox at 8 kHz.
pub fn dtmf_tone(dir: &std::path::Path, key: char) -> Vec<i16> {
    const ROWS: [u32; 4] = [697, 770, 852, 941];
    const COLS: [u32; 3] = [1209, 1336, 1477];
    let (r, c) = match key {
        '1'..='9' => {
            let n = key as u32 - '1' as u32;
            (n / 3, n % 3)
        }
        '*' => (3, 0),
        '0' => (3, 1),
        '#' => (3, 2),
        _ => panic!("no tone for {key}"),
    };
    sox_tone(dir, &format!("k{key}"), ROWS[r as usize], COLS[c as usize])
}

/// `uac` calls `server`, plays `audio` (G.711 µ-law: in-band keys, speech), hangs up, and the
/// call record comes back (its `call_id` is the UAC's).
pub fn play_and_hang_up(server: &Server, mut uac: Uac, audio: &[i16]) -> serde_json::Value {
    let ok = uac.call();
    uac.send_pcmu(Uac::remote_rtp(&ok), audio, 1, 0);
    uac.request("BYE", "", true);
    assert_eq!(
        uac.final_response(Duration::from_secs(3)).status(),
        Some(200)
    );
    server.ended_call(&uac.call_id, Duration::from_secs(5))
}

/// The prompt a call record says was started right after `id` (panics when `id` never played).
pub fn prompt_after(call: &serde_json::Value, id: &str) -> Option<String> {
    let prompts: Vec<&str> = call["prompts"]
        .as_array()
        .expect("prompts in the call record")
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    let at = prompts
        .iter()
        .position(|p| *p == id)
        .unwrap_or_else(|| panic!("{id} never played: {call}"));
    prompts.get(at + 1).map(|p| p.to_string())
}

/// A SIPVicious 0.3.x tool (`svmap`, `svwar`, ...) as a command: the PyPI wheel that
/// `scripts/dev setup` unpacks into `IVR_SIPVICIOUS_DIR` (default `vendor/sipvicious`), run
/// with the system python3; else `sipvicious_<tool>` on PATH (a pip install). Err says why not.
pub fn sipvicious(tool: &str) -> Result<Command, String> {
    let dir = std::env::var_os("IVR_SIPVICIOUS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("vendor/sipvicious"));
    if dir.join("sipvicious").join(format!("{tool}.py")).exists() {
        let mut cmd = Command::new("python3");
        cmd.arg("-m")
            .arg(format!("sipvicious.{tool}"))
            .env("PYTHONPATH", &dir);
        return Ok(cmd);
    }
    let program = format!("sipvicious_{tool}");
    let on_path = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if on_path {
        Ok(Command::new(program))
    } else {
        Err(format!(
            "SIPVicious is not installed: no {}/sipvicious/{tool}.py and no {program} on PATH \
             (scripts/dev setup installs it)",
            dir.display()
        ))
    }
}

/// One SIPp call from `local_ip` (sip-configs/sipp/uac_listen.xml: INVITE, listen `hold_ms`,
/// BYE), bounded by SIPp's own 30 s timeout. Returns whether SIPp counted it successful, and
/// SIPp's output for the failure message.
pub fn sipp_call(server: SocketAddr, local_ip: &str, hold_ms: u32, dir: &Path) -> (bool, String) {
    let scenario = repo().join("sip-configs/sipp/uac_listen.xml");
    let out = Command::new("sipp")
        .arg("-sf")
        .arg(&scenario)
        .args(["-m", "1", "-s", "ivr", "-i", local_ip])
        .args(["-p", &free_port().to_string()])
        .args(["-mp", &free_port().to_string()])
        .args(["-d", &hold_ms.to_string()])
        .args(["-timeout", "30s", "-timeout_error", "-nostdin"])
        .args(["-trace_err", "-trace_screen"])
        .arg(server.to_string())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run sipp");
    let screens: String = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".log"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    let text = format!(
        "exit {:?}\n{}{}\n{screens}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Send an OPTIONS from `sock` and return the status of its reply, if one came within `limit`.
pub fn options_from(sock: &UdpSocket, server: SocketAddr, limit: Duration) -> Option<u16> {
    let local = sock.local_addr().unwrap();
    let n = rand_u32();
    let msg = format!(
        "OPTIONS sip:ivr@{server} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK-opt-{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@{local}>;tag=p{n}\r\nTo: <sip:ivr@{server}>\r\n\
         Call-ID: opt-{n}@{local}\r\nCSeq: 1 OPTIONS\r\nUser-Agent: ivr-test\r\nContent-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), server).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    while start.elapsed() < limit {
        if let Ok((len, _)) = sock.recv_from(&mut buf)
            && let Some(reply) = SipMsg::parse(&buf[..len])
            && reply.header("Call-ID") == Some(format!("opt-{n}@{local}").as_str())
        {
            return reply.status();
        }
    }
    None
}

/// A TCP connection from a chosen loopback address: std cannot bind before connecting, so the
/// socket is made with libc.
pub fn tcp_from(local_ip: &str, server: std::net::SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let local: std::net::Ipv4Addr = local_ip.parse().unwrap();
    let std::net::SocketAddr::V4(remote) = server else {
        panic!("IPv4 server expected")
    };
    // SAFETY: plain socket syscalls on an fd we own; the fd is handed to TcpStream once
    // connected (or closed on failure).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let sa = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let bind_to = sa(local, 0);
        let rc = libc::bind(fd, (&bind_to as *const libc::sockaddr_in).cast(), len);
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            panic!("bind {local}: {e}");
        }
        let to = sa(*remote.ip(), remote.port());
        let rc = libc::connect(fd, (&to as *const libc::sockaddr_in).cast(), len);
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            panic!("connect {server}: {e}");
        }
        TcpStream::from_raw_fd(fd)
    }
}
