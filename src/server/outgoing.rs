//! The media threads: a few threads (one per core) that send every call's packets from one
//! precise clock and receive them. Each thread sleeps with `nanosleep` precision to the next
//! 20 ms boundary of its grid; nothing wakes it in between (what arrives waits in the sockets).
//! At the tick, for each call: one packet sent (a copy of a pre-encoded prompt frame or comfort
//! silence, with the RTP header written in place); then the sockets are read (a batch per
//! `recvmmsg`: see `mmsg`): a talking call's at every tick without asking, a quiet call's only
//! when one `epoll_wait` (the thread's own epoll instance, edge-triggered, no timeout) says it
//! received since the last tick (see `Watch`), into their call's `MediaLeg`
//! (jitter buffer, RFC 4733); then every leg's playout tick (in-band DTMF, the Baudot watch,
//! the speech front end) and timers. Only the leg's events (keys, speech, the RTP timeout,
//! Baudot heard, RTCP due) go to the call's task, by `try_send` on a bounded queue: a voice
//! call costs its task nothing per packet. No allocation per packet, no async timer per call,
//! no wake-up per packet; a call's task only says what to play (`Stream::play`) and hears when
//! it ends.
//!
//! Two states still need the task per packet or per frame, only while they last: a TTY call
//! (the task ticks the playout: every frame is the core's Baudot modem's) and a bridged call
//! (the task reads the socket and relays the caller's packets to the agent; the thread neither
//! reads nor watches the socket).
//!
//! Why threads and not a tokio timer per call: tokio timers have millisecond granularity and
//! their wake-ups jitter with the scheduler's load, which showed as 2–5 ms pacing errors at p99;
//! a dedicated thread sending a batch per tick keeps each stream's interval at 20 ms.

use crate::rtp::srtp::Protector;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::Shared;
use super::media::{MediaEvent, PrefetchHint, SharedLeg, lock_leg};
use super::metrics::Metrics;
use super::mmsg::{BATCH, RecvBatch};
use super::uring::{SendRing, Socket};
use crate::rtp::codec::{FRAME_SAMPLES_8K, g711_silence_code};
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
    /// Comfort silence: [`FRAME_SAMPLES_8K`] bytes of this G.711 code (written, not copied from
    /// a frame: a per-call array read at every tick was cache lines the tick need not touch).
    silence_code: u8,
    /// SRTP: what we send is protected at send time, in the send buffer (no allocation).
    /// Boxed: its key schedules would spread the state the tick reads over many cache lines.
    srtp: Option<Box<Protector>>,
}

/// One call's RTP stream, shared by the call's task and a media thread: what it sends, and
/// (once the task attached it) its receive side.
///
/// `repr(C)`: the flags the media thread reads at every tick first, the send state right after
/// them, so that the flags share a cache line with the start of the state. At each tick the
/// thread touches every call's stream once, and with hundreds of calls each touch is a miss.
#[repr(C)]
pub struct Stream {
    closed: AtomicBool,
    receive_attached: AtomicBool,
    state: Mutex<StreamState>,
    socket: UdpSocket,
    events: tokio::sync::mpsc::Sender<StreamEvent>,
    /// The receive side, until the media thread takes it (at its next tick).
    receive: Mutex<Option<Receive>>,
}

