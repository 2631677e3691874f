#!/usr/bin/env bash
# NAT lab: real Linux NATs built from network namespaces and nftables.
#
#   lab.sh up   LAB_ID SCENARIO          build lab LAB_ID (1..30); prints KEY=VALUE lines
#   lab.sh exec LAB_ID HOST -- CMD ...   run CMD in HOST's namespace (server|a|b|rA|rB|inet)
#   lab.sh down LAB_ID                   remove the lab (processes, namespaces); never fails
#
# SCENARIO: none | eim | sym | mixed | samelan | udpblock.  Env LOSS=N (0..100) drops N % of
# the packets crossing each router's public side (each host's, for `none`). Env DELAY_MS=D
# and JITTER_MS=J delay what each router (each host, for `none`) sends to the internet by
# D +/- J ms, in user space (netem.py: this kernel has no netem qdisc).
# See README.md beside this file.  Needs root, iproute2 and nftables (`nft`).
#
# Everything lives in namespaces named natlab-L<ID>-<host>; the veth pairs are created
# straight inside them, so nothing is added to (or routed through) the root namespace.
# Only 203.0.113.0/24 ("the internet") and 10.<ID>.{1,2}.0/24 (the LANs) are used.

set -Eeuo pipefail

PREFIX=natlab
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
NET=203.0.113
SERVER_IP=$NET.10
SINK_IP=$NET.254   # the "rest of the internet": the inet namespace, which forwards nothing

usage() {
    cat >&2 <<'EOF'
usage: lab.sh up LAB_ID SCENARIO      (SCENARIO: none|eim|sym|mixed|samelan|udpblock;
                                      env LOSS=N, DELAY_MS=D, JITTER_MS=J)
       lab.sh exec LAB_ID HOST -- CMD [ARGS...]   (HOST: server|a|b|rA|rB|inet)
       lab.sh down LAB_ID
EOF
    exit 2
}

die() {
    echo "lab.sh: $*" >&2
    exit 2
}

