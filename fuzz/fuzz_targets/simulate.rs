//! The simulation on arbitrary frames through the example tenant network
//! (bridge, router, DHCP, chains, NAT): never a panic, whatever arrives.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vnet_dataplane::sim::{simulate, Snapshot, State};

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let yaml = include_str!("../../examples/tenant-nat.yaml");
        Snapshot::compile(&vnet_control::load_str(yaml).expect("example is valid"), 1)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&port, frame)) = data.split_first() else { return };
    let snap = snapshot();
    let port = port as usize % snap.ports.len();
    let mut state = State::default();
    let _ = simulate(snap, &mut state, port, frame, 1, true);
});