/// A call's receive side in its media thread: the leg (shared with the call task, which sets
/// what it listens for and ticks it in TTY mode) and the task's queue for the leg's events.
pub struct Receive {
    pub leg: SharedLeg,
    pub events: tokio::sync::mpsc::Sender<MediaEvent>,
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
                silence_code: g711_silence_code(codec),
                srtp: None,
            }),
            events,
            closed: AtomicBool::new(false),
            receive: Mutex::new(None),
            receive_attached: AtomicBool::new(false),
        }
    }

    /// The media thread receives for this call from its next tick on: it reads the socket into
    /// the leg and ticks it.
    pub fn attach_receive(&self, receive: Receive) {
        *self.receive.lock().unwrap_or_else(|e| e.into_inner()) = Some(receive);
        self.receive_attached.store(true, Relaxed);
    }

    fn take_receive(&self) -> Option<Receive> {
        if !self.receive_attached.swap(false, Relaxed) {
            return None;
        }
        self.receive
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
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
            s.silence_code = g711_silence_code(codec);
        }
        s.payload_type = payload_type;
    }

    /// Key what this stream sends (SRTP negotiated): every packet from the next tick on, and
    /// every packet `protect` is asked for (bridge relay, RTCP), is protected with it.
    pub fn set_srtp(&self, protector: Option<Protector>) {
        self.lock().srtp = protector.map(Box::new);
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

    /// The packet due at this tick, built in `out`: its length and where it goes (`None`: the
    /// call sends nothing now). The media thread sends it.
    fn tick(&self, out: &mut [u8], skipped_frames: u32) -> Option<(usize, SocketAddr)> {
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
            out[12..12 + FRAME_SAMPLES_8K].fill(s.silence_code);
            FRAME_SAMPLES_8K
        } else {
            payload_len
        };
        match (s.sends, s.dest) {
            (true, Some(dest)) if payload_len > 0 => {
                let Ok(n) = s
                    .sender
                    .next_in_place(s.payload_type, payload_len, spf, marker, out)
                else {
                    return None;
                };
                let n = match s.srtp.as_mut() {
                    Some(p) => match p.protect(out, n) {
                        Ok(n) => n,
                        Err(_) => return None,
                    },
                    None => n,
                };
                Some((n, dest))
            }
            _ => {
                s.sender.skip(spf);
                None
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

/// Datagrams read from one socket at a time at most (a flood must not starve the other calls);
/// the leg's `datagram_room` stops it earlier (past a stall, packets wait in the socket).
const DRAIN_MAX: usize = 48;
/// Ready sockets taken from one `epoll_wait`.
const READY_MAX: usize = 256;

/// One epoll instance (a media thread's), edge-triggered: a socket is read until it is empty
/// (or the leg wants no more before its tick, which reads the rest).
struct Epoll(RawFd);

impl Epoll {
    fn new() -> std::io::Result<Epoll> {
        // SAFETY: epoll_create1 takes no pointer; the descriptor is closed on drop.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Epoll(fd))
    }

    fn add(&self, fd: RawFd, token: usize) -> bool {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: token as u64,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) == 0 }
    }

    fn delete(&self, fd: RawFd) {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer (null is allowed since Linux 2.6.9).
        unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }

    /// The tokens of the sockets that became readable within `timeout_ms`.
    fn wait(&self, ready: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
        let max = ready.len().min(i32::MAX as usize) as i32;
        // SAFETY: `ready` holds `max` writable epoll_events.
        let n = unsafe { libc::epoll_wait(self.0, ready.as_mut_ptr(), max, timeout_ms) };
        // -1: interrupted (EINTR) or an error; the tick reads every socket anyway.
        n.max(0) as usize
    }
}

impl Drop for Epoll {
    fn drop(&mut self) {
        // SAFETY: the descriptor is ours and closed once.
        unsafe { libc::close(self.0) };
    }
}

/// One call in a media thread.
struct Call {
    stream: Arc<Stream>,
    receive: Option<Receive>,
    /// How the thread learns that its socket holds datagrams.
    watch: Watcher,
    /// Watched: its socket may hold datagrams (epoll reported it since it was last emptied, or
    /// the last read stopped before the socket was empty: the leg wanted no more, `DRAIN_MAX`).
    readable: bool,
    /// What its leg's next receive tick touches first, as the last one left it (prefetched a
    /// few calls ahead; see `MediaLeg::prefetch_hint`).
    hint: PrefetchHint,
    /// Its socket is in the send ring's file table, at the call's index.
    fixed: bool,
}

/// How a media thread learns that a call's socket holds datagrams.
///
/// A caller sends a packet every 20 ms, so at nearly every tick a talking call's socket holds
/// one: it is read at every tick without asking (`Blind`). A socket in an epoll set costs on
/// every packet, both ways: each arrival runs the epoll callback, and so does each send (the
/// kernel wakes the socket's waiters when the sent buffer is freed, and the epoll entry is a
/// waiter whatever events it asked for). Only a quiet socket (hold, silence suppression, a
/// caller not sending yet) is worth watching: after `QUIET_READS` empty reads in a row it goes
/// into the epoll set and is read only when reported (`Watched`); after `BUSY_TICKS` ticks in a
/// row that read something it comes out again.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Watch {
    Blind,
    Watched,
    /// The task reads the socket and relays (a bridged call); the thread does not.
    Bridged,
}

