//! The phone's screen and keyboard (ratatui on crossterm): accounts at the
//! top, the dial field, the calls with their live figures, and a help bar
//! whose keys follow what the selected call can do. It only reads the
//! shared [`PhoneState`] and sends commands; redraws ten times a second
//! and on every key, so resizing just works.

use std::time::Duration;

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::execute;
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;
use tokio::sync::mpsc;

use super::phone::{AccountCmd, CallCmd, CallStatus, CallView, Phone, PhoneState};
use crate::rtp::{estimate, CodecImpairment, QualityInput};

/// Ended calls stay on screen this long.
const ENDED_SHOWN: Duration = Duration::from_secs(8);

/// The UI's own state: what is typed, which call is selected.
#[derive(Default)]
struct View {
    dial: String,
    selected: usize,
    quit: bool,
    /// F2: the device list, open.
    picker: Option<Picker>,
}

/// The sound devices to choose from (F2): microphones, then speakers.
struct Picker {
    /// (`mic` or `speaker`, device name, description)
    items: Vec<(&'static str, String, String)>,
    cursor: usize,
}

impl Picker {
    fn open() -> Picker {
        let devices = crate::audio::device::list().unwrap_or_default();
        let mut items = vec![(
            "mic",
            "default".to_owned(),
            "the system's default".to_owned(),
        )];
        items.extend(
            devices
                .iter()
                .filter(|d| d.input)
                .map(|d| ("mic", d.name.clone(), d.description.clone())),
        );
        items.push(("speaker", "default".into(), "the system's default".into()));
        items.extend(
            devices
                .iter()
                .filter(|d| d.output)
                .map(|d| ("speaker", d.name.clone(), d.description.clone())),
        );
        Picker { items, cursor: 0 }
    }
}

/// The screen, owned by the UI: while it runs, whatever else the process
/// (or a library: ALSA, a stray print) writes to stdout or stderr goes to
/// the log file instead. Dropping it puts the terminal and both streams
/// back, however the UI ends.
struct Screen {
    terminal: std::fs::File,
    saved: [i32; 2],
}

impl Screen {
    fn take(log: &std::path::Path) -> Result<Screen, String> {
        use std::os::fd::{AsRawFd, FromRawFd};
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        // SAFETY: plain descriptor calls on descriptors this process owns;
        // the duplicate handed to `File` is owned by it alone.
        let (saved, terminal) = unsafe {
            let saved = [libc::dup(1), libc::dup(2)];
            if saved.contains(&-1) {
                return Err("cannot duplicate stdout".into());
            }
            let terminal = std::fs::File::from_raw_fd(libc::dup(saved[0]));
            libc::dup2(log.as_raw_fd(), 1);
            libc::dup2(log.as_raw_fd(), 2);
            (saved, terminal)
        };
        let mut screen = Screen { terminal, saved };
        enable_raw_mode().map_err(|e| format!("the terminal: {e}"))?;
        execute!(screen.terminal, EnterAlternateScreen).map_err(|e| e.to_string())?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = disable_raw_mode();
        let _ = execute!(self.terminal, LeaveAlternateScreen);
        // SAFETY: restoring the descriptors saved in `take`.
        unsafe {
            libc::dup2(self.saved[0], 1);
            libc::dup2(self.saved[1], 2);
            libc::close(self.saved[0]);
            libc::close(self.saved[1]);
        }
    }
}

pub async fn run(phone: &Phone) -> Result<(), String> {
    let screen = Screen::take(&super::phone::log_path())?;
    let tty = screen.terminal.try_clone().map_err(|e| e.to_string())?;
    let backend = ratatui::backend::CrosstermBackend::new(tty);
    let mut terminal = ratatui::Terminal::new(backend).map_err(|e| e.to_string())?;
    let (keys_tx, mut keys) = mpsc::unbounded_channel();
    // crossterm's reads block: a thread of their own.
    std::thread::spawn(move || loop {
        match event::poll(Duration::from_millis(100)) {
            Ok(true) => match event::read() {
                Ok(e) => {
                    if keys_tx.send(e).is_err() {
                        return;
                    }
                }
                Err(_) => return,
            },
            Ok(false) => {
                if keys_tx.is_closed() {
                    return;
                }
            }
            Err(_) => return,
        }
    });
    let stop = crate::net::shutdown_signal();
    tokio::pin!(stop);
    let mut view = View::default();
    let mut redraw = tokio::time::interval(Duration::from_millis(100));
    while !view.quit {
        tokio::select! {
            e = keys.recv() => match e {
                Some(Event::Key(key)) if key.kind != KeyEventKind::Release => on_key(phone, &mut view, key),
                Some(_) => {}
                None => break,
            },
            _ = redraw.tick() => {}
            _ = &mut stop => break,
        }
        fix_selection(phone, &mut view);
        let Ok(state) = phone.state.lock() else { break };
        terminal
            .draw(|f| draw(f, &state, &view))
            .map_err(|e| e.to_string())?;
    }
    drop(terminal);
    drop(screen);
    Ok(())
}

/// A call that starts ringing takes the selection from one that ended.
fn fix_selection(phone: &Phone, view: &mut View) {
    let Ok(state) = phone.state.lock() else {
        return;
    };
    let calls = visible(&state);
    let current_done = calls
        .get(view.selected)
        .is_none_or(|c| matches!(c.status, CallStatus::Ended(_)));
    if current_done {
        if let Some(i) = calls
            .iter()
            .position(|c| !matches!(c.status, CallStatus::Ended(_)))
        {
            view.selected = i;
        }
    }
}

/// The calls the user can act on: those not ended a while ago.
fn visible(state: &PhoneState) -> Vec<&CallView> {
    state
        .calls
        .iter()
        .filter(|c| c.ended_at.is_none_or(|t| t.elapsed() < ENDED_SHOWN))
        .collect()
}

fn on_key(phone: &Phone, view: &mut View, key: KeyEvent) {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if (ctrl && key.code == KeyCode::Char('c')) || key.code == KeyCode::F(10) {
        view.quit = true;
        return;
    }
    if let Some(picker) = view.picker.as_mut() {
        match key.code {
            KeyCode::Up => picker.cursor = picker.cursor.saturating_sub(1),
            KeyCode::Down => {
                picker.cursor = (picker.cursor + 1).min(picker.items.len().saturating_sub(1))
            }
            KeyCode::Enter => {
                if let Some((kind, name, _)) = picker.items.get(picker.cursor).cloned() {
                    pick(phone, kind, &name);
                }
                view.picker = None;
            }
            KeyCode::Esc | KeyCode::F(2) => view.picker = None,
            _ => {}
        }
        return;
    }
    if key.code == KeyCode::F(2) {
        view.picker = Some(Picker::open());
        return;
    }
    let (target, status) = {
        let Ok(state) = phone.state.lock() else {
            return;
        };
        let calls = visible(&state);
        if key.code == KeyCode::Tab && !calls.is_empty() {
            view.selected = (view.selected + 1) % calls.len();
            return;
        }
        view.selected = view.selected.min(calls.len().saturating_sub(1));
        match calls.get(view.selected) {
            Some(c) => (Some((c.account, c.id)), Some(c.status.clone())),
            None => (None, None),
        }
    };
    let send = |cmd: CallCmd| {
        if let Some((account, id)) = target {
            if let Some(tx) = phone.accounts.get(account) {
                let _ = tx.send(AccountCmd::Call(id, cmd));
            }
        }
    };
    match status {
        Some(CallStatus::Ringing) => match key.code {
            KeyCode::Char('a') | KeyCode::Enter => send(CallCmd::Answer),
            KeyCode::Char('d') | KeyCode::Esc => send(CallCmd::Decline),
            _ => {}
        },
        Some(CallStatus::Active | CallStatus::Connecting) => match key.code {
            KeyCode::Char('m') => send(CallCmd::ToggleMute),
            KeyCode::Char('h') => send(CallCmd::ToggleHold),
            KeyCode::Char('x') | KeyCode::Esc => send(CallCmd::Hangup),
            KeyCode::Char(c @ ('0'..='9' | '*' | '#' | 'A'..='D')) => send(CallCmd::Dtmf(c)),
            _ => {}
        },
        Some(CallStatus::Calling(_)) => {
            if matches!(key.code, KeyCode::Char('x') | KeyCode::Esc) {
                send(CallCmd::Hangup);
            }
        }
        Some(CallStatus::Ended(_)) | None => match key.code {
            KeyCode::Char(c) if !ctrl => view.dial.push(c),
            KeyCode::Backspace => {
                view.dial.pop();
            }
            KeyCode::Enter if !view.dial.trim().is_empty() => {
                if let Some(tx) = phone.accounts.first() {
                    let _ = tx.send(AccountCmd::Dial(std::mem::take(&mut view.dial)));
                }
            }
            _ => {}
        },
    }
}

/// Uses `name` for the next calls and remembers it in the configuration.
fn pick(phone: &Phone, kind: &str, name: &str) {
    let remembered = phone
        .config_path
        .as_deref()
        .map(|p| super::config::remember_audio(p, kind, name).map(|_| p.display().to_string()));
    if let Ok(mut s) = phone.state.lock() {
        if kind == "mic" {
            s.mic = Some(name.to_owned());
        } else {
            s.speaker = Some(name.to_owned());
        }
        s.notice = match remembered {
            Some(Ok(path)) => format!("{kind}: {name} (remembered in {path})"),
            Some(Err(e)) => format!("{kind}: {name} (not remembered: {e})"),
            None => format!("{kind}: {name}"),
        };
    }
}

fn draw(f: &mut Frame, state: &PhoneState, view: &View) {
    let calls = visible(state);
    let rows = Layout::vertical([
        Constraint::Length(state.accounts.len() as u16 + 2),
        Constraint::Length(3),
        Constraint::Min(6),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .split(f.area());

    let accounts: Vec<Line> = state
        .accounts
        .iter()
        .map(|a| {
            let (mark, colour) = if a.registered {
                ("●", Color::Green)
            } else {
                ("○", Color::Yellow)
            };
            Line::from(vec![
                Span::styled(format!(" {mark} "), Style::default().fg(colour)),
                Span::styled(a.aor.clone(), Style::default().add_modifier(Modifier::BOLD)),
                Span::raw(format!("  {}", a.status)),
            ])
        })
        .collect();
    f.render_widget(
        Paragraph::new(accounts).block(Block::default().borders(Borders::ALL).title(" icephone ")),
        rows[0],
    );

    let dialing = calls
        .get(view.selected)
        .is_none_or(|c| matches!(c.status, CallStatus::Ended(_)));
    let dial = if dialing {
        format!("> {}_", view.dial)
    } else {
        format!("> {}", view.dial)
    };
    f.render_widget(
        Paragraph::new(dial).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" Dial: a SIP URI or a user name "),
        ),
        rows[1],
    );

    let mut lines = Vec::new();
    if calls.is_empty() {
        lines.push(Line::from(Span::styled(
            " no calls",
            Style::default().fg(Color::DarkGray),
        )));
    }
    for (i, c) in calls.iter().enumerate() {
        lines.extend(call_lines(c, i == view.selected));
    }
    f.render_widget(
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(Block::default().borders(Borders::ALL).title(" Calls ")),
        rows[2],
    );
    if let Some(picker) = &view.picker {
        let lines: Vec<Line> = picker
            .items
            .iter()
            .enumerate()
            .map(|(i, (kind, name, desc))| {
                let current = match *kind {
                    "mic" => state.mic.as_deref() == Some(name.as_str()),
                    _ => state.speaker.as_deref() == Some(name.as_str()),
                };
                let text = format!(
                    " {} {kind:<7} {name}  {desc}",
                    if current { "●" } else { " " }
                );
                let style = if i == picker.cursor {
                    Style::default().add_modifier(Modifier::REVERSED)
                } else {
                    Style::default()
                };
                Line::from(Span::styled(text, style))
            })
            .collect();
        f.render_widget(ratatui::widgets::Clear, rows[2]);
        f.render_widget(
            Paragraph::new(lines).block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(" Sound devices: ↑↓ choose, Enter use, Esc close "),
            ),
            rows[2],
        );
    }
    f.render_widget(
        Paragraph::new(Span::styled(
            state.notice.clone(),
            Style::default().fg(Color::Red),
        )),
        rows[3],
    );
    let help = match calls.get(view.selected).map(|c| &c.status) {
        Some(CallStatus::Ringing) => "a/Enter answer · d/Esc decline · Tab next call · Ctrl-C quit",
        Some(CallStatus::Active | CallStatus::Connecting) => {
            "m mute · h hold/resume · 0-9 * # DTMF · x hang up · Tab next call · Ctrl-C quit"
        }
        Some(CallStatus::Calling(_)) => "x/Esc cancel · Tab next call · Ctrl-C quit",
        _ => "type a name or URI, Enter to call · F2 sound devices · Tab next call · Ctrl-C quit",
    };
    let help = if view.picker.is_some() {
        "↑↓ choose · Enter use (and remember) · Esc close"
    } else {
        help
    };
    f.render_widget(
        Paragraph::new(Span::styled(help, Style::default().fg(Color::Cyan))),
        rows[4],
    );
}

