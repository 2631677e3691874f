//! Virtual time from "both agents hold each other's candidates" to "both
//! connected", per NAT combination, at 50 ms RTT; and the CPU cost of a
//! whole simulated connect. Run: `cargo bench --bench ice_connect`.
//! Under `cargo test` (no `--bench` argument) it runs one quick pass.

use std::time::{Duration, Instant};

use icephone::ice::testbed::{Nat, WorldBuilder};
use icephone::ice::IceConfig;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let rows = [
        (Nat::None, Nat::None),
        (Nat::FullCone, Nat::FullCone),
        (Nat::PortRestricted, Nat::PortRestricted),
        (Nat::None, Nat::Symmetric),
        (Nat::FullCone, Nat::Symmetric),
    ];
    let ta = IceConfig::default().ta;
    // access 1 ms + internet 12 ms per side, one way: RTT = 2·2·(1+12) = 52 ms
    // between public hosts; NATed hosts add nothing more in the simulator.
    let rtt = Duration::from_millis(52);
    println!("ICE connect time in virtual time, RTT {rtt:?}, Ta {ta:?}");
    println!("budget for host-only: 2·RTT + Ta = {:?}", 2 * rtt + ta);
    for (a, b) in rows {
        let mut w = WorldBuilder {
            access_ms: 1,
            internet_ms: 12,
            ..Default::default()
        }
        .nats(a, b)
        .build();
        let t = w.connect(Duration::from_secs(30)).expect("connects");
        let pair = w.selected_types(0).unwrap();
        println!(
            "  {:<16} {:<16} connected after {:>7.1} ms  = {:.2} RTT  pair {}/{}",
            format!("{a:?}"),
            format!("{b:?}"),
            t.as_secs_f64() * 1e3,
            t.as_secs_f64() / rtt.as_secs_f64(),
            pair.0,
            pair.1
        );
    }
    let iterations = if full { 2000 } else { 5 };
    let start = Instant::now();
    for seed in 0..iterations {
        let mut w = WorldBuilder {
            seed,
            ..Default::default()
        }
        .nats(Nat::PortRestricted, Nat::FullCone)
        .build();
        w.connect(Duration::from_secs(30)).expect("connects");
    }
    let per = start.elapsed() / iterations as u32;
    println!(
        "CPU per simulated connect (2 agents, STUN server, NAT): {:.1} µs",
        per.as_secs_f64() * 1e6
    );
}
