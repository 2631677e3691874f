//! Renders an icephone JSON call report (the one `icephone call --report`
//! writes, see `report.rs`) as one self-contained HTML page: a header, the
//! SIP ladder, the ICE check timeline with the candidates and pairs, plots of
//! RTT, jitter and loss over the call, and the timing and RTP figures.
//!
//! Every field of the report is optional: whatever is missing, null or of the
//! wrong type is shown as "—" or left out, never a panic. Every string taken
//! from the report is HTML-escaped. The page loads nothing: CSS, SVG and the
//! script are inline. The script adds hover highlighting and collapsible
//! sections, then sets `document.body.dataset.ready = "yes"`, which headless
//! browser tests look for to know it ran without an error.

use std::fmt::Write;

use serde_json::Value;

/// `write!` into a `String`, which cannot fail.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _ = write!($out, $($arg)*);
    }};
}

/// The page for `report`.
pub fn render(report: &Value) -> String {
    let title = format!(
        "{} → {}",
        field(report, "/call/from"),
        field(report, "/call/to")
    );
    let mut body = header(report, &title);
    section(&mut body, "SIP ladder", &ladder(report));
    section(&mut body, "ICE checks", &ice(report));
    section(&mut body, "Over the call", &plots(report));
    section(&mut body, "Timing and RTP", &figures(report));
    format!(
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>\
         <title>icephone call {title}</title><style>{STYLE}</style></head>\
         <body>{body}<script>{SCRIPT}</script></body></html>\n"
    )
}

fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The string at a JSON pointer, or "" if it is missing or not a string.
fn text<'a>(v: &'a Value, path: &str) -> &'a str {
    v.pointer(path).and_then(Value::as_str).unwrap_or("")
}

fn num(v: &Value, path: &str) -> Option<f64> {
    v.pointer(path).and_then(Value::as_f64)
}

fn list<'a>(v: &'a Value, path: &str) -> &'a [Value] {
    v.pointer(path)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// The string at a JSON pointer as HTML, "—" if missing or empty.
fn field(v: &Value, path: &str) -> String {
    or_dash(text(v, path))
}

/// The number at a JSON pointer as HTML, "—" if missing.
fn numf(v: &Value, path: &str) -> String {
    fmt_num(num(v, path))
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "—".to_owned()
    } else {
        esc(s)
    }
}

/// At most two decimals, no trailing zeros; "—" for none.
fn fmt_num(x: Option<f64>) -> String {
    match x {
        None => "—".to_owned(),
        Some(x) => {
            let s = format!("{x:.2}");
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        }
    }
}

/// "relay 198.51.100.1:50000 via 203.0.113.9:3478 (TURN/udp)", escaped.
fn describe(c: &Value) -> String {
    let mut s = format!("{} {}", esc(text(c, "/type")), field(c, "/address"));
    if let Some(server) = c.pointer("/relay/server").and_then(Value::as_str) {
        let transport = esc(text(c, "/relay/transport"));
        w!(s, " via {} (TURN/{transport})", esc(server));
    }
    s
}

fn section(out: &mut String, title: &str, content: &str) {
    w!(out, "<section><h2 title='click to fold'>{title}</h2>");
    w!(out, "<div>{content}</div></section>");
}

/// A table: `head` is space-separated, each row is (attributes of its
/// `<tr>`, cells as HTML).
fn table(head: &str, rows: &[(String, Vec<String>)]) -> String {
    let mut out = String::from("<table><tr>");
    for h in head.split(' ') {
        w!(out, "<th>{h}</th>");
    }
    out.push_str("</tr>");
    for (attrs, cells) in rows {
        w!(out, "<tr{attrs}><td>{}</td></tr>", cells.join("</td><td>"));
    }
    out.push_str("</table>");
    out
}