fn call_lines(c: &CallView, selected: bool) -> Vec<Line<'static>> {
    let arrow = if c.incoming { "←" } else { "→" };
    let (status, colour) = match &c.status {
        CallStatus::Calling(s) => (s.clone(), Color::Yellow),
        // Ringing blinks: the visible ring.
        CallStatus::Ringing => ("RINGING".to_owned(), Color::Magenta),
        CallStatus::Connecting => ("connecting…".to_owned(), Color::Yellow),
        CallStatus::Active => {
            let secs = c.since.map_or(0, |t| t.elapsed().as_secs());
            (
                format!("active {:02}:{:02}", secs / 60, secs % 60),
                Color::Green,
            )
        }
        CallStatus::Ended(why) => (format!("ended: {why}"), Color::DarkGray),
    };
    let mut status_style = Style::default().fg(colour).add_modifier(Modifier::BOLD);
    let half_seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() / 500);
    if c.status == CallStatus::Ringing && half_seconds % 2 == 0 {
        status_style = status_style.add_modifier(Modifier::REVERSED);
    }
    let marker = if selected { "▶" } else { " " };
    let mut flags = String::new();
    if c.muted {
        flags.push_str("  [muted]");
    }
    if c.held {
        flags.push_str("  [on hold]");
    }
    let mut lines = vec![Line::from(vec![
        Span::raw(format!("{marker} #{} {arrow} ", c.id)),
        Span::styled(
            c.peer.clone(),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw("  "),
        Span::styled(status, status_style),
        Span::styled(flags, Style::default().fg(Color::Yellow)),
    ])];
    if let Some(pair) = &c.pair {
        lines.push(Line::raw(format!("     pair: {pair}")));
    }
    if c.status == CallStatus::Active {
        let l = &c.live;
        let expected = l.packets_received as f64 + l.packets_lost.max(0) as f64;
        let loss = if expected > 0.0 {
            100.0 * l.packets_lost.max(0) as f64 / expected
        } else {
            0.0
        };
        let mos = estimate(&QualityInput {
            one_way_delay: Duration::from_secs_f64(l.rtt_ms.unwrap_or(0.0) / 2e3)
                + Duration::from_millis(60),
            packet_loss_percent: loss,
            burst_ratio: 1.0,
            codec: CodecImpairment::OPUS,
        })
        .mos;
        let rtt = l
            .rtt_ms
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.0} ms"));
        lines.push(Line::raw(format!(
            "     rtt {rtt}  jitter {:.1} ms  loss {loss:.1} %  MOS {mos:.1}  rtp {} sent / {} received",
            l.jitter_ms, l.packets_sent, l.packets_received
        )));
        lines.push(Line::from(vec![
            Span::raw("     mic "),
            Span::styled(meter(l.mic_level), Style::default().fg(Color::Green)),
            Span::raw("  speaker "),
            Span::styled(meter(l.speaker_level), Style::default().fg(Color::Green)),
        ]));
    }
    lines
}

/// A 20-cell level meter on a dB scale (-60 to 0 dBFS).
fn meter(rms: f32) -> String {
    let db = 20.0 * rms.max(1e-6).log10();
    let cells = (((db + 60.0) / 60.0).clamp(0.0, 1.0) * 20.0).round() as usize;
    format!("{}{}", "█".repeat(cells), "·".repeat(20 - cells))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meters_follow_the_level_in_db() {
        assert_eq!(meter(0.0), "·".repeat(20));
        assert_eq!(meter(1.0), "█".repeat(20));
        // -30 dBFS: half way.
        assert_eq!(meter(0.0316).chars().filter(|c| *c == '█').count(), 10);
    }
}
