//! `redprobe top` in a real terminal (a tmux pane read back with `capture-pane`): it reads a
//! running agent (`--url`) or attaches by itself (`--pid`), shows every route with the exact
//! totals the client sent, sorts by rate, errors and p99 on `s`, filters on `/`, restores
//! the terminal on `q`, Ctrl-C and SIGTERM, and shows a page it cannot read as an error on
//! screen while it keeps retrying. Its plain table (output not a terminal) is checked too.
use std::{
    collections::BTreeMap,
    net::TcpListener,
    process::{Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Result, ensure};
use testkit::{
    client::Conn,
    procs::{Agent, Server, agent_bin, children, free_port, pid_args},
    tmux::{Tmux, TopRow, top_rows},
};

const WAIT: Duration = Duration::from_secs(20);

/// `redprobe top ARGS` in a pane that says how it ended (`EXIT=status`).
fn top_in_tmux(args: &str) -> Result<Tmux> {
    top_in_tmux_with("", args)
}

/// The same, with environment assignments (`NO_COLOR=1`) before the command.
fn top_in_tmux_with(env: &str, args: &str) -> Result<Tmux> {
    Tmux::start(&format!("{env} {} top {args}; echo EXIT=$?; sleep 600", agent_bin().display()), 170, 30)
}

/// Whether `escaped` sets the foreground to `colour` (1 red, 3 yellow), as tmux writes it
/// (SGR 3N, or 38;5;N).
fn has_colour(escaped: &str, colour: u8) -> bool {
    [format!("[3{colour}m"), format!(";3{colour}m"), format!("38;5;{colour}m")].iter().any(|sgr| escaped.contains(sgr.as_str()))
}

/// The line of `route` in a screen captured with its escape sequences.
fn line_of<'a>(escaped: &'a str, route: &str) -> &'a str {
    escaped.lines().find(|l| l.contains(&format!(" {route} "))).unwrap_or("")
}

/// Requests the client sent, by route: the truth the screen is checked against.
type Truth = Arc<Mutex<BTreeMap<&'static str, u64>>>;

/// Sends, until stopped, rounds of 3 GET /hello (200), 1 GET /error (500) and 1 GET
/// /sleep?ms=120 (200, slow): /hello has the highest rate, /error every error, /sleep the
/// highest p99.
fn steady_load(port: u16, stop: Arc<AtomicBool>, truth: Truth) -> std::thread::JoinHandle<Result<()>> {
    std::thread::spawn(move || {
        let mut conn = Conn::open(port)?;
        while !stop.load(Ordering::Relaxed) {
            for (route, path) in [("/hello", "/hello"), ("/hello", "/hello"), ("/hello", "/hello"), ("/error", "/error"), ("/sleep", "/sleep?ms=120")] {
                conn.get(path)?;
                *truth.lock().unwrap().entry(route).or_default() += 1;
            }
        }
        Ok(())
    })
}

fn first_route(screen: &str) -> Option<String> {
    top_rows(screen).first().map(|r| r.route.clone())
}

/// Every route's TOTAL equals the client's count, and no other route shows.
fn totals_match(rows: &[TopRow], truth: &BTreeMap<&str, u64>) -> bool {
    let shown: BTreeMap<&str, u64> = rows.iter().map(|r| (r.route.as_str(), r.total)).collect();
    shown.len() == truth.len() && truth.iter().all(|(route, n)| shown.get(route) == Some(n))
}

/// Waits for `EXIT=0` in the pane, with the alternate screen off (the terminal restored).
fn exits_clean(t: &Tmux) -> Result<()> {
    t.wait("top to exit with status 0", WAIT, |s| s.contains("EXIT=0"))?;
    ensure!(!t.alternate_screen()?, "the terminal is still on the alternate screen");
    Ok(())
}

