//! Outbox enqueue throughput with `synchronous=FULL`: every acknowledged message is on disk.
//! Producers are threads (as call tasks would be), each enqueueing and waiting for its ack.
//! Group commit is what makes this scale: one fsync covers all waiting producers.
//!
//! `cargo bench --bench outbox` (OUTBOX_BENCH_DIR to choose the disk; default the target dir,
//! not /tmp, which may be tmpfs where fsync is free). Prints msgs/s and ack latency percentiles.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ivr::outbox::{Channel, NewMessage, Store};
use ivr::pii::Pii;
use ivr::types::Lang;

fn run(dir: &PathBuf, producers: usize, per_producer: usize) -> (f64, Vec<Duration>) {
    let _ = std::fs::remove_dir_all(dir);
    let store = Arc::new(Store::open(dir).expect("open store"));
    let start = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut lat = Vec::with_capacity(per_producer);
                for i in 0..per_producer {
                    let m = NewMessage {
                        call_id: format!("bench-{p}-{i}"),
                        link_id: "case_status".into(),
                        url: None,
                        channel: if i % 2 == 0 {
                            Channel::Sms
                        } else {
                            Channel::Email
                        },
                        to: Pii::new(if i % 2 == 0 {
                            "2025550134".into()
                        } else {
                            "jane@example.org".into()
                        }),
                        lang: Lang::En,
                    };
                    let t = Instant::now();
                    store.enqueue_blocking(&m).expect("enqueue");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("producer"))
        .collect();
    let secs = start.elapsed().as_secs_f64();
    lat.sort();
    let n = store.list(None, usize::MAX >> 1).expect("list").len();
    assert_eq!(n, producers * per_producer, "every message stored");
    ((producers * per_producer) as f64 / secs, lat)
}

fn pct(lat: &[Duration], p: f64) -> f64 {
    let i = ((lat.len() as f64 * p) as usize).min(lat.len() - 1);
    lat[i].as_secs_f64() * 1e3
}

fn main() {
    let dir: PathBuf = std::env::var_os("OUTBOX_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("outbox-bench"));
    println!("outbox enqueue, synchronous=FULL, db in {}", dir.display());
    for (producers, per) in [(1, 300), (16, 250), (64, 100), (256, 40)] {
        let (rate, lat) = run(&dir, producers, per);
        println!(
            "producers {producers:>4}: {rate:>8.0} msgs/s  ack p50 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            pct(&lat, 0.50),
            pct(&lat, 0.99),
            pct(&lat, 1.0)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
