//! `icephone nat-check`: the public address, and with an RFC 5780 server
//! the NAT's mapping and filtering behaviour, in words a user can act on.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tokio::net::UdpSocket;

use super::server_addr::{parse_stun_server, resolve};
use crate::stun::{
    BehaviorDiscovery, BehaviorError, BehaviorReport, NatFiltering, NatMapping, RetransmitPolicy,
};

#[derive(Serialize)]
struct JsonReport {
    server: String,
    server_address: String,
    local: String,
    mapped: Option<String>,
    rfc5780: bool,
    other_address: Option<String>,
    mapping: Option<&'static str>,
    filtering: Option<&'static str>,
    rtt_ms: Option<f64>,
    relay_needed: Option<bool>,
    verdict: String,
}

pub async fn run(server: &str, json: bool, timeout: Duration) -> ExitCode {
    match check(server, timeout).await {
        Ok((name, server_addr, report)) => {
            if json {
                let j = to_json(&name, server_addr, &report);
                println!("{}", serde_json::to_string_pretty(&j).unwrap_or_default());
            } else {
                print_text(&name, server_addr, &report);
            }
            ExitCode::SUCCESS
        }
        Err(message) => {
            if json {
                let j = serde_json::json!({ "server": server, "error": message });
                println!("{j}");
            }
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

async fn check(
    server: &str,
    timeout: Duration,
) -> Result<(String, SocketAddr, BehaviorReport), String> {
    let name = parse_stun_server(server).map_err(|e| format!("--stun {server:?}: {e}"))?;
    let server_addr = resolve(&name).await.map_err(|e| e.to_string())?;
    let socket = bind_towards(server_addr)
        .await
        .map_err(|e| format!("cannot open a UDP socket towards {server_addr}: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    let report = discover(&socket, server_addr, local, timeout).await?;
    Ok((name.to_string(), server_addr, report))
}

/// A socket on the specific local address that routes to the server, so the
/// report can tell "no NAT" (mapped == local) from a NAT.
async fn bind_towards(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let unspecified: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    };
    let probe = UdpSocket::bind(unspecified).await?;
    probe.connect(server).await?;
    let local_ip = probe.local_addr()?.ip();
    UdpSocket::bind(SocketAddr::new(local_ip, 0)).await
}

async fn discover(
    socket: &UdpSocket,
    server: SocketAddr,
    local: SocketAddr,
    timeout: Duration,
) -> Result<BehaviorReport, String> {
    // Sends at 0, 200 and 600 ms, silence concluded at 1.6 s: the filtering
    // tests *expect* silence, so RFC 8489's 39.5 s would make the tool useless.
    let policy = RetransmitPolicy {
        rto: Duration::from_millis(200),
        max_rto: Duration::from_millis(800),
        max_transmissions: 3,
        last_wait_factor: 5,
    };
    let mut rng = StdRng::from_os_rng();
    let mut discovery = BehaviorDiscovery::new(server, local, policy, &mut rng, Instant::now());
    let give_up = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 2048];
    let mut heard = false;
    while !discovery.is_done() {
        while let Some((to, data)) = discovery.poll_transmit() {
            if let Err(e) = socket.send_to(&data, to).await {
                return Err(format!("cannot send to {to}: {e}"));
            }
        }
        let wake = discovery
            .poll_timeout()
            .map(tokio::time::Instant::from_std)
            .unwrap_or(give_up)
            .min(give_up);
        tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok((n, from)) => {
                    heard = true;
                    discovery.handle_packet(Instant::now(), from, &buf[..n]);
                }
                Err(e) => tracing::debug!(error = %e, "receive error ignored"),
            },
            () = tokio::time::sleep_until(wake) => {
                if tokio::time::Instant::now() >= give_up {
                    let secs = timeout.as_secs_f64();
                    return Err(if heard {
                        format!("STUN server {server} did not complete the checks within {secs} s")
                    } else {
                        format!("no answer from STUN server {server} within {secs} s")
                    });
                }
                discovery.handle_timeout(Instant::now());
            }
        }
    }
    match discovery.result() {
        Some(Ok(report)) => Ok(report),
        Some(Err(BehaviorError::Timeout { server })) => Err(format!(
            "no answer from STUN server {server}: is it running, and is UDP to it allowed?"
        )),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("discovery ended without a result".into()),
    }
}

/// Stable tokens for JSON; scripts compare them.
fn mapping_token(m: NatMapping) -> &'static str {
    match m {
        NatMapping::NoNat => "no-nat",
        NatMapping::EndpointIndependent => "endpoint-independent",
        NatMapping::AddressDependent => "address-dependent",
        NatMapping::AddressAndPortDependent => "address-and-port-dependent",
    }
}