fn header(r: &Value, title: &str) -> String {
    let mut out = format!("<header><h1>{title}</h1><dl>");
    w!(out, "<dt>Ended</dt><dd>{}</dd>", field(r, "/call/ended"));
    let mos = num(r, "/quality/mos");
    let grade = match mos {
        Some(m) if m >= 4.0 => "good",
        Some(m) if m >= 3.6 => "fair",
        Some(_) => "poor",
        None => "none",
    };
    let r_factor = numf(r, "/quality/r_factor");
    w!(out, "<dt>MOS</dt><dd class='mos {grade}'>{}", fmt_num(mos));
    w!(out, " <small>(R {r_factor})</small></dd>");
    let pair = match r.pointer("/ice/selected_pair") {
        Some(p) if p.is_object() => {
            format!("{} ↔ {}", describe(&p["local"]), describe(&p["remote"]))
        }
        _ => "none".to_owned(),
    };
    w!(out, "<dt>Selected pair</dt><dd>{pair}</dd></dl></header>");
    out
}

/// `<text>` at (x, y); `content` must already be escaped.
fn svg_text(out: &mut String, (x, y): (f64, f64), class: &str, content: &str) {
    w!(
        out,
        "<text x='{x:.1}' y='{y:.1}' class='{class}'>{content}</text>"
    );
}

fn ladder(r: &Value) -> String {
    const US: f64 = 150.0;
    const THEM: f64 = 490.0;
    const ROW: f64 = 34.0;
    let mut steps: Vec<&Value> = list(r, "/sip").iter().collect();
    if steps.is_empty() {
        return "<p class='none'>no SIP messages</p>".to_owned();
    }
    let ms = |s: &Value| num(s, "/ms").unwrap_or(0.0);
    steps.sort_by(|a, b| ms(a).total_cmp(&ms(b)));
    let height = 70.0 + ROW * steps.len() as f64;
    let mut out = format!(
        "<svg class='ladder' width='640' height='{height}'><defs><marker id='arrow' \
         viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' markerHeight='7' \
         orient='auto'><path d='M0,0L10,5L0,10z' fill='#334'/></marker></defs>"
    );
    for (x, who) in [(US, "us"), (THEM, "them")] {
        svg_text(&mut out, (x, 20.0), "who", who);
        w!(
            out,
            "<line class='life' x1='{x}' y1='28' x2='{x}' y2='{height}'/>"
        );
    }
    for (i, step) in steps.iter().enumerate() {
        let y = 60.0 + ROW * i as f64;
        let (dir, x1, x2) = match text(step, "/direction") {
            "received" => ("received", THEM, US),
            _ => ("sent", US, THEM),
        };
        let (msg, at) = (field(step, "/message"), numf(step, "/ms"));
        w!(
            out,
            "<g class='step hl {dir}'><title>{at} ms: {msg} ({dir})</title>"
        );
        w!(out, "<line x1='{x1}' y1='{y}' x2='{x2}' y2='{y}'/>");
        svg_text(&mut out, ((US + THEM) / 2.0, y - 6.0), "msg", &msg);
        svg_text(&mut out, (US - 10.0, y + 4.0), "ms", &format!("{at} ms"));
        out.push_str("</g>");
    }
    out.push_str("</svg>");
    out
}

/// The checks of one candidate pair.
struct PairRow<'a> {
    local: &'a str,
    remote: &'a str,
    component: Option<u64>,
    checks: Vec<&'a Value>,
}

impl PairRow<'_> {
    fn nominated(&self) -> bool {
        self.checks.iter().any(|c| nominated(c))
    }
}

fn nominated(check: &Value) -> bool {
    check.get("nominated") == Some(&Value::Bool(true))
}

fn group_checks(checks: &[Value]) -> Vec<PairRow<'_>> {
    let mut rows: Vec<PairRow> = Vec::new();
    for c in checks {
        let (local, remote) = (text(c, "/local"), text(c, "/remote"));
        let component = c.get("component").and_then(Value::as_u64);
        let same =
            |r: &&mut PairRow| (r.local, r.remote, r.component) == (local, remote, component);
        match rows.iter_mut().find(same) {
            Some(row) => row.checks.push(c),
            None => rows.push(PairRow {
                local,
                remote,
                component,
                checks: vec![c],
            }),
        }
    }
    rows
}

