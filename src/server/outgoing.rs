//! Outgoing media: a few pacing threads (one per core) that send every call's packets from one
//! precise clock. Each thread sleeps with `nanosleep` precision until the next 20 ms boundary of
//! its grid, then sends one packet for each of its calls: a copy of a pre-encoded prompt frame
//! or comfort silence, with the RTP header written in place. No allocation per packet, no async
//! timer per call; a call's task only says what to play (`Stream::play`) and hears when it ends.
//!
//! Why threads and not a tokio timer per call: tokio timers have millisecond granularity and
//! their wake-ups jitter with the scheduler's load, which showed as 2–5 ms pacing errors at p99;
//! a dedicated thread sending a batch per tick keeps each stream's interval at 20 ms.

use crate::rtp::srtp::Protector;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::Shared;
use super::metrics::Metrics;
use crate::rtp::codec::g711_silence;
use crate::rtp::session::RtpSender;
use crate::speech::cache::EncodedPrompt;
use crate::types::Codec;

/// What the pacing thread tells a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent {
    /// The playback with this generation ran to its end (not stopped).
    PlaybackDone { generation: u64 },
}

/// Frames of one `Play`: its prompts back to back.
struct Playback {
    items: Vec<Arc<EncodedPrompt>>,
    item: usize,
    frame: usize,
    generation: u64,
    /// The next packet starts a talkspurt (marker bit).
    first: bool,
}

struct StreamState {
    dest: Option<SocketAddr>,
    sends: bool,
    codec: Codec,
    payload_type: u8,
    samples_per_frame: u32,
    sender: RtpSender,
    playback: Option<Playback>,
    generation: u64,
    silence: [u8; 160],
    silence_len: usize,
    /// SRTP: what we send is protected at send time, in the send buffer (no allocation).
    srtp: Option<Protector>,
}

/// One call's outgoing RTP stream, shared by the call's task and a pacing thread.
pub struct Stream {
    socket: UdpSocket,
    state: Mutex<StreamState>,
    events: tokio::sync::mpsc::Sender<StreamEvent>,
    closed: AtomicBool,
}

/// RTCP sender-report counters of a stream.
pub struct SenderCounters {
    pub ssrc: u32,
    pub timestamp: u32,
    pub packets: u32,
    pub octets: u32,
}

