//! Topology files: any bytes give a topology or an error naming the
//! problem; a parsed topology validates without panicking and, when
//! valid, compiles into a snapshot.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(t) = vnet_model::parse_bytes(data) {
        if t.validate().is_ok() {
            let _ = vnet_dataplane::sim::Snapshot::compile(&t, 1);
            let _ = t.to_yaml();
        }
    }
});
