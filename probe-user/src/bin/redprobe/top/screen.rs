//! The full-screen view (ratatui on crossterm): a header with the totals and the agent's
//! health, a row per (service, route, method), a footer with the keys and the newest log
//! line. Reads run in their own task, so keys answer while a read waits; a failed read is
//! shown and retried at the next interval. The terminal is restored on every way out,
//! a panic included (ratatui's hook, then exit 101). Columns that do not fit the width are
//! hidden whole, never cut.
use std::{
    future::Future,
    time::{Duration, Instant},
};

use anyhow::Result;
use probe_user::top::{
    fetch::{FetchError, Source},
    format::{self, COLUMNS, Field, NUMERIC_FROM, Tone},
    snapshot::Snapshot,
    view::{Action, HISTORY, Key, View},
};
use ratatui::{
    Frame,
    crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers},
    layout::{Constraint, Layout},
    style::{Color, Modifier, Style},
    text::{Line, Span},
    widgets::{Cell, Paragraph, Row, Table},
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use super::logs::Logs;
use crate::cli::Top;

/// What a frame is drawn from.
struct Screen {
    view: View,
    name: String,
    interval: Duration,
    slow: f64,
    colour: bool,
    logs: Option<Logs>,
    /// Readings are timed from here.
    origin: Instant,
}

/// An input the view reacts to: a key, or a new size (None).
fn key_of(k: KeyEvent) -> Option<Key> {
    if k.modifiers.contains(KeyModifiers::CONTROL) {
        return matches!(k.code, KeyCode::Char('c') | KeyCode::Char('d')).then_some(Key::Interrupt);
    }
    Some(match k.code {
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        _ => return None,
    })
}

/// Terminal events, read on a thread of their own (crossterm's read blocks).
fn read_keys() -> mpsc::UnboundedReceiver<Option<Key>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        loop {
            let sent = match event::read() {
                Ok(Event::Key(k)) if k.kind != KeyEventKind::Release => key_of(k).map(|k| tx.send(Some(k))),
                Ok(Event::Resize(..)) => Some(tx.send(None)),
                Ok(_) => None,
                Err(_) => break,
            };
            if sent.is_some_and(|s| s.is_err()) {
                break;
            }
        }
    });
    rx
}

pub async fn run(
    top: &Top,
    source: Source,
    name: String,
    interval: Duration,
    timeout: Duration,
    logs: Option<Logs>,
    agent: impl Future<Output = Result<()>>,
) -> Result<()> {
    let colour = crate::colour_allowed();
    let origin = Instant::now();
    let mut screen =
        Screen { view: View::new(top.sort, top.filter.clone()), name, interval, slow: top.slow, colour, logs, origin };
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let (read_tx, mut reads) = mpsc::channel::<Result<Snapshot, FetchError>>(1);
    let mut reading = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(agent);
    let mut terminal = ratatui::try_init()?;
    // ratatui's hook restores the terminal; a panic anywhere (a task, the attached agent's
    // thread) then ends `top`, rather than leave it drawing on a restored terminal.
    let restore = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore(info);
        std::process::exit(101);
    }));
    let mut keys = read_keys();
    let result = loop {
        if let Err(e) = terminal.draw(|f| draw(f, &screen)) {
            break Err(e.into());
        }
        tokio::select! {
            _ = tick.tick(), if !reading => {
                reading = true;
                let (source, tx) = (source.clone(), read_tx.clone());
                tokio::spawn(async move {
                    let _ = tx.send(source.snapshot(timeout).await).await;
                });
            }
            Some(read) = reads.recv() => {
                reading = false;
                match read {
                    Ok(snap) => screen.view.observe(snap, origin.elapsed().as_secs_f64()),
                    Err(e) => screen.view.failed(e.to_string()),
                }
            }
            Some(input) = keys.recv() => {
                if let Some(k) = input && screen.view.key(k) == Action::Quit {
                    break Ok(());
                }
            }
            r = &mut agent => break r,
            _ = sigterm.recv() => break Ok(()),
            _ = sighup.recv() => break Ok(()),
            _ = sigint.recv() => break Ok(()),
        }
    };
    ratatui::restore();
    result
}

/// The route's column (in `COLUMNS`, and on screen).
const ROUTE: usize = 1;
/// Blank columns between two columns.
const SPACING: usize = 2;
/// Columns left out, in this order, while the table is wider than the terminal, each
/// with the route width it is hidden to keep: the sparkline, P50 and ACTIVE go before a
/// route is cut below 40 characters, P95 and SERVICE only to keep `MIN_ROUTE`. A number is
/// never cut: a column is shown whole or not at all.
const HIDE_FIRST: [(&str, usize); 5] = [("RATE", 40), ("P50", 40), ("ACTIVE", 40), ("P95", MIN_ROUTE), ("SERVICE", MIN_ROUTE)];
/// The route keeps at least this many characters.
const MIN_ROUTE: usize = 12;

