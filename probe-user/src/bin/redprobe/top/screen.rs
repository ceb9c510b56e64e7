//! The full-screen view (ratatui on crossterm): a header with the totals and the agent's
//! health, a row per (service, route, method), a footer with the keys and the newest log
//! line. Reads run in their own task, so keys answer while a read waits; a failed read is
//! shown and retried at the next interval. The terminal is restored on every way out,
//! a panic included (ratatui's hook).
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
    let colour = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut screen = Screen { view: View::new(top.sort, top.filter.clone()), name, interval, slow: top.slow, colour, logs };
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let (read_tx, mut reads) = mpsc::channel::<Result<Snapshot, FetchError>>(1);
    let mut reading = false;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let origin = Instant::now();
    tokio::pin!(agent);
    let mut terminal = ratatui::try_init()?;
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

fn style(tone: Tone, colour: bool) -> Style {
    match (tone, colour) {
        (Tone::Plain, _) => Style::new(),
        (Tone::Bad, true) => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        (Tone::Warn, true) => Style::new().fg(Color::Yellow),
        (Tone::Bad, false) => Style::new().add_modifier(Modifier::BOLD),
        (Tone::Warn, false) => Style::new(),
    }
}

fn fields(fields: Vec<Field>, colour: bool) -> Line<'static> {
    let mut spans = Vec::new();
    for f in fields {
        if !spans.is_empty() {
            spans.push(Span::raw("  "));
        }
        spans.push(Span::raw(format!("{} ", f.label)));
        spans.push(Span::styled(f.value, style(f.tone, colour).add_modifier(Modifier::BOLD)));
    }
    Line::from(spans)
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
            header.push(fields(format::summary(iv, s.slow), s.colour));
            header.push(fields(format::health(iv), s.colour));
        }
        None if v.started() => header.push(Line::raw(format!(
            "first reading done: rates, errors and latencies after the next one, in {} s",
            s.interval.as_secs_f64()
        ))),
        None if v.error.is_none() => header.push(Line::raw("reading the agent's page...")),
        None => {}
    }
    if let Some(e) = &v.error {
        header.push(Line::from(Span::styled(
            format!("cannot read the page: {e} (retrying every {} s)", s.interval.as_secs_f64()),
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
    let widths: Vec<Constraint> = (0..names.len())
        .map(|c| {
            let w = rows.iter().map(|r| r[c].0.chars().count()).chain([names[c].len()]).max().unwrap_or(0);
            Constraint::Length(if c == 1 { w.min(60) } else { w } as u16)
        })
        .collect();
    let align = |c: usize, text: String, st: Style| {
        let line = Line::styled(text, st);
        Cell::from(if c >= NUMERIC_FROM && c != spark_at { line.right_aligned() } else { line })
    };
    let head = Row::new(names.iter().enumerate().map(|(c, n)| align(c, n.to_string(), bold)));
    let body: Vec<Row> = rows
        .into_iter()
        .map(|r| Row::new(r.into_iter().enumerate().map(|(c, (text, tone))| align(c, text, style(tone, s.colour)))))
        .collect();
    let (empty, total_rows) = (body.is_empty(), body.len());
    let table = Table::new(body, widths).header(head).column_spacing(2);

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
    // Rows past the bottom are cut: say how many are shown.
    let shown = total_rows.min(middle.height.saturating_sub(1) as usize);
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
