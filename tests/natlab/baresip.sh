#!/usr/bin/env bash
# One headless baresip 1.0 (Debian package) inside a NAT lab namespace, as callee or caller,
# with ICE + TURN + Opus, a WAV file as microphone and what it hears recorded to WAV.
#
#   baresip.sh LAB_ID HOST OUTDIR --aor sip:carol@lab.test --password PW \
#       --registrar 203.0.113.10[:5060][;transport=udp|tcp] \
#       --turn 203.0.113.10:3478 --turn-user U --turn-password P --mic FILE.wav \
#       (--answer | --call sip:alice@lab.test) --seconds N \
#       [--wait S] [--rtcp-mux yes|no] [--port SIP_PORT] [--no-sip-trace] [--expect-hz HZ]
#
# --seconds N  time in the call: counted from the start of its audio (baresip starts audio only
#              once ICE has concluded, seconds after the 200 OK), or from the 200 OK when no
#              ICE checks run (ice-mismatch); then baresip hangs up (SIGTERM: BYE,
#              unregister, quit). The callee also stops when the far end hangs up.
# --wait S     callee: how long to wait for an incoming call; caller: for the 200 OK;
#              both: how much longer than N to wait for media (default 60). baresip also
#              gets `-t S+N+15` (its own quit timer: hang up, unregister, quit), so the
#              whole run is bounded by about S+N+20 s (KILL 5 s after any TERM).
# --rtcp-mux   config `rtcp_mux` (default no, baresip's default): with `no` baresip runs ICE
#              on two components (RTP and RTCP) and answers `a=ice-mismatch` to an offer
#              with candidates for component 1 only; `yes` offers/accepts a=rtcp-mux and
#              runs ICE on component 1 only.
# --expect-hz  also report how many seconds of the recording carry a HZ tone (wavtone.py).
# --turn       HOST:PORT (or HOST:PORT?transport=tcp), used as
#              stunserver="turn:..." (baresip takes its srflx candidate from the TURN server).
#
# Env: BARESIP (binary, default baresip), LAB (lab.sh, default beside this script).
# Leaves in OUTDIR: baresip.d/{config,accounts,contacts}, baresip.log (stdout+stderr, -v,
# SIP trace unless --no-sip-trace), rec/dump-<time>-dec.wav (the far end's audio as
# decoded: what baresip HEARS) and rec/dump-<time>-enc.wav (what it sends), summary.txt.
# Prints one line at the end (also in OUTDIR/summary.txt), e.g.
#   baresip: role=callee host=b ip=10.7.2.10 registered=yes established=yes ice=ok rtcp_mux=yes
#     pair=srflx(203.0.113.2:10190)<->srflx(203.0.113.1:38760) rtp-rx=251 rtp-tx=147
#     invite_to_200_ms=2 invite_to_ice_ms=2618 invite_to_rx_ms=569 invite_to_tx_ms=2627
#     heard_s=2.96 [heard_tone440_s=2.90] recorded=OUTDIR/rec/dump-...-dec.wav sent=... log=...
#   ice: ok = "connectivity check is complete"; mismatch = "ICE not supported by peer"
#   (a=ice-mismatch). pair: baresip's selected pair (local<->remote). rtp-rx/tx: packets from
#   the table baresip prints when the audio stream ends. *_ms: from the first INVITE line of
#   the SIP trace to the 200 OK ("Call established"), to ICE's conclusion, to the first RTP
#   received ("incoming rtp ... established") and to the start of audio sending.
# Exit 0 if the call was established and the recording is non-empty, else 1; 2 on usage.

set -Eeuo pipefail

here=$(cd "$(dirname "$0")" && pwd)
lab=${LAB:-$here/lab.sh}
bin=${BARESIP:-baresip}

usage() {
    sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}
die() {
    echo "baresip.sh: $*" >&2
    exit 2
}

