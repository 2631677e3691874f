//! Sound cards through cpal: a capture stream as the microphone, a playback
//! stream as the speaker.
//!
//! cpal calls us on its own real-time thread. Between that thread and the
//! call's audio task sits a short bounded queue of 48 kHz mono samples; the
//! device may run at any rate and channel count, and is converted on the
//! device's side of the queue. The device's clock and ours drift apart:
//! the queue absorbs the jitter between them and is trimmed when it grows
//! past a few frames, so drift never turns into delay.
//!
//! A cpal stream cannot move between threads on every platform, so each
//! stream lives on a small thread of its own until the handle is dropped.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cpal::traits::{DeviceTrait, HostTrait, StreamTrait};

use super::resample::StreamResampler;
use super::{FRAME, RATE};

/// The queue holds at most this many frames; older samples are dropped.
const MAX_FRAMES: usize = 6;
/// Above this many frames waiting the queue is trimmed back to one frame:
/// a backlog (the first callbacks come before the first tick, or a stall)
/// would otherwise stay as delay for the rest of the call. One frame more
/// is normal jitter between the device's callbacks and our tick.
const TRIM_ABOVE_FRAMES: usize = 2;
/// cpal asks for up to this long to start a stream.
const START_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("no sound server or card: {0}")]
    NoHost(String),
    #[error("no {direction} device named {name:?}; available: {available}")]
    NotFound {
        direction: &'static str,
        name: String,
        available: String,
    },
    #[error("no default {0} device")]
    NoDefault(&'static str),
    #[error("{name}: {reason}")]
    Stream { name: String, reason: String },
}

/// A sound device as `icephone devices` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// What `--mic`/`--speaker` accept: the backend's own name.
    pub name: String,
    pub description: String,
    pub input: bool,
    pub output: bool,
    pub is_default: bool,
}

/// Every device cpal's default host offers.
pub fn list() -> Result<Vec<DeviceInfo>, DeviceError> {
    let host = cpal::default_host();
    let default_in = host.default_input_device().and_then(|d| device_name(&d));
    let default_out = host.default_output_device().and_then(|d| device_name(&d));
    let devices = host
        .devices()
        .map_err(|e| DeviceError::NoHost(e.to_string()))?;
    Ok(devices
        .filter_map(|d| {
            let name = device_name(&d)?;
            let description = d
                .description()
                .map(|x| x.name().to_owned())
                .unwrap_or_default();
            let (input, output) = (d.supports_input(), d.supports_output());
            let is_default = (input && default_in.as_deref() == Some(&name))
                || (output && default_out.as_deref() == Some(&name));
            Some(DeviceInfo {
                name,
                description,
                input,
                output,
                is_default,
            })
        })
        .collect())
}

/// Checks that a device exists without opening it (opening takes a
/// second or two): `--mic`/`--speaker` are checked at start, opened per call.
pub fn check(name: &str, input: bool) -> Result<(), DeviceError> {
    let dir = if input {
        Direction::Input
    } else {
        Direction::Output
    };
    find_device(&cpal::default_host(), name, dir).map(|_| ())
}

/// Whether the system has a default input (or output) device that works.
/// ALSA's `default` exists even without a card, so it is asked for a
/// configuration, which fails there.
pub fn has_default(input: bool) -> bool {
    let host = cpal::default_host();
    // Without a sound server cpal talks to ALSA, whose library prints its
    // own complaints on stderr when asked about a card that is not there.
    #[cfg(target_os = "linux")]
    if host.id() == cpal::HostId::Alsa && !std::path::Path::new("/dev/snd").exists() {
        return false;
    }
    let device = if input {
        host.default_input_device()
    } else {
        host.default_output_device()
    };
    match device {
        Some(d) if input => d.default_input_config().is_ok(),
        Some(d) => d.default_output_config().is_ok(),
        None => false,
    }
}

/// The part of cpal's id after the host (`vmic`, `hw:0,0`).
fn device_name(d: &cpal::Device) -> Option<String> {
    d.id().ok().map(|id| id.id().to_owned())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Input,
    Output,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::Input => "input",
            Direction::Output => "output",
        }
    }
}