check_id() {
    if ! [[ "${1:-}" =~ ^[0-9]{1,2}$ ]] || ((10#$1 < 1 || 10#$1 > 30)); then
        die "LAB_ID must be an integer 1..30 (got '${1:-}')"
    fi
}

# ns_name LAB HOST
ns_name() {
    echo "$PREFIX-L$1-$2"
}

# in_ns NS CMD...
in_ns() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

lab_namespaces() {
    # Every namespace of this lab, including leftovers from other versions of the script.
    ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^$PREFIX-L$1-" || true
}

# ---------------------------------------------------------------- down

cmd_down() (
    # A subshell: nothing here may fail the caller, nor trigger its ERR trap.
    trap - ERR
    set +e
    local lab=$1 ns pids round
    # Kill everything running inside the lab's namespaces first (twice: a dying parent
    # may still have spawned a child in between).
    for round in 1 2; do
        for ns in $(lab_namespaces "$lab"); do
            pids=$(ip netns pids "$ns" 2>/dev/null)
            if [[ -n "$pids" ]]; then
                # shellcheck disable=SC2086
                kill -9 $pids 2>/dev/null
            fi
        done
        [[ $round == 1 ]] && sleep 0.2
    done
    for ns in $(lab_namespaces "$lab"); do
        # Deleting a namespace deletes its veths (and their peers, wherever they are).
        ip netns delete "$ns" 2>/dev/null
    done
    # Wait (bounded) until they are really gone.
    for _ in $(seq 1 50); do
        [[ -z "$(lab_namespaces "$lab")" ]] && break
        sleep 0.1
    done
    exit 0
)

# ---------------------------------------------------------------- up helpers

new_ns() {
    local ns=$1
    ip netns add "$ns"
    in_ns "$ns" ip link set lo up
    in_ns "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
    in_ns "$ns" sysctl -qw net.ipv6.conf.default.disable_ipv6=1
    in_ns "$ns" sysctl -qw net.ipv4.ip_forward=0
    # This kernel has br_netfilter built in, and it is on in every new namespace: bridged
    # frames would then go through the ip hooks (forward, conntrack, NAT) as if routed.
    # Our bridges are plain switches.
    local k
    for k in iptables ip6tables arptables; do
        if [[ -e /proc/sys/net/bridge/bridge-nf-call-$k ]]; then
            in_ns "$ns" sysctl -qw "net.bridge.bridge-nf-call-$k=0"
        fi
    done
}

# veth NS1 IF1 NS2 IF2: a veth pair created directly inside the two namespaces.
veth() {
    ip link add name "$2" netns "$1" type veth peer name "$4" netns "$3"
    in_ns "$1" ip link set "$2" up
    in_ns "$3" ip link set "$4" up
}

# delayed_link NS INET NAME: as `veth NS wan INET p-NAME`, but through netem.py, which
# delays what NS sends to the internet by DELAY_MS +/- JITTER_MS. It runs in INET's
# namespace, so `down` kills it with everything else.
delayed_link() {
    local ns=$1 inet=$2 name=$3 i
    in_ns "$inet" python3 "$HERE/netem.py" "p-$name" "$ns" "$DELAY_MS" "$JITTER_MS" \
        </dev/null >/dev/null 2>&1 &
    for ((i = 0; i < 100; i++)); do
        in_ns "$ns" ip link show wan >/dev/null 2>&1 && break
        sleep 0.05
    done
    in_ns "$ns" ip link show wan >/dev/null 2>&1 || die "netem.py did not start for $name"
    in_ns "$ns" ip link set wan up
    in_ns "$inet" ip link set "p-$name" up
}

# attach LAB HOST CIDR [DELAYED]: plug a namespace into the internet bridge (with
# DELAYED=1, through the delay stage when DELAY_MS is set).
attach_inet() {
    local lab=$1 host=$2 cidr=$3 delayed=${4:-0}
    local inet ns
    inet=$(ns_name "$lab" inet)
    ns=$(ns_name "$lab" "$host")
    if [[ $delayed == 1 ]] && ((DELAY_MS > 0)); then  # JITTER_MS <= DELAY_MS
        delayed_link "$ns" "$inet" "$host"
    else
        veth "$ns" wan "$inet" "p-$host"
    fi
    in_ns "$inet" ip link set "p-$host" master br0
    in_ns "$ns" ip addr add "$cidr" dev wan
    # Anything not for 203.0.113.0/24 goes to the sink, which silently drops it: no
    # "network unreachable" for a private candidate (see shared notes).
    in_ns "$ns" ip route add default via "$SINK_IP" dev wan
}

# router LAB NAME LAN_PREFIX PUBLIC_IP MODE UDPBLOCK
router() {
    local lab=$1 name=$2 lan=$3 pub=$4 mode=$5 udpblock=$6
    local ns masq
    ns=$(ns_name "$lab" "$name")
    new_ns "$ns"
    attach_inet "$lab" "$name" "$pub/24" 1
    in_ns "$ns" ip link add br-lan type bridge
    in_ns "$ns" ip addr add "$lan.1/24" dev br-lan
    in_ns "$ns" ip link set br-lan up
    in_ns "$ns" sysctl -qw net.ipv4.ip_forward=1
    case $mode in
        eim) masq="masquerade persistent" ;;
        sym) masq="masquerade random" ;;
        *) die "bad router mode $mode" ;;
    esac
    local loss_rules="" block_rules=""
    if ((LOSS > 0)); then
        loss_rules="oifname \"wan\" numgen random mod 100 < $LOSS counter drop
        iifname \"wan\" numgen random mod 100 < $LOSS counter drop"
    fi
    if [[ $udpblock == 1 ]]; then
        block_rules="iifname \"br-lan\" oifname \"wan\" meta l4proto udp counter drop"
    fi
    in_ns "$ns" nft -f - <<EOF
table ip natlab {
    # Unsolicited inbound traffic on the public side is dropped here, after conntrack
    # has looked at it but before it is confirmed: otherwise its conntrack entry would
    # clash with a later outbound flow and break port preservation.
    chain natlab_pre {
        type filter hook prerouting priority mangle; policy accept;
        iifname "wan" ct state new counter drop
    }
    chain natlab_fwd {
        type filter hook forward priority filter; policy accept;
        $block_rules
        $loss_rules
        iifname "wan" ct state established,related accept
        iifname "wan" counter drop
    }
    chain natlab_post {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" ip saddr $lan.0/24 $masq
    }
}
EOF
}

