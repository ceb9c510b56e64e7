//! Keeps the programs' global functions global when bpf-linker links them: the verifier
//! then checks each once, on its own, instead of again inside every caller (which keeps the
//! programs under the verifier's complexity limit).
fn main() {
    for f in ["rp_classify", "rp_gather_iovecs", "rp_time_slot", "rp_size_slot", "rp_tls_socket_io", "rp_h2_begin", "rp_h2_walk", "rp_emit_client", "rp_client_io", "rp_host_key"] {
        println!("cargo:rustc-link-arg=--export={f}");
    }
}