/// Empty reads in a row after which a socket is watched instead of read at every tick.
const QUIET_READS: u8 = 5;
/// Ticks in a row with datagrams after which a watched socket is read at every tick instead.
const BUSY_TICKS: u8 = 5;

/// What to do with a socket's epoll registration after a receive tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WatchChange {
    Keep,
    /// Into the epoll set; then `added(ok)`.
    Add,
    Delete,
}

/// A call's [`Watch`] and its streak (sans-IO: the thread carries out the changes).
#[derive(Clone, Copy)]
struct Watcher {
    watch: Watch,
    /// Blind: reads in a row that found nothing. Watched: ticks in a row that read something.
    streak: u8,
}

impl Watcher {
    fn new() -> Watcher {
        // Read at every tick from the start, until the socket proves quiet.
        Watcher {
            watch: Watch::Blind,
            streak: 0,
        }
    }

    /// Whether to read the socket at this tick (`readable`: epoll reported it, or datagrams
    /// were left in it).
    fn reads(&self, readable: bool) -> bool {
        match self.watch {
            Watch::Blind => true,
            Watch::Watched => readable,
            Watch::Bridged => false,
        }
    }

    /// After a receive tick that read `read` datagrams.
    fn after_tick(&mut self, read: usize, bridged: bool) -> WatchChange {
        if bridged || self.watch == Watch::Bridged {
            let was = std::mem::replace(&mut self.watch, Watch::Bridged);
            return if was == Watch::Watched {
                WatchChange::Delete
            } else {
                WatchChange::Keep
            };
        }
        let blind = self.watch == Watch::Blind;
        // A streak of empty reads (Blind) or of reads with datagrams (Watched).
        self.streak = if (read == 0) == blind {
            self.streak + 1
        } else {
            0
        };
        match self.watch {
            Watch::Blind if self.streak >= QUIET_READS => {
                self.streak = 0;
                WatchChange::Add
            }
            Watch::Watched if self.streak >= BUSY_TICKS => {
                self.streak = 0;
                self.watch = Watch::Blind;
                WatchChange::Delete
            }
            _ => WatchChange::Keep,
        }
    }

    /// The outcome of a `WatchChange::Add` (without epoll, or if adding fails, the socket stays
    /// read at every tick).
    fn added(&mut self, ok: bool) {
        if ok {
            self.watch = Watch::Watched;
        }
    }

    fn is_watched(&self) -> bool {
        self.watch == Watch::Watched
    }
}

/// How many calls ahead of the one it works on the media thread asks for a call's memory. At
/// each tick the thread touches every call once, and between two touches of the same call the
/// kernel's send and receive paths have been through the caches: each first touch is a miss
/// (the flag, send state and leg lock were most of `shard`'s own time in `perf annotate`).
/// A few calls ahead covers a miss's latency and is far less than what the caches hold.
const PREFETCH_AHEAD: usize = 4;