fn mapping_name(m: NatMapping) -> &'static str {
    match m {
        NatMapping::NoNat => "none (no NAT)",
        NatMapping::EndpointIndependent => "endpoint-independent",
        NatMapping::AddressDependent => "address-dependent",
        NatMapping::AddressAndPortDependent => "address-and-port-dependent",
    }
}

fn filtering_name(f: NatFiltering) -> &'static str {
    match f {
        NatFiltering::EndpointIndependent => "endpoint-independent",
        NatFiltering::AddressDependent => "address-dependent",
        NatFiltering::AddressAndPortDependent => "address-and-port-dependent",
    }
}

/// One plain sentence, and whether a relay will be needed (None: unknown).
pub fn verdict(report: &BehaviorReport) -> (String, Option<bool>) {
    let mapped = report
        .mapped
        .map_or_else(|| "unknown".to_string(), |m| m.to_string());
    match report.mapping {
        Some(NatMapping::NoNat) => (
            "You are not behind a NAT: direct calls will work (firewalls permitting).".into(),
            Some(false),
        ),
        Some(NatMapping::EndpointIndependent) => (
            format!(
                "Your NAT keeps one public address ({mapped}) for every peer: direct calls are \
                 likely to work; only a peer behind a symmetric NAT will need a TURN relay."
            ),
            Some(false),
        ),
        Some(NatMapping::AddressDependent | NatMapping::AddressAndPortDependent) => (
            "Your NAT is symmetric (a new public port for every peer): direct calls will often \
             fail, so configure a TURN relay."
                .into(),
            Some(true),
        ),
        None => (
            format!(
                "Your public address is {mapped}; this server does not offer RFC 5780 \
                 (no OTHER-ADDRESS), so the NAT's behaviour is unknown: use a server that \
                 does, or configure a TURN relay to be safe."
            ),
            None,
        ),
    }
}

fn to_json(name: &str, server: SocketAddr, r: &BehaviorReport) -> JsonReport {
    let (verdict, relay_needed) = verdict(r);
    JsonReport {
        server: name.to_string(),
        server_address: server.to_string(),
        local: r.local.to_string(),
        mapped: r.mapped.map(|m| m.to_string()),
        rfc5780: r.other_address.is_some(),
        other_address: r.other_address.map(|a| a.to_string()),
        mapping: r.mapping.map(mapping_token),
        filtering: r.filtering.map(filtering_name),
        rtt_ms: r.rtt.map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
        relay_needed,
        verdict,
    }
}

fn print_text(name: &str, server: SocketAddr, r: &BehaviorReport) {
    let (verdict, _) = verdict(r);
    println!("STUN server:     {name} ({server})");
    println!("Local address:   {}", r.local);
    if let Some(m) = r.mapped {
        println!("Public address:  {m}");
    }
    match r.other_address {
        Some(o) => println!("RFC 5780:        yes (other address {o})"),
        None => println!("RFC 5780:        no"),
    }
    if let Some(m) = r.mapping {
        println!("NAT mapping:     {}", mapping_name(m));
    }
    if let Some(f) = r.filtering {
        println!("NAT filtering:   {}", filtering_name(f));
    }
    if let Some(rtt) = r.rtt {
        println!("Round trip:      {:.1} ms", rtt.as_secs_f64() * 1e3);
    }
    println!("\n{verdict}");
}

#[cfg(test)]
mod tests {
    //! Discovery and verdict through each NAT behaviour of the simulator,
    //! with an RFC 5780 server on two public addresses.
    use std::net::SocketAddr;
    use std::time::{Duration, Instant};

    use rand::rngs::StdRng;
    use rand::SeedableRng;

    use super::verdict;
    use crate::sim::{Filtering, LinkConfig, Mapping, NatConfig, Network};
    use crate::stun::{
        BehaviorDiscovery, BindingServer, NatFiltering, NatMapping, RetransmitPolicy,
    };

    const PRIMARY: &str = "203.0.113.10:3478";
    const ALTERNATE: &str = "203.0.113.11:3479";