fn find_device(host: &cpal::Host, name: &str, dir: Direction) -> Result<cpal::Device, DeviceError> {
    if name == "default" {
        let d = match dir {
            Direction::Input => host.default_input_device(),
            Direction::Output => host.default_output_device(),
        };
        return d.ok_or(DeviceError::NoDefault(dir.as_str()));
    }
    let devices: Vec<cpal::Device> = host
        .devices()
        .map_err(|e| DeviceError::NoHost(e.to_string()))?
        .filter(|d| match dir {
            Direction::Input => d.supports_input(),
            Direction::Output => d.supports_output(),
        })
        .collect();
    let names: Vec<String> = devices.iter().filter_map(device_name).collect();
    devices
        .into_iter()
        .find(|d| device_name(d).as_deref() == Some(name))
        .ok_or_else(|| DeviceError::NotFound {
            direction: dir.as_str(),
            name: name.to_owned(),
            available: if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            },
        })
}

/// 48 kHz when the device takes it (no resampling), else its own rate; one
/// channel when it takes it, else its default count.
fn choose_config(
    device: &cpal::Device,
    dir: Direction,
) -> Result<(cpal::StreamConfig, cpal::SampleFormat), String> {
    let default = match dir {
        Direction::Input => device.default_input_config(),
        Direction::Output => device.default_output_config(),
    }
    .map_err(|e| e.to_string())?;
    let ranges: Vec<cpal::SupportedStreamConfigRange> = match dir {
        Direction::Input => device
            .supported_input_configs()
            .map(|r| r.collect())
            .unwrap_or_default(),
        Direction::Output => device
            .supported_output_configs()
            .map(|r| r.collect())
            .unwrap_or_default(),
    };
    let format = default.sample_format();
    let fits = |channels: u16, rate: u32| {
        ranges.iter().any(|r| {
            r.channels() == channels
                && r.sample_format() == format
                && r.min_sample_rate() <= rate
                && rate <= r.max_sample_rate()
        })
    };
    let channels = if fits(1, RATE) || fits(1, default.sample_rate()) {
        1
    } else {
        default.channels()
    };
    let rate = if fits(channels, RATE) {
        RATE
    } else {
        default.sample_rate()
    };
    // One callback a frame; the default lets some backends hand over
    // bursts of hundreds of milliseconds.
    let frames = (u64::from(rate) * FRAME as u64 / u64::from(RATE)) as u32;
    let config = cpal::StreamConfig {
        channels,
        sample_rate: rate,
        buffer_size: cpal::BufferSize::Fixed(frames),
    };
    Ok((config, format))
}

/// The device named `name` and the configuration to open it with.
fn open_device(
    name: &str,
    dir: Direction,
) -> Result<(cpal::Device, cpal::StreamConfig, cpal::SampleFormat), String> {
    let device = find_device(&cpal::default_host(), name, dir).map_err(|e| e.to_string())?;
    let (config, format) = choose_config(&device, dir)?;
    Ok((device, config, format))
}

/// cpal's error callback: counted, and logged.
fn count_errors(counters: &Arc<DeviceCounters>, what: &'static str) -> impl FnMut(cpal::Error) {
    let counters = counters.clone();
    move |e: cpal::Error| {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(error = %e, "{what} stream");
    }
}

/// Counters shared with the device thread.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    /// Samples the device delivered (capture) or asked for (playback).
    pub samples: AtomicU64,
    /// Samples dropped because the queue was too long (drift or a stall).
    pub dropped: AtomicU64,
    /// Samples of silence made up because the queue was empty.
    pub filled: AtomicU64,
    /// Errors cpal reported on the stream.
    pub errors: AtomicU64,
}

/// The bounded queue between a device thread and the audio task.
#[derive(Default)]
struct SampleQueue {
    samples: VecDeque<i16>,
}

impl SampleQueue {
    fn push(&mut self, input: &[i16], counters: &DeviceCounters) {
        self.samples.extend(input);
        let excess = self.samples.len().saturating_sub(MAX_FRAMES * FRAME);
        if excess > 0 {
            self.samples.drain(..excess);
            counters.dropped.fetch_add(excess as u64, Ordering::Relaxed);
        }
    }
}

