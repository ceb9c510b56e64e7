//! uvicorn (asyncio) serving the Django app through ASGI: one process, many connections
//! multiplexed on an event loop; keep-alive, pipelining, streaming and uploads.
use testkit::{servers::uvicorn, workload::Mix};

testkit::full_mix_tests! { uvicorn, Mix { pipelining: true, not_modified: true };
    uvicorn_asgi_ipv4 => V4,
    uvicorn_asgi_unix_socket => Unix,
}
