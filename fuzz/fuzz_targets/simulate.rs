//! The simulation on arbitrary frames through the example tenant network
//! (bridge, router, DHCP, chains, NAT): never a panic, whatever arrives.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vnet_dataplane::packet::checksum;
use vnet_dataplane::sim::{simulate, Snapshot, State};

fn snapshot() -> &'static Snapshot {
    static SNAP: OnceLock<Snapshot> = OnceLock::new();
    SNAP.get_or_init(|| {
        let yaml = include_str!("../../examples/tenant-nat.yaml");
        Snapshot::compile(&vnet_model::load_str(yaml).expect("example is valid"), 1)
    })
}

/// Gives an untagged IPv4 frame a correct header checksum, so that random
/// inputs get past the parser's checksum check into the devices.
fn fix_ipv4_checksum(frame: &mut [u8]) {
    if frame.len() < 34 || frame[12..14] != [0x08, 0x00] {
        return;
    }
    let ihl = ((frame[14] & 0x0f) as usize) * 4;
    let Some(header) = frame.get_mut(14..14 + ihl.max(20)) else { return };
    header[10..12].copy_from_slice(&[0, 0]);
    let c = checksum::ipv4_header(header);
    header[10..12].copy_from_slice(&c.to_be_bytes());
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else { return };
    let snap = snapshot();
    let port = (selector & 0x7f) as usize % snap.ports.len();
    let mut frame = frame.to_vec();
    // Half the inputs as they are (malformed headers must be dropped), half
    // with a valid IPv4 checksum (to reach bridge, router, chains and NAT).
    if selector & 0x80 != 0 {
        fix_ipv4_checksum(&mut frame);
    }
    let mut state = State::default();
    let _ = simulate(snap, &mut state, port, &frame, 1, true);
});
