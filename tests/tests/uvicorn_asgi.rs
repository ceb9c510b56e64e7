//! uvicorn (asyncio) serving the Django app through ASGI: one process, many connections
//! multiplexed on an event loop; keep-alive, pipelining, streaming and uploads.
use anyhow::Result;
use testkit::{
    servers::{Bind, uvicorn},
    workload::{Mix, full_mix_is_counted_exactly},
};

const MIX: Mix = Mix { pipelining: true, not_modified: true };

#[test]
fn uvicorn_asgi_ipv4() -> Result<()> {
    full_mix_is_counted_exactly(&uvicorn(Bind::V4)?, MIX)
}

#[test]
fn uvicorn_asgi_unix_socket() -> Result<()> {
    full_mix_is_counted_exactly(&uvicorn(Bind::Unix)?, MIX)
}