/// Owns the thread a stream lives on; dropping it stops the stream.
struct StreamThread {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl StreamThread {
    /// Builds the stream on its own thread and waits until it plays.
    fn start<F>(name: String, build: F) -> Result<Self, DeviceError>
    where
        F: FnOnce() -> Result<cpal::Stream, String> + Send + 'static,
    {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("audio {name}"))
            .spawn(move || {
                let stream =
                    match build().and_then(|s| s.play().map(|_| s).map_err(|e| e.to_string())) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                let _ = ready_tx.send(Ok(()));
                // Until the handle drops (the sender with it).
                let _ = stop_rx.recv();
                drop(stream);
            })
            .map_err(|e| DeviceError::Stream {
                name: name.clone(),
                reason: e.to_string(),
            })?;
        let started = ready_rx
            .recv_timeout(START_TIMEOUT + Duration::from_secs(1))
            .unwrap_or_else(|_| Err("the stream did not start in time".into()));
        let mut handle = StreamThread {
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match started {
            Ok(()) => Ok(handle),
            Err(reason) => {
                handle.stop();
                Err(DeviceError::Stream { name, reason })
            }
        }
    }

    /// Signals the thread and leaves it to finish: closing a stream can
    /// wait on the sound server (PulseAudio drains the playback buffer),
    /// and a call must not wait for that.
    fn stop(&mut self) {
        self.stop.take();
        self.thread.take();
    }
}

impl DeviceCounters {
    fn log(&self, what: &str, name: &str) {
        tracing::info!(
            device = name,
            samples = self.samples.load(Ordering::Relaxed),
            dropped = self.dropped.load(Ordering::Relaxed),
            filled = self.filled.load(Ordering::Relaxed),
            errors = self.errors.load(Ordering::Relaxed),
            "{what} closed"
        );
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.counters.log("microphone", &self.name);
    }
}

impl Drop for Playback {
    fn drop(&mut self) {
        self.counters.log("speaker", &self.name);
    }
}

impl Drop for StreamThread {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A microphone: `next_frame` takes 20 ms of what the device captured.
pub struct Capture {
    queue: Arc<Mutex<SampleQueue>>,
    /// Notified from the device's thread when a whole frame is queued.
    pub ready: Arc<tokio::sync::Notify>,
    pub counters: Arc<DeviceCounters>,
    pub name: String,
    _thread: StreamThread,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture").field("name", &self.name).finish()
    }
}

impl Capture {
    /// `default` or a device name from [`list`].
    pub fn open(name: &str) -> Result<Self, DeviceError> {
        let queue = Arc::new(Mutex::new(SampleQueue::default()));
        let counters = Arc::new(DeviceCounters::default());
        let ready = Arc::new(tokio::sync::Notify::new());
        let (q, c, n, r) = (
            queue.clone(),
            counters.clone(),
            name.to_owned(),
            ready.clone(),
        );
        let thread = StreamThread::start(name.to_owned(), move || {
            let (device, config, format) = open_device(&n, Direction::Input)?;
            let mut conv = Converter::new(config.channels, config.sample_rate, RATE);
            let on_error = count_errors(&c, "microphone");
            macro_rules! build {
                ($t:ty, $to_f32:expr) => {
                    device.build_input_stream::<$t, _, _>(
                        config,
                        move |data: &[$t], _| {
                            c.samples.fetch_add(data.len() as u64, Ordering::Relaxed);
                            let mono = conv.convert_to_mono_48k(data.iter().map(|s| $to_f32(*s)));
                            let whole = q.lock().map(|mut q| {
                                q.push(mono, &c);
                                q.samples.len() >= FRAME
                            });
                            if whole.unwrap_or(false) {
                                r.notify_one();
                            }
                        },
                        on_error,
                        Some(START_TIMEOUT),
                    )
                };
            }
            match format {
                cpal::SampleFormat::F32 => build!(f32, |s: f32| s),
                cpal::SampleFormat::I16 => build!(i16, |s: i16| f32::from(s) / 32768.0),
                other => return Err(format!("unsupported sample format {other:?}")),
            }
            .map_err(|e| e.to_string())
        })?;
        tracing::info!(device = name, "microphone open");
        Ok(Capture {
            queue,
            ready,
            counters,
            name: name.to_owned(),
            _thread: thread,
        })
    }

    /// How long the newest frame handed out had waited, in ms: what is
    /// still queued behind it arrived after it, in real time.
    pub fn waited_ms(&self) -> f64 {
        self.queue
            .lock()
            .map(|q| q.samples.len() as f64 / 48.0)
            .unwrap_or(0.0)
    }

    /// Whether a whole frame is queued.
    pub fn frame_ready(&self) -> bool {
        self.queue
            .lock()
            .map(|q| q.samples.len() >= FRAME)
            .unwrap_or(false)
    }

