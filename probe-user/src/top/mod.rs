//! `redprobe top`: what a terminal view needs from a `/metrics` page, with no terminal in it.
//! A page (`page`: Prometheus text, or `protobuf` with native histograms) is read by `fetch`,
//! summed into one row per (service, route, method) by `snapshot`, and two snapshots make an
//! `interval` (rates, error shares, quantiles from the histograms' deltas: `quantile`). `view`
//! keeps the rows' history, the sort and the filter across intervals; `format` writes
//! numbers and `table` the plain table of `--once`. The binary draws the screen.
pub mod fetch;
pub mod format;
pub mod interval;
pub mod page;
pub mod protobuf;
pub mod quantile;
pub mod snapshot;
pub mod table;
pub mod view;
