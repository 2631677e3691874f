#!/usr/bin/env python3
"""How much of a WAV file carries a given tone (standard library only).

    wavtone.py FILE.wav HZ [HZ...]

Mixes the channels down, cuts the file into 100 ms frames and, per frame, measures with a
Goertzel filter the share of the frame's energy at each HZ. A frame "has" a tone when that
share is >= 0.5 and the frame is not silent (RMS >= 100 of 32767). Prints one line:

    file=PATH secs=4.94 silent_s=0.20 tone440_s=4.70 tone440_first_s=0.24 tone660_s=0.00 ...

(tone<HZ>_first_s is the start of the first frame with the tone, or "-").
"""
import math
import struct
import sys
import wave


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    path, freqs = sys.argv[1], [float(f) for f in sys.argv[2:]]
    try:
        w = wave.open(path)
    except (OSError, EOFError, wave.Error) as e:
        print(f"file={path} error={e!r}")
        return 1
    rate, ch, width, n = w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes()
    raw = w.readframes(n)
    if width != 2:
        print(f"file={path} error=only 16-bit PCM")
        return 1
    samples = struct.unpack("<%dh" % (len(raw) // 2), raw)
    mono = [sum(samples[i:i + ch]) / ch for i in range(0, len(samples), ch)]
    frame = rate // 10
    silent = 0
    has = {f: 0 for f in freqs}
    first = {f: None for f in freqs}
    nframes = len(mono) // frame
    for k in range(nframes):
        x = mono[k * frame:(k + 1) * frame]
        energy = sum(v * v for v in x)
        rms = math.sqrt(energy / frame)
        if rms < 100:
            silent += 1
            continue
        for f in freqs:
            coeff = 2 * math.cos(2 * math.pi * f / rate)
            s1 = s2 = 0.0
            for v in x:
                s1, s2 = v + coeff * s1 - s2, s1
            power = s1 * s1 + s2 * s2 - coeff * s1 * s2
            # A pure tone of amplitude A over N samples: power = (A N / 2)^2, energy = A^2 N / 2.
            share = power / (energy * frame / 2) if energy else 0.0
            if share >= 0.5:
                has[f] += 1
                if first[f] is None:
                    first[f] = k / 10
    out = [f"file={path}", f"secs={len(mono) / rate:.2f}", f"silent_s={silent / 10:.2f}"]
    for f in freqs:
        name = f"tone{f:g}"
        out.append(f"{name}_s={has[f] / 10:.2f}")
        out.append(f"{name}_first_s=" + ("-" if first[f] is None else f"{first[f]:.1f}"))
    print(" ".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
