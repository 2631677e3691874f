//! `icephone bench stun|relay`: load generators for any STUN/TURN server,
//! ours or coturn, so both are measured by the same client in one run
//! (`scripts/bench-turn` runs the comparison).
//!
//! Plain threads and blocking sockets: the generator should cost as little
//! as possible and behave the same against every server.

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;

use crate::stun::{Class, Message, MessageBuilder, Method, TransactionId};
use crate::turn::{TurnClient, TurnClientConfig, TurnEvent, TurnInput, TurnState};

#[derive(Serialize, Debug)]
pub struct BenchReport {
    pub kind: &'static str,
    pub server: String,
    pub duration_s: f64,
    pub window: usize,
    /// Completed round trips per second (a Binding answered; a datagram
    /// relayed to the peer and back).
    pub round_trips_per_s: f64,
    /// For `relay`: datagrams the server relayed per second (two per round trip).
    pub relayed_per_s: Option<f64>,
    pub lost: u64,
    pub rtt_p50_us: f64,
    pub rtt_p99_us: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

pub(super) fn finish(
    kind: &'static str,
    server: SocketAddr,
    window: usize,
    elapsed: Duration,
    mut rtts: Vec<Duration>,
    lost: u64,
    relay: bool,
) -> BenchReport {
    rtts.sort_unstable();
    let rate = rtts.len() as f64 / elapsed.as_secs_f64();
    BenchReport {
        kind,
        server: server.to_string(),
        duration_s: elapsed.as_secs_f64(),
        window,
        round_trips_per_s: rate,
        relayed_per_s: relay.then_some(rate * 2.0),
        lost,
        rtt_p50_us: percentile(&rtts, 0.5),
        rtt_p99_us: percentile(&rtts, 0.99),
    }
}

pub fn print(report: &Result<BenchReport, String>, json: bool) -> ExitCode {
    match report {
        Ok(r) if json => {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!(
                "{} {}: {:.0} round trips/s{} (window {}, {:.1} s), rtt p50 {:.0} µs p99 {:.0} µs, lost {}",
                r.kind,
                r.server,
                r.round_trips_per_s,
                r.relayed_per_s
                    .map_or(String::new(), |p| format!(", {p:.0} relayed datagrams/s")),
                r.window,
                r.duration_s,
                r.rtt_p50_us,
                r.rtt_p99_us,
                r.lost
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// Binding requests with `window` outstanding, for `duration`.
pub fn stun(server: SocketAddr, duration: Duration, window: usize) -> Result<BenchReport, String> {
    let socket = UdpSocket::bind(SocketAddr::new(local_ip_towards(server)?, 0))
        .map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut rng = StdRng::from_os_rng();
    let mut outstanding: HashMap<TransactionId, Instant> = HashMap::new();
    let mut rtts = Vec::new();
    let mut lost = 0u64;
    let send = |rng: &mut StdRng, out: &mut HashMap<TransactionId, Instant>| {
        let id = TransactionId::random(rng);
        let bytes = MessageBuilder::new(Class::Request, Method::BINDING, id).finish();
        out.insert(id, Instant::now());
        socket.send_to(&bytes, server).map_err(|e| e.to_string())
    };
    for _ in 0..window {
        send(&mut rng, &mut outstanding)?;
    }
    let start = Instant::now();
    let mut buf = [0u8; 2048];
    while start.elapsed() < duration {
        match socket.recv_from(&mut buf) {
            Ok((n, _)) => {
                let Ok(msg) = Message::decode(&buf[..n]) else {
                    continue;
                };
                if let Some(at) = outstanding.remove(&msg.transaction_id()) {
                    rtts.push(at.elapsed());
                    send(&mut rng, &mut outstanding)?;
                }
            }
            Err(_) => {
                // Silence: whatever is outstanding is lost; refill the window.
                lost += outstanding.len() as u64;
                outstanding.clear();
                for _ in 0..window {
                    send(&mut rng, &mut outstanding)?;
                }
            }
        }
    }
    if rtts.is_empty() {
        return Err(format!("no Binding answer from {server}"));
    }
    Ok(finish(
        "stun",
        server,
        window,
        start.elapsed(),
        rtts,
        lost,
        false,
    ))
}

pub struct RelayArgs {
    pub server: SocketAddr,
    pub user: String,
    pub password: String,
    pub duration: Duration,
    pub window: usize,
    pub size: usize,
}

/// One allocation with a channel to a local echo peer; `window` datagrams of
/// `size` bytes circulate client → relay → peer → relay → client.
pub fn relay(args: RelayArgs) -> Result<BenchReport, String> {
    let server = args.server;
    let ip = local_ip_towards(server)?;
    let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(|e| e.to_string())?;
    let peer_socket = UdpSocket::bind(SocketAddr::new(ip, 0)).map_err(|e| e.to_string())?;
    let peer = peer_socket.local_addr().map_err(|e| e.to_string())?;
    peer_socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_echo = stop.clone();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while !stop_echo.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok((n, from)) = peer_socket.recv_from(&mut buf) {
                let _ = peer_socket.send_to(&buf[..n], from);
            }
        }
    });
    let result = run_relay(&args, &socket, peer);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = echo.join();
    result
}

fn run_relay(
    args: &RelayArgs,
    socket: &UdpSocket,
    peer: SocketAddr,
) -> Result<BenchReport, String> {
    let server = args.server;
    let mut client = TurnClient::new(
        TurnClientConfig::new(server, &args.user, &args.password),
        Instant::now(),
        Box::new(StdRng::from_os_rng()),
    );
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65_536];
    // Set up: allocate, then bind the channel (which installs the permission).
    let setup_deadline = Instant::now() + Duration::from_secs(10);
    let mut bound = false;
    while !bound {
        if Instant::now() > setup_deadline {
            return Err(format!(
                "no allocation and channel from {server} within 10 s"
            ));
        }
        while let Some(bytes) = client.poll_transmit() {
            socket.send_to(&bytes, server).map_err(|e| e.to_string())?;
        }
        while let Some(ev) = client.poll_event() {
            match ev {
                TurnEvent::Allocated { .. } => {
                    client
                        .bind_channel(Instant::now(), peer)
                        .map_err(|e| e.to_string())?;
                }
                TurnEvent::ChannelBound { .. } => bound = true,
                TurnEvent::Failed(e) => return Err(e.to_string()),
                TurnEvent::ChannelBindFailed { error, .. } => return Err(error.to_string()),
                _ => {}
            }
        }
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            if from == server {
                client.handle_packet(Instant::now(), &buf[..n]);
            }
        }
        client.handle_timeout(Instant::now());
    }
    // The hot loop frames ChannelData itself: the client's per-call
    // allocation is not what is being measured here, the server is.
    let channel = client.channel(peer).ok_or("channel vanished")?;
    // Payload: send time (ns since epoch) then sequence number, then padding.
    let mut frame = vec![0u8; 4 + args.size.max(16)];
    frame[0..2].copy_from_slice(&channel.to_be_bytes());
    let payload_len = (frame.len() - 4) as u16;
    frame[2..4].copy_from_slice(&payload_len.to_be_bytes());
    let epoch = Instant::now();
    let mut send = |seq: u64| -> Result<(), String> {
        let sent_ns = epoch.elapsed().as_nanos() as u64;
        frame[4..12].copy_from_slice(&sent_ns.to_be_bytes());
        frame[12..20].copy_from_slice(&seq.to_be_bytes());
        socket
            .send_to(&frame, server)
            .map(|_| ())
            .map_err(|e| e.to_string())
    };
    let mut seq = 0u64;
    for _ in 0..args.window {
        send(seq)?;
        seq += 1;
    }
    let start = Instant::now();
    let mut rtts = Vec::with_capacity(1 << 20);
    let mut lost = 0u64;
    while start.elapsed() < args.duration {
        match socket.recv_from(&mut buf) {
            Ok((n, from)) if from == server => {
                match client.handle_packet(Instant::now(), &buf[..n]) {
                    TurnInput::Relayed { data, .. } if data.len() >= 8 => {
                        let sent_ns = u64::from_be_bytes(data[..8].try_into().unwrap_or_default());
                        let now_ns = epoch.elapsed().as_nanos() as u64;
                        rtts.push(Duration::from_nanos(now_ns.saturating_sub(sent_ns)));
                        send(seq)?;
                        seq += 1;
                    }
                    _ => {}
                }
            }
            Ok(_) => {}
            Err(_) => {
                // 50 ms of silence: whatever is still out was lost; refill.
                lost = seq - rtts.len() as u64;
                for _ in 0..args.window {
                    send(seq)?;
                    seq += 1;
                }
            }
        }
        // Keep the allocation alive if the run is long.
        client.handle_timeout(Instant::now());
        while let Some(bytes) = client.poll_transmit() {
            let _ = socket.send_to(&bytes, server);
        }
    }
    let elapsed = start.elapsed();
    if client.state() == TurnState::Allocated {
        client.release(Instant::now());
        while let Some(bytes) = client.poll_transmit() {
            let _ = socket.send_to(&bytes, server);
        }
    }
    if rtts.is_empty() {
        return Err(format!("nothing came back through the relay at {server}"));
    }
    Ok(finish(
        "relay",
        server,
        args.window,
        elapsed,
        rtts,
        lost,
        true,
    ))
}

fn local_ip_towards(server: SocketAddr) -> Result<std::net::IpAddr, String> {
    let probe = UdpSocket::bind(crate::net::turn_link::unspecified_for(server))
        .map_err(|e| e.to_string())?;
    probe.connect(server).map_err(|e| e.to_string())?;
    Ok(probe.local_addr().map_err(|e| e.to_string())?.ip())
}
