//! A metrics page as `top` reads it: scalar samples, and histograms with their classic
//! buckets and, from a protobuf page, their native ones. `parse_text` reads the Prometheus
//! text format (and OpenMetrics without exemplars).
use std::collections::{BTreeMap, HashMap};

use thiserror::Error;

/// A series' labels, sorted by name.
pub type Labels = BTreeMap<String, String>;

/// A counter, gauge or untyped sample, under its sample name (`..._total` for counters).
#[derive(Clone, Debug, PartialEq)]
pub struct Scalar {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

/// Native buckets (exponential, `schema`): bucket `i` holds values in (base^(i-1), base^i],
/// base = 2^(2^-schema); the zero bucket holds [-zero_threshold, zero_threshold].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Native {
    pub schema: i32,
    pub zero_threshold: f64,
    pub zero_count: f64,
    /// Count per bucket index (not cumulative).
    pub buckets: BTreeMap<i32, f64>,
}

/// One histogram series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    pub name: String,
    pub labels: Labels,
    pub count: f64,
    pub sum: f64,
    /// (upper bound, cumulative count), by upper bound, +Inf last.
    pub classic: Vec<(f64, f64)>,
    pub native: Option<Native>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Page {
    pub scalars: Vec<Scalar>,
    pub histograms: Vec<Histogram>,
}

impl Page {
    /// The scalars named `name`.
    pub fn scalars<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Scalar> + 'a {
        self.scalars.iter().filter(move |s| s.name == name)
    }

    /// The histograms named `name`.
    pub fn histograms<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Histogram> + 'a {
        self.histograms.iter().filter(move |h| h.name == name)
    }

    /// Sum of the scalars named `name`; None if there is none.
    pub fn sum(&self, name: &str) -> Option<f64> {
        self.scalars(name).map(|s| s.value).reduce(|a, b| a + b)
    }
}

/// Why a body is not a metrics page.
#[derive(Debug, Error, PartialEq)]
#[error("line {line}: {what}: {excerpt:?}")]
pub struct ParseError {
    pub line: usize,
    pub what: &'static str,
    pub excerpt: String,
}

fn error(line: usize, what: &'static str, text: &str) -> ParseError {
    let excerpt: String = text.chars().take(60).collect();
    ParseError { line, what, excerpt }
}

/// Reads `{a="1",b="x\"y"}` (without the braces) into labels.
fn parse_labels(s: &str) -> Option<Labels> {
    let mut labels = Labels::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start().strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_string(), value);
        rest = after[end? + 1..].trim_start().trim_start_matches(',').trim_start();
    }
    Some(labels)
}

/// Where the label set that opens at `open` closes: the first `}` outside a quoted value.
fn closing_brace(line: &str, open: usize) -> Option<usize> {
    let (mut quoted, mut escaped) = (false, false);
    for (i, c) in line[open..].char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '}' if !quoted => return Some(open + i),
            _ => {}
        }
    }
    None
}