    fn discover(nat: Option<(Mapping, Filtering)>) -> crate::stun::BehaviorReport {
        let link = LinkConfig {
            delay: Duration::from_millis(5),
            jitter: Duration::ZERO,
            loss: 0.0,
        };
        let mut net = Network::new(11);
        let (primary, alternate): (SocketAddr, SocketAddr) =
            (PRIMARY.parse().unwrap(), ALTERNATE.parse().unwrap());
        net.add_host(primary.ip(), None, link);
        net.add_host(alternate.ip(), None, link);
        let client: SocketAddr = match nat {
            Some((mapping, filtering)) => {
                let cfg = NatConfig {
                    public_ip: "203.0.113.1".parse().unwrap(),
                    mapping,
                    filtering,
                    hairpinning: false,
                    port_preservation: true,
                    mapping_timeout: Duration::from_secs(120),
                };
                let n = net.add_nat(cfg, link);
                net.add_host("10.0.0.2".parse().unwrap(), Some(n), link);
                "10.0.0.2:5000".parse().unwrap()
            }
            None => {
                net.add_host("203.0.113.50".parse().unwrap(), None, link);
                "203.0.113.50:5000".parse().unwrap()
            }
        };
        let mut server = BindingServer::new(primary, Some(alternate), None);
        let owned = server.local_addresses();
        let policy = RetransmitPolicy {
            rto: Duration::from_millis(200),
            max_rto: Duration::from_millis(800),
            max_transmissions: 3,
            last_wait_factor: 5,
        };
        let mut now = Instant::now();
        let mut rng = StdRng::seed_from_u64(5);
        let mut d = BehaviorDiscovery::new(primary, client, policy, &mut rng, now);
        for _ in 0..10_000 {
            if d.is_done() {
                break;
            }
            while let Some((to, data)) = d.poll_transmit() {
                net.send(now, client, to, data).unwrap();
            }
            while let Some(dg) = net.poll_delivery(now) {
                if owned.contains(&dg.to) {
                    if let Some(t) = server.handle(dg.to, dg.from, &dg.data) {
                        net.send(now, t.from, t.to, t.data).unwrap();
                    }
                } else if dg.to == client {
                    d.handle_packet(now, dg.from, &dg.data);
                }
            }
            if d.is_done() {
                break;
            }
            let next = [d.poll_timeout(), net.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            now = next
                .unwrap_or_else(|| panic!("{nat:?}: discovery stalled: {:?}", d.result()))
                .max(now);
            d.handle_timeout(now);
        }
        d.result().expect("finished").expect("succeeded")
    }

    #[test]
    fn without_rfc5780_behind_a_nat_the_verdict_says_unknown() {
        let report = crate::stun::BehaviorReport {
            local: "10.0.0.2:5000".parse().unwrap(),
            mapped: Some("203.0.113.1:40000".parse().unwrap()),
            other_address: None,
            mapping: None,
            filtering: None,
            rtt: None,
            server_software: None,
        };
        let (sentence, relay) = verdict(&report);
        assert_eq!(relay, None);
        assert!(sentence.contains("203.0.113.1:40000") && sentence.contains("RFC 5780"));
    }

    #[test]
    fn each_nat_behaviour_is_classified_and_explained() {
        use Filtering as F;
        use Mapping as M;
        let rows = [
            (
                None,
                NatMapping::NoNat,
                NatFiltering::EndpointIndependent,
                Some(false),
            ),
            (
                Some((M::EndpointIndependent, F::EndpointIndependent)),
                NatMapping::EndpointIndependent,
                NatFiltering::EndpointIndependent,
                Some(false),
            ),
            (
                Some((M::EndpointIndependent, F::AddressAndPortDependent)),
                NatMapping::EndpointIndependent,
                NatFiltering::AddressAndPortDependent,
                Some(false),
            ),
            (
                Some((M::EndpointIndependent, F::AddressDependent)),
                NatMapping::EndpointIndependent,
                NatFiltering::AddressDependent,
                Some(false),
            ),
            (
                Some((M::AddressAndPortDependent, F::AddressAndPortDependent)),
                NatMapping::AddressAndPortDependent,
                NatFiltering::AddressAndPortDependent,
                Some(true),
            ),
            (
                Some((M::AddressDependent, F::AddressDependent)),
                NatMapping::AddressDependent,
                NatFiltering::AddressDependent,
                Some(true),
            ),
        ];
        for (nat, mapping, filtering, relay) in rows {
            let report = discover(nat);
            assert_eq!(report.mapping, Some(mapping), "{nat:?}");
            assert_eq!(report.filtering, Some(filtering), "{nat:?}");
            assert_eq!(verdict(&report).1, relay, "{nat:?}");
            if nat.is_some() {
                assert_eq!(report.mapped.unwrap().ip().to_string(), "203.0.113.1");
            }
        }
    }
}
