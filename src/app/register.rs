//! `icephone register`: register one account, keep it fresh until Ctrl-C or
//! SIGTERM, then unregister.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;

use super::account::{local_ip_towards, AccountArgs};
use crate::net::sip_transport::SipSockets;
use crate::net::sip_ua::{spawn_user_agent, UaCommand};
use crate::sip::registration::RegistrationEvent;
use crate::sip::ua::{UaEvent, UserAgent};

pub struct RegisterArgs {
    pub account: AccountArgs,
    /// Seconds the first registration may take.
    pub timeout: Duration,
}

pub async fn run(args: RegisterArgs) -> ExitCode {
    match register(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn register(args: RegisterArgs) -> Result<ExitCode, String> {
    let account = args.account.resolve().await.map_err(|e| e.to_string())?;
    let local_ip = local_ip_towards(account.next_hop.addr)
        .map_err(|e| format!("no route to {}: {e}", account.next_hop.addr))?;
    let (sockets, incoming) = SipSockets::bind(local_ip, args.account.sip_port)
        .await
        .map_err(|e| format!("cannot bind SIP port {}: {e}", args.account.sip_port))?;
    let local = sockets.local_udp().map_err(|e| e.to_string())?;
    let mut ua = UserAgent::new(account.ua_config(local), StdRng::from_os_rng());
    ua.register(Instant::now());
    let mut handle = spawn_user_agent(ua, sockets, incoming);

    // The first registration must succeed, promptly.
    let first = tokio::time::timeout(args.timeout, handle.events.recv()).await;
    match first {
        Ok(Some(UaEvent::Registration(RegistrationEvent::Registered { contact, expires }))) => {
            println!(
                "registered {} contact={contact} expires={expires}",
                account.aor
            );
        }
        Ok(Some(UaEvent::Registration(RegistrationEvent::Failed { error, .. }))) => {
            let _ = handle.commands.send(UaCommand::Shutdown);
            return Err(format!("registration of {} failed: {error}", account.aor));
        }
        Ok(other) => {
            let _ = handle.commands.send(UaCommand::Shutdown);
            return Err(format!("registration of {} ended: {other:?}", account.aor));
        }
        Err(_) => {
            let _ = handle.commands.send(UaCommand::Shutdown);
            return Err(format!(
                "the registrar {} did not answer within {} s",
                account.next_hop.addr,
                args.timeout.as_secs()
            ));
        }
    }

    let stop = crate::net::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            event = handle.events.recv() => match event {
                Some(UaEvent::Registration(RegistrationEvent::Registered { contact, expires })) => {
                    println!("refreshed contact={contact} expires={expires}");
                }
                Some(UaEvent::Registration(RegistrationEvent::Failed { error, retry_in })) => {
                    let retry = retry_in.map(|d| format!("; retrying in {} s", d.as_secs())).unwrap_or_default();
                    eprintln!("registration failed: {error}{retry}");
                }
                Some(other) => tracing::debug!(?other, "UA event"),
                None => return Err("the SIP user agent stopped".into()),
            },
        }
    }
    let _ = handle.commands.send(UaCommand::Unregister);
    // Bounded: an unanswered unregistration times out with timer F, but a
    // person pressing Ctrl-C should not wait that long.
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = handle.events.recv().await {
            if matches!(
                event,
                UaEvent::Registration(RegistrationEvent::Unregistered)
            ) {
                return true;
            }
        }
        false
    })
    .await;
    match done {
        Ok(true) => {
            println!("unregistered {}", account.aor);
            Ok(ExitCode::SUCCESS)
        }
        _ => {
            let _ = handle.commands.send(UaCommand::Shutdown);
            eprintln!("warning: the registrar did not confirm the unregistration");
            Ok(ExitCode::from(1))
        }
    }
}
