//! TTY modem cost per 20 ms frame, and heap allocations per frame in steady state (must be 0).
//!
//! Run: `cargo bench --bench tty`. Wall time on a shared machine is noisy: compare runs on the
//! same machine, and read the allocation counts as exact.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ivr::audio::tty::{TtyDemodulator, TtyModulator, TtyRxConfig, TtyTxConfig};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const FRAME: usize = 160;
const TEXT: &str = "WHAT IS MY CASE STATUS Q MY RECEIPT IS IOE0912345678 $50.00 (A/B) GA ";

fn signal(seconds: usize, loss_every: usize) -> Vec<i16> {
    let mut tx = TtyModulator::new(TtyTxConfig::default());
    let mut pcm = vec![0i16; seconds * 8000];
    let mut at = 0;
    while at < pcm.len() {
        if tx.is_idle() {
            tx.push_text(TEXT).expect("fits the default queue");
        }
        at += tx.fill(&mut pcm[at..]);
    }
    // A little noise (no exact zeros) and, optionally, lost frames as zeros.
    let mut seed = 1u32;
    for (n, s) in pcm.iter_mut().enumerate() {
        seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *s = s.saturating_add((seed >> 24) as i16 - 128);
        if loss_every > 0 && (n / FRAME) % loss_every == loss_every - 1 {
            *s = 0;
        }
    }
    pcm
}

fn bench_demod(name: &str, pcm: &[i16]) {
    let mut rx = TtyDemodulator::new(TtyRxConfig::default());
    let now = Instant::now();
    // Warm-up: the first second fills the history rings and the event queue's first use.
    let warm = 8000;
    for frame in pcm[..warm].chunks(FRAME) {
        rx.handle_pcm(now, frame);
        while rx.poll_event().is_some() {}
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut chars = 0u64;
    let frames = pcm[warm..].chunks(FRAME).len();
    for frame in pcm[warm..].chunks(FRAME) {
        rx.handle_pcm(now, black_box(frame));
        while let Some(e) = rx.poll_event() {
            chars += u64::from(matches!(e, ivr::audio::tty::TtyEvent::Char(_)));
        }
    }
    let elapsed = started.elapsed();
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    println!(
        "demod {name}: {:.0} ns per 20 ms frame, {} allocations in {frames} frames, {chars} chars",
        elapsed.as_nanos() as f64 / frames as f64,
        allocated
    );
    assert_eq!(allocated, 0, "the demodulator allocated in steady state");
}

fn bench_mod() {
    let mut tx = TtyModulator::new(TtyTxConfig::default());
    let mut frame = [0i16; FRAME];
    tx.push_text(TEXT).expect("fits the default queue");
    tx.fill(&mut frame);
    let allocations = ALLOCATIONS.load(Ordering::Relaxed);
    let frames = 50 * 120;
    let started = Instant::now();
    for _ in 0..frames {
        if tx.is_idle() {
            tx.push_text(TEXT).expect("fits the default queue");
        }
        tx.fill(black_box(&mut frame));
    }
    let elapsed = started.elapsed();
    let allocated = ALLOCATIONS.load(Ordering::Relaxed) - allocations;
    println!(
        "mod: {:.0} ns per 20 ms frame, {} allocations in {frames} frames (push_text included)",
        elapsed.as_nanos() as f64 / frames as f64,
        allocated
    );
    assert_eq!(allocated, 0, "the modulator allocated in steady state");
}

fn main() {
    bench_demod("clean line", &signal(120, 0));
    bench_demod("3% frames lost", &signal(120, 33));
    bench_demod("silence", &vec![0i16; 120 * 8000]);
    bench_mod();
}
