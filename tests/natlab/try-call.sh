#!/usr/bin/env bash
# One real icephone call across a NAT lab: alice (host a) calls bob (host b) through
# `icephone serve` (host server), then prints what ICE selected and the RTP figures.
#
#   try-call.sh LAB_ID SCENARIO OUTDIR [extra alice args...]
#
# Env: ICEPHONE (binary; default target/debug/icephone of this repo), LOSS (passed to lab.sh),
# HANGUP (seconds in the call, default 3), KEEP=1 (leave the lab up afterwards),
# SIP_TRANSPORT=udp|tcp (registrar transport; udpblock always uses tcp), SERVER_LOG (serve --log),
# PHONE_LOG (both phones' --log), FLUSH_AFTER=S (flush both routers' conntrack S s into the call),
# CAPTURE=1 (the server's SIP traffic to OUTDIR/sip.pcap, by tshark).
# Leaves server.log, bob.log, alice.log, bob.json, alice.json, *.wav in OUTDIR.
# Exit 0 when the call completed and both sides received > 100 RTP packets.

set -Eeuo pipefail

here=$(cd "$(dirname "$0")" && pwd)
lab=$here/lab.sh
bin=${ICEPHONE:-$here/../../target/debug/icephone}
[[ $# -ge 3 ]] || {
    echo "usage: try-call.sh LAB_ID SCENARIO OUTDIR [extra alice args...]" >&2
    exit 2
}
id=$1 scenario=$2 out=$3
shift 3
hangup=${HANGUP:-3}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/{server,bob,alice}.{log,json} "$out"/{bob,alice}.wav

cleanup() {
    [[ ${KEEP:-0} == 1 ]] || "$lab" down "$id"
}
trap cleanup EXIT

"$lab" up "$id" "$scenario" >"$out/lab.env"

transport=${SIP_TRANSPORT:-udp}
turn=turn:203.0.113.10:3478
if [[ $scenario == udpblock ]]; then
    transport=tcp
    turn="turn:203.0.113.10:3478?transport=tcp"
fi
registrar="sip:203.0.113.10:5060;transport=$transport"

"$lab" exec "$id" server -- "$bin" serve --listen 203.0.113.10 --port 3478 --sip-port 5060 \
    --realm lab.test --user alice:pw1 --user bob:pw2 --log "${SERVER_LOG:-info}" >"$out/server.log" 2>&1 &
server_pid=$!

# wait_for FILE PATTERN SECONDS
wait_for() {
    local i
    for ((i = 0; i < $3 * 10; i++)); do
        grep -q -- "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "try-call: timed out waiting for '$2' in $1" >&2
    return 1
}

wait_for "$out/server.log" "^listening" 10
if [[ ${CAPTURE:-0} == 1 ]]; then
    rm -f "$out/sip.pcap"
    "$lab" exec "$id" server -- timeout $((hangup + 70)) tshark -q -i any -f "port 5060" -w "$out/sip.pcap" 2>/dev/null &
    sleep 1
fi

"$lab" exec "$id" b -- timeout $((hangup + 60)) "$bin" register --aor sip:bob@lab.test --password pw2 \
    --registrar "$registrar" --auto-answer --mic tone:880 --speaker "file:$out/bob.wav" \
    --stun stun:203.0.113.10:3478 --turn "$turn" --turn-user bob --turn-password pw2 \
    --report "$out/bob.json" --log "${PHONE_LOG:-warn}" >"$out/bob.log" 2>&1 &
bob_pid=$!
wait_for "$out/bob.log" "^registered" 15

if [[ -n ${FLUSH_AFTER:-} ]]; then
    (
        sleep "$FLUSH_AFTER"
        for router in rA rB; do "$lab" exec "$id" "$router" -- conntrack -F 2>/dev/null || true; done
        echo "flushed conntrack on rA and rB" >&2
    ) &
fi
rc=0
"$lab" exec "$id" a -- timeout $((hangup + 45)) "$bin" call sip:bob@lab.test --aor sip:alice@lab.test \
    --password pw1 --registrar "$registrar" --mic tone:440 --speaker "file:$out/alice.wav" \
    --stun stun:203.0.113.10:3478 --turn "$turn" --turn-user alice --turn-password pw1 \
    --hangup-after "$hangup" --report "$out/alice.json" --log "${PHONE_LOG:-warn}" "$@" >"$out/alice.log" 2>&1 || rc=$?

# bob writes his report when the call ends (BYE): give it a moment.
for ((i = 0; i < 50; i++)); do
    [[ -s "$out/bob.json" ]] && break
    sleep 0.1
done
# Stop bob (he unregisters) and then the server, politely and by PID, bounded.
stop() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
stop "$bob_pid"
stop "$server_pid"

summary() {
    jq -r '[
      "pair=" + (.ice.selected_pair.local.type // "-") + "/" + (.ice.selected_pair.remote.type // "-"),
      "local=" + (.ice.selected_pair.local.address // "-"),
      "remote=" + (.ice.selected_pair.remote.address // "-"),
      "relay_transport=" + ((.ice.selected_pair.local.relay.transport // "-") | tostring),
      "answer_to_ice_ms=" + ((.timing.answer_to_ice_connected_ms // "-") | tostring),
      "answer_to_audio_ms=" + ((.timing.answer_to_first_audio_ms // "-") | tostring),
      "rtp_sent=" + ((.rtp.packets_sent // "-") | tostring),
      "rtp_received=" + ((.rtp.packets_received // "-") | tostring),
      "mos=" + ((.quality.mos // "-") | tostring)
    ] | join(" ")' "$1" 2>/dev/null || echo "no report"
}

echo "alice (exit $rc): $(summary "$out/alice.json")"
echo "bob:             $(summary "$out/bob.json")"
ra=$(jq -r '.rtp.packets_received // 0' "$out/alice.json" 2>/dev/null || echo 0)
rb=$(jq -r '.rtp.packets_received // 0' "$out/bob.json" 2>/dev/null || echo 0)
if [[ $rc == 0 && $ra -gt 100 && $rb -gt 100 ]]; then
    echo "PASS $scenario"
else
    echo "FAIL $scenario (alice exit $rc, received alice=$ra bob=$rb)"
    exit 1
fi
