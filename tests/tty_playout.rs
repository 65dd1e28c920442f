//! Issue #19: a TTY caller's Baudot question through the call's receive path (RTP → jitter
//! buffer → `TtySession`) on a virtual clock, with what a loaded 2-core machine does to it: the
//! caller's packets sent up to 17 ms late and some delayed 30 ms more on the way, duplicated and
//! swapped, and the IVR's call task not scheduled for 40–600 ms at a time, waking with its
//! playout tick and a socket full of packets.
//!
//! The shell's tick is replayed as `server::call` runs it: read the datagrams that have arrived
//! (`Inbound::wants_datagrams`), pop this tick's frame and catch-up frames (`Inbound::pop_due`),
//! hand each to `TtySession::handle_playout`. The question must be read exactly and answered
//! once. The hand-off before the fix (tick popped before the socket was read; concealment fed as
//! audio; 20 ms of silence inserted for every tick the buffer was dry) is replayed on the same
//! trace and printed: it garbled the question, which is what failed 381 of 706 TTY calls.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ivr::audio::tty::{TtyModulator, TtyTxConfig};
use ivr::call::tty::{TtyAction, TtySession};
use ivr::flow::tty::{TtyConfig, TtyPrompts};
use ivr::nlu::Nlu;
use ivr::rtp::codec::Encoder;
use ivr::rtp::inbound::{Inbound, InboundConfig};
use ivr::rtp::packet::write_rtp;
use ivr::types::{Codec, Lang};

const QUESTION: &str = "WHAT IS MY CASE STATUS Q GA";
const FRAME: Duration = Duration::from_millis(20);

fn deps() -> (Arc<Nlu>, Arc<TtyPrompts>) {
    static DEPS: OnceLock<(Arc<Nlu>, Arc<TtyPrompts>)> = OnceLock::new();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    DEPS.get_or_init(|| {
        let nlu = ivr::cli::call::load_nlu(&repo.join("grammars")).expect("grammars load");
        let prompts =
            ivr::cli::call::load_tty_prompts(&repo.join("prompts")).expect("prompts load");
        (Arc::new(nlu), Arc::new(prompts))
    })
    .clone()
}

/// xorshift64*: deterministic and dependency-free.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn ms(&mut self, from: f64, to: f64) -> Duration {
        Duration::from_secs_f64((from + (to - from) * self.uniform()) / 1000.0)
    }
}

fn baudot(text: &str) -> Vec<i16> {
    let mut tx = TtyModulator::new(TtyTxConfig::default());
    tx.push_text(text).unwrap();
    let mut out = Vec::new();
    let mut frame = [0i16; 160];
    loop {
        let n = tx.fill(&mut frame);
        out.extend_from_slice(&frame[..n]);
        if n < frame.len() {
            break;
        }
    }
    out
}

/// The impairments found under load (see BENCHMARKING.md, "TTY under load").
#[derive(Clone, Copy, Debug)]
struct Impairments {
    /// Share of packets the caller's pacing sends 5–17 ms late (the tester's p99 was 4.2 ms,
    /// max 16.6 ms), and of packets delayed 25–35 ms more on the way.
    sent_late: f64,
    delayed: f64,
    /// Share of packets delivered twice, and of adjacent pairs swapped.
    duplicated: f64,
    swapped: f64,
    /// Share of ticks after which the call task is not scheduled for 40–600 ms (the 16-slot
    /// buffer overflowed 35–43 times per TTY call at 150 concurrent calls: stalls past 320 ms).
    stalls: f64,
}

const LOADED: Impairments = Impairments {
    sent_late: 0.05,
    delayed: 0.02,
    duplicated: 0.02,
    swapped: 0.02,
    stalls: 0.04,
};