# host LAB NAME ROUTER LAN_PREFIX OCTET
lan_host() {
    local lab=$1 name=$2 rname=$3 lan=$4 octet=$5
    local ns rns
    ns=$(ns_name "$lab" "$name")
    rns=$(ns_name "$lab" "$rname")
    new_ns "$ns"
    veth "$ns" eth0 "$rns" "p-$name"
    in_ns "$rns" ip link set "p-$name" master br-lan
    in_ns "$ns" ip addr add "$lan.$octet/24" dev eth0
    in_ns "$ns" ip route add default via "$lan.1" dev eth0
}

# host loss for `none` (no router to put it on): both directions on the host itself.
host_loss() {
    local ns=$1
    ((LOSS > 0)) || return 0
    in_ns "$ns" nft -f - <<EOF
table ip natlab {
    chain natlab_in {
        type filter hook input priority filter; policy accept;
        iifname "wan" numgen random mod 100 < $LOSS counter drop
    }
    chain natlab_out {
        type filter hook output priority filter; policy accept;
        oifname "wan" numgen random mod 100 < $LOSS counter drop
    }
}
EOF
}

# ---------------------------------------------------------------- up

cmd_up() {
    local lab=$1 scenario=$2
    case $scenario in
        none | eim | sym | mixed | samelan | udpblock) ;;
        *) die "unknown scenario '$scenario' (none|eim|sym|mixed|samelan|udpblock)" ;;
    esac
    LOSS=${LOSS:-0}
    if ! [[ "$LOSS" =~ ^[0-9]{1,3}$ ]] || ((10#$LOSS > 100)); then
        die "LOSS must be 0..100 (got '$LOSS')"
    fi
    LOSS=$((10#$LOSS))
    DELAY_MS=${DELAY_MS:-0} JITTER_MS=${JITTER_MS:-0}
    if ! [[ "$DELAY_MS" =~ ^[0-9]{1,4}$ && "$JITTER_MS" =~ ^[0-9]{1,4}$ ]] \
        || ((10#$JITTER_MS > 10#$DELAY_MS || 10#$DELAY_MS > 2000)); then
        die "DELAY_MS must be 0..2000 and JITTER_MS 0..DELAY_MS (got '$DELAY_MS', '$JITTER_MS')"
    fi
    DELAY_MS=$((10#$DELAY_MS)) JITTER_MS=$((10#$JITTER_MS))
    if ((DELAY_MS > 0)); then
        command -v python3 >/dev/null || die "python3 not found (the delay stage, netem.py, needs it)"
        [[ -c /dev/net/tun ]] || die "/dev/net/tun missing (the delay stage needs TAP devices)"
    fi
    command -v nft >/dev/null || die "nft not found (apt-get install nftables)"
    [[ $(id -u) == 0 ]] || die "must run as root"

    cmd_down "$lab"
    trap 'echo "lab.sh: up failed (${BASH_COMMAND}); cleaning up" >&2; cmd_down "$lab"; exit 1' ERR

    local lan1=10.$lab.1 lan2=10.$lab.2
    local inet
    inet=$(ns_name "$lab" inet)

    # The internet: a bridge, plus the sink address that routes nowhere.
    new_ns "$inet"
    in_ns "$inet" ip link add br0 type bridge
    in_ns "$inet" ip addr add "$SINK_IP/24" dev br0
    in_ns "$inet" ip link set br0 up
    # ip_forward=0 already drops (silently) whatever is not for the sink itself;
    # this makes it explicit and also stops the sink answering with ICMP.
    in_ns "$inet" nft -f - <<EOF
table ip natlab {
    chain natlab_fwd { type filter hook forward priority filter; policy drop; }
    chain natlab_in {
        type filter hook input priority filter; policy accept;
        iifname "br0" ip daddr != $SINK_IP drop
    }
}
EOF

    new_ns "$(ns_name "$lab" server)"
    attach_inet "$lab" server "$SERVER_IP/24"

    local a_ip b_ip ra_ns="" rb_ns="" ra_pub="" rb_pub="" a_gw b_gw
    case $scenario in
        none)
            a_ip=$NET.21 b_ip=$NET.22
            new_ns "$(ns_name "$lab" a)"
            attach_inet "$lab" a "$a_ip/24" 1
            new_ns "$(ns_name "$lab" b)"
            attach_inet "$lab" b "$b_ip/24" 1
            host_loss "$(ns_name "$lab" a)"
            host_loss "$(ns_name "$lab" b)"
            a_gw=$SINK_IP b_gw=$SINK_IP
            ;;
        samelan)
            router "$lab" rA "$lan1" "$NET.1" eim 0
            a_ip=$lan1.10 b_ip=$lan1.11
            lan_host "$lab" a rA "$lan1" 10
            lan_host "$lab" b rA "$lan1" 11
            ra_ns=$(ns_name "$lab" rA) ra_pub=$NET.1
            a_gw=$lan1.1 b_gw=$lan1.1
            ;;
        eim | sym | mixed | udpblock)
            local ma mb block=0
            case $scenario in
                eim) ma=eim mb=eim ;;
                sym) ma=sym mb=sym ;;
                mixed) ma=sym mb=eim ;;
                udpblock) ma=eim mb=eim block=1 ;;
            esac
            router "$lab" rA "$lan1" "$NET.1" "$ma" "$block"
            router "$lab" rB "$lan2" "$NET.2" "$mb" 0
            a_ip=$lan1.10 b_ip=$lan2.10
            lan_host "$lab" a rA "$lan1" 10
            lan_host "$lab" b rB "$lan2" 10
            ra_ns=$(ns_name "$lab" rA) rb_ns=$(ns_name "$lab" rB)
            ra_pub=$NET.1 rb_pub=$NET.2
            a_gw=$lan1.1 b_gw=$lan2.1
            ;;
    esac

    # Sanity (when ping exists): a and b reach the server, bounded by ping's own timeout.
    local h
    if command -v ping >/dev/null; then
        for h in a b; do
            in_ns "$(ns_name "$lab" "$h")" ping -c1 -W2 "$SERVER_IP" >/dev/null 2>&1 \
                || { echo "lab.sh: $h cannot reach $SERVER_IP" >&2; false; }
        done
    fi

    trap - ERR
    local env
    env=$(
        cat <<EOF
LAB_ID=$lab
SCENARIO=$scenario
LOSS=$LOSS
DELAY_MS=$DELAY_MS
JITTER_MS=$JITTER_MS
SERVER=$SERVER_IP
SERVER_IP=$SERVER_IP
SERVER_NS=$(ns_name "$lab" server)
INET_NS=$inet
A_IP=$a_ip
A_NS=$(ns_name "$lab" a)
A_GW=$a_gw
B_IP=$b_ip
B_NS=$(ns_name "$lab" b)
B_GW=$b_gw
RA_NS=$ra_ns
RA_PUBLIC=$ra_pub
RB_NS=$rb_ns
RB_PUBLIC=$rb_pub
EOF
    )
    echo "$env"
}