/// The row of the selected pair: its remote address must match, and its
/// local address too or else (a server-reflexive local candidate is checked
/// from its host base) it must hold a nominated check.
fn selected_row(rows: &[PairRow], local: &str, remote: &str) -> Option<usize> {
    let to_remote = || (0..rows.len()).filter(|&i| !remote.is_empty() && rows[i].remote == remote);
    to_remote()
        .find(|&i| rows[i].local == local)
        .or_else(|| to_remote().rfind(|&i| rows[i].nominated()))
}

fn ice(r: &Value) -> String {
    let sel_local = text(r, "/ice/selected_pair/local/address");
    let sel_remote = text(r, "/ice/selected_pair/remote/address");
    let rows = group_checks(list(r, "/ice/checks"));
    let mut out = if rows.is_empty() {
        "<p class='none'>no connectivity checks</p>".to_owned()
    } else {
        timeline(&rows, selected_row(&rows, sel_local, sel_remote))
    };
    let mut cands = Vec::new();
    for (side, sel) in [("local", sel_local), ("remote", sel_remote)] {
        for c in list(r, &format!("/ice/{side}_candidates")) {
            let addr = text(c, "/address");
            let class = if !addr.is_empty() && addr == sel {
                "hl sel"
            } else {
                "hl"
            };
            let relay = match c.pointer("/relay/server").and_then(Value::as_str) {
                Some(server) => format!("{} ({})", esc(server), field(c, "/relay/transport")),
                None => String::new(),
            };
            let attrs = format!(" class='{class}' data-addr='{}'", esc(addr));
            let (kind, protocol) = (field(c, "/type"), field(c, "/protocol"));
            let (priority, component) = (numf(c, "/priority"), numf(c, "/component"));
            let cells = [
                side.to_owned(),
                kind,
                or_dash(addr),
                protocol,
                priority,
                component,
                relay,
            ];
            cands.push((attrs, cells.to_vec()));
        }
    }
    let head = "side type address protocol priority component TURN&nbsp;server";
    if !cands.is_empty() {
        w!(out, "<h3>Candidates</h3>{}", table(head, &cands));
    }
    let pairs: Vec<_> = list(r, "/ice/pairs")
        .iter()
        .map(|p| {
            let [local, remote, state] = ["/local", "/remote", "/state"].map(|k| field(p, k));
            let cells = vec![
                numf(p, "/component"),
                local,
                remote,
                state,
                numf(p, "/rtt_ms"),
            ];
            (String::new(), cells)
        })
        .collect();
    if !pairs.is_empty() {
        let head = "component local remote state RTT&nbsp;ms";
        w!(out, "<h3>Pairs</h3>{}", table(head, &pairs));
    }
    out
}

fn state_class(state: &str) -> &'static str {
    match state {
        "in-progress" => "st-progress",
        "succeeded" => "st-ok",
        "failed" => "st-fail",
        "waiting" | "frozen" => "st-wait",
        _ => "st-other",
    }
}

/// A round axis end at or above `v` and its tick step, 1, 2, 2.5 or 5 × 10ⁿ,
/// for about five ticks.
fn axis(v: f64) -> (f64, f64) {
    if v <= 0.0 {
        return (1.0, 0.25);
    }
    let unit = 10f64.powf((v / 5.0).log10().floor());
    let steps = [1.0, 2.0, 2.5, 5.0, 10.0].map(|m| m * unit);
    let step = steps
        .into_iter()
        .find(|&s| s * 5.0 >= v)
        .unwrap_or(10.0 * unit);
    ((v / step).ceil() * step, step)
}

const LEGEND: &str = "st-progress:in progress,st-ok:succeeded,st-fail:failed,\
                      st-wait:waiting or frozen,st-other:other";