[[ $# -ge 3 ]] || usage
id=$1 host=$2 out=$3
shift 3
aor="" password="" registrar="" turn="" turn_user="" turn_pass="" mic="" role="" peer=""
seconds="" wait=60 rtcp_mux=no sip_port=5060 trace=1 expect_hz=""
while [[ $# -gt 0 ]]; do
    case $1 in
        --aor) aor=$2; shift 2 ;;
        --password) password=$2; shift 2 ;;
        --registrar) registrar=$2; shift 2 ;;
        --turn) turn=$2; shift 2 ;;
        --turn-user) turn_user=$2; shift 2 ;;
        --turn-password) turn_pass=$2; shift 2 ;;
        --mic) mic=$2; shift 2 ;;
        --answer) role=callee; shift ;;
        --call) role=caller peer=$2; shift 2 ;;
        --seconds) seconds=$2; shift 2 ;;
        --wait) wait=$2; shift 2 ;;
        --rtcp-mux) rtcp_mux=$2; shift 2 ;;
        --port) sip_port=$2; shift 2 ;;
        --no-sip-trace) trace=0; shift ;;
        --expect-hz) expect_hz=$2; shift 2 ;;
        -h | --help) usage ;;
        *) die "unknown argument '$1'" ;;
    esac
done
[[ -n $aor && -n $password && -n $registrar && -n $turn && -n $mic && -n $role && -n $seconds ]] \
    || die "missing argument (need --aor --password --registrar --turn --mic --answer|--call --seconds)"