# ---------------------------------------------------------------- exec

cmd_exec() {
    local lab=$1 host=$2
    shift 2
    [[ "${1:-}" == "--" ]] && shift
    [[ $# -gt 0 ]] || usage
    case $host in
        server | inet | a | b) ;;
        rA | ra | RA) host=rA ;;
        rB | rb | RB) host=rB ;;
        *) die "unknown host '$host' (server|a|b|rA|rB|inet)" ;;
    esac
    local ns
    ns=$(ns_name "$lab" "$host")
    [[ -e "/run/netns/$ns" ]] || die "lab $lab has no $host (namespace $ns missing; is the lab up, and does its scenario have $host?)"
    exec ip netns exec "$ns" "$@"
}

# ---------------------------------------------------------------- main

main() {
    [[ $# -ge 2 ]] || usage
    local cmd=$1 lab=$2
    check_id "$lab"
    lab=$((10#$lab))
    case $cmd in
        up)
            [[ $# -eq 3 ]] || usage
            cmd_up "$lab" "$3"
            ;;
        exec)
            [[ $# -ge 4 ]] || usage
            cmd_exec "$lab" "${@:3}"
            ;;
        down)
            cmd_down "$lab"
            exit 0
            ;;
        *) usage ;;
    esac
}

main "$@"