/// Datagrams with their arrival times, in arrival order: `caller` is the audio from the start
/// of the call (8 kHz), one packet per 20 ms.
fn trace(caller: &[i16], imp: Impairments, rng: &mut Rng, t0: Instant) -> Vec<(Instant, Vec<u8>)> {
    let mut enc = Encoder::new(Codec::Pcmu).unwrap();
    let mut out = Vec::new();
    for (k, frame) in caller.chunks(160).enumerate() {
        let mut pcm = [0i16; 160];
        pcm[..frame.len()].copy_from_slice(frame);
        let mut payload = [0u8; 160];
        enc.encode(&pcm, &mut payload).unwrap();
        let mut buf = [0u8; 200];
        let n = write_rtp(
            &mut buf,
            0,
            (1000 + k) as u16,
            (k * 160) as u32,
            0x1234_5678,
            false,
            &payload,
        )
        .unwrap();
        let mut at = t0 + FRAME * k as u32 + rng.ms(0.0, 0.5);
        if rng.uniform() < imp.sent_late {
            at += rng.ms(5.0, 17.0);
        }
        if rng.uniform() < imp.delayed {
            at += rng.ms(25.0, 35.0);
        }
        out.push((at, buf[..n].to_vec()));
        if rng.uniform() < imp.duplicated {
            out.push((at + rng.ms(0.0, 3.0), buf[..n].to_vec()));
        }
    }
    for k in 1..out.len() {
        if rng.uniform() < imp.swapped {
            let (a, b) = (out[k - 1].0, out[k].0);
            out[k - 1].0 = b;
            out[k].0 = a + Duration::from_micros(1);
        }
    }
    out.sort_by_key(|(at, _)| *at);
    out
}

/// The call's receive side as the shell runs it, on a virtual clock.
struct Call {
    session: TtySession,
    inbound: Inbound,
    pcm: [i16; 960],
    /// When the tones of the IVR's current line have been sent.
    sent_at: Option<Instant>,
    lines_typed: usize,
}

impl Call {
    fn new() -> Call {
        let (nlu, prompts) = deps();
        Call {
            session: TtySession::new(
                nlu,
                prompts,
                TtyConfig::default(),
                Lang::En,
                None,
                Arc::default(),
            ),
            inbound: Inbound::new(InboundConfig::for_codec(Codec::Pcmu)).unwrap(),
            pcm: [0; 960],
            sent_at: None,
            lines_typed: 0,
        }
    }