/// Which columns fit in `width`, and the route's width (its content's, or what is left,
/// to be cut with an ellipsis).
fn fit(names: &[&str], content: &[usize], width: usize) -> (Vec<bool>, usize) {
    let mut keep = vec![true; names.len()];
    let need = |keep: &[bool], route: usize| -> usize {
        let kept: Vec<usize> = (0..names.len()).filter(|c| keep[*c]).collect();
        kept.iter().map(|c| if *c == ROUTE { route } else { content[*c] }).sum::<usize>()
            + SPACING * kept.len().saturating_sub(1)
    };
    let route = content[ROUTE];
    for (name, keeps) in HIDE_FIRST {
        if need(&keep, route.min(keeps)) > width
            && let Some(c) = names.iter().position(|n| *n == name)
        {
            keep[c] = false;
        }
    }
    let others = need(&keep, 0);
    (keep, route.min(width.saturating_sub(others).max(MIN_ROUTE)))
}

/// `text` in `width` characters, its end replaced by an ellipsis when cut.
fn truncate(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn style(tone: Tone, colour: bool) -> Style {
    match (tone, colour) {
        (Tone::Plain, _) => Style::new(),
        (Tone::Bad, true) => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        (Tone::Warn, true) => Style::new().fg(Color::Yellow),
        (Tone::Bad, false) => Style::new().add_modifier(Modifier::BOLD),
        (Tone::Warn, false) => Style::new(),
    }
}

/// Header fields as lines no wider than `width`: a field that would pass the edge starts
/// the next line, so no value is cut.
fn fields(fields: Vec<Field>, colour: bool, width: usize) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    let (mut spans, mut used) = (Vec::new(), 0);
    for f in fields {
        let len = f.label.chars().count() + 1 + f.value.chars().count();
        if !spans.is_empty() && used + 2 + len > width {
            lines.push(Line::from(std::mem::take(&mut spans)));
            used = 0;
        }
        if !spans.is_empty() {
            spans.push(Span::raw("  "));
            used += 2;
        }
        spans.push(Span::raw(format!("{} ", f.label)));
        spans.push(Span::styled(f.value, style(f.tone, colour).add_modifier(Modifier::BOLD)));
        used += len;
    }
    lines.push(Line::from(spans));
    lines
}

