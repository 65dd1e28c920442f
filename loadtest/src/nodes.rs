//! The IVR nodes behind a proxy (Kamailio's dispatcher), measured through their admin APIs:
//! each node's own CPU time and resident memory (Prometheus' `process_*` metrics, which the
//! node reads from its /proc/self) and its call counters (`ivr_calls_total`, ...), sampled
//! during a run. Works wherever the nodes run: nothing is read from this machine's /proc.
//!
//! The nodes come from `scripts/cluster`'s `cluster.json` (`--cluster`) or from repeated
//! `--node-admin [NAME=]http://host:port`; `--admin-token-file` is sent as a bearer token.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::call::http_get_auth;

/// One node's admin API.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub admin: SocketAddr,
}

/// `host:port` or `http://host:port[/]` → the address.
pub fn admin_addr(url: &str) -> Result<SocketAddr, String> {
    let hostport = url.trim_start_matches("http://").trim_end_matches('/');
    hostport
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("admin {url:?}: expected http://host:port"))
}

/// `--node-admin` values: `http://host:port` (named by its address) or `NAME=http://host:port`.
pub fn from_args(values: &[String]) -> Result<Vec<Node>, String> {
    values
        .iter()
        .map(|v| {
            let (name, url) = match v.split_once('=') {
                Some((n, u)) if !n.is_empty() && !n.contains('/') => (n.to_string(), u),
                _ => (String::new(), v.as_str()),
            };
            let admin = admin_addr(url)?;
            Ok(Node {
                name: if name.is_empty() {
                    admin.to_string()
                } else {
                    name
                },
                admin,
            })
        })
        .collect()
}

/// The nodes of a `scripts/cluster` `cluster.json` (`{"nodes": [{"name", "admin"}, ...]}`).
pub fn from_cluster_json(text: &str) -> Result<Vec<Node>, String> {
    let v: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("cluster.json: {e}"))?;
    let nodes = v["nodes"]
        .as_array()
        .filter(|n| !n.is_empty())
        .ok_or("cluster.json: no \"nodes\"")?;
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let admin = n["admin"]
                .as_str()
                .ok_or_else(|| format!("cluster.json: node {i} has no \"admin\""))?;
            Ok(Node {
                name: n["name"]
                    .as_str()
                    .map_or_else(|| format!("node{}", i + 1), String::from),
                admin: admin_addr(admin)?,
            })
        })
        .collect()
}

pub fn load_cluster(path: &Path) -> Result<Vec<Node>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    from_cluster_json(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// What one node's `/metrics` said at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct NodeSample {
    pub cpu_s: f64,
    pub rss_bytes: f64,
    pub threads: f64,
    pub open_fds: f64,
    pub calls_total: f64,
    pub calls_rejected: f64,
    pub calls_active: f64,
}

/// The values a sample needs from a Prometheus text page; `Err` names the first one missing.
pub fn parse_metrics(text: &str) -> Result<NodeSample, String> {
    let value = |name: &str| -> Option<f64> {
        text.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(' ')?;
            rest.split_whitespace().next()?.parse().ok()
        })
    };
    let need = |name: &str| value(name).ok_or_else(|| format!("no {name} on /metrics"));
    Ok(NodeSample {
        cpu_s: need("process_cpu_seconds_total")?,
        rss_bytes: need("process_resident_memory_bytes")?,
        threads: value("process_threads").unwrap_or(0.0),
        open_fds: value("process_open_fds").unwrap_or(0.0),
        calls_total: need("ivr_calls_total")?,
        calls_rejected: value("ivr_calls_rejected_total").unwrap_or(0.0),
        calls_active: value("ivr_calls_active").unwrap_or(0.0),
    })
}

/// One GET of a node's `/metrics`.
pub fn sample(node: &Node, token: Option<&str>) -> Result<NodeSample, String> {
    match http_get_auth(node.admin, "/metrics", token) {
        Ok((200, body)) => parse_metrics(&body),
        Ok((401, _)) => Err("HTTP 401 on /metrics (pass --admin-token-file)".into()),
        Ok((status, _)) => Err(format!("HTTP {status} on /metrics")),
        Err(e) => Err(e.to_string()),
    }
}

/// A node at one point of the run's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct NodePoint {
    pub t_s: f64,
    /// % of one core since the previous sample.
    pub cpu_pct: Option<f64>,
    pub rss_mib: f64,
    pub calls_active: f64,
}

/// One node over a run (or a capacity step).
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeFigures {
    pub name: String,
    pub admin: String,
    /// `/metrics` reads that succeeded and failed (a dead node fails every one after it died).
    pub samples: usize,
    pub failed_samples: usize,
    pub last_error: Option<String>,
    /// CPU over the run in % of one core: mean from the first to the last sample, and the
    /// highest between two consecutive samples.
    pub cpu_pct_mean: f64,
    pub cpu_pct_max: f64,
    /// CPU seconds the node used during the run.
    pub cpu_s: f64,
    pub rss_mib_start: f64,
    pub rss_mib_max: f64,
    pub rss_mib_end: f64,
    pub threads_max: f64,
    pub open_fds_max: f64,
    /// From the node's own counters: INVITEs that made a call here (`ivr_calls_total`) and
    /// INVITEs it answered 503 (`ivr_calls_rejected_total`), during the run.
    pub calls_taken: u64,
    pub calls_rejected: u64,
    pub calls_active_max: f64,
    /// CPU milliseconds per call taken (whole calls: set-up, media, flow, teardown).
    pub cpu_ms_per_call: Option<f64>,
}

