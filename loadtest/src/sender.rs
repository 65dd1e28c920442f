//! The callers' RTP: a few pacing threads shared by every call. Each thread keeps an absolute
//! 20 ms deadline grid, sleeps until the next deadline, then sends one packet for each of its
//! streams (the next queued frame, or silence: a phone keeps sending while its caller is quiet).
//!
//! Why threads and not async timers: tokio's timers showed 2–5 ms p99 pacing errors under load
//! (see the server's `outgoing.rs`, which paces the same way); a load tester that jitters would
//! measure itself. The thread records how late each tick woke, so a report says whether the tool
//! kept time.

use std::collections::VecDeque;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ivr_proto::rtp::packet::write_header;

use crate::impair::{ImpairCounts, Impairment, Schedule, StreamEvent};

pub const PTIME: Duration = Duration::from_millis(20);
pub const FRAME_BYTES: usize = 160;
/// A stall longer than this (a suspended process) resets the grid instead of bursting packets.
const RESYNC_AFTER: Duration = Duration::from_millis(200);
/// Tick lateness histogram: 10 µs buckets up to 100 ms; the last bucket holds the rest.
const LATE_BUCKET_US: u64 = 10;
const LATE_BUCKETS: usize = 10_000;
/// Packets an impaired stream holds back at once (delayed, reordered, duplicated): 40 ms of
/// jitter plus a 40 ms reorder hold is 4–5 packets; the rest is room for duplicates and drift.
const HELD_MAX: usize = 16;
/// An impaired stream sends at most this many packets in one tick (a drifted clock sends two
/// now and then); further behind (a stalled thread), it re-anchors its clock instead.
const CATCH_UP_MAX: u32 = 3;

/// Something queued on a stream; one 20 ms packet is taken from the front per tick.
#[derive(Debug, Clone)]
pub enum Chunk {
    /// Pre-encoded G.711 frames (length a multiple of 160), shared by every call playing them.
    Audio {
        data: Arc<[u8]>,
        pos: usize,
    },
    Silence {
        frames: u32,
    },
    /// One RFC 4733 key press: `frames` packets of growing duration, then the end packet
    /// three times (§2.5.1.4) so one loss does not lose the key.
    Event {
        event: u8,
        frames: u32,
        sent: u32,
    },
}

impl Chunk {
    pub fn audio(data: Arc<[u8]>) -> Chunk {
        Chunk::Audio { data, pos: 0 }
    }
    pub fn silence_ms(ms: u64) -> Chunk {
        Chunk::Silence {
            frames: (ms.div_ceil(20)).min(u64::from(u32::MAX)) as u32,
        }
    }
    pub fn key(event: u8, ms: u64) -> Chunk {
        Chunk::Event {
            event,
            frames: (ms.div_ceil(20)).clamp(2, 400) as u32,
            sent: 0,
        }
    }
}

struct StreamState {
    dest: Option<SocketAddr>,
    payload_type: u8,
    event_type: u8,
    silence: u8,
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    /// RTP timestamp of the key being sent (constant over its packets).
    event_ts: u32,
    queue: VecDeque<Chunk>,
    /// When the last queued frame's 20 ms ended (the deadline after it was sent).
    drained_at: Option<Instant>,
    /// When the first frame queued after the stream was idle went out (its deadline).
    started_at: Option<Instant>,
    /// The next media packet starts a talkspurt.
    talkspurt: bool,
    packets: u64,
    /// Network impairment of this stream, if any (allocated once, with the stream).
    impair: Option<Box<Impaired>>,
}

/// A packet held back by the impairment until `due`.
#[derive(Clone, Copy)]
struct Held {
    due: Instant,
    len: u16,
    data: [u8; 12 + FRAME_BYTES],
}

/// An impaired stream's schedule, clock and held packets.
struct Impaired {
    schedule: Schedule,
    /// The deadline of the stream's first tick: packet k leaves at `start + offset(k)`.
    start: Option<Instant>,
    /// Packets written so far on the sender's clock.
    next_k: u64,
    held: [Option<Held>; HELD_MAX],
    counts: ImpairCounts,
}

