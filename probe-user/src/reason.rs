//! Every way something can fail to be measured, each with its one label value. The
//! metrics reference (docs/metrics.md) lists them; a test checks that its tables match.

/// What bytes that are not an HTTP/1.x request look like, from their first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// A TLS record (`16 03 ..`): HTTPS sent to a plain port.
    Tls,
    /// The HTTP/2 connection preface (`PRI * HTTP/2.0`).
    Http2,
    /// NUL, control or non-ASCII bytes.
    Binary,
    /// Text that is not an HTTP request.
    Text,
    /// Nothing captured.
    Empty,
    /// An HTTP request on a port the target accepted TLS connections on: HTTP sent to an
    /// HTTPS port (the kernel says so: `FLAG_PLAIN_ON_TLS_PORT`).
    HttpOnTlsPort,
    /// HTTP/2 frames without the connection preface: a connection opened before the agent
    /// attached (or one the kernel's table lost), whose header compression state is unknown.
    Http2MidStream,
}

impl Protocol {
    pub const ALL: [Protocol; 7] = [
        Protocol::Tls,
        Protocol::Http2,
        Protocol::Binary,
        Protocol::Text,
        Protocol::Empty,
        Protocol::HttpOnTlsPort,
        Protocol::Http2MidStream,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Protocol::Tls => "tls",
            Protocol::Http2 => "http2",
            Protocol::Binary => "binary",
            Protocol::Text => "not_http",
            Protocol::Empty => "empty",
            Protocol::HttpOnTlsPort => "http_on_tls_port",
            Protocol::Http2MidStream => "http2_mid_stream",
        }
    }

    /// Classifies the first bytes of a connection that were not a request: HTTP/2 frames
    /// too (a connection opened before the agent attached).
    pub fn of_first(bytes: &[u8]) -> Protocol {
        match Protocol::of(bytes) {
            Protocol::Binary if crate::http2::frames::looks_like_frames(bytes) => Protocol::Http2MidStream,
            p => p,
        }
    }

    /// Classifies bytes that did not parse as a request.
    pub fn of(bytes: &[u8]) -> Protocol {
        match bytes {
            [0x16, 0x03, ..] => Protocol::Tls,
            [] => Protocol::Empty,
            _ if bytes.starts_with(b"PRI * HTTP/2") => Protocol::Http2,
            _ if bytes.iter().take(64).any(|&b| b == 0 || (b < 0x20 && !b"\r\n\t".contains(&b)) || b >= 0x80) => {
                Protocol::Binary
            }
            _ => Protocol::Text,
        }
    }
}

/// Why a request on an HTTP connection could not be measured: the `reason` label of
/// `redprobe_requests_unparsed_total`. Each request is counted once, under one reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Bytes where a request should start, on a connection that carried HTTP, that are not
    /// a request (labelled by what they look like).
    NotRequest(Protocol),
    /// A request line that does not parse: NUL or control bytes in the target or a header.
    MalformedRequest,
    /// A request line longer than the capture window.
    HeadTooLarge,
    /// A request that starts beyond the captured bytes of the read that brought it.
    OutsideCaptureWindow,
    /// Part of a request head, then the connection closed.
    HeadIncomplete,
    /// A request the server never answered before the connection closed.
    NoResponse,
    /// A response the server started and never finished.
    ResponseIncomplete,
    /// Requests in flight when the ring buffer overflowed.
    EventsLost,
    /// A response to no request the agent saw.
    ResponseWithoutRequest,
    /// Bytes written in answer to a request that are not an HTTP/1.x response.
    ResponseNotHttp,
    /// What follows a `101 Switching Protocols`.
    Upgraded,
    /// A connection evicted from the agent's table (`--max-connections`).
    ConnectionTableFull,
    /// Requests beyond the pipelining depth the agent keeps per connection.
    PipelineTooDeep,
    /// An HTTP/2 request whose header block could not be decoded: its connection's header
    /// compression state was lost (`redprobe_http2_connections_undecodable_total` says why).
    Http2HeadersUndecoded,
    /// HTTP/2 requests in flight when their connection's framing was lost.
    Http2Undecodable,
    /// HTTP/2 streams beyond the open streams the agent keeps per connection.
    TooManyStreams,
}