#[derive(Default)]
struct Track {
    first: Option<(f64, NodeSample)>,
    last: Option<(f64, NodeSample)>,
    failed: usize,
    samples: usize,
    last_error: Option<String>,
    cpu_pct_max: f64,
    rss_max: f64,
    threads_max: f64,
    fds_max: f64,
    active_max: f64,
    points: Vec<NodePoint>,
}

impl Track {
    fn add(&mut self, t_s: f64, s: Result<NodeSample, String>) {
        let s = match s {
            Ok(s) => s,
            Err(e) => {
                self.failed += 1;
                self.last_error = Some(e);
                return;
            }
        };
        self.samples += 1;
        let cpu_pct = self.last.and_then(|(t0, s0)| {
            (t_s > t0).then(|| 100.0 * (s.cpu_s - s0.cpu_s).max(0.0) / (t_s - t0))
        });
        if let Some(c) = cpu_pct {
            self.cpu_pct_max = self.cpu_pct_max.max(c);
        }
        self.rss_max = self.rss_max.max(s.rss_bytes);
        self.threads_max = self.threads_max.max(s.threads);
        self.fds_max = self.fds_max.max(s.open_fds);
        self.active_max = self.active_max.max(s.calls_active);
        self.points.push(NodePoint {
            t_s,
            cpu_pct,
            rss_mib: s.rss_bytes / MIB,
            calls_active: s.calls_active,
        });
        self.first.get_or_insert((t_s, s));
        self.last = Some((t_s, s));
    }

    fn figures(&self, node: &Node) -> NodeFigures {
        let mut f = NodeFigures {
            name: node.name.clone(),
            admin: node.admin.to_string(),
            samples: self.samples,
            failed_samples: self.failed,
            last_error: self.last_error.clone(),
            cpu_pct_max: self.cpu_pct_max,
            rss_mib_max: self.rss_max / MIB,
            threads_max: self.threads_max,
            open_fds_max: self.fds_max,
            calls_active_max: self.active_max,
            ..NodeFigures::default()
        };
        if let (Some((t0, a)), Some((t1, b))) = (self.first, self.last) {
            f.cpu_s = (b.cpu_s - a.cpu_s).max(0.0);
            if t1 > t0 {
                f.cpu_pct_mean = 100.0 * f.cpu_s / (t1 - t0);
            }
            f.rss_mib_start = a.rss_bytes / MIB;
            f.rss_mib_end = b.rss_bytes / MIB;
            // Counters restart with the process: never negative.
            f.calls_taken = (b.calls_total - a.calls_total).max(0.0) as u64;
            f.calls_rejected = (b.calls_rejected - a.calls_rejected).max(0.0) as u64;
            f.cpu_ms_per_call =
                (f.calls_taken > 0).then(|| 1000.0 * f.cpu_s / f.calls_taken as f64);
        }
        f
    }
}

const MIB: f64 = 1024.0 * 1024.0;