/// One call's outgoing stream.
pub struct Stream {
    socket: UdpSocket,
    state: Mutex<StreamState>,
    closed: AtomicBool,
}

impl Stream {
    /// `silence`: the codec's silence byte (0xFF µ-law, 0xD5 A-law).
    pub fn new(
        socket: UdpSocket,
        payload_type: u8,
        event_type: u8,
        silence: u8,
        seed: u32,
    ) -> Self {
        Stream {
            socket,
            state: Mutex::new(StreamState {
                dest: None,
                payload_type,
                event_type,
                silence,
                ssrc: seed.wrapping_mul(0x9E37_79B9) | 1,
                seq: (seed >> 7) as u16,
                timestamp: seed.rotate_left(13),
                event_ts: 0,
                queue: VecDeque::new(),
                drained_at: None,
                started_at: None,
                talkspurt: true,
                packets: 0,
                impair: None,
            }),
            closed: AtomicBool::new(false),
        }
    }

    /// Impairs this stream's packets (before it is added to the sender).
    pub fn impair(self, imp: Impairment, seed: u64) -> Self {
        if !imp.is_none() {
            self.lock().impair = Some(Box::new(Impaired {
                schedule: Schedule::new(imp, seed),
                start: None,
                next_k: 0,
                held: [None; HELD_MAX],
                counts: ImpairCounts::default(),
            }));
        }
        self
    }

    /// What the impairment did so far (`None` when not impaired).
    pub fn impair_counts(&self) -> Option<ImpairCounts> {
        self.lock().impair.as_ref().map(|i| i.counts)
    }

    fn lock(&self) -> MutexGuard<'_, StreamState> {
        // Plain data: a panic elsewhere cannot leave it half-updated in a harmful way.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_dest(&self, dest: SocketAddr) {
        self.lock().dest = Some(dest);
    }

    pub fn push(&self, chunk: Chunk) {
        let mut s = self.lock();
        if s.queue.is_empty() {
            s.started_at = None;
        }
        s.queue.push_back(chunk);
        s.drained_at = None;
    }

    /// When the first frame of what was queued while idle was sent.
    pub fn started_at(&self) -> Option<Instant> {
        self.lock().started_at
    }

    /// When everything queued so far has been sent: `None` while frames remain.
    pub fn drained_at(&self) -> Option<Instant> {
        let s = self.lock();
        if s.queue.is_empty() {
            s.drained_at
        } else {
            None
        }
    }

    pub fn packets(&self) -> u64 {
        self.lock().packets
    }

    pub fn ssrc(&self) -> u32 {
        self.lock().ssrc
    }

    /// Stop sending; the pacing thread drops the stream at its next tick.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Writes this tick's packet into `buf`; returns its length and where it goes.
    #[cfg(test)]
    fn next_packet(
        &self,
        deadline: Instant,
        buf: &mut [u8; 12 + FRAME_BYTES],
    ) -> Option<(usize, SocketAddr)> {
        let mut s = self.lock();
        let dest = s.dest?;
        Some((s.write_packet(deadline, buf), dest))
    }

    /// One pacing tick: sends this tick's packet, or for an impaired stream, the packets its
    /// schedule puts in this tick, each dropped, held back or duplicated as the schedule says,
    /// and whatever held packet is due. Returns when the next held packet is due.
    fn tick(&self, deadline: Instant, buf: &mut [u8; 12 + FRAME_BYTES]) -> Option<Instant> {
        let mut s = self.lock();
        let dest = s.dest?;
        let Some(mut imp) = s.impair.take() else {
            let len = s.write_packet(deadline, buf);
            drop(s);
            // A full socket buffer or an unreachable peer loses this packet only.
            let _ = self.socket.send_to(&buf[..len], dest);
            return None;
        };
        let start = *imp.start.get_or_insert(deadline);
        let window_end = deadline + PTIME;
        let mut sent_now = 0;
        loop {
            let offset = imp.schedule.send_offset_ns(imp.next_k);
            let at = start + Duration::from_nanos(offset.max(0) as u64);
            if at >= window_end {
                break;
            }
            if sent_now == CATCH_UP_MAX {
                // The thread stalled: move the stream's clock instead of bursting.
                let offset = Duration::from_nanos(offset.max(0) as u64);
                imp.start = Some(window_end.checked_sub(offset).unwrap_or(start));
                break;
            }
            sent_now += 1;
            match imp.schedule.event(imp.next_k) {
                Some(StreamEvent::NewSsrc {
                    ssrc,
                    seq,
                    timestamp,
                }) => {
                    (s.ssrc, s.seq, s.timestamp) = (ssrc, seq, timestamp);
                    imp.counts.ssrc_changes += 1;
                }
                Some(StreamEvent::TimestampJump(j)) => {
                    s.timestamp = s.timestamp.wrapping_add_signed(j);
                    imp.counts.ts_jumps += 1;
                }
                None => {}
            }
            imp.next_k += 1;
            let at = at.max(deadline);
            let len = s.write_packet(at, buf);
            imp.counts.generated += 1;
            let fate = imp.schedule.fate();
            if fate.dropped {
                imp.counts.dropped += 1;
                continue;
            }
            imp.counts.delayed += u64::from(fate.delay_us > 0);
            imp.counts.reordered += u64::from(fate.reordered);
            let copies = [Some(fate.delay_us), fate.dup_delay_us];
            imp.counts.duplicated += u64::from(fate.dup_delay_us.is_some());
            for delay in copies.into_iter().flatten() {
                let due = at + Duration::from_micros(u64::from(delay));
                match imp.held.iter_mut().find(|h| h.is_none()) {
                    Some(slot) if delay > 0 => {
                        let mut data = [0u8; 12 + FRAME_BYTES];
                        data[..len].copy_from_slice(&buf[..len]);
                        *slot = Some(Held {
                            due,
                            len: len as u16,
                            data,
                        });
                    }
                    free => {
                        imp.counts.hold_overflow += u64::from(free.is_none() && delay > 0);
                        let _ = self.socket.send_to(&buf[..len], dest);
                    }
                }
            }
        }
        let next = flush_held(&self.socket, dest, &mut imp, Instant::now());
        s.impair = Some(imp);
        next
    }

    /// Sends the held packets that are due; returns when the next one is. A closed stream
    /// drops what it holds.
    fn flush(&self, now: Instant) -> Option<Instant> {
        let mut s = self.lock();
        let dest = s.dest?;
        let imp = s.impair.as_mut()?;
        if self.closed.load(Ordering::Relaxed) {
            imp.held = [None; HELD_MAX];
            return None;
        }
        flush_held(&self.socket, dest, imp, now)
    }
}