[[ $seconds =~ ^[0-9]+$ && $wait =~ ^[0-9]+$ && $sip_port =~ ^[0-9]+$ ]] || die "--seconds/--wait/--port must be integers"
[[ $rtcp_mux == yes || $rtcp_mux == no ]] || die "--rtcp-mux yes|no"
[[ $aor == sip:*@* ]] || die "--aor must look like sip:user@domain"
[[ -r $mic ]] || die "mic file $mic not readable"
turn_user=${turn_user:-${aor#sip:}} turn_user=${turn_user%@*}
turn_pass=${turn_pass:-$password}
for v in "$password" "$turn_pass" "$turn_user"; do
    [[ $v != *[\;\"\ \\]* ]] || die "passwords/users must not contain ; \" space or backslash"
done

mkdir -p "$out"
out=$(cd "$out" && pwd)
cfg=$out/baresip.d rec=$out/rec log=$out/baresip.log
rm -rf "$cfg" "$rec"
rm -f "$log" "$out/summary.txt"
mkdir -p "$cfg" "$rec"
# sndfile builds "%s/dump-<time>-dec.wav" in a 128-byte buffer.
((${#rec} <= 90)) || die "OUTDIR too long for baresip's sndfile (rec path must be <= 90 chars): $rec"

# The host's lab address (eth0 behind a router, wan when public).
ip=$("$lab" exec "$id" "$host" -- ip -4 -o addr show scope global | awk '{split($4, a, "/"); print a[1]; exit}')
[[ -n $ip ]] || die "no IPv4 address in lab $id host $host"

# Registrar: [sip:]HOST[:PORT][;transport=udp|tcp] -> outbound proxy URI.
reg=${registrar#sip:}
transport=udp
if [[ $reg == *";transport="* ]]; then
    transport=${reg##*;transport=}
    reg=${reg%%;*}
fi
[[ $transport == udp || $transport == tcp ]] || die "registrar transport must be udp or tcp"
[[ $reg == *:* ]] || reg=$reg:5060

# The mic WAV must be S16LE; aufile insists that its rate/channels equal the source's, so the
# source is configured to the file's own format and baresip resamples to Opus (48 kHz).
read -r mic_rate mic_ch mic_width mic_secs < <(python3 - "$mic" <<'EOF'
import sys, wave
w = wave.open(sys.argv[1])
print(w.getframerate(), w.getnchannels(), w.getsampwidth(), w.getnframes() // w.getframerate())
EOF
) || die "cannot read $mic as WAV"
[[ $mic_width == 2 ]] || die "mic WAV must be 16-bit PCM"
mic=$(cd "$(dirname "$mic")" && pwd)/$(basename "$mic")
if ((mic_secs < seconds + 15)); then
    echo "baresip.sh: note: mic WAV is ${mic_secs}s; aufile stops at its end (no loop)" >&2
fi

answermode=manual
[[ $role == callee ]] && answermode=auto
cat >"$cfg/accounts" <<EOF
<$aor;transport=$transport>;auth_pass=$password;outbound="sip:$reg;transport=$transport";regint=600;answermode=$answermode;audio_codecs=opus/48000/2;medianat=ice;stunserver="turn:$turn";stunuser=$turn_user;stunpass=$turn_pass
EOF
: >"$cfg/contacts"
cat >"$cfg/config" <<EOF
# generated by tests/natlab/baresip.sh for lab $id host $host ($ip)
poll_method		epoll
sip_listen		$ip:$sip_port
call_local_timeout	$((wait + 10))
call_max_calls		1
audio_path		/usr/share/baresip
audio_player		aubridge,nowhere
audio_alert		aubridge,nowhere
audio_source		aufile,$mic
ausrc_srate		$mic_rate
ausrc_channels		$mic_ch
audio_level		no
ausrc_format		s16
auplay_format		s16
auenc_format		s16
audec_format		s16
audio_buffer		20-160
rtp_tos			184
rtp_ports		10000-20000
rtcp_mux		$rtcp_mux
jitter_buffer_delay	5-10
rtp_stats		yes
rtp_timeout		0
statmode_default	off
snd_path		$rec
module_path		/usr/lib/baresip/modules
module			stun.so
module			turn.so
module			ice.so
module			opus.so
module			aufile.so
module			aubridge.so
module			sndfile.so
module_app		account.so
module_app		menu.so
EOF

args=(-f "$cfg" -v -t $((wait + seconds + 15)))
((trace)) && args+=(-s)
if [[ $role == caller ]]; then
    # -e runs after the modules and accounts are loaded, before the main loop: the INVITE
    # goes out after the REGISTER, challenged (407) by the proxy like any other request.
    args+=(-e "/dial $peer")
fi

# baresip's log has no timestamps: line-buffer it (stdbuf) and prefix every line with the
# seconds since start, through a FIFO so that $pid stays baresip's own PID.
fifo=$out/.baresip.fifo
rm -f "$fifo"
mkfifo "$fifo"
start=$(date +%s%N)
python3 -u -c '
import sys, time
t0 = int(sys.argv[1]) / 1e9
for raw in sys.stdin.buffer:
    sys.stdout.write("%9.3f %s" % (time.time() - t0, raw.decode("utf-8", "replace")))
    sys.stdout.flush()
' "$start" <"$fifo" >"$log" &
stamper=$!
"$lab" exec "$id" "$host" -- stdbuf -oL -eL "$bin" "${args[@]}" </dev/null >"$fifo" 2>&1 &
pid=$!

alive() { kill -0 "$pid" 2>/dev/null; }
stop() {
    local i
    kill -TERM "$pid" 2>/dev/null || true # baresip: hang up (BYE), unregister, quit
    for ((i = 0; i < 50; i++)); do alive || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for ((i = 0; i < 20; i++)); do kill -0 "$stamper" 2>/dev/null || break; sleep 0.1; done
    kill "$stamper" 2>/dev/null || true
    wait "$stamper" 2>/dev/null || true
    rm -f "$fifo"
}
trap 'stop' EXIT
trap 'exit 143' TERM INT HUP
now() { echo $((($(date +%s%N) - start) / 1000000)); }
seen() { grep -qE -- "$1" "$log" 2>/dev/null; }
MEDIA_RE="audio tx pipeline" # audio (both ways) starts once ICE has concluded
CLOSED_RE="session closed|Call failed|terminated \(duration"

# Phase 1: until established (or closed/failed), bounded by --wait.
deadline=$(($(now) + wait * 1000))
est_ms=""
while alive && (($(now) < deadline)); do
    if seen "Call established"; then est_ms=$(now); break; fi
    seen "$CLOSED_RE" && break
    sleep 0.1
done
# Phase 2: N seconds from the start of media (baresip starts audio only once ICE has
# concluded, seconds after the 200 OK), or from the 200 OK while media has not started,
# for at most --wait more seconds; earlier if the far end hangs up.
if [[ -n $est_ms ]]; then
    hard=$((est_ms + (wait + seconds) * 1000))
    media_ms=""
    while alive && (($(now) < hard)); do
        [[ -z $media_ms ]] && seen "$MEDIA_RE" && media_ms=$(now)
        if [[ -n $media_ms ]]; then
            (($(now) >= media_ms + seconds * 1000)) && break
        elif (($(now) >= est_ms + seconds * 1000)) && ! seen "starting connectivity checks"; then
            break # no ICE checks running (e.g. ice-mismatch): nothing more will start
        fi
        seen "$CLOSED_RE" && break
        sleep 0.1
    done
fi
stop
trap - EXIT TERM INT HUP

# ---------------------------------------------------------------- facts from the log
# (baresip 1.0 -v line formats; every line is prefixed with seconds since start)
# t RE: the time (s) of the first line matching RE, or empty.
t() { grep -m1 -E -- "$1" "$log" 2>/dev/null | awk '{print $1}' || true; }
# ms_between T0 T1
ms_between() { [[ -n $1 && -n $2 ]] && awk -v a="$1" -v b="$2" 'BEGIN{printf "%d", (b-a)*1000}' || echo -; }
registered=no
seen "\{0/(UDP|TCP)/v4\} 200 OK" && registered=yes
established=no
[[ -n $est_ms ]] && established=yes
ice=none
if seen "ice-mismatch|ICE not supported by peer"; then ice=mismatch
elif seen "connectivity check failed"; then ice=failed
elif seen "connectivity check is complete"; then ice=ok
fi
# The pair ICE selected: the starred line of baresip's "Valid list" dump.
pair=$(grep -m1 -E '^ *[0-9.]+ +\* +\{comp=1\}' "$log" | sed -E 's/.*\} [^ ]*:([a-z]+):([0-9.:]+) <---> ([a-z]+):([0-9.:]+).*/\1(\2)<->\3(\4)/' || true)
t_inv=$(t "[0-9] INVITE sip:") # the first INVITE, sent or received (needs the SIP trace)
t_200=$(t "Call established")
t_ice=$(t "connectivity check is complete|ICE not supported by peer|connectivity check failed")
t_rx=$(t "incoming rtp for 'audio' established")
t_tx=$(t "audio tx pipeline")
closed=$(grep -m1 -oE "(session closed|Call failed)[^\r]*" "$log" | head -1 || true)
dec=$(ls -1 "$rec"/dump-*-dec.wav 2>/dev/null | tail -1 || true)
enc=$(ls -1 "$rec"/dump-*-enc.wav 2>/dev/null | tail -1 || true)
wavsecs() {
    [[ -n $1 && -s $1 ]] || { echo 0; return; }
    python3 -c 'import sys,wave; w=wave.open(sys.argv[1]); print("%.2f" % (w.getnframes()/w.getframerate()))' "$1" 2>/dev/null || echo 0
}
# The table baresip prints when the audio stream is destroyed:
#   "packets:   <tx>   <rx>"
read -r rtp_tx rtp_rx < <(grep -m1 -E "^ *[0-9.]+ packets:" "$log" | awk '{print $3, $4}' || true) || true
line="baresip: role=$role host=$host ip=$ip registered=$registered established=$established"
line+=" ice=$ice rtcp_mux=$rtcp_mux pair=${pair:--} rtp-rx=${rtp_rx:--} rtp-tx=${rtp_tx:--}"
line+=" invite_to_200_ms=$(ms_between "$t_inv" "$t_200") invite_to_ice_ms=$(ms_between "$t_inv" "$t_ice")"
line+=" invite_to_rx_ms=$(ms_between "$t_inv" "$t_rx") invite_to_tx_ms=$(ms_between "$t_inv" "$t_tx")"
line+=" heard_s=$(wavsecs "$dec")"
if [[ -n $expect_hz && -n $dec && -s $dec ]]; then
    # tone<HZ>_s: seconds of the recording where HZ carries >= half the energy.
    line+=" heard_$(timeout 60 python3 "$here/wavtone.py" "$dec" "$expect_hz" | grep -oE "tone[0-9.]+_s=[0-9.]+")"
fi
line+=" recorded=${dec:-none} sent=${enc:-none} log=$log"
[[ -n $closed ]] && line+=" closed=\"$closed\""
echo "$line" | tee "$out/summary.txt"
[[ $established == yes && -n $dec && -s $dec ]]