/// Asks for the cache lines of `len` bytes from `p` (a hint: it never faults, whatever the
/// address, and does nothing on other architectures).
#[inline(always)]
fn prefetch_bytes(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let mut off = 0;
        while off < len {
            // SAFETY: SSE is part of x86_64; a prefetch reads nothing the program sees and
            // does not fault on any address.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(off).cast::<i8>()) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

/// The lines of call `i`'s stream that its send tick reads (the flags, the send state and the
/// socket: all of it but the receive hand-over at its end).
#[inline(always)]
fn prefetch_stream(calls: &[Option<Call>], i: usize) {
    if let Some(Some(c)) = calls.get(i) {
        prefetch_bytes(
            Arc::as_ptr(&c.stream).cast(),
            std::mem::offset_of!(Stream, events),
        );
    }
}

/// The lines of call `i` that its receive tick reads first: the leg's lock (and the fields
/// after it), the stream's socket, and what the leg's last tick said the next one touches (its
/// jitter buffer's state and the slot of the next packet).
#[inline(always)]
fn prefetch_leg(calls: &[Option<Call>], i: usize) {
    if let Some(Some(c)) = calls.get(i)
        && let Some(r) = &c.receive
    {
        prefetch_bytes(Arc::as_ptr(&r.leg).cast(), 128);
        let socket = std::ptr::from_ref(&c.stream.socket);
        prefetch_bytes(socket.cast(), 1);
        for &p in &c.hint {
            if p != 0 {
                prefetch_bytes(p as *const u8, 1);
            }
        }
    }
}

/// What one read of a socket did.
struct Drained {
    /// Datagrams read.
    read: usize,
    /// The socket was read to empty (else it may hold more: the leg wanted no more before its
    /// tick, or `DRAIN_MAX`).
    empty: bool,
}

/// Reads what waits in `socket` into the leg (not while bridged: the task reads then), a batch
/// per system call.
fn read_into(
    leg: &mut super::media::MediaLeg,
    socket: &UdpSocket,
    now: Instant,
    batch: &mut RecvBatch,
) -> Drained {
    let mut read = 0;
    if leg.is_bridged() {
        return Drained { read, empty: true };
    }
    while read < DRAIN_MAX {
        let want = leg.datagram_room().min(DRAIN_MAX - read).min(BATCH);
        if want == 0 {
            return Drained { read, empty: false };
        }
        // An error (empty, or an ICMP error reported on the socket) ends the drain, as an
        // empty socket does.
        let Ok(n) = batch.recv(socket.as_raw_fd(), want) else {
            return Drained { read, empty: true };
        };
        for i in 0..n {
            if let (datagram, Some(from)) = batch.datagram(i) {
                leg.handle_datagram(now, datagram, from);
            }
        }
        read += n;
        if n < want {
            // A short count: the socket is empty (no second, empty read to learn it).
            return Drained { read, empty: true };
        }
    }
    Drained { read, empty: false }
}

/// A call's receive side at the tick: every datagram that has arrived goes into the jitter
/// buffer before the tick pops (only a socket that may hold any is read: no empty reads); then
/// the playout tick (unless the task ticks: TTY), the timers, and the events to the task.
/// Returns what the read did (nothing read if not `readable`), and whether the call is bridged.
fn receive_tick(
    receive: &Receive,
    socket: &UdpSocket,
    readable: bool,
    now: Instant,
    batch: &mut RecvBatch,
    m: &Metrics,
) -> (Drained, bool, PrefetchHint) {
    let mut leg = lock_leg(&receive.leg);
    let drained = if readable {
        read_into(&mut leg, socket, now, batch)
    } else {
        Drained {
            read: 0,
            empty: true,
        }
    };
    let bridged = leg.is_bridged();
    if !leg.ticks_on_task() {
        leg.handle_tick(now);
    }
    if leg.poll_timeout().is_some_and(|t| t <= now) {
        leg.handle_timeout(now);
    }
    if leg.ticks_on_task() && leg.tick_in_progress() {
        // The task's own tick: its frames (and what comes after them) are the task's.
        return (drained, bridged, leg.prefetch_hint());
    }
    while let Some(ev) = leg.poll_event() {
        match ev {
            // A voice or RTT call's audio stays here: listened to (DTMF, Baudot, speech) or
            // not at all.
            MediaEvent::Frame { .. } => {}
            ev => {
                // Closed: the call's task has ended (the stream goes at the next tick).
                if let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) =
                    receive.events.try_send(ev)
                {
                    Metrics::inc(&m.media_events_dropped_total);
                }
            }
        }
    }
    (drained, bridged, leg.prefetch_hint())
}

/// Packets a send ring holds before it flushes (a tick with more calls flushes more than once).
const RING_SLOTS: usize = 256;
/// Sockets a media thread registers with its ring (the others are sent from by descriptor).
const RING_FILES: u32 = 16_384;

/// The thread's send ring, unless `[media] io_uring = false` or the kernel refuses it (the
/// thread then sends with `sendto`).
fn send_ring(shared: &Shared) -> Option<SendRing> {
    if !shared.config.media.io_uring {
        return None;
    }
    // The file table may not exceed the descriptor limit.
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `lim`.
    let files = match unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } {
        0 => (lim.rlim_cur.min(u64::from(RING_FILES))) as u32,
        _ => 0,
    };
    match SendRing::new(RING_SLOTS, files) {
        Ok(r) => {
            shared.metrics.rtp_threads_io_uring.fetch_add(1, Relaxed);
            Some(r)
        }
        Err(e) => {
            tracing::warn!(error = %e, "media thread sends with sendto: io_uring refused");
            None
        }
    }
}

