//! The plain table of `redprobe top --once` (and of a `top` whose output is not a terminal):
//! the header lines and one line per row, aligned, with no colour.
use super::{
    format::{self, COLUMNS, Field, NUMERIC_FROM},
    view::{Sort, shown},
    interval::Interval,
};

fn line(fields: &[Field]) -> String {
    fields.iter().map(|f| format!("{} {}", f.label, f.value)).collect::<Vec<_>>().join("  ")
}

/// The table of `iv`, read from `source`, its rows sorted by `sort` and kept by `filter`.
pub fn render(source: &str, iv: &Interval, sort: Sort, filter: &str, slow: f64) -> String {
    let rows = shown(iv, sort, filter);
    let mut out = format!("redprobe top: {source}, over {:.1} s, sorted by {}", iv.secs, sort.name());
    if !filter.is_empty() {
        out.push_str(&format!(", filter {filter:?}"));
    }
    out.push('\n');
    out.push_str(&line(&format::summary(iv, slow)));
    out.push('\n');
    out.push_str(&line(&format::health(iv)));
    out.push_str("\n\n");
    let table: Vec<Vec<String>> = std::iter::once(COLUMNS.iter().map(|c| c.to_string()).collect())
        .chain(rows.iter().map(|r| format::cells(r, slow).into_iter().map(|(s, _)| s).collect()))
        .collect();
    let widths: Vec<usize> =
        (0..COLUMNS.len()).map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for r in &table {
        let cells: Vec<String> = r
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (s, w))| if i >= NUMERIC_FROM { format!("{s:>w$}") } else { format!("{s:<w$}") })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    if rows.is_empty() {
        out.push_str("(no request measured yet)\n");
    }
    out
}