/// Samples every node's `/metrics` on a thread of its own (a slow node never stalls the run)
/// every `interval`, from [`Sampler::start`] (a first sample before any call) to
/// [`Sampler::finish`] (a last one after every call ended).
pub struct Sampler {
    shared: Arc<SamplerShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

struct SamplerShared {
    nodes: Vec<Node>,
    token: Option<Arc<str>>,
    tracks: Mutex<Vec<Track>>,
    stop: AtomicBool,
    start: Instant,
}

impl SamplerShared {
    fn sample_all(&self) {
        for (i, n) in self.nodes.iter().enumerate() {
            let s = sample(n, self.token.as_deref());
            let t = self.start.elapsed().as_secs_f64();
            if let Some(track) = self
                .tracks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get_mut(i)
            {
                track.add(t, s);
            }
        }
    }
}

impl Sampler {
    /// Takes the first sample of every node before it returns.
    pub fn start(
        nodes: &[Node],
        token: Option<Arc<str>>,
        start: Instant,
        interval: Duration,
    ) -> std::io::Result<Sampler> {
        let shared = Arc::new(SamplerShared {
            nodes: nodes.to_vec(),
            token,
            tracks: Mutex::new(nodes.iter().map(|_| Track::default()).collect()),
            stop: AtomicBool::new(false),
            start,
        });
        shared.sample_all();
        let me = shared.clone();
        let thread = std::thread::Builder::new()
            .name("loadtest-nodes".into())
            .spawn(move || {
                let mut next = Instant::now() + interval;
                while !me.stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if now >= next {
                        me.sample_all();
                        next = (next + interval).max(Instant::now());
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })?;
        Ok(Sampler {
            shared,
            thread: Some(thread),
        })
    }

    /// Stop sampling, take the last sample, and sum each node up.
    pub fn finish(mut self) -> (Vec<NodeFigures>, Vec<NodeTimeline>) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared.sample_all();
        let tracks = self.shared.tracks.lock().unwrap_or_else(|e| e.into_inner());
        let nodes = &self.shared.nodes;
        let figures = nodes
            .iter()
            .zip(tracks.iter())
            .map(|(n, t)| t.figures(n))
            .collect();
        let timelines = nodes
            .iter()
            .zip(tracks.iter())
            .map(|(n, t)| NodeTimeline {
                name: n.name.clone(),
                points: t.points.clone(),
            })
            .collect();
        (figures, timelines)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct NodeTimeline {
    pub name: String,
    pub points: Vec<NodePoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "# HELP ivr_calls_total INVITEs that created a call.\n\
        # TYPE ivr_calls_total counter\nivr_calls_total 12\nivr_calls_rejected_total 1\n\
        ivr_calls_active 3\nivr_calls_total_x 99\n\
        process_cpu_seconds_total 4.5\nprocess_resident_memory_bytes 104857600\n\
        process_threads 17\nprocess_open_fds 40\n";

    #[test]
    fn metrics_page_gives_a_sample() {
        let s = parse_metrics(PAGE).unwrap();
        assert_eq!(s.calls_total, 12.0);
        assert_eq!(s.calls_rejected, 1.0);
        assert_eq!(s.calls_active, 3.0);
        assert_eq!(s.cpu_s, 4.5);
        assert_eq!(s.rss_bytes, 104_857_600.0);
        assert_eq!(s.threads, 17.0);
        let old = PAGE.replace("process_cpu_seconds_total 4.5\n", "");
        assert_eq!(
            parse_metrics(&old).unwrap_err(),
            "no process_cpu_seconds_total on /metrics"
        );
        assert!(parse_metrics("garbage").is_err());
    }

    #[test]
    fn cluster_json_and_node_args() {
        let json = r#"{"sip": "127.0.0.1:5999", "nodes": [
            {"name": "node1", "pid": 1, "sip": "127.0.0.2:5060", "admin": "127.0.0.2:8081"},
            {"name": "node2", "pid": 2, "sip": "127.0.0.3:5060", "admin": "127.0.0.3:8082"}]}"#;
        let nodes = from_cluster_json(json).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(nodes[1].name, "node2");
        assert_eq!(nodes[1].admin, "127.0.0.3:8082".parse().unwrap());
        assert!(from_cluster_json(r#"{"nodes": []}"#).is_err());
        assert!(from_cluster_json(r#"{"nodes": [{"name": "x"}]}"#).is_err());
        assert!(from_cluster_json("not json").is_err());
        let args = from_args(&[
            "a=http://127.0.0.1:8080/".into(),
            "http://127.0.0.2:8081".into(),
        ])
        .unwrap();
        assert_eq!(args[0].name, "a");
        assert_eq!(args[0].admin, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(args[1].name, "127.0.0.2:8081");
        assert!(from_args(&["http://nowhere".into()]).is_err());
    }

    #[test]
    fn a_track_sums_up_cpu_memory_and_calls() {
        let node = Node {
            name: "n".into(),
            admin: "127.0.0.1:1".parse().unwrap(),
        };
        let mut t = Track::default();
        let at = |cpu: f64, rss_mib: f64, calls: f64| NodeSample {
            cpu_s: cpu,
            rss_bytes: rss_mib * MIB,
            calls_total: calls,
            ..NodeSample::default()
        };
        t.add(0.0, Ok(at(10.0, 50.0, 100.0)));
        t.add(1.0, Ok(at(10.2, 60.0, 104.0)));
        t.add(2.0, Err("connection refused".into()));
        t.add(3.0, Ok(at(11.0, 55.0, 120.0)));
        let f = t.figures(&node);
        assert_eq!((f.samples, f.failed_samples), (3, 1));
        assert!((f.cpu_s - 1.0).abs() < 1e-9);
        assert!((f.cpu_pct_mean - 100.0 / 3.0).abs() < 1e-9);
        assert!((f.cpu_pct_max - 40.0).abs() < 1e-9, "{}", f.cpu_pct_max);
        assert_eq!(
            (f.rss_mib_start, f.rss_mib_max, f.rss_mib_end),
            (50.0, 60.0, 55.0)
        );
        assert_eq!(f.calls_taken, 20);
        assert!((f.cpu_ms_per_call.unwrap() - 50.0).abs() < 1e-9);
        assert_eq!(f.last_error.as_deref(), Some("connection refused"));
        // No sample at all: zeros, not NaN.
        let empty = Track::default().figures(&node);
        assert_eq!((empty.calls_taken, empty.cpu_pct_mean), (0, 0.0));
        assert!(empty.cpu_ms_per_call.is_none());
    }
}