fn timeline(rows: &[PairRow], selected: Option<usize>) -> String {
    const LABEL: f64 = 320.0;
    const PLOT: f64 = 500.0;
    const ROW: f64 = 24.0;
    let all = || {
        rows.iter()
            .flat_map(|r| &r.checks)
            .filter_map(|c| num(c, "/ms"))
    };
    // From the first check, rounded down to 10 ms, to the last.
    let lo = (all().fold(f64::INFINITY, f64::min) / 10.0).floor() * 10.0;
    let lo = if lo.is_finite() { lo } else { 0.0 };
    let hi = all().fold(lo + 1.0, f64::max);
    let x = |ms: f64| LABEL + 10.0 + (ms.max(lo) - lo) / (hi - lo) * (PLOT - 50.0);
    let (width, height) = (LABEL + PLOT, 40.0 + ROW * rows.len() as f64);
    let mut out = format!("<svg class='timeline' width='{width}' height='{height}'>");
    for (i, row) in rows.iter().enumerate() {
        let y = 10.0 + ROW * i as f64;
        let sel = if selected == Some(i) { " sel" } else { "" };
        let (local, remote) = (esc(row.local), esc(row.remote));
        w!(
            out,
            "<g class='pair hl{sel}' data-local='{local}' data-remote='{remote}'>"
        );
        w!(
            out,
            "<rect class='bg' y='{y}' width='{width}' height='{ROW}'/>"
        );
        let comp = row.component.map(|c| format!(" [{c}]")).unwrap_or_default();
        let label = format!("{} → {}{comp}", or_dash(row.local), or_dash(row.remote));
        svg_text(&mut out, (LABEL - 8.0, y + 16.0), "label", &label);
        for c in &row.checks {
            let state = text(c, "/state");
            let (class, cx) = (state_class(state), x(num(c, "/ms").unwrap_or(lo)));
            let (nom, note) = if nominated(c) {
                (" nom", " · nominated")
            } else {
                ("", "")
            };
            let (at, rtt, state) = (numf(c, "/ms"), numf(c, "/rtt_ms"), or_dash(state));
            w!(
                out,
                "<circle class='{class}{nom}' cx='{cx:.1}' cy='{}' r='5'>",
                y + ROW / 2.0
            );
            w!(
                out,
                "<title>{at} ms · {state} · RTT {rtt} ms{note}</title></circle>"
            );
        }
        out.push_str("</g>");
    }
    let axis_y = 14.0 + ROW * rows.len() as f64;
    let (x0, x1) = (x(lo), x(hi));
    w!(
        out,
        "<line class='axis' x1='{x0}' y1='{axis_y}' x2='{x1}' y2='{axis_y}'/>"
    );
    for k in 0..=4 {
        let ms = (lo + (hi - lo) * f64::from(k) / 4.0).round();
        let label = format!("{} ms", fmt_num(Some(ms)));
        svg_text(&mut out, (x(ms), axis_y + 16.0), "tick", &label);
    }
    out.push_str("</svg><p class='legend'>");
    for (class, name) in LEGEND.split(',').filter_map(|s| s.split_once(':')) {
        w!(
            out,
            "<span><svg width='12' height='12'><circle class='{class}' "
        );
        w!(out, "cx='6' cy='6' r='5'/></svg> {name}</span>");
    }
    out.push_str("<span>ringed: nominated · highlighted: the selected pair");
    out.push_str(" · x: ms since the INVITE</span></p>");
    out
}

fn plots(r: &Value) -> String {
    let series = list(r, "/series");
    if series.is_empty() {
        return "<p class='none'>no samples</p>".to_owned();
    }
    let t = |p: &Value| num(p, "/ms").unwrap_or(0.0) / 1000.0;
    let of = |key| {
        series
            .iter()
            .map(|p| (t(p), num(p, key)))
            .collect::<Vec<_>>()
    };
    // `packets_lost` and `packets_received` are running totals: plot the
    // share lost in each interval.
    let mut prev = (0.0, 0.0);
    let mut loss = Vec::new();
    for p in series {
        let counts = num(p, "/packets_received").zip(num(p, "/packets_lost"));
        let share = counts.and_then(|(rx, lost)| {
            let (d_rx, d_lost) = ((rx - prev.0).max(0.0), (lost - prev.1).max(0.0));
            prev = (rx, lost);
            (d_rx + d_lost > 0.0).then(|| 100.0 * d_lost / (d_rx + d_lost))
        });
        loss.push((t(p), share));
    }
    let rtt = plot("RTT", "ms", &of("/rtt_ms"));
    let jitter = plot("Jitter", "ms", &of("/jitter_ms"));
    let loss = plot("Loss per interval", "%", &loss);
    format!("<div class='plots'>{rtt}{jitter}{loss}</div>")
}

