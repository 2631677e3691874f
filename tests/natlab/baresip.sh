#!/usr/bin/env bash
# One headless baresip 1.0 (Debian package) inside a NAT lab namespace, as callee or caller,
# with ICE + TURN + Opus, a WAV file as microphone and what it hears recorded to WAV.
#
#   baresip.sh LAB_ID HOST OUTDIR --aor sip:carol@lab.test --password PW \
#       --registrar 203.0.113.10[:5060][;transport=udp|tcp] \
#       --turn 203.0.113.10:3478 --turn-user U --turn-password P --mic FILE.wav \
#       (--answer | --call sip:alice@lab.test) --seconds N \
#       [--wait S] [--rtcp-mux yes|no] [--port SIP_PORT] [--no-sip-trace]
#
# --seconds N  time in the call once baresip logs it established; then it hangs up (BYE).
#              The callee also stops when the far end hangs up.
# --wait S     callee: how long to wait for an incoming call (default 60);
#              caller: how long to wait for the call to be established (default 60).
#              Whatever happens, baresip is also started with `-t` (its own quit timer) at
#              S + N + 15 seconds, and the script kills it (TERM, then KILL) at S + N + 20.
# --rtcp-mux   config `rtcp_mux` (default no, baresip's default): with `no` baresip runs ICE
#              on two components (RTP and RTCP) and answers `a=ice-mismatch` to an offer
#              with candidates for component 1 only; `yes` offers/accepts a=rtcp-mux and
#              runs ICE on component 1 only.
# --turn       HOST:PORT (or HOST:PORT?transport=tcp), used as
#              stunserver="turn:..." (baresip takes its srflx candidate from the TURN server).
#
# Env: BARESIP (binary, default baresip), LAB (lab.sh, default beside this script).
# Leaves in OUTDIR: baresip.d/{config,accounts,contacts}, baresip.log (stdout+stderr, -v,
# SIP trace unless --no-sip-trace), rec/dump-<time>-dec.wav (the far end's audio as
# decoded: what baresip HEARS) and rec/dump-<time>-enc.wav (what it sends), summary.txt.
# Prints one line at the end:
#   baresip: role=... registered=yes|no established=yes|no ice=ok|mismatch|failed|none
#            media_ms=... rtp-rx=... rtp-tx=... closed="..." recorded=PATH sent=PATH
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
seconds="" wait=60 rtcp_mux=no sip_port=5060 trace=1
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
if ((mic_secs < wait + seconds)); then
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

start=$(date +%s%N)
"$lab" exec "$id" "$host" -- "$bin" "${args[@]}" </dev/null >"$log" 2>&1 &
pid=$!

alive() { kill -0 "$pid" 2>/dev/null; }
stop() {
    local i
    kill -TERM "$pid" 2>/dev/null || true # baresip: hang up (BYE), unregister, quit
    for ((i = 0; i < 50; i++)); do alive || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
trap 'stop' EXIT
now() { echo $((($(date +%s%N) - start) / 1000000)); }
seen() { grep -qE -- "$1" "$log" 2>/dev/null; }

# Phase 1: until established (or closed/failed), bounded by --wait.
deadline=$(($(now) + wait * 1000))
est_ms=""
while alive && (($(now) < deadline)); do
    if seen "Call established"; then est_ms=$(now); break; fi
    seen "Call failed|session closed|Call terminated|call: (hangup|closed)" && break
    sleep 0.1
done
# Phase 2: N seconds in the call, unless the far end hangs up first.
if [[ -n $est_ms ]]; then
    deadline=$((est_ms + seconds * 1000))
    while alive && (($(now) < deadline)); do
        seen "session closed|Call terminated|Call closed|closed:" && break
        sleep 0.1
    done
fi
stop
trap - EXIT

# ---------------------------------------------------------------- facts from the log
# (baresip 1.0 -v line formats; see README.md "baresip")
first() { grep -m1 -oE -- "$1" "$log" 2>/dev/null || true; }
registered=no
seen "\{0/(UDP|TCP)/v4\}.*200 OK|: 200 OK \(|registered successfully|REGISTER.* 200" && registered=yes
established=no
[[ -n $est_ms ]] && established=yes
ice=none
if seen "ice-mismatch|ICE not supported by peer"; then ice=mismatch
elif seen "connectivity check failed"; then ice=failed
elif seen "connectivity check is complete"; then ice=ok
fi
closed=$(first "(session closed|Call terminated)[^\r]*" | head -1)
dec=$(ls -1 "$rec"/dump-*-dec.wav 2>/dev/null | tail -1 || true)
enc=$(ls -1 "$rec"/dump-*-enc.wav 2>/dev/null | tail -1 || true)
wavsecs() {
    [[ -n $1 && -s $1 ]] || { echo 0; return; }
    python3 -c 'import sys,wave; w=wave.open(sys.argv[1]); print("%.2f" % (w.getnframes()/w.getframerate()))' "$1" 2>/dev/null || echo 0
}
# RTCP/X-RTP-Stat (rtp_stats yes puts it in the BYE / its 200): RX=... TX=... packet counts.
xrtp=$(grep -oE "X-RTP-Stat: [^\r]*" "$log" | tail -1 || true)
rtp_rx=$(sed -nE 's/.*RX=([0-9]+).*/\1/p' <<<"$xrtp")
rtp_tx=$(sed -nE 's/.*TX=([0-9]+).*/\1/p' <<<"$xrtp")
line="baresip: role=$role host=$host ip=$ip registered=$registered established=$established"
line+=" established_ms=${est_ms:--} ice=$ice rtcp_mux=$rtcp_mux rtp-rx=${rtp_rx:--} rtp-tx=${rtp_tx:--}"
line+=" heard_s=$(wavsecs "$dec") recorded=${dec:-none} sent=${enc:-none} log=$log"
[[ -n $closed ]] && line+=" closed=\"$closed\""
echo "$line" | tee "$out/summary.txt"
[[ $established == yes && -n $dec && -s $dec ]]