#[test]
fn url_mode_shows_routes_exact_totals_and_sorts() -> Result<()> {
    let server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    let t = top_in_tmux(&format!("--url http://{}/metrics", agent.addr))?;
    let (stop, truth): (_, Truth) = (Arc::new(AtomicBool::new(false)), Default::default());
    let load = steady_load(server.port, stop.clone(), truth.clone());

    // Rate: /hello has three times /error's rate and /sleep's.
    t.wait("rows sorted by rate, /hello first", WAIT, |s| {
        s.contains("sort: rate") && top_rows(s).len() == 3 && first_route(s).as_deref() == Some("/hello")
    })?;
    t.keys(&["s"])?;
    let screen = t.wait("rows sorted by errors, /error first", WAIT, |s| {
        s.contains("sort: errors") && first_route(s).as_deref() == Some("/error")
    })?;
    let error_row = top_rows(&screen).into_iter().find(|r| r.route == "/error").unwrap();
    ensure!(error_row.err == "100.0%" && error_row.err4 == "0.0%", "{screen}");
    // Colour where it means something: the 5xx share in red, nothing on /hello.
    let escaped = t.screen_escaped()?;
    ensure!(has_colour(line_of(&escaped, "/error"), 1), "no red on /error: {escaped:?}");
    ensure!(!has_colour(line_of(&escaped, "/hello"), 1), "red on /hello: {escaped:?}");
    t.keys(&["s"])?;
    let screen = t.wait("rows sorted by p99, /sleep first", WAIT, |s| {
        s.contains("sort: p99") && first_route(s).as_deref() == Some("/sleep")
    })?;
    // 120 ms asleep: a p99 in milliseconds from 120 up.
    let p99 = top_rows(&screen)[0].p99.clone();
    let ms: f64 = p99.strip_suffix("ms").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ensure!((120.0..400.0).contains(&ms), "p99 of /sleep is {p99}:\n{screen}");
    t.keys(&["s"])?;
    t.wait("the sort back on rate", WAIT, |s| s.contains("sort: rate"))?;

    stop.store(true, Ordering::Relaxed);
    load.join().unwrap()?;
    let truth = truth.lock().unwrap().clone();
    let screen = t.wait("every route's total equal to the client's count", WAIT, |s| totals_match(&top_rows(s), &truth))?;
    let all: u64 = truth.values().sum();
    ensure!(screen.contains(&format!("total {all}")), "header total, want {all}:\n{screen}");
    // An 80-column terminal: whole columns are hidden (the sparkline first), the header
    // wraps, and the numbers that stay are whole: the same exact totals.
    t.resize(80, 24)?;
    let narrow = t.wait("the 80-column screen, with the same totals", WAIT, |s| {
        s.contains("too narrow for RATE")
            && !s.lines().any(|l| l.starts_with("SERVICE") && l.contains("RATE"))
            && totals_match(&top_rows(s), &truth)
            && s.contains(&format!("total {all}"))
    })?;
    ensure!(narrow.lines().all(|l| l.chars().count() <= 80), "{narrow}");
    t.keys(&["q"])?;
    exits_clean(&t)?;
    println!("{screen}\n{narrow}");
    Ok(())
}

#[test]
fn attach_mode_counts_filters_and_restores_the_terminal() -> Result<()> {
    let server = Server::start_python()?;
    // NO_COLOR: no colour anywhere, 4xx included.
    let t = top_in_tmux_with("NO_COLOR=1", &pid_args(&[server.pid()]).join(" "))?;
    t.wait("top attached", Duration::from_secs(60), |s| {
        s.contains(&format!("redprobe top  attached to --pid {}", server.pid())) && s.contains("no request measured yet")
    })?;
    let mut conn = Conn::open(server.port)?;
    let mut truth = BTreeMap::new();
    for (route, path, n) in [("/hello", "/hello", 7), ("/missing", "/missing", 3), ("/users/{id}", "/users/42", 5)] {
        for _ in 0..n {
            conn.get(path)?;
        }
        truth.insert(route, n);
    }
    let screen = t.wait("the attached agent's exact totals and 4xx share", WAIT, |s| {
        totals_match(&top_rows(s), &truth) && top_rows(s).iter().any(|r| r.route == "/missing" && r.err4 == "100.0%" && r.err == "0.0%")
    })?;
    println!("{screen}");
    let escaped = t.screen_escaped()?;
    ensure!(!has_colour(&escaped, 3) && !has_colour(&escaped, 1), "colour with NO_COLOR: {escaped:?}");
    // `/` filters: only the route typed stays.
    t.keys(&["/", "u", "s", "e", "r", "Enter"])?;
    t.wait("the filter keeps /users/{id} alone", WAIT, |s| {
        let rows = top_rows(s);
        s.contains("filter: \"user\"") && rows.len() == 1 && rows[0].route == "/users/{id}" && rows[0].total == 5
    })?;
    t.keys(&["Escape"])?;
    t.wait("Esc clears the filter", WAIT, |s| top_rows(s).len() == 3)?;
    t.keys(&["C-c"])?;
    exits_clean(&t)?;

    // SIGTERM restores the terminal too.
    let t = top_in_tmux(&format!("--pid {}", server.pid()))?;
    t.wait("top attached", Duration::from_secs(60), |s| s.contains("redprobe top  attached to --pid"))?;
    ensure!(t.alternate_screen()?, "top is not on the alternate screen");
    let top = children(t.pane_pid()?).into_iter().next().expect("top's process");
    unsafe { libc::kill(top as i32, libc::SIGTERM) };
    exits_clean(&t)
}