impl Reason {
    pub const ALL: [Reason; 20] = [
        Reason::NotRequest(Protocol::Tls),
        Reason::NotRequest(Protocol::Http2),
        Reason::NotRequest(Protocol::Binary),
        Reason::NotRequest(Protocol::Text),
        Reason::NotRequest(Protocol::Empty),
        Reason::MalformedRequest,
        Reason::HeadTooLarge,
        Reason::OutsideCaptureWindow,
        Reason::HeadIncomplete,
        Reason::NoResponse,
        Reason::ResponseIncomplete,
        Reason::EventsLost,
        Reason::ResponseWithoutRequest,
        Reason::ResponseNotHttp,
        Reason::Upgraded,
        Reason::ConnectionTableFull,
        Reason::PipelineTooDeep,
        Reason::Http2HeadersUndecoded,
        Reason::Http2Undecodable,
        Reason::TooManyStreams,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reason::NotRequest(p) => p.label(),
            Reason::MalformedRequest => "malformed_request",
            Reason::HeadTooLarge => "head_too_large",
            Reason::OutsideCaptureWindow => "outside_capture_window",
            Reason::HeadIncomplete => "head_incomplete",
            Reason::NoResponse => "no_response",
            Reason::ResponseIncomplete => "response_incomplete",
            Reason::EventsLost => "events_lost",
            Reason::ResponseWithoutRequest => "response_without_request",
            Reason::ResponseNotHttp => "response_not_http",
            Reason::Upgraded => "upgraded",
            Reason::ConnectionTableFull => "connection_table_full",
            Reason::PipelineTooDeep => "pipeline_too_deep",
            Reason::Http2HeadersUndecoded => "http2_headers_undecoded",
            Reason::Http2Undecodable => "http2_undecodable",
            Reason::TooManyStreams => "too_many_streams",
        }
    }
}

/// Why an HTTP/2 connection could not be decoded, from some point on: the `reason` label of
/// `redprobe_http2_connections_undecodable_total`, counted once per connection. What was in
/// flight then, and every request after, is counted in `redprobe_requests_unparsed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum H2Undecodable {
    /// `PRI *` and then not the rest of the preface (garbage after it).
    BadPreface,
    /// Bytes that break the framing: an oversized frame, a CONTINUATION out of place.
    FrameError,
    /// A header block that does not decode (HPACK): the compression state is lost.
    HeaderBlock,
    /// Bytes the kernel did not copy outside a DATA payload: a call with more frames than
    /// its walk has steps for (`H2_MAX_STEPS`).
    BytesMissed,
    /// Events of the connection were lost (ring buffer full).
    EventsLost,
    /// Forgotten by the agent's full table (`--max-connections`): its compression state
    /// with it.
    ConnectionTableFull,
}

impl H2Undecodable {
    pub const ALL: [H2Undecodable; 6] = [
        H2Undecodable::BadPreface,
        H2Undecodable::FrameError,
        H2Undecodable::HeaderBlock,
        H2Undecodable::BytesMissed,
        H2Undecodable::EventsLost,
        H2Undecodable::ConnectionTableFull,
    ];

    pub fn label(self) -> &'static str {
        match self {
            H2Undecodable::BadPreface => "bad_preface",
            H2Undecodable::FrameError => "frame_error",
            H2Undecodable::HeaderBlock => "header_block",
            H2Undecodable::BytesMissed => "bytes_missed",
            H2Undecodable::EventsLost => "events_lost",
            H2Undecodable::ConnectionTableFull => "connection_table_full",
        }
    }
}

/// Why a response's end was inferred rather than read: the `reason` label of
/// `redprobe_responses_inferred_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Inference {
    /// Its framing headers were beyond the capture window: it ends at its last write before
    /// the next request or the close.
    ResponseHeadBeyondCapture,
    /// A chunked response whose terminator was not captured: it ends at its last write
    /// before the next request.
    ChunkEndBeyondCapture,
}