fn flush_held(
    socket: &UdpSocket,
    dest: SocketAddr,
    imp: &mut Impaired,
    now: Instant,
) -> Option<Instant> {
    // Oldest due first, so packets held equally long keep their order.
    loop {
        let i = imp
            .held
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.as_ref().filter(|h| h.due <= now).map(|h| (h.due, i)))
            .min()
            .map(|(_, i)| i);
        let Some(h) = i.and_then(|i| imp.held[i].take()) else {
            break;
        };
        let _ = socket.send_to(&h.data[..usize::from(h.len)], dest);
    }
    imp.held.iter().flatten().map(|h| h.due).min()
}

impl StreamState {
    /// Writes the stream's next packet (a queued frame, a key's event packet, or silence) into
    /// `buf`, as sent at `deadline`; returns its length.
    fn write_packet(&mut self, deadline: Instant, buf: &mut [u8; 12 + FRAME_BYTES]) -> usize {
        let st = self;
        let mut marker = false;
        let mut pt = st.payload_type;
        let mut ts = st.timestamp;
        let mut len = 12 + FRAME_BYTES;
        let had_queue = !st.queue.is_empty();
        if had_queue && st.started_at.is_none() {
            st.started_at = Some(deadline);
        }
        match st.queue.front_mut() {
            Some(Chunk::Audio { data, pos }) => {
                let end = (*pos + FRAME_BYTES).min(data.len());
                let n = end - *pos;
                buf[12..12 + n].copy_from_slice(&data[*pos..end]);
                buf[12 + n..].fill(st.silence);
                *pos = end;
                marker = std::mem::take(&mut st.talkspurt);
                if *pos >= data.len() {
                    st.queue.pop_front();
                }
            }
            Some(Chunk::Silence { frames }) => {
                buf[12..].fill(st.silence);
                *frames = frames.saturating_sub(1);
                if *frames == 0 {
                    st.queue.pop_front();
                }
            }
            Some(Chunk::Event {
                event,
                frames,
                sent,
            }) => {
                if *sent == 0 {
                    st.event_ts = st.timestamp;
                    marker = true;
                }
                pt = st.event_type;
                ts = st.event_ts;
                let frames = *frames;
                let n = (*sent + 1).min(frames);
                let end = *sent + 1 >= frames;
                let duration = (n * 160).min(u32::from(u16::MAX)) as u16;
                buf[12] = *event;
                buf[13] = if end { 0x80 | 10 } else { 10 }; // E bit, volume -10 dBm0
                buf[14..16].copy_from_slice(&duration.to_be_bytes());
                len = 16;
                *sent += 1;
                if *sent >= frames + 2 {
                    st.queue.pop_front();
                    st.talkspurt = true;
                }
            }
            None => {
                buf[12..].fill(st.silence);
                st.talkspurt = true;
            }
        }
        write_header(&mut buf[..], pt, st.seq, ts, st.ssrc, marker);
        st.seq = st.seq.wrapping_add(1);
        st.timestamp = st.timestamp.wrapping_add(160);
        st.packets += 1;
        if had_queue && st.queue.is_empty() {
            st.drained_at = Some(deadline + PTIME);
        }
        len
    }
}