/// One sample line: name, labels, value (a timestamp, or an OpenMetrics exemplar, after
/// it is ignored).
fn parse_sample(line: &str) -> Option<(&str, Labels, f64)> {
    let (name, labels, rest) = match line.find(['{', ' ', '\t']) {
        Some(i) if line.as_bytes()[i] == b'{' => {
            let close = closing_brace(line, i)?;
            (&line[..i], parse_labels(&line[i + 1..close])?, &line[close + 1..])
        }
        Some(i) => (&line[..i], Labels::new(), &line[i..]),
        None => return None,
    };
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    if name.is_empty() || !name.chars().all(valid) || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let value = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

/// The histogram series being assembled from their `_bucket`, `_count` and `_sum` lines,
/// in the order of their first line.
#[derive(Default)]
struct Open {
    series: Vec<Histogram>,
    index: HashMap<(String, Vec<(String, String)>), usize>,
}

impl Open {
    fn get(&mut self, base: &str, labels: Labels) -> &mut Histogram {
        let key = (base.to_string(), labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        let next = self.series.len();
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            self.series.push(Histogram { name: base.to_string(), labels, ..Default::default() });
        }
        &mut self.series[i]
    }
}

/// Parses a Prometheus text (or OpenMetrics) page.
pub fn parse_text(text: &str) -> Result<Page, ParseError> {
    let mut kinds: HashMap<String, String> = HashMap::new();
    let mut page = Page::default();
    let mut open = Open::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.split_whitespace();
            if words.next() == Some("TYPE")
                && let (Some(name), Some(kind)) = (words.next(), words.next())
            {
                kinds.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        let Some((name, mut labels, value)) = parse_sample(line) else {
            return Err(error(n + 1, "not a sample line", raw));
        };
        let family = |suffix: &str| {
            name.strip_suffix(suffix).filter(|base| kinds.get(*base).is_some_and(|k| k == "histogram"))
        };
        if let Some(base) = family("_bucket") {
            let Some(le) = labels.remove("le").and_then(|le| le.parse::<f64>().ok()) else {
                return Err(error(n + 1, "a histogram bucket without a numeric le label", raw));
            };
            open.get(base, labels).classic.push((le, value));
        } else if let Some(base) = family("_count") {
            open.get(base, labels).count = value;
        } else if let Some(base) = family("_sum") {
            open.get(base, labels).sum = value;
        } else if family("_created").is_some() {
        } else {
            page.scalars.push(Scalar { name: name.to_string(), labels, value });
        }
    }
    for mut h in open.series {
        h.classic.sort_by(|a, b| a.0.total_cmp(&b.0));
        page.histograms.push(h);
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_labels_and_histograms() {
        let page = parse_text(
            "# HELP x_total X.\n# TYPE x_total counter\nx_total{reason=\"a \\\"b\\\"\",k=\"v\"} 3\nup 1 1700000000\n\
             # TYPE d_seconds histogram\nd_seconds_sum{r=\"/a\"} 1.5\nd_seconds_count{r=\"/a\"} 5\n\
             d_seconds_bucket{r=\"/a\",le=\"0.1\"} 2\nd_seconds_bucket{r=\"/a\",le=\"+Inf\"} 5\nd_seconds_created{r=\"/a\"} 1.7e9\n# EOF\n",
        )
        .unwrap();
        assert_eq!(page.scalars.len(), 2);
        assert_eq!(page.scalars[0].labels["reason"], "a \"b\"");
        assert_eq!(page.sum("up"), Some(1.0));
        let h = &page.histograms[0];
        assert_eq!((h.name.as_str(), h.labels["r"].as_str(), h.count, h.sum), ("d_seconds", "/a", 5.0, 1.5));
        assert_eq!(h.classic, vec![(0.1, 2.0), (f64::INFINITY, 5.0)]);
    }

    #[test]
    fn braces_in_values_and_exemplars() {
        let page = parse_text(
            "# TYPE d histogram\nd_bucket{r=\"/a/{id}\",q=\"x\\\"}\",le=\"+Inf\"} 7 # {trace_id=\"abc\"} 0.5 1700000000\n\
             d_count{r=\"/a/{id}\",q=\"x\\\"}\"} 7\nup NaN\n",
        )
        .unwrap();
        let h = &page.histograms[0];
        assert_eq!((h.labels["r"].as_str(), h.labels["q"].as_str(), h.count, h.classic.clone()), ("/a/{id}", "x\"}", 7.0, vec![(f64::INFINITY, 7.0)]));
        assert!(page.scalars[0].value.is_nan());
    }

    #[test]
    fn what_is_not_metrics() {
        for (body, line) in [
            ("<!DOCTYPE html>\n<html>", 1),
            ("ok 1\n{\"json\": true}", 2),
            ("x 1\ny{a=\"1\" 2\n", 2),
            ("x one\n", 1),
            ("# TYPE h histogram\nh_bucket{le=\"big\"} 1\n", 2),
        ] {
            assert_eq!(parse_text(body).unwrap_err().line, line, "{body}");
        }
        assert_eq!(parse_text("").unwrap(), Page::default());
    }
}