    /// The next 20 ms; silence while the device has not delivered it yet.
    pub fn next_frame(&mut self, out: &mut [i16; FRAME]) {
        let Ok(mut q) = self.queue.lock() else {
            out.fill(0);
            return;
        };
        if q.samples.len() < FRAME {
            out.fill(0);
            self.counters
                .filled
                .fetch_add(FRAME as u64, Ordering::Relaxed);
            return;
        }
        for (o, s) in out.iter_mut().zip(q.samples.drain(..FRAME)) {
            *o = s;
        }
        if q.samples.len() > TRIM_ABOVE_FRAMES * FRAME {
            let excess = q.samples.len() - FRAME;
            q.samples.drain(..excess);
            self.counters
                .dropped
                .fetch_add(excess as u64, Ordering::Relaxed);
        }
    }
}

/// A speaker: `write` queues 20 ms for the device to play.
pub struct Playback {
    queue: Arc<Mutex<SampleQueue>>,
    pub counters: Arc<DeviceCounters>,
    pub name: String,
    _thread: StreamThread,
}

impl Playback {
    /// `default` or a device name from [`list`].
    pub fn open(name: &str) -> Result<Self, DeviceError> {
        let queue = Arc::new(Mutex::new(SampleQueue::default()));
        let counters = Arc::new(DeviceCounters::default());
        let (q, c, n) = (queue.clone(), counters.clone(), name.to_owned());
        let thread = StreamThread::start(name.to_owned(), move || {
            let (device, config, format) = open_device(&n, Direction::Output)?;
            let mut conv = Converter::new(config.channels, RATE, config.sample_rate);
            let on_error = count_errors(&c, "speaker");
            macro_rules! build {
                ($t:ty, $from_f32:expr) => {
                    device.build_output_stream::<$t, _, _>(
                        config,
                        move |data: &mut [$t], _| {
                            c.samples.fetch_add(data.len() as u64, Ordering::Relaxed);
                            let Ok(mut q) = q.lock() else { return };
                            let missing = conv.fill_from(&mut q.samples, data.len());
                            drop(q);
                            if missing > 0 {
                                c.filled.fetch_add(missing as u64, Ordering::Relaxed);
                            }
                            for (o, v) in data.iter_mut().zip(conv.output()) {
                                *o = $from_f32(*v);
                            }
                        },
                        on_error,
                        Some(START_TIMEOUT),
                    )
                };
            }
            match format {
                cpal::SampleFormat::F32 => build!(f32, |v: f32| v),
                cpal::SampleFormat::I16 => {
                    build!(i16, |v: f32| (v.clamp(-1.0, 1.0) * 32767.0) as i16)
                }
                other => return Err(format!("unsupported sample format {other:?}")),
            }
            .map_err(|e| e.to_string())
        })?;
        tracing::info!(device = name, "speaker open");
        Ok(Playback {
            queue,
            counters,
            name: name.to_owned(),
            _thread: thread,
        })
    }

    pub fn write(&mut self, frame: &[i16]) {
        if let Ok(mut q) = self.queue.lock() {
            q.push(frame, &self.counters);
            if q.samples.len() > (TRIM_ABOVE_FRAMES + 1) * FRAME {
                let excess = q.samples.len() - 2 * FRAME;
                q.samples.drain(..excess);
                self.counters
                    .dropped
                    .fetch_add(excess as u64, Ordering::Relaxed);
            }
        }
    }
}

/// Channels and rate between the device and 48 kHz mono, keeping its
/// buffers so the real-time callback does not allocate once warm.
struct Converter {
    channels: usize,
    resampler: StreamResampler,
    mono: Vec<f32>,
    resampled: Vec<f32>,
    pcm: Vec<i16>,
    out: Vec<f32>,
}

impl Converter {
    fn new(channels: u16, from: u32, to: u32) -> Self {
        Converter {
            channels: usize::from(channels.max(1)),
            resampler: StreamResampler::new(from, to),
            mono: Vec::new(),
            resampled: Vec::new(),
            pcm: Vec::new(),
            out: Vec::new(),
        }
    }

    /// Interleaved device samples in, 48 kHz mono out.
    fn convert_to_mono_48k(&mut self, interleaved: impl Iterator<Item = f32>) -> &[i16] {
        self.mono.clear();
        let ch = self.channels;
        let (mut acc, mut n) = (0.0f32, 0usize);
        for s in interleaved {
            acc += s;
            n += 1;
            if n == ch {
                self.mono.push(acc / ch as f32);
                acc = 0.0;
                n = 0;
            }
        }
        self.resampled.clear();
        self.resampler.process(&self.mono, &mut self.resampled);
        self.pcm.clear();
        self.pcm.extend(
            self.resampled
                .iter()
                .map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16),
        );
        &self.pcm
    }