/// Tick lateness of the pacing threads (how long after its deadline each tick started sending).
#[derive(Clone)]
pub struct Lateness {
    pub buckets: Vec<u64>,
    pub ticks: u64,
    pub max_us: u64,
    /// Times the grid was reset after a stall.
    pub resyncs: u64,
}

impl Default for Lateness {
    fn default() -> Self {
        Lateness {
            buckets: vec![0; LATE_BUCKETS],
            ticks: 0,
            max_us: 0,
            resyncs: 0,
        }
    }
}

impl Lateness {
    fn add(&mut self, late: Duration) {
        let us = late.as_micros().min(u128::from(u64::MAX)) as u64;
        let b = ((us / LATE_BUCKET_US) as usize).min(LATE_BUCKETS - 1);
        self.buckets[b] += 1;
        self.ticks += 1;
        self.max_us = self.max_us.max(us);
    }

    pub fn merge(&mut self, other: &Lateness) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.ticks += other.ticks;
        self.max_us = self.max_us.max(other.max_us);
        self.resyncs += other.resyncs;
    }

    /// The `q` quantile (0..=1) in ms, at bucket resolution (10 µs).
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.ticks == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.ticks as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return (i as u64 * LATE_BUCKET_US) as f64 / 1000.0;
            }
        }
        self.max_us as f64 / 1000.0
    }

    /// Share of ticks later than `ms`, in percent.
    pub fn over_pct(&self, ms: f64) -> f64 {
        if self.ticks == 0 {
            return 0.0;
        }
        let first = ((ms * 1000.0) as u64 / LATE_BUCKET_US) as usize;
        let n: u64 = self.buckets.iter().skip(first + 1).sum();
        100.0 * n as f64 / self.ticks as f64
    }
}

struct Lane {
    streams: Mutex<Vec<Arc<Stream>>>,
    lateness: Mutex<Lateness>,
}

/// The pacing threads. Dropping it stops them.
pub struct Sender {
    lanes: Vec<Arc<Lane>>,
    next: AtomicUsize,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Sender {
    pub fn start(threads: usize) -> std::io::Result<Sender> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut lanes = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads.clamp(1, 64) {
            let lane = Arc::new(Lane {
                streams: Mutex::new(Vec::new()),
                lateness: Mutex::new(Lateness::default()),
            });
            let (l, s) = (lane.clone(), stop.clone());
            handles.push(
                std::thread::Builder::new()
                    .name(format!("loadtest-pace-{i}"))
                    .spawn(move || pace(&l, &s))?,
            );
            lanes.push(lane);
        }
        Ok(Sender {
            lanes,
            next: AtomicUsize::new(0),
            stop,
            threads: handles,
        })
    }

