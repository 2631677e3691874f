//! Where a call's audio comes from and goes: a sound device (through
//! [`super::device`]), or for tests and servers a WAV file, a tone or
//! silence as the microphone and a WAV file or nothing as the speaker.
//! Parsed from the `--mic` / `--speaker` flags.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use thiserror::Error;

use super::{FRAME, RATE};

#[derive(Debug, Error)]
pub enum AudioError {
    #[error("{0:?}: expected default, DEVICE, file:PATH.wav, tone:HZ, silence or null")]
    Spec(String),
    #[error(transparent)]
    Device(#[from] super::device::DeviceError),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// Where outgoing audio comes from.
#[derive(Debug)]
pub enum Source {
    /// A sine at `hz`, at about -12 dBFS.
    Tone {
        hz: f64,
        phase: f64,
    },
    /// A WAV file, played once, then silence.
    Samples {
        samples: Vec<i16>,
        at: usize,
    },
    Silence,
    /// A sound card's capture stream.
    Device(Box<super::device::Capture>),
}

impl Source {
    /// `tone:HZ`, `file:PATH.wav`, `silence`, `default` or a device name.
    pub fn parse(spec: &str) -> Result<Self, AudioError> {
        if let Some(hz) = spec.strip_prefix("tone:") {
            let hz: f64 = hz.parse().map_err(|_| AudioError::Spec(spec.into()))?;
            if !(20.0..=20_000.0).contains(&hz) {
                return Err(AudioError::Spec(spec.into()));
            }
            return Ok(Source::Tone { hz, phase: 0.0 });
        }
        if let Some(path) = spec.strip_prefix("file:") {
            return Ok(Source::Samples {
                samples: read_wav(Path::new(path))?,
                at: 0,
            });
        }
        match spec {
            "silence" => Ok(Source::Silence),
            "default" if !super::device::has_default(true) => {
                tracing::warn!("no sound device: the microphone is silent (--mic chooses one)");
                Ok(Source::Silence)
            }
            name if names_device(name) => Ok(Source::Device(Box::new(
                super::device::Capture::open(name)?,
            ))),
            _ => Err(AudioError::Spec(spec.into())),
        }
    }

    /// For a sound card: signalled whenever the device has delivered a
    /// frame, so sending can follow the device's clock. `None` for files,
    /// tones and silence, which are made when asked.
    pub fn ready_signal(&self) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        match self {
            Source::Device(capture) => Some(capture.ready.clone()),
            _ => None,
        }
    }

    /// Whether a whole frame is waiting (always, but for a sound card).
    pub fn frame_ready(&self) -> bool {
        match self {
            Source::Device(capture) => capture.frame_ready(),
            _ => true,
        }
    }

    /// How long the frame just handed out had waited since it was
    /// captured, in ms: files and tones are made on demand (0).
    pub fn waited_ms(&self) -> f64 {
        match self {
            Source::Device(capture) => capture.waited_ms(),
            _ => 0.0,
        }
    }

    /// The next 20 ms.
    pub fn next_frame(&mut self, out: &mut [i16; FRAME]) {
        match self {
            Source::Tone { hz, phase } => {
                let step = std::f64::consts::TAU * *hz / f64::from(RATE);
                for s in out.iter_mut() {
                    *s = (phase.sin() * 8192.0) as i16;
                    *phase = (*phase + step) % std::f64::consts::TAU;
                }
            }
            Source::Samples { samples, at } => {
                for s in out.iter_mut() {
                    *s = samples.get(*at).copied().unwrap_or(0);
                    *at += 1;
                }
            }
            Source::Silence => out.fill(0),
            Source::Device(capture) => capture.next_frame(out),
        }
    }
}

/// A spec that names a sound device (`default`, `mic_bob`, `hw:0,0`)
/// rather than a file, a tone or a keyword.
fn names_device(spec: &str) -> bool {
    !(spec.is_empty()
        || spec == "silence"
        || spec == "null"
        || spec.starts_with("file:")
        || spec.starts_with("tone:"))
}

/// Whether `--mic`/`--speaker` specs would open, without holding a sound
/// device (a speaker file is created, as the call would create it).
/// `default` always does: without a device it is silence.
pub fn check_specs(mic: &str, speaker: &str) -> Result<(), String> {
    match mic {
        // Silence where there is no device; said when a call opens it.
        "default" => {}
        name if names_device(name) => {
            super::device::check(name, true).map_err(|e| format!("--mic: {e}"))?
        }
        spec => {
            Source::parse(spec).map_err(|e| format!("--mic: {e}"))?;
        }
    }
    match speaker {
        "default" => {}
        name if names_device(name) => {
            super::device::check(name, false).map_err(|e| format!("--speaker: {e}"))?
        }
        spec => {
            Sink::parse(spec).map_err(|e| format!("--speaker: {e}"))?;
        }
    }
    Ok(())
}

/// Where incoming audio goes.
pub enum Sink {
    Wav(Box<hound::WavWriter<BufWriter<File>>>),
    Null,
    /// A sound card's playback stream.
    Device(Box<super::device::Playback>),
}

impl Sink {
    /// `file:PATH.wav`, `null`, `default` or a device name.
    pub fn parse(spec: &str) -> Result<Self, AudioError> {
        if let Some(path) = spec.strip_prefix("file:") {
            let spec_wav = hound::WavSpec {
                channels: 1,
                sample_rate: RATE,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            };
            let w = hound::WavWriter::create(path, spec_wav).map_err(|e| AudioError::File {
                path: path.into(),
                reason: e.to_string(),
            })?;
            return Ok(Sink::Wav(Box::new(w)));
        }
        match spec {
            "null" => Ok(Sink::Null),
            "default" if !super::device::has_default(false) => {
                tracing::warn!(
                    "no sound device: what the far end says is not played (--speaker chooses one)"
                );
                Ok(Sink::Null)
            }
            name if names_device(name) => {
                Ok(Sink::Device(Box::new(super::device::Playback::open(name)?)))
            }
            _ => Err(AudioError::Spec(spec.into())),
        }
    }

