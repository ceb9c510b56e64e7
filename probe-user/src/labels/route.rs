//! The `http_route` label: a bounded template made from the request target.
//!
//! First the user's templates (`--route`, `--routes-file`), first match wins; otherwise a
//! heuristic: no query string, no fragment, and segments that look like identifiers
//! (numbers, UUIDs, hex, dates, e-mails, long random tokens) fold to `{id}`. `Routes` in
//! the parent module then caps the number of distinct routes per service.
use anyhow::{Result, bail};

use super::label_safe;

/// Longest route kept, in bytes; longer ones are cut at a segment boundary.
const MAX_ROUTE_LEN: usize = 128;
/// Most segments kept; deeper paths end in `/...`.
const MAX_SEGMENTS: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}`: exactly one segment.
    One,
    /// `{name...}`: the rest of the path (zero or more segments).
    Rest,
}

/// A user route template such as `/api/items/{id}` or `/static/{path...}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    text: String,
    segments: Vec<Segment>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if !text.starts_with('/') {
            bail!("route template {text:?} must start with '/'");
        }
        if text.contains(['?', '#']) {
            bail!("route template {text:?} must not contain a query string or fragment");
        }
        let parts: Vec<&str> = text.split('/').skip(1).collect();
        let mut segments = vec![];
        for (i, part) in parts.iter().enumerate() {
            let seg = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(name) => match name.strip_suffix("...") {
                    Some(n) if !n.is_empty() && i + 1 == parts.len() => Segment::Rest,
                    Some(_) => bail!("route template {text:?}: {{name...}} must be named and come last"),
                    None if !name.is_empty() && !name.contains(['{', '}']) => Segment::One,
                    None => bail!("route template {text:?}: bad parameter {part:?}"),
                },
                None if part.contains(['{', '}']) => {
                    bail!("route template {text:?}: a parameter must be a whole segment, like {{id}}")
                }
                None => Segment::Literal(part.to_string()),
            };
            segments.push(seg);
        }
        Ok(Template { text: text.to_string(), segments })
    }

    fn matches(&self, path: &[&str]) -> bool {
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Rest => return true,
                Segment::One if i < path.len() && !path[i].is_empty() => {}
                Segment::Literal(l) if i < path.len() && path[i] == l => {}
                _ => return false,
            }
            i += 1;
        }
        i == path.len()
    }
}

/// Reads a routes file: one template a line; blank lines and `#` comments ignored.
pub fn parse_routes_file(content: &str) -> Result<Vec<Template>> {
    content
        .lines()
        .enumerate()
        .map(|(n, l)| (n, l.split('#').next().unwrap_or("").trim()))
        .filter(|(_, l)| !l.is_empty())
        .map(|(n, l)| Template::parse(l).map_err(|e| anyhow::anyhow!("line {}: {e}", n + 1)))
        .collect()
}

/// Path -> route.
#[derive(Clone, Debug, Default)]
pub struct Router {
    templates: Vec<Template>,
}

impl Router {
    pub fn new(templates: Vec<Template>) -> Self {
        Router { templates }
    }

    /// Does every path with the same kernel path key get the same route? Only a template
    /// with an identifier-looking literal segment tells apart paths the key folds together.
    pub fn folds_like_kernel(&self) -> bool {
        self.templates.iter().all(|t| t.segments.iter().all(|s| !matches!(s, Segment::Literal(l) if is_identifier(l))))
    }

    /// The route of a request target (origin-form `/a/b?c`, absolute-form
    /// `http://h/a`, or `*`).
    pub fn route(&self, target: &[u8]) -> String {
        label_safe(self.route_raw(target))
    }

    fn route_raw(&self, target: &[u8]) -> String {
        let target = String::from_utf8_lossy(target);
        let mut path: &str = &target;
        if path == "*" {
            return "*".into();
        }
        if let Some(rest) = path.strip_prefix("http://").or_else(|| path.strip_prefix("https://")) {
            path = rest.find('/').map(|i| &rest[i..]).unwrap_or("/");
        }
        let path = path.split(['?', '#']).next().unwrap_or("");
        if !path.starts_with('/') {
            return "_invalid".into();
        }
        let segments: Vec<&str> = path.split('/').skip(1).collect();
        if let Some(t) = self.templates.iter().find(|t| t.matches(&segments)) {
            return t.text.clone();
        }
        fold(&segments)
    }
}