impl Stream {
    pub fn new(
        socket: UdpSocket,
        codec: Codec,
        payload_type: u8,
        ptime_ms: u32,
        seed: u64,
        events: tokio::sync::mpsc::Sender<StreamEvent>,
    ) -> Stream {
        let mut silence = [0u8; 160];
        let silence_len = g711_silence(codec, &mut silence);
        Stream {
            socket,
            state: Mutex::new(StreamState {
                dest: None,
                sends: false,
                codec,
                payload_type,
                samples_per_frame: codec.rtp_clock() * ptime_ms / 1000,
                sender: RtpSender::new(seed),
                playback: None,
                generation: 0,
                silence,
                silence_len,
                srtp: None,
            }),
            events,
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StreamState> {
        // The state is plain data; a panic elsewhere cannot leave it inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where to send and whether to send at all (hold); the clock keeps running either way.
    pub fn set_media(&self, dest: Option<SocketAddr>, sends: bool, codec: Codec, payload_type: u8) {
        let mut s = self.lock();
        s.dest = dest;
        s.sends = sends;
        if s.codec != codec {
            s.codec = codec;
            s.silence_len = g711_silence(codec, &mut s.silence);
        }
        s.payload_type = payload_type;
    }

    /// Key what this stream sends (SRTP negotiated): every packet from the next tick on, and
    /// every packet `protect` is asked for (bridge relay, RTCP), is protected with it.
    pub fn set_srtp(&self, protector: Option<Protector>) {
        self.lock().srtp = protector;
    }

    /// Protect the RTP packet `buf[..len]` in place if the stream is keyed; returns the length
    /// to send, or None if it cannot be protected (then nothing must be sent). `buf` needs
    /// `srtp::MAX_TRAILER` bytes of room after the packet.
    pub fn protect(&self, buf: &mut [u8], len: usize) -> Option<usize> {
        match self.lock().srtp.as_mut() {
            Some(p) => p.protect(buf, len).ok(),
            None => Some(len),
        }
    }

    /// As `protect`, for an RTCP compound packet (SRTCP, RFC 3711 §3.4).
    pub fn protect_rtcp(&self, buf: &mut [u8], len: usize) -> Option<usize> {
        match self.lock().srtp.as_mut() {
            Some(p) => p.protect_rtcp(buf, len).ok(),
            None => Some(len),
        }
    }

    /// Start playing `items` from the next packet; returns the playback's generation.
    pub fn play(&self, items: Vec<Arc<EncodedPrompt>>) -> u64 {
        let mut s = self.lock();
        s.generation += 1;
        let generation = s.generation;
        s.playback = Some(Playback {
            items,
            item: 0,
            frame: 0,
            generation,
            first: true,
        });
        generation
    }

    pub fn stop(&self) {
        self.lock().playback = None;
    }

    pub fn is_playing(&self) -> bool {
        self.lock().playback.is_some()
    }

    pub fn counters(&self) -> SenderCounters {
        let s = self.lock();
        SenderCounters {
            ssrc: s.sender.ssrc(),
            timestamp: s.sender.timestamp(),
            packets: s.sender.packets_sent(),
            octets: s.sender.octets_sent(),
        }
    }

    /// The call is over: the pacing thread drops the stream at its next tick.
    pub fn close(&self) {
        self.closed.store(true, Relaxed);
    }

    /// Send this tick's packet (or advance the clock without sending). Returns true if sent.
    fn tick(&self, out: &mut [u8], skipped_frames: u32) -> bool {
        let mut s = self.lock();
        let s = &mut *s;
        let spf = s.samples_per_frame;
        if skipped_frames > 0 {
            s.sender.skip(spf * skipped_frames);
        }
        // The payload goes straight into the send buffer after the 12-byte header.
        let mut marker = false;
        let mut done: Option<u64> = None;
        let payload_len = match s.playback.as_mut() {
            Some(pb) => {
                let mut len = None;
                while let Some(p) = pb.items.get(pb.item) {
                    if let Some(f) = p.frame(s.codec, pb.frame) {
                        out[12..12 + f.len()].copy_from_slice(f);
                        pb.frame += 1;
                        len = Some(f.len());
                        break;
                    }
                    pb.item += 1;
                    pb.frame = 0;
                }
                match len {
                    Some(n) => {
                        marker = std::mem::take(&mut pb.first);
                        n
                    }
                    None => {
                        done = Some(pb.generation);
                        0
                    }
                }
            }
            None => 0,
        };
        if let Some(generation) = done {
            s.playback = None;
            // A full queue means the call task is gone or wedged; the event is dropped then.
            let _ = self
                .events
                .try_send(StreamEvent::PlaybackDone { generation });
        }
        let payload_len = if payload_len == 0 {
            out[12..12 + s.silence_len].copy_from_slice(&s.silence[..s.silence_len]);
            s.silence_len
        } else {
            payload_len
        };
        match (s.sends, s.dest) {
            (true, Some(dest)) if payload_len > 0 => {
                let Ok(n) = s
                    .sender
                    .next_in_place(s.payload_type, payload_len, spf, marker, out)
                else {
                    return false;
                };
                let n = match s.srtp.as_mut() {
                    Some(p) => match p.protect(out, n) {
                        Ok(n) => n,
                        Err(_) => return false,
                    },
                    None => n,
                };
                self.socket.send_to(&out[..n], dest).is_ok()
            }
            _ => {
                s.sender.skip(spf);
                false
            }
        }
    }
}

/// The pacing threads; streams are spread over them round-robin.
pub struct Outgoing {
    shards: Vec<mpsc::Sender<Arc<Stream>>>,
    next: AtomicUsize,
}

/// Frames a late shard sends back to back before it skips ahead instead (the far end's jitter
/// buffer absorbs a small burst).
const MAX_BURST: u32 = 3;

impl Outgoing {
    pub fn start(shared: &Arc<Shared>, threads: usize, ptime_ms: u32) -> Outgoing {
        let frame = Duration::from_millis(u64::from(ptime_ms));
        let shards = (0..threads.max(1))
            .map(|i| {
                let (tx, rx) = mpsc::channel::<Arc<Stream>>();
                let shared = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("ivr-rtp-{i}"))
                    .spawn(move || shard(rx, frame, shared));
                if let Err(e) = spawned {
                    tracing::error!(error = %e, "cannot start an RTP pacing thread");
                }
                tx
            })
            .collect();
        Outgoing {
            shards,
            next: AtomicUsize::new(0),
        }
    }

    pub fn add(&self, stream: Arc<Stream>) {
        let i = self.next.fetch_add(1, Relaxed) % self.shards.len();
        let _ = self.shards[i].send(stream);
    }
}

/// Ask for real-time scheduling (SCHED_FIFO, low priority 10) for the calling pacing thread: a
/// busy machine then delays the packet clock by microseconds, not milliseconds. Needs root or
/// CAP_SYS_NICE; without it the thread runs at normal priority (logged once).
fn raise_priority() {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: sched_setscheduler reads `param` and changes only this thread's policy (pid 0).
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) };
    if rc != 0 {
        tracing::info!("RTP pacing threads run at normal priority (SCHED_FIFO not permitted)");
    }
}

fn shard(rx: mpsc::Receiver<Arc<Stream>>, frame: Duration, shared: Arc<Shared>) {
    raise_priority();
    let mut streams: Vec<Arc<Stream>> = Vec::new();
    let mut out = [0u8; 1500];
    let mut next = Instant::now() + frame;
    loop {
        // New streams join at the next tick.
        loop {
            match rx.try_recv() {
                Ok(s) => streams.push(s),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        if streams.is_empty() {
            // Idle: block until a call arrives, then start a fresh grid.
            match rx.recv() {
                Ok(s) => streams.push(s),
                Err(_) => return,
            }
            next = Instant::now() + frame;
            continue;
        }
        let now = Instant::now();
        if now < next {
            std::thread::sleep(next - now);
            continue;
        }
        let late = now - next;
        shared.send_lateness.observe_us(late.as_micros() as u64);
        if late > Duration::from_millis(2) {
            Metrics::inc(&shared.metrics.rtp_late_ticks_total);
        }
        // Frames due now; beyond the burst limit, skip ahead so timestamps stay on wall-clock.
        let due = 1 + (late.as_nanos() / frame.as_nanos()) as u32;
        let send = due.min(MAX_BURST);
        let skipped = due - send;
        if skipped > 0 {
            shared
                .metrics
                .rtp_skipped_frames_total
                .fetch_add(u64::from(skipped), Relaxed);
        }
        let mut sent = 0u64;
        streams.retain(|s| !s.closed.load(Relaxed));
        for s in &streams {
            for i in 0..send {
                sent += u64::from(s.tick(&mut out, if i == 0 { skipped } else { 0 }));
            }
        }
        shared
            .metrics
            .rtp_packets_out_total
            .fetch_add(sent, Relaxed);
        next += frame * due;
    }
}
