//! `icephone turn-probe`: allocate on a TURN server, relay a few datagrams
//! to a local echo peer and back, report the round trips, release.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tokio::net::UdpSocket;

use super::server_addr::{parse_turn_server, resolve};
use crate::net::tls::{self, TlsClient};
use crate::net::turn_link::TurnLink;
use crate::turn::{TurnClient, TurnClientConfig, TurnEvent, TurnInput, TurnState, TurnTransport};

const PINGS: usize = 5;
const PING_TAG: &[u8] = b"icephone-turn-probe:";

#[derive(Serialize, Debug, Default)]
pub struct ProbeReport {
    pub server: String,
    pub server_address: String,
    pub transport: &'static str,
    pub local: String,
    pub relayed: Option<String>,
    pub mapped: Option<String>,
    pub lifetime_s: Option<u64>,
    pub peer: String,
    pub channel: Option<u16>,
    pub sent: usize,
    pub received: usize,
    /// Sent as Send indications (before the channel) and as ChannelData.
    pub sent_as_indication: u64,
    pub sent_as_channel_data: u64,
    pub rtt_ms: Vec<f64>,
    pub released: bool,
    pub verdict: String,
}

pub struct ProbeArgs<'a> {
    pub turn: &'a str,
    pub user: &'a str,
    pub password: &'a str,
    pub json: bool,
    pub timeout: Duration,
    /// Extra CA certificates (PEM) to trust for `turns:`.
    pub ca: Option<&'a std::path::Path>,
}

