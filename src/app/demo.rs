//! `icephone demo`: until calls exist, two ICE agents in one process
//! connect over loopback through real UDP sockets and the real driver.

use std::net::{IpAddr, Ipv4Addr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::ice::{Candidate, ConnectionState, IceAgent, IceConfig, IceEvent};
use crate::net::{bind_sockets, spawn_session, IceCommand, IceSession};

struct Peer {
    name: &'static str,
    session: IceSession,
    candidates: Vec<Candidate>,
    gathered: bool,
    state: ConnectionState,
    selected: Option<(Candidate, Candidate)>,
    connected_at: Option<Instant>,
}

pub async fn run(timeout: Duration) -> ExitCode {
    match run_inner(timeout).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("demo failed: {e}");
            ExitCode::from(1)
        }
    }
}

async fn start(name: &'static str, controlling: bool) -> Result<Peer, String> {
    let loopback = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let sockets = bind_sockets(&loopback, 1)
        .await
        .map_err(|e| format!("cannot bind a loopback socket: {e}"))?;
    let mut agent = IceAgent::new(
        IceConfig::default(),
        Instant::now(),
        Box::new(StdRng::from_os_rng()),
    );
    agent.set_controlling(controlling);
    let session = spawn_session(agent, sockets).map_err(|e| e.to_string())?;
    Ok(Peer {
        name,
        session,
        candidates: Vec::new(),
        gathered: false,
        state: ConnectionState::New,
        selected: None,
        connected_at: None,
    })
}

async fn run_inner(timeout: Duration) -> Result<(), String> {
    println!("icephone demo: two ICE agents on 127.0.0.1 (full ICE, regular nomination)\n");
    let mut peers = [start("alice", true).await?, start("bob", false).await?];
    let deadline = tokio::time::Instant::now() + timeout;
    while !peers.iter().all(|p| p.gathered) {
        for p in &mut peers {
            drain(p);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        if tokio::time::Instant::now() > deadline {
            return Err("gathering did not finish".into());
        }
    }
    for p in &peers {
        println!("{} ({}) candidates:", p.name, role(p.name));
        for c in &p.candidates {
            println!("  a=candidate:{}", c.to_sdp_value());
        }
    }
    let signalled = Instant::now();
    exchange(&peers[0], &peers[1]);
    exchange(&peers[1], &peers[0]);
    while !peers.iter().all(|p| p.connected_at.is_some()) {
        for p in &mut peers {
            drain(p);
            if p.state == ConnectionState::Failed {
                return Err(format!("{} reports ICE failed", p.name));
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(format!("not connected within {timeout:?}"));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    println!();
    for p in &peers {
        let (l, r) = p
            .selected
            .as_ref()
            .ok_or("connected without a selected pair")?;
        let ms = p
            .connected_at
            .unwrap()
            .duration_since(signalled)
            .as_secs_f64()
            * 1e3;
        println!(
            "{}: selected pair {} {} -> {} {}, connected {:.1} ms after signalling",
            p.name, l.kind, l.address, r.kind, r.address, ms
        );
    }
    for p in &peers {
        let _ = p.session.commands.send(IceCommand::Shutdown);
    }
    println!("\nOK: both agents connected.");
    Ok(())
}

fn role(name: &str) -> &'static str {
    if name == "alice" {
        "controlling"
    } else {
        "controlled"
    }
}

fn exchange(from: &Peer, to: &Peer) {
    let tx = &to.session.commands;
    let _ = tx.send(IceCommand::SetRemoteCredentials(
        from.session.local_credentials.clone(),
    ));
    for c in &from.candidates {
        let _ = tx.send(IceCommand::AddRemoteCandidate(Candidate::remote(
            c.address,
            c.kind,
            c.priority,
            c.foundation.clone(),
            c.component,
            c.related,
        )));
    }
    let _ = tx.send(IceCommand::EndOfRemoteCandidates);
}

fn drain(p: &mut Peer) {
    while let Ok(e) = p.session.events.try_recv() {
        match e {
            IceEvent::LocalCandidate(c) => p.candidates.push(c),
            IceEvent::GatheringComplete => p.gathered = true,
            IceEvent::PairStateChanged {
                local,
                remote,
                state,
                rtt,
                ..
            } => {
                let rtt = rtt.map(|r| format!(" rtt {:.2} ms", r.as_secs_f64() * 1e3));
                println!(
                    "  {}: pair {local} -> {remote} {}{}",
                    p.name,
                    state.as_str(),
                    rtt.unwrap_or_default()
                );
            }
            IceEvent::SelectedPair { local, remote, .. } => p.selected = Some((local, remote)),
            IceEvent::ConnectionState(s) => {
                println!("  {}: {}", p.name, s.as_str());
                p.state = s;
                if matches!(s, ConnectionState::Connected | ConnectionState::Completed) {
                    p.connected_at.get_or_insert_with(Instant::now);
                }
            }
            _ => {}
        }
    }
}