    pub fn write(&mut self, frame: &[i16]) {
        match self {
            Sink::Wav(w) => {
                for s in frame {
                    if w.write_sample(*s).is_err() {
                        return;
                    }
                }
            }
            Sink::Device(playback) => playback.write(frame),
            Sink::Null => {}
        }
    }

    /// Writes the WAV header's lengths; without this the file is unreadable.
    pub fn finish(self) -> Result<(), AudioError> {
        match self {
            Sink::Wav(w) => w.finalize().map_err(|e| AudioError::File {
                path: PathBuf::from("speaker file"),
                reason: e.to_string(),
            }),
            Sink::Null | Sink::Device(_) => Ok(()),
        }
    }
}

/// A WAV file as 48 kHz mono: channels averaged, other rates resampled.
pub fn read_wav(path: &Path) -> Result<Vec<i16>, AudioError> {
    let bad = |reason: String| AudioError::File {
        path: path.to_owned(),
        reason,
    };
    let file = File::open(path).map_err(|e| bad(e.to_string()))?;
    decode_wav(std::io::BufReader::new(file)).map_err(bad)
}

/// The speech sample built into the binary (`assets/make-speech`): the
/// demo's microphone and the quality bench's signal, 48 kHz mono.
pub fn builtin_speech() -> Vec<i16> {
    const SPEECH: &[u8] = include_bytes!("../../assets/speech.wav");
    decode_wav(std::io::Cursor::new(SPEECH)).unwrap_or_default()
}

/// The phone's ring (`assets/make-ring`): 425 Hz, one second on and four
/// off, 48 kHz mono, five seconds to loop.
pub fn builtin_ring() -> Vec<i16> {
    const RING: &[u8] = include_bytes!("../../assets/ring.wav");
    decode_wav(std::io::Cursor::new(RING)).unwrap_or_default()
}

/// WAV bytes as 48 kHz mono (see [`read_wav`]).
fn decode_wav<R: std::io::Read>(input: R) -> Result<Vec<i16>, String> {
    let mut reader = hound::WavReader::new(input).map_err(|e| e.to_string())?;
    let spec = reader.spec();
    let channels = usize::from(spec.channels.max(1));
    let raw: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Int, 16) => reader
            .samples::<i16>()
            .map(|s| s.map(|v| f32::from(v) / 32768.0))
            .collect::<Result<_, _>>(),
        (hound::SampleFormat::Int, bits) if bits <= 32 => {
            let scale = (1i64 << (bits - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|v| v as f32 / scale))
                .collect::<Result<_, _>>()
        }
        (hound::SampleFormat::Float, 32) => reader.samples::<f32>().collect::<Result<_, _>>(),
        (format, bits) => return Err(format!("unsupported sample format {format:?}/{bits} bits")),
    }
    .map_err(|e| e.to_string())?;
    let mono: Vec<f32> = raw
        .chunks(channels)
        .map(|c| c.iter().sum::<f32>() / c.len() as f32)
        .collect();
    let resampled = super::resample::resample(&mono, spec.sample_rate, RATE);
    Ok(resampled
        .into_iter()
        .map(|v| (v.clamp(-1.0, 1.0) * 32767.0) as i16)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_are_refused_clearly() {
        assert!(matches!(
            Source::parse("tone:440").unwrap(),
            Source::Tone { .. }
        ));
        assert!(matches!(
            Source::parse("tone:abc"),
            Err(AudioError::Spec(_))
        ));
        assert!(matches!(Source::parse("tone:5"), Err(AudioError::Spec(_))));
        assert!(matches!(Sink::parse(""), Err(AudioError::Spec(_))));
        let err = match Source::parse("file:/nonexistent/x.wav") {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a missing file opened"),
        };
        assert!(err.contains("/nonexistent/x.wav"), "{err}");
        assert!(matches!(Sink::parse("null").unwrap(), Sink::Null));
        assert!(matches!(
            Sink::parse("file:/nonexistent/dir/out.wav"),
            Err(AudioError::File { .. })
        ));
    }

    #[test]
    fn a_wav_round_trips_and_other_rates_are_resampled() {
        let dir = std::env::temp_dir().join(format!("icephone-audio-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&path, spec).unwrap();
        for i in 0..8000 {
            let v = if i % 2 == 0 { 1000 } else { -1000 };
            w.write_sample(v as i16).unwrap(); // left
            w.write_sample(v as i16).unwrap(); // right
        }
        w.finalize().unwrap();
        let samples = read_wav(&path).unwrap();
        assert_eq!(samples.len(), 48_000, "one second at 48 kHz");
        let mut src = Source::parse(&format!("file:{}", path.display())).unwrap();
        let mut frame = [0i16; FRAME];
        src.next_frame(&mut frame);
        assert!(frame.iter().any(|s| *s != 0));
        let _ = std::fs::remove_dir_all(dir);
    }
}