    /// Fills `output()` with `len` interleaved device samples from the
    /// queue; returns how many 48 kHz samples had to be silence. Resampled
    /// samples beyond this callback's need wait in `resampled` for the next.
    fn fill_from(&mut self, queue: &mut VecDeque<i16>, len: usize) -> usize {
        let frames = len / self.channels;
        let mut missing = 0;
        while self.resampled.len() < frames {
            let want = self.resampler.input_needed(frames - self.resampled.len());
            self.mono.clear();
            let take = want.min(queue.len());
            self.mono
                .extend(queue.drain(..take).map(|s| f32::from(s) / 32768.0));
            if take < want {
                missing += want - take;
                self.mono.resize(want, 0.0);
            }
            self.resampler.process(&self.mono, &mut self.resampled);
        }
        self.out.clear();
        for v in self.resampled.drain(..frames) {
            for _ in 0..self.channels {
                self.out.push(v);
            }
        }
        self.out.resize(len, 0.0);
        missing
    }

    fn output(&self) -> &[f32] {
        &self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_and_drops_the_oldest() {
        let counters = DeviceCounters::default();
        let mut q = SampleQueue::default();
        for i in 0..(MAX_FRAMES + 2) {
            q.push(&[i as i16; FRAME], &counters);
        }
        assert_eq!(q.samples.len(), MAX_FRAMES * FRAME);
        assert_eq!(q.samples[0], 2, "the two oldest frames went");
        assert_eq!(counters.dropped.load(Ordering::Relaxed), 2 * FRAME as u64);
    }

    #[test]
    fn stereo_44k1_becomes_48k_mono() {
        let mut conv = Converter::new(2, 44_100, RATE);
        let mut out = Vec::new();
        // One second of a 1 kHz sine on both channels, in 10 ms callbacks.
        let mut t = 0usize;
        for _ in 0..100 {
            let chunk: Vec<f32> = (0..441)
                .flat_map(|_| {
                    let v = (std::f32::consts::TAU * 1000.0 * t as f32 / 44_100.0).sin() * 0.5;
                    t += 1;
                    [v, v]
                })
                .collect();
            out.extend_from_slice(conv.convert_to_mono_48k(chunk.into_iter()));
        }
        assert!((out.len() as i64 - 48_000).abs() <= 2, "{}", out.len());
        // Zero crossings count the frequency: 1 kHz is 2000 a second.
        let crossings = out.windows(2).filter(|w| (w[0] < 0) != (w[1] < 0)).count();
        assert!((1990..=2010).contains(&crossings), "{crossings}");
    }

    #[test]
    fn playback_takes_what_the_device_asks_and_fills_gaps_with_silence() {
        let mut conv = Converter::new(2, RATE, RATE);
        let mut q: VecDeque<i16> = (0..1000).map(|i| i as i16).collect();
        let missing = conv.fill_from(&mut q, 2 * 960);
        assert_eq!(missing, 0);
        assert_eq!(q.len(), 40);
        assert_eq!(
            &conv.output()[..4],
            &[0.0, 0.0, 1.0 / 32768.0, 1.0 / 32768.0]
        );
        let missing = conv.fill_from(&mut q, 2 * 960);
        assert_eq!(missing, 920, "40 samples were left");
        assert_eq!(conv.output().len(), 2 * 960);
    }

    #[test]
    fn playback_at_another_rate_loses_no_sample_between_callbacks() {
        // 48 kHz to a 96 kHz device in callbacks of 441 frames: every
        // queued sample is played once, in order.
        let mut conv = Converter::new(1, RATE, 96_000);
        let mut q: VecDeque<i16> = (0..4800).collect();
        let mut played = Vec::new();
        while q.len() > 500 {
            conv.fill_from(&mut q, 441);
            played.extend_from_slice(conv.output());
        }
        // A ramp of one per sample, doubled: every step is exactly half.
        let steps = played.windows(2).map(|w| (w[1] - w[0]) * 32768.0);
        let jumps = steps.filter(|d| !(0.49..=0.51).contains(d)).count();
        assert_eq!(jumps, 0, "a sample was lost or repeated");
    }
}