#[test]
fn a_page_it_cannot_read_is_shown_and_retried() -> Result<()> {
    let server = Server::start_python()?;
    // Refused: nothing listens yet; then an agent starts on that port, and top recovers.
    let port = free_port();
    let t = top_in_tmux(&format!("--url 127.0.0.1:{port}"))?;
    t.wait("the refusal on screen", WAIT, |s| s.contains("connection refused") && s.contains("retrying"))?;
    let agent = Agent::start_at(Command::new(agent_bin()), &pid_args(&[server.pid()]), &format!("127.0.0.1:{port}"), |a| {
        testkit::scrape::fetch(a).is_ok()
    })?;
    Conn::open(server.port)?.get_ok("/hello", 4)?;
    t.wait("the view recovered, with the requests", WAIT, |s| {
        !s.contains("cannot read") && top_rows(s).iter().any(|r| r.route == "/hello" && r.total == 4)
    })?;
    // The agent goes away: the error shows over the last rows, which stay.
    agent.stop()?;
    t.wait("the refusal again, the last rows kept", WAIT, |s| {
        s.contains("connection refused") && top_rows(s).iter().any(|r| r.route == "/hello")
    })?;
    t.keys(&["q"])?;
    exits_clean(&t)?;

    // No answer: a listener that never accepts (the kernel completes the handshake).
    let silent = TcpListener::bind("127.0.0.1:0")?;
    let t = top_in_tmux(&format!("--url http://{}/metrics", silent.local_addr()?))?;
    t.wait("the timeout on screen", WAIT, |s| s.contains("no answer from") && s.contains("within 3 s"))?;
    t.keys(&["q"])?;
    exits_clean(&t)?;

    // Not metrics: an HTTP page that is not, and a 404.
    let t = top_in_tmux(&format!("--url http://127.0.0.1:{}/hello", server.port))?;
    t.wait("not a metrics page", WAIT, |s| s.contains("is not a metrics page") && s.contains("hello world"))?;
    drop(t);
    let t = top_in_tmux(&format!("--url http://127.0.0.1:{}/missing", server.port))?;
    t.wait("the 404", WAIT, |s| s.contains("answered 404 Not Found"))?;
    Ok(())
}

#[test]
fn plain_table_when_not_a_terminal() -> Result<()> {
    let server = Server::start_python()?;
    let agent = Agent::attach(server.pid())?;
    let mut conn = Conn::open(server.port)?;
    conn.get_ok("/hello", 6)?;
    for _ in 0..2 {
        conn.get("/error")?;
    }
    agent.wait_metrics("8 requests", |m| m.requests("GET", 200, "/hello") == 6 && m.requests("GET", 500, "/error") == 2)?;
    // stdout is a pipe: one table, then exit 0 (no --once needed).
    let out = Command::new(agent_bin())
        .args(["top", "--url", &agent.addr, "--interval", "0.5", "--sort", "errors"])
        .stdin(Stdio::null())
        .output()?;
    let text = String::from_utf8(out.stdout)?;
    ensure!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    ensure!(text.starts_with(&format!("redprobe top: http://{}/metrics, over ", agent.addr)), "{text}");
    ensure!(text.contains("sorted by errors") && text.contains("total 8"), "{text}");
    let rows = top_rows(&text);
    let want: BTreeMap<&str, u64> = [("/error", 2), ("/hello", 6)].into();
    ensure!(totals_match(&rows, &want), "{text}");
    // Nothing sent during the interval: no rate, no share; no escape codes.
    ensure!(rows.iter().all(|r| r.rate == 0.0 && r.err == "-"), "{text}");
    ensure!(!text.contains('\x1b'), "escape codes in the plain table:\n{text}");
    // A page that cannot be read: exit 1 and the reason.
    let out = Command::new(agent_bin()).args(["top", "--once", "--url", &format!("127.0.0.1:{}", free_port())]).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.code() == Some(1) && stderr.contains("connection refused"), "{stderr}");
    Ok(())
}