pub async fn run(args: ProbeArgs<'_>) -> ExitCode {
    match probe(&args).await {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print_text(&report);
            }
            if report.received == report.sent && report.sent > 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(message) => {
            if args.json {
                let j = serde_json::json!({ "server": args.turn, "error": message });
                println!("{j}");
            }
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn print_text(r: &ProbeReport) {
    println!(
        "TURN server   {} ({}, {})",
        r.server, r.server_address, r.transport
    );
    println!("local         {}", r.local);
    if let Some(m) = &r.mapped {
        println!("mapped        {m}");
    }
    if let (Some(relayed), Some(life)) = (&r.relayed, r.lifetime_s) {
        println!("relayed       {relayed} (lifetime {life} s)");
    }
    println!(
        "echo peer     {} (channel {})",
        r.peer,
        r.channel.map_or("none".into(), |c| format!("{c:#06x}"))
    );
    let rtts: Vec<String> = r.rtt_ms.iter().map(|ms| format!("{ms:.2}")).collect();
    println!(
        "relayed       {}/{} datagrams, rtt ms [{}]",
        r.received,
        r.sent,
        rtts.join(", ")
    );
    println!("released      {}", if r.released { "yes" } else { "no" });
    println!("{}", r.verdict);
}

async fn probe(args: &ProbeArgs<'_>) -> Result<ProbeReport, String> {
    let url = parse_turn_server(args.turn).map_err(|e| format!("--turn {:?}: {e}", args.turn))?;
    if args.user.is_empty() {
        return Err("--user must not be empty".into());
    }
    let tls = match url.transport {
        TurnTransport::Tls => Some(TlsClient {
            config: tls::client_config(args.ca).map_err(|e| format!("--ca: {e}"))?,
            server_name: tls::server_name(&url.name.host).map_err(|e| e.to_string())?,
        }),
        _ if args.ca.is_some() => {
            return Err("--ca applies only to turns: servers".into());
        }
        _ => None,
    };
    let server = resolve(&url.name).await.map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + args.timeout;
    let connect = TurnLink::connect(server, url.transport, tls.as_ref());
    let mut link = tokio::time::timeout_at(deadline, connect)
        .await
        .map_err(|_| {
            format!(
                "cannot reach TURN server {server} within {:?}",
                args.timeout
            )
        })?
        .map_err(|e| {
            format!(
                "cannot reach TURN server {server} over {}: {e}",
                url.transport.as_str()
            )
        })?;
    let local = link.local_addr().map_err(|e| e.to_string())?;
    let echo = UdpSocket::bind(SocketAddr::new(local.ip(), 0))
        .await
        .map_err(|e| format!("cannot open the echo peer socket: {e}"))?;
    let peer = echo.local_addr().map_err(|e| e.to_string())?;
    let echo_task = tokio::spawn(echo_peer(echo));

    let mut config = TurnClientConfig::new(server, args.user, args.password);
    config.transport = url.transport;
    config.software = Some(concat!("icephone ", env!("CARGO_PKG_VERSION")).into());
    let mut client = TurnClient::new(config, Instant::now(), Box::new(StdRng::from_os_rng()));
    let mut report = ProbeReport {
        server: url.name.to_string(),
        server_address: server.to_string(),
        transport: url.transport.as_str(),
        local: local.to_string(),
        peer: peer.to_string(),
        ..Default::default()
    };
    let result = drive(&mut client, &mut link, peer, deadline, &mut report).await;
    echo_task.abort();
    let stats = client.stats();
    report.sent_as_indication = stats.sent_indications;
    report.sent_as_channel_data = stats.sent_channel_data;
    result?;
    report.verdict = if report.received == report.sent {
        format!(
            "OK: the relay works; {} of {} datagrams came back",
            report.received, report.sent
        )
    } else {
        format!(
            "PARTIAL: allocated, but only {} of {} relayed datagrams came back",
            report.received, report.sent
        )
    };
    Ok(report)
}

async fn drive(
    client: &mut TurnClient,
    link: &mut TurnLink,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
    report: &mut ProbeReport,
) -> Result<(), String> {
    let mut sent_at: Vec<Instant> = Vec::new();
    let mut rtts: Vec<Option<Duration>> = Vec::new();
    let mut next_ping: Option<tokio::time::Instant> = None;
    let mut quiet_until: Option<tokio::time::Instant> = None;
    let mut buf = Vec::new();
    loop {
        // Events queue new requests: flush until both queues are empty.
        loop {
            let mut progressed = false;
            while let Some(bytes) = client.poll_transmit() {
                progressed = true;
                link.send(&bytes)
                    .await
                    .map_err(|e| format!("cannot send to the TURN server: {e}"))?;
            }
            while let Some(event) = client.poll_event() {
                progressed = true;
                match event {
                    TurnEvent::Allocated {
                        relayed,
                        mapped,
                        lifetime,
                    } => {
                        report.relayed = Some(relayed.to_string());
                        report.mapped = mapped.map(|m| m.to_string());
                        report.lifetime_s = Some(lifetime.as_secs());
                        // The first datagram goes as a Send indication once the
                        // permission exists; the rest over the channel.
                        send_ping(client, peer, &mut sent_at, &mut rtts)?;
                        report.channel = client.bind_channel(Instant::now(), peer).ok();
                    }
                    TurnEvent::ChannelBound { .. } => {
                        next_ping = Some(tokio::time::Instant::now());
                    }
                    TurnEvent::PermissionFailed { error, .. }
                    | TurnEvent::ChannelBindFailed { error, .. } => {
                        return Err(format!(
                            "the TURN server refused to relay to {peer}: {error}"
                        ));
                    }
                    TurnEvent::Failed(error) => return Err(error.to_string()),
                    TurnEvent::Released => {
                        report.released = true;
                        return Ok(());
                    }
                    TurnEvent::Refreshed { .. } | TurnEvent::PermissionCreated { .. } => {}
                }
            }
            if !progressed {
                break;
            }
        }
        if client.state() == TurnState::Released {
            return Ok(());
        }
        let all_back = sent_at.len() == PINGS && rtts.iter().all(Option::is_some);
        let quiet_over = quiet_until.is_some_and(|t| tokio::time::Instant::now() >= t);
        if client.state() == TurnState::Allocated && (all_back || quiet_over) {
            report.sent = sent_at.len();
            report.received = rtts.iter().flatten().count();
            report.rtt_ms = rtts
                .iter()
                .flatten()
                .map(|d| d.as_secs_f64() * 1e3)
                .collect();
            client.release(Instant::now());
            continue;
        }
        let core_wake = client
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or(deadline);
        let wake = [Some(core_wake), next_ping, quiet_until, Some(deadline)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(deadline);
        tokio::select! {
            r = link.recv(&mut buf) => {
                r.map_err(|e| format!("connection to the TURN server failed: {e}"))?;
                if let TurnInput::Relayed { data, .. } = client.handle_packet(Instant::now(), &buf) {
                    if let Some(seq) = parse_ping(data) {
                        if let (Some(at), Some(slot)) = (sent_at.get(seq), rtts.get_mut(seq)) {
                            slot.get_or_insert(at.elapsed());
                        }
                    }
                }
            }
            () = tokio::time::sleep_until(wake) => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    if client.state() == TurnState::Allocating {
                        return Err("no allocation from the TURN server within the timeout (--timeout)".into());
                    }
                    return Err("the probe did not finish in time".into());
                }
                if next_ping.is_some_and(|t| now >= t) {
                    send_ping(client, peer, &mut sent_at, &mut rtts)?;
                    next_ping = (sent_at.len() < PINGS).then(|| now + Duration::from_millis(20));
                    if sent_at.len() == PINGS {
                        quiet_until = Some(now + Duration::from_secs(2));
                    }
                }
                client.handle_timeout(Instant::now());
            }
        }
    }
}

fn send_ping(
    client: &mut TurnClient,
    peer: SocketAddr,
    sent_at: &mut Vec<Instant>,
    rtts: &mut Vec<Option<Duration>>,
) -> Result<(), String> {
    let mut payload = PING_TAG.to_vec();
    payload.extend_from_slice(&(sent_at.len() as u32).to_be_bytes());
    sent_at.push(Instant::now());
    rtts.push(None);
    client
        .send_to(Instant::now(), peer, &payload)
        .map_err(|e| e.to_string())
}

fn parse_ping(data: &[u8]) -> Option<usize> {
    let seq = data.strip_prefix(PING_TAG)?;
    let bytes: [u8; 4] = seq.try_into().ok()?;
    Some(u32::from_be_bytes(bytes) as usize)
}

/// Sends every datagram straight back to where it came from: the relay.
async fn echo_peer(socket: UdpSocket) {
    let mut buf = vec![0u8; 2048];
    while let Ok((n, from)) = socket.recv_from(&mut buf).await {
        let _ = socket.send_to(&buf[..n], from).await;
    }
}