fn shard(rx: mpsc::Receiver<Arc<Stream>>, frame: Duration, shared: Arc<Shared>) {
    raise_priority();
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            // Without epoll the thread reads every socket at each tick.
            tracing::error!(error = %e, "media thread without epoll: receiving at ticks only");
            Epoll(-1)
        }
    };
    // A slab: an epoll token is a call's index; freed slots are reused.
    let mut calls: Vec<Option<Call>> = Vec::new();
    let mut live = 0usize;
    // Calls whose socket is in the epoll set (`Watch::Watched`).
    let mut watched = 0usize;
    let mut out = [0u8; 1500];
    let mut batch = RecvBatch::new();
    let mut ready = [libc::epoll_event { events: 0, u64: 0 }; READY_MAX];
    let mut next = Instant::now() + frame;
    let mut ring = send_ring(&shared);
    let add = |calls: &mut Vec<Option<Call>>,
               live: &mut usize,
               ring: &mut Option<SendRing>,
               stream: Arc<Stream>| {
        let token = calls
            .iter()
            .position(|c| c.is_none())
            .unwrap_or(calls.len());
        let fixed = ring
            .as_mut()
            .is_some_and(|r| r.register(token, stream.socket.as_raw_fd()));
        let call = Some(Call {
            stream,
            receive: None,
            watch: Watcher::new(),
            readable: false,
            hint: PrefetchHint::default(),
            fixed,
        });
        *live += 1;
        match calls.get_mut(token) {
            Some(slot) => *slot = call,
            None => calls.push(call),
        }
    };
    loop {
        // New streams join at the next tick.
        loop {
            match rx.try_recv() {
                Ok(s) => add(&mut calls, &mut live, &mut ring, s),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        if live == 0 {
            // Idle: block until a call arrives, then start a fresh grid.
            match rx.recv() {
                Ok(s) => add(&mut calls, &mut live, &mut ring, s),
                Err(_) => return,
            }
            next = Instant::now() + frame;
            continue;
        }
        let now = Instant::now();
        if now < next {
            // Nothing wakes the thread between ticks: what arrives waits in the sockets (one
            // wake-up per tick for all calls, not one per packet).
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
        let mut failed = 0u64;
        for token in 0..calls.len() {
            prefetch_stream(&calls, token + PREFETCH_AHEAD);
            let slot = &mut calls[token];
            let Some(call) = slot else { continue };
            if call.stream.closed.load(Relaxed) {
                // Out of the epoll set before the socket can close (a duplicate descriptor
                // held elsewhere would keep reporting it).
                if call.watch.is_watched() {
                    epoll.delete(call.stream.socket.as_raw_fd());
                    watched -= 1;
                    shared.metrics.rtp_sockets_watched.fetch_sub(1, Relaxed);
                }
                // Out of the file table too: it holds a reference that would keep the socket
                // (and its port) open.
                if let (true, Some(r)) = (call.fixed, ring.as_mut()) {
                    r.unregister(token);
                }
                *slot = None;
                live -= 1;
                continue;
            }
            if let Some(r) = call.stream.take_receive() {
                call.receive = Some(r);
            }
            for i in 0..send {
                let skip = if i == 0 { skipped } else { 0 };
                match ring.as_mut() {
                    // Built in the ring's next slot, sent with the others at the flush.
                    Some(r) => {
                        if let Some((n, dest)) = call.stream.tick(r.buffer(), skip) {
                            let socket = match call.fixed {
                                true => Socket::Fixed(token as u32),
                                false => Socket::Fd(call.stream.socket.as_raw_fd()),
                            };
                            let f = r.queue(socket, n, dest);
                            sent += f.sent;
                            failed += f.failed;
                        }
                    }
                    None => {
                        if let Some((n, dest)) = call.stream.tick(&mut out, skip) {
                            match call.stream.socket.send_to(&out[..n], dest) {
                                Ok(_) => sent += 1,
                                Err(_) => failed += 1,
                            }
                        }
                    }
                }
            }
        }
        // Every packet of the tick leaves in one system call.
        if let Some(r) = ring.as_mut() {
            let f = r.flush();
            sent += f.sent;
            failed += f.failed;
        }
        if failed > 0 {
            shared
                .metrics
                .rtp_send_errors_total
                .fetch_add(failed, Relaxed);
        }
        // Which watched sockets received since the last tick: one epoll_wait (edge-triggered,
        // so a socket is reported once per arrival after it was emptied) instead of an empty
        // read of every quiet socket. None watched (every call talking): no system call.
        if watched > 0 {
            loop {
                let n = epoll.wait(&mut ready, 0);
                for ev in &ready[..n] {
                    if let Some(Some(c)) = calls.get_mut(ev.u64 as usize) {
                        c.readable = true;
                    }
                }
                if n < ready.len() {
                    break;
                }
            }
        }
        // Every call's packet is out before any receive work (a leg's lock held by its task
        // delays only the receive side).
        for token in 0..calls.len() {
            prefetch_leg(&calls, token + PREFETCH_AHEAD);
            let Some(call) = &mut calls[token] else {
                continue;
            };
            let Some(r) = &call.receive else { continue };
            let (drained, bridged, hint) = receive_tick(
                r,
                &call.stream.socket,
                call.watch.reads(call.readable),
                now,
                &mut batch,
                &shared.metrics,
            );
            call.readable = !drained.empty;
            call.hint = hint;
            let fd = call.stream.socket.as_raw_fd();
            let m = &shared.metrics;
            match call.watch.after_tick(drained.read, bridged) {
                WatchChange::Keep => {}
                WatchChange::Add => {
                    let ok = epoll.0 >= 0 && epoll.add(fd, token);
                    call.watch.added(ok);
                    if ok {
                        watched += 1;
                        m.rtp_sockets_watched.fetch_add(1, Relaxed);
                        Metrics::inc(&m.rtp_watch_changes_total);
                    }
                }
                WatchChange::Delete => {
                    // Busy again (read at every tick from now on), or bridged (the task reads
                    // the socket and relays: no wake-ups here for it).
                    epoll.delete(fd);
                    watched -= 1;
                    m.rtp_sockets_watched.fetch_sub(1, Relaxed);
                    Metrics::inc(&m.rtp_watch_changes_total);
                }
            }
        }
        shared
            .metrics
            .rtp_packets_out_total
            .fetch_add(sent, Relaxed);
        next += frame * due;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `reads` (datagrams read at each tick) and returns the changes asked for.
    fn run(w: &mut Watcher, reads: &[usize]) -> Vec<WatchChange> {
        reads
            .iter()
            .map(|&n| {
                let c = w.after_tick(n, false);
                if c == WatchChange::Add {
                    w.added(true);
                }
                c
            })
            .collect()
    }

    #[test]
    fn a_talking_socket_is_read_at_every_tick_and_never_watched() {
        let mut w = Watcher::new();
        // A packet a tick, and jitter: late packets leave a tick empty and the next one double.
        let reads: Vec<usize> = (0..500)
            .map(|i| match i % 7 {
                3 => 0,
                4 => 2,
                _ => 1,
            })
            .collect();
        assert!(run(&mut w, &reads).iter().all(|c| *c == WatchChange::Keep));
        assert!(
            w.reads(false),
            "a blind socket is read without epoll's word"
        );
        assert!(!w.is_watched());
    }

    #[test]
    fn a_quiet_socket_is_watched_after_five_empty_reads_and_read_only_when_reported() {
        let mut w = Watcher::new();
        let changes = run(&mut w, &[1, 0, 0, 0, 0]);
        assert!(changes.iter().all(|c| *c == WatchChange::Keep));
        assert_eq!(run(&mut w, &[0]), [WatchChange::Add]);
        assert!(w.is_watched());
        assert!(!w.reads(false), "not read unless reported");
        assert!(w.reads(true));
        // Quiet on: it stays watched, at no cost.
        assert!(
            run(&mut w, &[0; 100])
                .iter()
                .all(|c| *c == WatchChange::Keep)
        );
        assert!(w.is_watched());
    }

    #[test]
    fn a_watched_socket_that_talks_again_for_five_ticks_is_read_blind_again() {
        let mut w = Watcher::new();
        run(&mut w, &[0; QUIET_READS as usize]);
        assert!(w.is_watched());
        // A packet now and then (silence suppression's comfort noise) keeps it watched.
        let sparse: Vec<usize> = (0..100).map(|i| usize::from(i % 5 == 0)).collect();
        assert!(run(&mut w, &sparse).iter().all(|c| *c == WatchChange::Keep));
        assert!(
            run(&mut w, &[1, 1, 1, 1])
                .iter()
                .all(|c| *c == WatchChange::Keep)
        );
        assert_eq!(run(&mut w, &[1]), [WatchChange::Delete]);
        assert!(!w.is_watched());
        assert!(w.reads(false));
    }

    #[test]
    fn if_epoll_cannot_take_the_socket_it_stays_read_at_every_tick() {
        let mut w = Watcher::new();
        for _ in 0..QUIET_READS {
            if w.after_tick(0, false) == WatchChange::Add {
                w.added(false);
            }
        }
        assert!(!w.is_watched());
        assert!(w.reads(false));
    }

    #[test]
    fn a_bridged_socket_leaves_the_epoll_set_and_is_not_read_here() {
        let mut w = Watcher::new();
        run(&mut w, &[0; QUIET_READS as usize]);
        assert!(w.is_watched());
        assert_eq!(w.after_tick(0, true), WatchChange::Delete);
        assert!(!w.reads(true), "the task reads a bridged call's socket");
        // It stays so, whatever is read (nothing: it is not read).
        assert_eq!(w.after_tick(0, false), WatchChange::Keep);
        assert_eq!(w.after_tick(3, true), WatchChange::Keep);
        assert!(!w.reads(true));
        // Bridged while blind: nothing to delete.
        let mut b = Watcher::new();
        assert_eq!(b.after_tick(1, true), WatchChange::Keep);
        assert!(!b.reads(true));
    }
}