fn draw(f: &mut Frame, s: &Screen) {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let v = &s.view;
    let mut title = vec![
        Span::styled("redprobe top", bold),
        Span::raw(format!("  {}  every {} s  sort: {}", s.name, s.interval.as_secs_f64(), v.sort.name())),
    ];
    if !v.filter.is_empty() {
        title.push(Span::raw(format!("  filter: {:?}", v.filter)));
    }
    let mut header = vec![Line::from(title)];
    match &v.interval {
        Some(iv) => {
            let width = f.area().width as usize;
            header.extend(fields(format::summary(iv, s.slow), s.colour, width));
            header.extend(fields(format::health(iv), s.colour, width));
        }
        None if v.started() => header.push(Line::raw(format!(
            "first reading done: rates, errors and latencies after the next one, in {} s",
            s.interval.as_secs_f64()
        ))),
        None if v.error.is_none() => header.push(Line::raw("reading the agent's page...")),
        None => {}
    }
    if let Some(e) = &v.error {
        let age = v.last_reading().map(|at| format!("; the rows are from {:.0} s ago", s.origin.elapsed().as_secs_f64() - at));
        header.push(Line::from(Span::styled(
            format!("cannot read the page: {e} (retrying every {} s{})", s.interval.as_secs_f64(), age.unwrap_or_default()),
            style(Tone::Bad, s.colour),
        )));
    }

    // The columns of the plain table, with the rate's sparkline after REQ/S.
    let spark_at = NUMERIC_FROM + 1;
    let mut names: Vec<&str> = COLUMNS.to_vec();
    names.insert(spark_at, "RATE");
    let rows: Vec<Vec<(String, Tone)>> = v
        .rows()
        .iter()
        .map(|r| {
            let mut cells = format::cells(r, s.slow);
            let mut spark = format::sparkline(&v.history(&r.key));
            spark = format!("{spark:>HISTORY$}");
            cells.insert(spark_at, (spark, Tone::Plain));
            cells
        })
        .collect();
    let content: Vec<usize> =
        (0..names.len()).map(|c| rows.iter().map(|r| r[c].0.chars().count()).chain([names[c].len()]).max().unwrap_or(0)).collect();
    let (keep, route_width) = fit(&names, &content, f.area().width as usize);
    let hidden: Vec<&str> = names.iter().zip(&keep).filter(|(_, k)| !**k).map(|(n, _)| *n).collect();
    let widths: Vec<Constraint> = (0..names.len())
        .filter(|c| keep[*c])
        .map(|c| Constraint::Length(if c == ROUTE { route_width } else { content[c] } as u16))
        .collect();
    let cell = |c: usize, text: String, st: Style| {
        let text = if c == ROUTE { truncate(&text, route_width) } else { text };
        let line = Line::styled(text, st);
        Cell::from(if c >= NUMERIC_FROM && c != spark_at { line.right_aligned() } else { line })
    };
    let head = Row::new(names.iter().enumerate().filter(|(c, _)| keep[*c]).map(|(c, n)| cell(c, n.to_string(), bold)));
    let body: Vec<Row> = rows
        .into_iter()
        .map(|r| {
            Row::new(
                r.into_iter()
                    .enumerate()
                    .filter(|(c, _)| keep[*c])
                    .map(|(c, (text, tone))| cell(c, text, style(tone, s.colour))),
            )
        })
        .collect();
    let (empty, total_rows) = (body.is_empty(), body.len());
    let table = Table::new(body, widths).header(head).column_spacing(SPACING as u16);

    let mut footer = match &v.editing {
        Some(typed) => Line::from(vec![
            Span::styled("filter: ", bold),
            Span::raw(format!("{typed}_")),
            Span::raw("   Enter apply  Esc cancel"),
        ]),
        None => {
            let mut spans = vec![Span::raw("s sort  / filter  Esc clear filter  q quit")];
            if let Some(last) = s.logs.as_ref().and_then(Logs::last) {
                let tone = if last.starts_with("ERROR") {
                    Tone::Bad
                } else if last.starts_with("WARN") {
                    Tone::Warn
                } else {
                    Tone::Plain
                };
                spans.push(Span::raw("  |  "));
                spans.push(Span::styled(last, style(tone, s.colour)));
            }
            Line::from(spans)
        }
    };

    let [top, middle, bottom] = Layout::vertical([
        Constraint::Length(header.len() as u16 + 1),
        Constraint::Min(1),
        Constraint::Length(1),
    ])
    .areas(f.area());
    // Rows past the bottom, and columns past the right edge, are left out: say so.
    let shown = total_rows.min(middle.height.saturating_sub(1) as usize);
    if !hidden.is_empty() {
        footer.spans.insert(0, Span::styled(format!("too narrow for {}  |  ", hidden.join(", ")), bold));
    }
    if shown < total_rows {
        footer.spans.insert(0, Span::styled(format!("{shown} of {total_rows} rows (/ filters)  |  "), bold));
    }
    f.render_widget(Paragraph::new(header), top);
    if empty && v.interval.is_some() {
        let why = if v.filter.is_empty() { "no request measured yet" } else { "no row matches the filter" };
        f.render_widget(Paragraph::new(vec![Line::styled(names.join("  "), bold), Line::raw(why)]), middle);
    } else {
        f.render_widget(table, middle);
    }
    f.render_widget(Paragraph::new(footer), bottom);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_terminals_hide_whole_columns() {
        let names = ["SERVICE", "ROUTE", "METHOD", "REQ/S", "RATE", "ERR", "4XX", "P50", "P95", "P99", "ACTIVE", "TOTAL"];
        let content = [7, 15, 6, 5, 30, 6, 6, 6, 6, 6, 6, 5];
        let total = |keep: &[bool], route: usize| {
            (0..names.len()).filter(|c| keep[*c]).map(|c| if c == ROUTE { route } else { content[c] }).sum::<usize>()
                + SPACING * (keep.iter().filter(|k| **k).count() - 1)
        };
        // Wide: everything, the route whole.
        let (keep, route) = fit(&names, &content, 200);
        assert!(keep.iter().all(|k| *k) && route == 15);
        // 100 columns: the sparkline goes first.
        let (keep, route) = fit(&names, &content, 100);
        assert_eq!((keep[4], keep[7], route), (false, true, 15));
        assert!(total(&keep, route) <= 100);
        // 80: P50 and ACTIVE too; the numbers that stay are whole.
        let (keep, route) = fit(&names, &content, 80);
        assert_eq!((keep[4], keep[7], keep[10], keep[8], route), (false, false, false, true, 15));
        assert!(total(&keep, route) <= 80);
        // A long route: the sparkline goes, then the route is cut to what is left (41).
        let long = [7, 90, 6, 5, 30, 6, 6, 6, 6, 6, 6, 5];
        let (keep, route) = fit(&names, &long, 120);
        assert_eq!((keep[4], keep[7], keep[10], keep[8], keep[0], route), (false, true, true, true, true, 41));
        assert_eq!(total(&keep, route), 120);
        // Very narrow: down to the route's minimum, without SERVICE and P95.
        let (keep, route) = fit(&names, &long, 60);
        assert_eq!((keep[0], keep[8], route, total(&keep, route)), (false, false, 14, 60));
        assert_eq!(truncate("/api/v1/items", 8), "/api/v1…");
        assert_eq!(truncate("/a", 8), "/a");
    }
}