fn fold(segments: &[&str]) -> String {
    let mut route = String::new();
    for (i, segment) in segments.iter().enumerate() {
        if i == MAX_SEGMENTS {
            route.push_str("/...");
            break;
        }
        let folded = if is_identifier(segment) { "{id}" } else { segment };
        if route.len() + 1 + folded.len() > MAX_ROUTE_LEN {
            route.push_str("/...");
            break;
        }
        route.push('/');
        route.push_str(folded);
    }
    if route.is_empty() { "/".into() } else { route }
}

/// Does a path segment look like an identifier rather than a name? The rule is
/// probe_common's, which the kernel's fast path folds its route keys with too.
fn is_identifier(s: &str) -> bool {
    probe_common::route::SegmentStats::of(s.as_bytes()).is_identifier()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> String {
        Router::default().route(path.as_bytes())
    }

    #[test]
    fn routes_are_safe_to_expose() {
        assert_eq!(route("/a\"}b\\c"), "/a%22}b%5Cc");
        assert_eq!(route("/caf\u{e9}"), "/caf\u{e9}");
    }

    #[test]
    fn heuristic_table() {
        let cases = [
            ("/", "/"),
            ("/hello", "/hello"),
            ("/hello?name=x&y=2", "/hello"),
            ("/users/42", "/users/{id}"),
            ("/users/42/orders/7", "/users/{id}/orders/{id}"),
            ("/items/123e4567-e89b-12d3-a456-426614174000", "/items/{id}"),
            ("/commits/9fceb02d0ae598e95dc970b74767f19372d61af8", "/commits/{id}"),
            ("/static/app.css", "/static/app.css"),
            ("/static/app.3f2a9c1b.js", "/static/app.3f2a9c1b.js"),
            ("/t/aGVsbG8gd29ybGQ9PT1zZWNyZXQx", "/t/{id}"),
            ("/s/QmFzZTY0T25seUxldHRlcnNIZXJl", "/s/{id}"),
            ("/reports/2024-01-31/summary", "/reports/{id}/summary"),
            ("/u/jane.doe@example.com/profile", "/u/{id}/profile"),
            ("/orders/ord-20240131-77", "/orders/{id}"),
            ("/api/v1/things", "/api/v1/things"),
            ("/api/v2/userProfileSettings", "/api/v2/userProfileSettings"),
            ("/deadbeef", "/deadbeef"),
            ("/a#frag", "/a"),
            ("http://example.com/x/5?q", "/x/{id}"),
            ("*", "*"),
            ("nope", "_invalid"),
            ("/a/b/c/d/e/f/g/h/i/j", "/a/b/c/d/e/f/g/h/..."),
        ];
        for (path, want) in cases {
            assert_eq!(route(path), want, "{path}");
        }
        assert!(route(&format!("/{}", "x".repeat(70_000))).len() <= MAX_ROUTE_LEN + 4);
        assert_eq!(route("/caf\u{e9}/1"), "/caf\u{e9}/{id}");
        assert_eq!(Router::default().route(b"/bad\xff/1"), "/bad\u{fffd}/{id}");
    }

    #[test]
    fn templates_first_match_wins() {
        let router = Router::new(
            parse_routes_file(
                "# comments and blank lines are fine\n\n/api/items/new\n/api/items/{id}   # any item\n/static/{path...}\n/api/{kind}/{id}/history\n",
            )
            .unwrap(),
        );
        let cases = [
            ("/api/items/new", "/api/items/new"),
            ("/api/items/abc?x=1", "/api/items/{id}"),
            ("/api/items/abc/more", "/api/items/abc/more"), // templates match whole paths
            ("/static/css/site/app.css", "/static/{path...}"),
            ("/static", "/static/{path...}"),
            ("/api/users/me/history", "/api/{kind}/{id}/history"),
            ("/api/items/", "/api/items/"),
            ("/other/5", "/other/{id}"),
        ];
        for (path, want) in cases {
            assert_eq!(router.route(path.as_bytes()), want, "{path}");
        }
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for (bad, why) in [
            ("api/x", "start with '/'"),
            ("/a?b", "query string"),
            ("/a/{rest...}/b", "come last"),
            ("/a/x{id}", "whole segment"),
            ("/a/{}", "bad parameter"),
        ] {
            let e = Template::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = parse_routes_file("/ok\nbad\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
    }
}