    /// The conversation's outputs; a line's tones take their length to send.
    fn poll(&mut self, now: Instant) {
        if self.sent_at.is_some_and(|t| now >= t) {
            self.sent_at = None;
            self.session.handle_sent(now);
        }
        if self.session.poll_timeout().is_some_and(|t| now >= t) {
            self.session.handle_timeout(now);
        }
        while let Some(action) = self.session.poll_action() {
            if let TtyAction::Play(pcm) = action {
                self.lines_typed += 1;
                self.sent_at = Some(now + Duration::from_micros(pcm.len() as u64 * 125));
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum HandOff {
    /// `server::call` since issue #19.
    Fixed,
    /// Before: the tick popped once before reading the socket, fed concealment as audio and
    /// 20 ms of silence for a dry tick.
    Before,
}

/// Runs the call for `secs` of virtual time; returns the caller's lines as the conversation
/// read them, the intents, and how many lines the IVR typed.
fn run(
    caller: &[i16],
    imp: Impairments,
    seed: u64,
    hand_off: HandOff,
    secs: u64,
) -> (Vec<String>, Vec<Option<String>>, usize) {
    let mut rng = Rng(seed);
    let t0 = Instant::now();
    let datagrams = trace(caller, imp, &mut rng, t0);
    let mut next = 0;
    let mut call = Call::new();
    let mut next_tick = t0 + FRAME;
    let end = t0 + Duration::from_secs(secs);
    let mut now = t0;
    call.poll(now);
    while now < end {
        // Packets arriving while the task waits for its tick are read as they come (those
        // that waited in the socket through the last tick, at once).
        // Since the fix the socket is not read while the backlog is past what the buffer should
        // hold: the packets wait in the kernel until the ticks catch up.
        while next < datagrams.len() && datagrams[next].0 <= next_tick {
            if hand_off == HandOff::Fixed && !call.inbound.wants_datagrams() {
                break;
            }
            let (at, d) = &datagrams[next];
            let _ = call.inbound.handle_datagram((*at).max(now), d);
            next += 1;
        }
        // The tick; sometimes the task is not scheduled for a while first.
        now = next_tick.max(now);
        if rng.uniform() < imp.stalls {
            now += rng.ms(40.0, 600.0);
        }
        next_tick += FRAME;
        if now > next_tick + FRAME * 5 {
            next_tick = now + FRAME;
        }
        match hand_off {
            HandOff::Fixed => {
                for _ in 0..16 {
                    if next >= datagrams.len() || datagrams[next].0 > now {
                        break;
                    }
                    if !call.inbound.wants_datagrams() {
                        break;
                    }
                    let _ = call.inbound.handle_datagram(now, &datagrams[next].1);
                    next += 1;
                }
                let mut popped = 0;
                while call.inbound.pop_due(popped) {
                    let media = call.inbound.poll_media(now, &mut call.pcm);
                    let n = match media {
                        ivr::rtp::inbound::Playout::Audio(n)
                        | ivr::rtp::inbound::Playout::Concealed(n) => n,
                        ivr::rtp::inbound::Playout::Empty => 0,
                    };
                    call.session.handle_playout(now, media, &call.pcm[..n]);
                    popped += 1;
                }
            }
            HandOff::Before => {
                let n = call.inbound.poll_audio(now, &mut call.pcm);
                let pcm = call.pcm[..n].to_vec();
                if n > 0 {
                    call.session.handle_pcm(now, &pcm);
                } else {
                    call.session.handle_gap(now, 160);
                }
                // The datagrams that waited in the socket, read once no tick is due (the
                // select is biased: catch-up ticks first).
                while next_tick > now && next < datagrams.len() && datagrams[next].0 <= now {
                    let _ = call.inbound.handle_datagram(now, &datagrams[next].1);
                    next += 1;
                }
            }
        }
        call.poll(now);
    }
    if hand_off == HandOff::Fixed {
        // No frame that arrived was dropped for want of room (a frame later than the buffer's
        // depth is an erasure the modem bridges).
        let j = call.inbound.jitter_stats();
        println!("seed {seed}: {j:?}");
        assert_eq!(j.overflow, 0, "seed {seed}: {j:?}");
    }
    let record = call.session.record();
    (
        record
            .caller_lines(true)
            .into_iter()
            .map(String::from)
            .collect(),
        record.intents.iter().map(|(i, _)| i.clone()).collect(),
        call.lines_typed,
    )
}

/// The caller listens to the greeting (silence: a TTY line sends it between bursts), types the
/// question 12 s in, then listens to the answer.
fn caller() -> Vec<i16> {
    let mut audio = vec![0i16; 8000 * 12];
    audio.extend(baudot(QUESTION));
    audio.extend(vec![0i16; 8000 * 8]);
    audio
}

#[test]
fn the_question_survives_a_loaded_machine_exactly() {
    let audio = caller();
    let secs = (audio.len() / 8000) as u64;
    for seed in [1u64, 2, 3, 4] {
        let (lines, intents, typed) = run(&audio, LOADED, seed * 7919, HandOff::Fixed, secs);
        let (before, _, _) = run(&audio, LOADED, seed * 7919, HandOff::Before, secs);
        println!("seed {seed}: read {lines:?}; before the fix {before:?}");
        assert_eq!(lines, [QUESTION], "seed {seed}");
        assert_eq!(intents, [Some("case_status".to_string())], "seed {seed}");
        // The greeting, then the answer with the link offer: typed once.
        assert_eq!(typed, 2, "seed {seed}: lines typed");
    }
}

#[test]
fn the_trace_is_what_broke_the_old_hand_off() {
    // Not a test of old code for its own sake: it shows the impairments above are the ones
    // that matter, so the test above is not passing on a clean line.
    let audio = caller();
    let secs = (audio.len() / 8000) as u64;
    let garbled = [1u64, 2, 3, 4]
        .iter()
        .filter(|&&seed| {
            let (lines, _, _) = run(&audio, LOADED, seed * 7919, HandOff::Before, secs);
            lines != [QUESTION]
        })
        .count();
    assert!(
        garbled >= 2,
        "the old hand-off read the question exactly on {} of 4 traces",
        4 - garbled
    );
}

#[test]
fn a_clean_line_reads_the_same_either_way() {
    let audio = caller();
    let secs = (audio.len() / 8000) as u64;
    let clean = Impairments {
        sent_late: 0.0,
        delayed: 0.0,
        duplicated: 0.0,
        swapped: 0.0,
        stalls: 0.0,
    };
    for hand_off in [HandOff::Fixed, HandOff::Before] {
        let (lines, intents, typed) = run(&audio, clean, 5, hand_off, secs);
        assert_eq!(lines, [QUESTION]);
        assert_eq!(intents, [Some("case_status".to_string())]);
        assert_eq!(typed, 2);
    }
}