impl Inference {
    pub const ALL: [Inference; 2] = [Inference::ResponseHeadBeyondCapture, Inference::ChunkEndBeyondCapture];

    pub fn label(self) -> &'static str {
        match self {
            Inference::ResponseHeadBeyondCapture => "response_head_beyond_capture",
            Inference::ChunkEndBeyondCapture => "chunk_end_beyond_capture",
        }
    }
}

/// Socket I/O of a target the kernel deliberately did not capture: the `reason` label of
/// `redprobe_kernel_skipped_io_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelSkip {
    /// Ran outside the task's own syscall (io_uring worker, task_work).
    ForeignContext,
    /// The syscall's fd did not resolve to the socket the tracepoint fired for.
    FdMismatch,
    /// A new connection that did not fit in the kernel's connection map.
    ConnMapFull,
    /// Plaintext of a TLS library call whose connection could not be found.
    TlsUnmapped,
    /// A TLS library call that could not be remembered from its entry to its return.
    TlsCallsFull,
    /// A TLS library call's return without its entry (probed during the call).
    TlsNoEntry,
    /// TLS plaintext of a connection whose socket carries it (kernel TLS): measured from
    /// the socket instead, so not lost.
    TlsPlainSocket,
}

impl KernelSkip {
    pub const ALL: [KernelSkip; 7] = [
        KernelSkip::ForeignContext,
        KernelSkip::FdMismatch,
        KernelSkip::ConnMapFull,
        KernelSkip::TlsUnmapped,
        KernelSkip::TlsCallsFull,
        KernelSkip::TlsNoEntry,
        KernelSkip::TlsPlainSocket,
    ];

    pub fn label(self) -> &'static str {
        match self {
            KernelSkip::ForeignContext => "foreign_context",
            KernelSkip::FdMismatch => "fd_mismatch",
            KernelSkip::ConnMapFull => "conn_map_full",
            KernelSkip::TlsUnmapped => "tls_unmapped",
            KernelSkip::TlsCallsFull => "tls_calls_full",
            KernelSkip::TlsNoEntry => "tls_no_entry",
            KernelSkip::TlsPlainSocket => "tls_plain_socket",
        }
    }
}

/// Why a TLS connection of a target carried no measured request: the `reason` label of
/// `redprobe_tls_connections_unmeasured_total`, counted at its close.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsUnmeasured {
    /// The handshake failed, or the client gave up before it completed.
    HandshakeIncomplete,
    /// The handshake completed, and the client sent no request.
    NoRequest,
    /// No call of a probed TLS library was seen on it: the process's TLS library is not
    /// probed (see `redprobe_tls_libraries_unprobed_total`), or not probed yet.
    NotProbed,
}

impl TlsUnmeasured {
    pub const ALL: [TlsUnmeasured; 3] = [TlsUnmeasured::HandshakeIncomplete, TlsUnmeasured::NoRequest, TlsUnmeasured::NotProbed];

    pub fn label(self) -> &'static str {
        match self {
            TlsUnmeasured::HandshakeIncomplete => "handshake_incomplete",
            TlsUnmeasured::NoRequest => "no_request",
            TlsUnmeasured::NotProbed => "library_not_probed",
        }
    }

    /// From the flags of the connection's close (`probe_common::FLAG_TLS_*`); `None` for
    /// a connection no probe saw on a port no handshake completed on: HTTPS sent to a plain
    /// port (or to a server whose TLS library is not probed), another protocol.
    pub fn of(probed: bool, open: bool, plain_port: bool) -> Option<TlsUnmeasured> {
        match (probed, open) {
            (false, _) if plain_port => None,
            (false, _) => Some(TlsUnmeasured::NotProbed),
            (true, false) => Some(TlsUnmeasured::HandshakeIncomplete),
            (true, true) => Some(TlsUnmeasured::NoRequest),
        }
    }
}

/// Why a response whose last bytes were still unsent when the server's last write returned
/// ends at a write rather than when those bytes went out: the `reason` label of
/// `redprobe_responses_end_at_write_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TxFallback {
    /// The kernel's map of waits (`TX_WAIT`, sized by --max-connections) was full.
    WaitMapFull,
    /// A later write of the same connection left bytes unsent before these went out
    /// (pipelined responses): the older wait ended at that write.
    Superseded,
    /// The agent was not told of the transmission within the idle timeout (events lost).
    NotSeen,
}

