//! The outbox accepts at least 1,000 durable messages a second from concurrent callers
//! (`synchronous=FULL`: each ack means the row is on disk). The bench (`benches/outbox.rs`)
//! gives the full figures; this guards the floor, with a wide margin, in the dev profile.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use ivr::outbox::{Channel, NewMessage, Store};
use ivr::pii::Pii;
use ivr::types::Lang;

#[test]
fn concurrent_enqueue_sustains_1000_per_second() {
    // On the target dir's disk, not /tmp (tmpfs would make fsync free and the test meaningless).
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("outbox-throughput-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = Arc::new(Store::open(&dir).unwrap());
    let (producers, per) = (64, 50);
    let start = Instant::now();
    let handles: Vec<_> = (0..producers)
        .map(|p| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    let m = NewMessage {
                        call_id: format!("tp-{p}-{i}"),
                        link_id: "processing_times".into(),
                        url: None,
                        channel: Channel::Sms,
                        to: Pii::new("2025550134".into()),
                        lang: Lang::Es,
                    };
                    store.enqueue_blocking(&m).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let rate = (producers * per) as f64 / start.elapsed().as_secs_f64();
    assert_eq!(store.list(None, 10_000).unwrap().len(), producers * per);
    assert!(rate >= 1_000.0, "{rate:.0} msgs/s");
    eprintln!("outbox enqueue: {rate:.0} msgs/s ({producers} producers)");
    let _ = std::fs::remove_dir_all(&dir);
}