    /// Streams are spread over the threads round robin.
    pub fn add(&self, stream: Arc<Stream>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.lanes.len();
        lock(&self.lanes[i].streams).push(stream);
    }

    pub fn streams(&self) -> usize {
        self.lanes.iter().map(|l| lock(&l.streams).len()).sum()
    }

    /// Every thread's tick lateness so far, merged.
    pub fn lateness(&self) -> Lateness {
        let mut all = Lateness::default();
        for l in &self.lanes {
            all.merge(&lock(&l.lateness));
        }
        all
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Real-time scheduling (SCHED_FIFO, low priority 10) for a pacing thread, as the IVR gives
/// its media threads: on a box shared with the IVR, whose media threads run at that priority,
/// a tester at normal priority is the one whose ticks slip (100 ms at 1,000 keys-only calls on
/// 2 cores). Needs root or CAP_SYS_NICE; without it the thread stays at normal priority. The
/// thread sleeps between ticks, so it cannot starve the box.
fn raise_priority() -> bool {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler reads `param` and changes only this thread's policy (pid 0).
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

fn pace(lane: &Lane, stop: &AtomicBool) {
    // Without the permission the thread paces at normal priority; the report's tick lateness
    // shows what that costs.
    let _ = raise_priority();
    let mut deadline = Instant::now() + PTIME;
    let mut buf = [0u8; 12 + FRAME_BYTES];
    let mut batch: Vec<Arc<Stream>> = Vec::new();
    let mut late = Lateness::default();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if let Some(wait) = deadline.checked_duration_since(now) {
            std::thread::sleep(wait);
        }
        let woke = Instant::now();
        let lateness = woke.saturating_duration_since(deadline);
        if lateness > RESYNC_AFTER {
            late.resyncs += 1;
            deadline = woke;
        }
        late.add(lateness.min(RESYNC_AFTER));
        // Copy the list so calls can add streams while this tick sends.
        batch.clear();
        {
            let mut streams = lock(&lane.streams);
            streams.retain(|s| !s.closed.load(Ordering::Relaxed));
            batch.extend(streams.iter().cloned());
        }
        let mut held_due: Option<Instant> = None;
        for s in &batch {
            if let Some(due) = s.tick(deadline, &mut buf) {
                held_due = Some(held_due.map_or(due, |d| d.min(due)));
            }
        }
        deadline += PTIME;
        // Impaired streams' held packets: wake when the earliest is due (only impaired runs
        // get here; at most one wake per distinct due time before the next deadline).
        while let Some(due) = held_due.filter(|d| *d < deadline) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let now = Instant::now();
            held_due = None;
            for s in &batch {
                if let Some(due) = s.flush(now) {
                    held_due = Some(held_due.map_or(due, |d| d.min(due)));
                }
            }
        }
        if late.ticks % 50 == 0 {
            lock(&lane.lateness).merge(&std::mem::take(&mut late));
        }
    }
    lock(&lane.lateness).merge(&late);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> (Stream, UdpSocket) {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = Stream::new(UdpSocket::bind("127.0.0.1:0").unwrap(), 0, 101, 0xFF, 7);
        s.set_dest(sink.local_addr().unwrap());
        (s, sink)
    }

    #[test]
    fn audio_then_key_then_silence_packets() {
        let (s, _sink) = stream();
        let audio: Arc<[u8]> = vec![0x11u8; 200].into();
        s.push(Chunk::audio(audio));
        s.push(Chunk::key(1, 60));
        let t0 = Instant::now();
        let mut buf = [0u8; 172];
        let mut pkts = Vec::new();
        for i in 0..9 {
            let (len, _) = s.next_packet(t0 + PTIME * i, &mut buf).unwrap();
            pkts.push(buf[..len].to_vec());
            if i < 6 {
                assert!(s.drained_at().is_none(), "packet {i}");
            }
        }
        // Audio: 2 frames, the second padded with silence; marker on the first only.
        assert_eq!(pkts[0][1], 0x80);
        assert_eq!(pkts[0][12], 0x11);
        assert_eq!(pkts[1][1], 0x00);
        assert_eq!(&pkts[1][12 + 40..12 + 41], &[0xFF]);
        // Key: 3 packets growing by 160, the end packet 3 times, one timestamp, PT 101.
        let ts = |p: &Vec<u8>| u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
        assert_eq!(pkts[2][1], 0x80 | 101);
        for (k, p) in pkts[2..7].iter().enumerate() {
            assert_eq!(p.len(), 16);
            assert_eq!(ts(p), ts(&pkts[2]));
            let dur = u16::from_be_bytes([p[14], p[15]]);
            assert_eq!(dur, (160 * (k as u16 + 1)).min(480));
            assert_eq!(p[13] & 0x80 != 0, k >= 2, "end bit on packet {k}");
        }
        assert_eq!(s.drained_at(), Some(t0 + PTIME * 7));
        assert_eq!(s.started_at(), Some(t0));
        // Then silence, timestamps 160 apart from the audio's and sequence numbers continuous.
        assert_eq!(pkts[7][12], 0xFF);
        assert_eq!(ts(&pkts[7]).wrapping_sub(ts(&pkts[0])), 7 * 160);
        let seq = |p: &Vec<u8>| u16::from_be_bytes([p[2], p[3]]);
        for w in pkts.windows(2) {
            assert_eq!(seq(&w[1]), seq(&w[0]).wrapping_add(1));
        }
    }

    #[test]
    fn lateness_quantiles() {
        let mut l = Lateness::default();
        for us in 0..100u64 {
            l.add(Duration::from_micros(us * 100));
        }
        assert!(
            (l.quantile_ms(0.5) - 4.9).abs() < 0.05,
            "{}",
            l.quantile_ms(0.5)
        );
        assert!((l.quantile_ms(0.99) - 9.8).abs() < 0.05);
        assert!((l.over_pct(5.0) - 49.0).abs() < 1.5, "{}", l.over_pct(5.0));
        l.add(Duration::from_secs(5));
        assert_eq!(l.quantile_ms(1.0), 99.99);
    }

    /// The pacing thread applies a stream's impairment: over 150 ticks some packets never
    /// arrive, some arrive twice, some overtake an earlier one, and the counts say so.
    #[test]
    fn pacing_thread_applies_the_impairment() {
        let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = Stream::new(UdpSocket::bind("127.0.0.1:0").unwrap(), 0, 101, 0xFF, 7)
            .impair("loss=10,jitter=50,dup=10".parse().unwrap(), 3);
        s.set_dest(sink.local_addr().unwrap());
        let s = Arc::new(s);
        let sender = Sender::start(1).unwrap();
        sender.add(s.clone());
        sink.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut buf = [0u8; 200];
        let mut seqs = Vec::new();
        while seqs.len() < 150 {
            let Ok(n) = sink.recv(&mut buf) else { break };
            assert_eq!(n, 172);
            seqs.push(u16::from_be_bytes([buf[2], buf[3]]));
        }
        s.close();
        drop(sender);
        let c = s.impair_counts().unwrap();
        assert!(
            c.generated >= 140 && c.dropped > 0 && c.duplicated > 0,
            "{c:?}"
        );
        let first = seqs[0];
        let rel: Vec<i16> = seqs.iter().map(|q| q.wrapping_sub(first) as i16).collect();
        let mut sorted = rel.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert!(sorted.len() < rel.len(), "no duplicate arrived");
        assert!(rel.windows(2).any(|w| w[1] < w[0]), "nothing reordered");
        let span = (sorted[sorted.len() - 1] - sorted[0] + 1) as usize;
        assert!(sorted.len() < span, "nothing lost");
    }

    #[test]
    fn pacing_thread_sends_every_20_ms() {
        let (s, sink) = stream();
        let s = Arc::new(s);
        let sender = Sender::start(1).unwrap();
        sender.add(s.clone());
        sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 200];
        let t0 = Instant::now();
        for _ in 0..10 {
            sink.recv_from(&mut buf).unwrap();
        }
        let took = t0.elapsed();
        // 10 packets at 20 ms: the first may come at once, the rest 20 ms apart. Gross bounds only.
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_millis(1000),
            "{took:?}"
        );
        s.close();
        drop(sender);
    }
}