/// A line plot of (seconds, value) from 0; a missing value breaks the line.
fn plot(title: &str, unit: &str, pts: &[(f64, Option<f64>)]) -> String {
    const W: f64 = 420.0;
    const H: f64 = 170.0;
    const L: f64 = 48.0;
    const T: f64 = 26.0;
    const B: f64 = H - 28.0;
    let (t_max, t_step) = axis(pts.iter().map(|p| p.0).fold(0.0, f64::max));
    let (v_max, v_step) = axis(pts.iter().filter_map(|p| p.1).fold(0.0, f64::max));
    let x = |t: f64| L + t.max(0.0) / t_max * (W - L - 30.0);
    let y = |v: f64| B - v.max(0.0) / v_max * (B - T);
    let mut out = format!("<svg class='plot' width='{W}' height='{H}'>");
    svg_text(&mut out, (L, 16.0), "ptitle", &format!("{title} ({unit})"));
    w!(
        out,
        "<polyline class='axis' points='{L},{T} {L},{B} {},{B}'/>",
        x(t_max)
    );
    for k in 0..=(t_max / t_step).round() as u32 {
        let t = t_step * f64::from(k);
        let label = format!("{} s", fmt_num(Some(t)));
        svg_text(&mut out, (x(t), H - 8.0), "tick", &label);
    }
    for k in 0..=(v_max / v_step).round() as u32 {
        let v = v_step * f64::from(k);
        svg_text(&mut out, (L - 4.0, y(v) + 4.0), "ytick", &fmt_num(Some(v)));
    }
    for run in pts.split(|p| p.1.is_none()).filter(|run| run.len() > 1) {
        let xy = |&(t, v): &(f64, Option<f64>)| format!("{:.1},{:.1}", x(t), y(v.unwrap_or(0.0)));
        let points: Vec<String> = run.iter().map(xy).collect();
        w!(
            out,
            "<polyline class='line' points='{}'/>",
            points.join(" ")
        );
    }
    for &(t, v) in pts {
        if let Some(v) = v {
            let (at, value) = (fmt_num(Some(t)), fmt_num(Some(v)));
            w!(
                out,
                "<circle class='dot' cx='{:.1}' cy='{:.1}' r='2.5'>",
                x(t),
                y(v)
            );
            w!(out, "<title>{at} s: {value} {unit}</title></circle>");
        }
    }
    if pts.iter().all(|p| p.1.is_none()) {
        svg_text(&mut out, (W / 2.0, H / 2.0), "none", "no values");
    }
    out.push_str("</svg>");
    out
}

const TIMING_KEYS: &str =
    "invite_to_answer_ms answer_to_ice_connected_ms answer_to_first_audio_ms call_ms";
const RTP_KEYS: &str = "packets_sent packets_received packets_lost bytes_sent \
    bytes_received jitter_ms rtt_ms remote_loss_percent frames_played \
    frames_recovered_by_fec frames_concealed rtcp_sent rtcp_received";