impl TxFallback {
    pub const ALL: [TxFallback; 3] = [TxFallback::WaitMapFull, TxFallback::Superseded, TxFallback::NotSeen];

    pub fn label(self) -> &'static str {
        match self {
            TxFallback::WaitMapFull => "wait_map_full",
            TxFallback::Superseded => "superseded",
            TxFallback::NotSeen => "transmission_not_seen",
        }
    }
}

/// Why a server connection is paired by the agent rather than in the kernel: the `reason`
/// label of `redprobe_requests_paired_total{pairer="agent"}`. The kernel decides it (the
/// `SLOW_*` codes of probe_common::fast) when it hands a connection over; every request the
/// agent then measures on that connection counts under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SlowReason {
    /// A request head that came in more than one read.
    HeadSplit,
    /// A request head larger than the capture window.
    HeadBeyondWindow,
    /// A request the kernel does not read itself: a chunked body, folded headers, a
    /// Content-Length list, a target that is not a short origin-form path.
    Request,
    /// More requests waiting than the kernel keeps, or a body and the next request in one read.
    Pipelined,
    /// A response the kernel does not read itself: a head split over writes or beyond the
    /// window, an early answer, a request while a chunked or close-delimited one is written.
    Response,
    /// `101 Switching Protocols`.
    Upgrade,
    /// A write with no request waiting, or more bytes than the response held.
    UnexpectedWrite,
    /// The connection closed with requests waiting (a reset, or no answer).
    ClosedWaiting,
    /// The process's service id was not known to the kernel yet.
    NoService,
    /// Bytes the kernel needed and could not read (sendfile or recvmmsg at a head).
    Unreadable,
    /// An event of the connection was lost.
    EventsLost,
    /// The fast path is off (`--naming django-prometheus`, or `--no-fast-path`).
    FastPathOff,
    /// The kernel never said (the connection's switch event was lost).
    Unannounced,
    /// An HTTP/2 connection: the agent decodes its frames and header blocks.
    Http2,
}

impl SlowReason {
    pub const ALL: [SlowReason; 14] = [
        SlowReason::HeadSplit,
        SlowReason::HeadBeyondWindow,
        SlowReason::Request,
        SlowReason::Pipelined,
        SlowReason::Response,
        SlowReason::Upgrade,
        SlowReason::UnexpectedWrite,
        SlowReason::ClosedWaiting,
        SlowReason::NoService,
        SlowReason::Unreadable,
        SlowReason::EventsLost,
        SlowReason::FastPathOff,
        SlowReason::Unannounced,
        SlowReason::Http2,
    ];

