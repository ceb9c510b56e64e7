//! gRPC's labels (`rpc_service`, `rpc_method`, `rpc_grpc_status_code`) and HTTP/2's error
//! code names (`redprobe_http2_streams_reset_total`).

/// `rpc_service` and `rpc_method` of a call whose `:path` got the route label `route`:
/// `/package.Service/Method` split, when the route is that path itself. A path the route
/// table folded (`--max-routes`) or templated is `_other` for both, so that gRPC names
/// are bounded by the same per-service cap as routes.
pub fn grpc_names(path: &[u8], route: &str) -> (String, String) {
    let other = || (super::OTHER_ROUTE.to_string(), super::OTHER_ROUTE.to_string());
    if path != route.as_bytes() {
        return other();
    }
    match route.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method)) if !service.is_empty() && !method.is_empty() && !method.contains('/') => {
            (service.to_string(), method.to_string())
        }
        _ => other(),
    }
}

/// `rpc_grpc_status_code`: the number, or empty (absent) when no `grpc-status` came (a
/// call reset, or a response that was not gRPC's). Codes are 0 to 16; others are kept as
/// numbers up to 99, and any larger is `_other`.
pub fn grpc_status(code: Option<u32>) -> String {
    match code {
        Some(c) if c < 100 => c.to_string(),
        Some(_) => super::OTHER_ROUTE.to_string(),
        None => String::new(),
    }
}

/// The name of an HTTP/2 error code (RFC 9113 §7), lowercase; `unknown` for others.
pub fn h2_error_code(code: u32) -> &'static str {
    const NAMES: [&str; 14] = [
        "no_error",
        "protocol_error",
        "internal_error",
        "flow_control_error",
        "settings_timeout",
        "stream_closed",
        "frame_size_error",
        "refused_stream",
        "cancel",
        "compression_error",
        "connect_error",
        "enhance_your_calm",
        "inadequate_security",
        "http_1_1_required",
    ];
    NAMES.get(code as usize).copied().unwrap_or("unknown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_paths_split_only_as_their_own_route() {
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(grpc_names(b"/pkg.Echo/Unary", "/pkg.Echo/Unary"), s("pkg.Echo", "Unary"));
        assert_eq!(grpc_names(b"/pkg.Echo/Unary", "_other"), s("_other", "_other"));
        assert_eq!(grpc_names(b"/a/b/c", "/a/b/c"), s("_other", "_other"));
        assert_eq!(grpc_names(b"/nomethod", "/nomethod"), s("_other", "_other"));
        assert_eq!(grpc_status(Some(0)), "0");
        assert_eq!(grpc_status(Some(13)), "13");
        assert_eq!(grpc_status(Some(12345)), "_other");
        assert_eq!(grpc_status(None), "");
        assert_eq!((h2_error_code(0), h2_error_code(8), h2_error_code(99)), ("no_error", "cancel", "unknown"));
    }
}