/// The `timing` and `rtp` tables: known keys in their order, then the rest.
fn figures(r: &Value) -> String {
    let mut out = String::from("<div class='figures'>");
    for (key, title, known) in [("timing", "Timing", TIMING_KEYS), ("rtp", "RTP", RTP_KEYS)] {
        let Some(obj) = r.get(key).and_then(Value::as_object) else {
            w!(out, "<p class='none'>no {title} figures</p>");
            continue;
        };
        let known: Vec<&str> = known
            .split_whitespace()
            .filter(|k| obj.contains_key(*k))
            .collect();
        let extra = obj
            .keys()
            .map(String::as_str)
            .filter(|k| !known.contains(k));
        let rows: Vec<_> = known
            .iter()
            .copied()
            .chain(extra)
            .map(|k| {
                (
                    String::new(),
                    vec![esc(&k.replace('_', " ")), value_html(&obj[k])],
                )
            })
            .collect();
        out.push_str(&table(&format!("{title} &nbsp;"), &rows));
    }
    out.push_str("</div>");
    out
}

fn value_html(v: &Value) -> String {
    match v {
        Value::Null => "—".to_owned(),
        Value::Number(n) => fmt_num(n.as_f64()),
        Value::String(s) => or_dash(s),
        other => esc(&other.to_string()),
    }
}

