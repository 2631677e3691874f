#!/usr/bin/env python3
"""Delay and jitter on one lab link, in user space (this kernel has no netem).

    netem.py INET_PORT HOST_NS DELAY_MS JITTER_MS

Run inside the lab's internet namespace (lab.sh does, so `lab.sh down`
kills it with the rest). It creates two TAP devices joined by this process
instead of a veth pair: INET_PORT stays here, to be plugged into the
internet bridge, and `wan` moves into HOST_NS (a TAP keeps working through
this process's descriptor after its device changes namespace). Ethernet
frames going from HOST_NS out to the internet wait DELAY_MS +/- JITTER_MS
(uniform, each frame drawn alone, as netem's jitter does); frames coming in
pass at once. So a packet between two routers' LANs, or between a LAN and
the server, crosses exactly one delay.

Bounded: it runs until killed, or until reading a device fails (its
namespace deleted), and never holds more than MAX_QUEUED frames.
"""

import fcntl
import heapq
import os
import random
import select
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
MAX_QUEUED = 10_000


def tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: netem.py INET_PORT HOST_NS DELAY_MS JITTER_MS")
    port, host_ns = sys.argv[1], sys.argv[2]
    delay, jitter = float(sys.argv[3]) / 1000, float(sys.argv[4]) / 1000
    if delay < 0 or jitter < 0 or jitter > delay:
        sys.exit("netem.py: need 0 <= JITTER_MS <= DELAY_MS")
    inet = tap(port)
    moving = "wan-" + port[:10]  # a name free here; `wan` once it has moved
    wan = tap(moving)
    subprocess.run(["ip", "link", "set", moving, "netns", host_ns], check=True)
    subprocess.run(["ip", "-n", host_ns, "link", "set", moving, "name", "wan"], check=True)
    # The device's presence in HOST_NS under its final name tells lab.sh we are ready.
    queue = []  # (due, seq, frame) for frames bound for the internet
    seq = 0
    while True:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, frame = heapq.heappop(queue)
            try:
                os.write(inet, frame)
            except BlockingIOError:
                pass  # the bridge side is full: the frame is lost, as on a wire
        timeout = max(0.0, queue[0][0] - now) if queue else 1.0
        try:
            ready, _, _ = select.select([inet, wan], [], [], timeout)
        except InterruptedError:
            continue
        for fd in ready:
            try:
                frame = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:
                return  # the device went away with its namespace
            if fd == inet:
                try:
                    os.write(wan, frame)
                except (BlockingIOError, OSError):
                    pass
            elif len(queue) < MAX_QUEUED:
                due = time.monotonic() + delay + random.uniform(-jitter, jitter)
                seq += 1
                heapq.heappush(queue, (due, seq, frame))


if __name__ == "__main__":
    main()