    /// The reason of a kernel `SLOW_*` code.
    pub fn from_kernel(code: u32) -> Self {
        use probe_common::fast::*;
        match code {
            SLOW_HEAD_SPLIT => SlowReason::HeadSplit,
            SLOW_HEAD_BEYOND_WINDOW => SlowReason::HeadBeyondWindow,
            SLOW_REQUEST => SlowReason::Request,
            SLOW_PIPELINE => SlowReason::Pipelined,
            SLOW_RESPONSE => SlowReason::Response,
            SLOW_UPGRADE => SlowReason::Upgrade,
            SLOW_UNEXPECTED_WRITE => SlowReason::UnexpectedWrite,
            SLOW_CLOSE => SlowReason::ClosedWaiting,
            SLOW_NO_SERVICE => SlowReason::NoService,
            SLOW_UNREADABLE => SlowReason::Unreadable,
            SLOW_LOST => SlowReason::EventsLost,
            _ => SlowReason::Unannounced,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            SlowReason::HeadSplit => "head_split",
            SlowReason::HeadBeyondWindow => "head_beyond_window",
            SlowReason::Request => "request_not_plain",
            SlowReason::Pipelined => "pipelined",
            SlowReason::Response => "response_not_plain",
            SlowReason::Upgrade => "upgrade",
            SlowReason::UnexpectedWrite => "unexpected_write",
            SlowReason::ClosedWaiting => "closed_waiting",
            SlowReason::NoService => "no_service",
            SlowReason::Unreadable => "unreadable_io",
            SlowReason::EventsLost => "events_lost",
            SlowReason::FastPathOff => "fast_path_off",
            SlowReason::Unannounced => "unannounced",
            SlowReason::Http2 => "http2",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_of_bytes() {
        assert_eq!(Protocol::of(b"\x16\x03\x01\x00\xa5\x01"), Protocol::Tls);
        assert_eq!(Protocol::of(b"\x00\x01\x02garbage"), Protocol::Binary);
        assert_eq!(Protocol::of(b"hello there\r\n"), Protocol::Text);
        assert_eq!(Protocol::of(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), Protocol::Http2);
        assert_eq!(Protocol::of(b""), Protocol::Empty);
        let settings_then_window = b"\0\0\x06\x04\0\0\0\0\0\0\x04\0\x10\0\0\0\0\x04\x08\0\0\0\0\0\0\x0f\0\x01";
        assert_eq!(Protocol::of_first(settings_then_window), Protocol::Http2MidStream);
        assert_eq!(Protocol::of_first(b"\x16\x03\x01\x00\xa5\x01"), Protocol::Tls);
        assert_eq!(Protocol::of_first(b"\x00\x01\x02garbage"), Protocol::Binary);
    }

    #[test]
    fn labels_are_distinct() {
        let mut all: Vec<&str> = Reason::ALL.iter().map(|r| r.label()).collect();
        all.extend(Inference::ALL.iter().map(|r| r.label()));
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n);
    }

    /// The reference's tables list exactly these labels (docs/metrics.md).
    #[test]
    fn the_metrics_reference_lists_every_reason() {
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/metrics.md")).unwrap();
        let section = |heading: &str| -> Vec<String> {
            let start = doc.find(heading).unwrap_or_else(|| panic!("no {heading:?} in docs/metrics.md"));
            let rest = &doc[start + heading.len()..];
            let end = rest.find("\n#").unwrap_or(rest.len());
            rest[..end]
                .lines()
                .filter(|l| l.starts_with("| `"))
                .flat_map(|l| l.split('|').nth(1).unwrap_or("").split(',').map(|c| c.trim().trim_matches('`').to_string()))
                .collect()
        };
        let mut documented = section("## Unparsed reasons");
        documented.sort();
        let mut labels: Vec<String> = Reason::ALL.iter().map(|r| r.label().to_string()).collect();
        labels.sort();
        assert_eq!(documented, labels, "docs/metrics.md \"Unparsed reasons\" vs reason::Reason");
        let mut documented = section("## Other protocols");
        documented.sort();
        let mut labels: Vec<String> = Protocol::ALL.iter().map(|p| p.label().to_string()).collect();
        labels.sort();
        assert_eq!(documented, labels, "docs/metrics.md \"Other protocols\" vs reason::Protocol");
        let mut documented = section("## Agent pairing reasons");
        documented.sort();
        let mut labels: Vec<String> = SlowReason::ALL.iter().map(|r| r.label().to_string()).collect();
        labels.sort();
        assert_eq!(documented, labels, "docs/metrics.md \"Agent pairing reasons\" vs reason::SlowReason");
        let mut documented = section("## HTTPS");
        documented.sort();
        let mut labels: Vec<String> = TlsUnmeasured::ALL
            .iter()
            .map(|r| r.label().to_string())
            .chain(crate::tls_libs::Unprobeable::ALL.iter().map(|r| r.label().to_string()))
            .collect();
        labels.sort();
        assert_eq!(documented, labels, "docs/metrics.md \"HTTPS\" vs reason::TlsUnmeasured and tls_libs::Unprobeable");
        let mut documented = section("## Ends at a write");
        documented.sort();
        let mut labels: Vec<String> = TxFallback::ALL.iter().map(|r| r.label().to_string()).collect();
        labels.sort();
        assert_eq!(documented, labels, "docs/metrics.md \"Ends at a write\" vs reason::TxFallback");
    }
}
