//! DHCP message parsing: any bytes give a message or a counted error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vnet_dataplane::sim::dhcp::Message;

fuzz_target!(|data: &[u8]| {
    let _ = Message::parse_bytes(data);
});