const STYLE: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1f2330;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .4em}
h2{font-size:1.1em;cursor:pointer;border-bottom:1px solid #ccd;user-select:none}
h2::before{content:"▾ "}section.collapsed h2::before{content:"▸ "}
section.collapsed>div{display:none}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em;margin:0}dt{font-weight:600}
dd{margin:0}.mos.good{color:#15803d}.mos.fair{color:#b45309}.mos.poor{color:#b91c1c}
.none{color:#888;font-style:italic}
table{border-collapse:collapse;margin:.5em 1em .5em 0;font-size:13px}
td,th{border:1px solid #dde;padding:2px 8px;text-align:left}th{background:#eef}
tr.sel td{font-weight:600;background:#fef3c7}tr.hover td{background:#dbeafe}
svg text{font:12px system-ui,sans-serif;fill:#1f2330}.who{text-anchor:middle;font-weight:700}
.life{stroke:#99a;stroke-dasharray:4 3}
.step line{stroke:#334;stroke-width:1.5;marker-end:url(#arrow)}.step.received line{stroke:#2563eb}
.step .msg{text-anchor:middle}.step .ms{text-anchor:end;fill:#667}.step.hover line{stroke-width:3}
.step.hover text{font-weight:700}.pair .bg{fill:transparent}.pair.sel .bg{fill:#fef3c7}
.pair.hover .bg{fill:#dbeafe}.label{text-anchor:end;font-family:monospace}
.tick{text-anchor:middle;fill:#667}.ytick{text-anchor:end;fill:#667}.axis{stroke:#667;fill:none}
.st-progress{fill:#3b82f6}.st-ok{fill:#16a34a}.st-fail{fill:#dc2626}.st-wait{fill:#9ca3af}
.st-other{fill:#a855f7}.nom{stroke:#111;stroke-width:2}
.legend span{margin-right:1em;white-space:nowrap}
.plots,.figures{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.line{fill:none;stroke:#2563eb;stroke-width:1.5}.dot{fill:#2563eb}.ptitle{font-weight:700}
"#;

const SCRIPT: &str = r#"
(function () {
  "use strict";
  document.querySelectorAll("section > h2").forEach(function (h) {
    h.addEventListener("click", function () { h.parentElement.classList.toggle("collapsed"); });
  });
  document.querySelectorAll(".hl").forEach(function (el) {
    el.addEventListener("mouseenter", function () { el.classList.add("hover"); });
    el.addEventListener("mouseleave", function () { el.classList.remove("hover"); });
  });
  // Hovering a candidate highlights the timeline rows of its pairs.
  var pairs = Array.prototype.slice.call(document.querySelectorAll(".pair"));
  document.querySelectorAll("tr[data-addr]").forEach(function (tr) {
    function mark(on) {
      pairs.forEach(function (p) {
        if (p.dataset.local === tr.dataset.addr || p.dataset.remote === tr.dataset.addr) {
          p.classList.toggle("hover", on);
        }
      });
    }
    tr.addEventListener("mouseenter", function () { mark(true); });
    tr.addEventListener("mouseleave", function () { mark(false); });
  });
  document.body.dataset.ready = "yes";
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!({
            "call": {"from": "sip:alice@x", "to": "sip:bob@x", "ended": "hung up here"},
            "sip": [{"ms": 0, "message": "INVITE", "direction": "sent"},
                    {"ms": 12, "message": "<script>alert('x')</script>", "direction": "received"}],
            "ice": {
                "local_candidates": [
                    {"type": "host", "address": "10.0.0.1:5000", "protocol": "udp", "priority": 1},
                    {"type": "srflx", "address": "198.51.100.7:6000", "priority": 2}],
                "remote_candidates": [{"type": "host", "address": "10.0.0.2:7000"}],
                "selected_pair": {"local": {"type": "srflx", "address": "198.51.100.7:6000"},
                                  "remote": {"type": "host", "address": "10.0.0.2:7000"}},
                "checks": [
                    {"ms": 100.0, "local": "10.0.0.9:5000", "remote": "10.0.0.2:7000",
                     "state": "failed"},
                    {"ms": 101.0, "local": "10.0.0.1:5000", "remote": "10.0.0.2:7000",
                     "state": "succeeded", "rtt_ms": 0.4, "nominated": true}]
            },
            "series": [
                {"ms": 1000.0, "rtt_ms": null, "jitter_ms": 0.4, "packets_received": 50},
                {"ms": 2000.0, "rtt_ms": 0.3, "jitter_ms": 0.5, "packets_received": 98,
                 "packets_lost": 2}],
            "timing": {"invite_to_answer_ms": 10.0, "call_ms": null},
            "rtp": {"packets_sent": 316, "jitter_ms": 0.4}
        })
    }

    #[test]
    fn escapes_report_strings() {
        let html = render(&sample());
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert_eq!(html.matches("<script>").count(), 1, "only our own script");
        assert!(!html.contains("alert('x')"));
    }

    #[test]
    fn highlights_selected_row() {
        // The srflx local is checked from its host base: the nominated row wins.
        let html = render(&sample());
        assert!(html.contains(
            "class='pair hl sel' data-local='10.0.0.1:5000' data-remote='10.0.0.2:7000'"
        ));
        assert_eq!(html.matches("pair hl sel").count(), 1);
        // An exact local match wins over a nominated row.
        let mut r = sample();
        r["ice"]["selected_pair"]["local"]["address"] = json!("10.0.0.9:5000");
        let html = render(&r);
        assert!(html.contains("class='pair hl sel' data-local='10.0.0.9:5000'"));
        assert_eq!(html.matches("pair hl sel").count(), 1);
        r["ice"]["selected_pair"] = Value::Null;
        assert!(!render(&r).contains("pair hl sel"));
    }

    #[test]
    fn missing_keys_do_not_panic() {
        let odd = json!({
            "call": 5, "sip": [null, {"ms": "x"}, {}], "quality": {"mos": null},
            "ice": {"checks": [null, 3, {"ms": null}], "selected_pair": {"local": 1},
                    "local_candidates": [{}, {"relay": {}}], "pairs": [[]]},
            "series": [{}, {"ms": -5}], "timing": 7, "rtp": {"x": [1]}
        });
        for report in [json!({}), Value::Null, json!([1, 2]), json!("s"), odd] {
            let html = render(&report);
            assert!(html.contains("document.body.dataset.ready = \"yes\""));
            assert!(html.ends_with("</html>\n"));
        }
        assert!(render(&json!({})).contains("no samples"));
    }

    #[test]
    fn loads_nothing_from_the_network() {
        let html = render(&sample());
        for needle in [
            "http://",
            "https://",
            "src=",
            "href=",
            "@import",
            "<link",
            "@font-face",
        ] {
            assert!(!html.contains(needle), "found {needle}");
        }
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(fmt_num(Some(316.0)), "316");
        assert_eq!(fmt_num(Some(0.30000000000000004)), "0.3");
        assert_eq!(fmt_num(Some(4.376)), "4.38");
        assert_eq!(fmt_num(Some(0.0)), "0");
        assert_eq!(fmt_num(None), "—");
    }
}
