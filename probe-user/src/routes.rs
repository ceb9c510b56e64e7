//! The `http_route` label: a bounded template made from the request target.
//!
//! No query string, no fragment, and path segments that look like identifiers (numbers,
//! UUIDs, long hex, long random tokens) fold to `{id}`. The aggregation layer also caps
//! the number of distinct routes.

/// Longest route kept, in bytes; longer ones are cut at a segment boundary.
const MAX_ROUTE_LEN: usize = 128;
/// Most segments kept; deeper paths end in `/...`.
const MAX_SEGMENTS: usize = 8;

/// The route of a request target (origin-form `/a/b?c`, absolute-form
/// `http://h/a`, or `*`).
pub fn route_of(target: &[u8]) -> String {
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
    let mut route = String::new();
    for (i, segment) in path.split('/').skip(1).enumerate() {
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

fn is_identifier(s: &str) -> bool {
    let b = s.as_bytes();
    if b.is_empty() {
        return false;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == b.len() {
        return true; // 42
    }
    if is_uuid(b) {
        return true;
    }
    if b.len() >= 8 && b.iter().all(|c| c.is_ascii_hexdigit()) && digits > 0 {
        return true; // deadbeef01, a git sha
    }
    // A long token mixing letters and digits (base64-ish, random ids).
    b.len() >= 16
        && digits > 0
        && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_=.~".contains(c))
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The `http_request_method` label: standard methods as they are, anything else `_OTHER`.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"];
    KNOWN.iter().find(|m| **m == method).copied().unwrap_or("_OTHER")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_table() {
        let cases = [
            ("/", "/"),
            ("/hello", "/hello"),
            ("/hello?name=x&y=2", "/hello"),
            ("/users/42", "/users/{id}"),
            ("/users/42/orders/7", "/users/{id}/orders/{id}"),
            ("/items/123e4567-e89b-12d3-a456-426614174000", "/items/{id}"),
            ("/commits/9fceb02d0ae598e95dc970b74767f19372d61af8", "/commits/{id}"),
            ("/static/app.css", "/static/app.css"),
            ("/t/aGVsbG8gd29ybGQ9PT1zZWNyZXQx", "/t/{id}"),
            ("/api/v1/things", "/api/v1/things"),
            ("/deadbeef", "/deadbeef"),
            ("/a#frag", "/a"),
            ("http://example.com/x/5?q", "/x/{id}"),
            ("*", "*"),
            ("nope", "_invalid"),
            ("/a/b/c/d/e/f/g/h/i/j", "/a/b/c/d/e/f/g/h/..."),
        ];
        for (path, want) in cases {
            assert_eq!(route_of(path.as_bytes()), want, "{path}");
        }
        assert!(route_of(format!("/{}", "x".repeat(70_000)).as_bytes()).len() <= MAX_ROUTE_LEN + 4);
        assert_eq!(route_of(b"/caf\xff/1"), "/caf\u{fffd}/{id}");
    }

    #[test]
    fn methods() {
        assert_eq!(method_label("GET"), "GET");
        assert_eq!(method_label("PATCH"), "PATCH");
        assert_eq!(method_label("get"), "_OTHER");
        assert_eq!(method_label("BREW"), "_OTHER");
    }
}
