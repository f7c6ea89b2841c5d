//! Frame parsing and flow keys: any bytes give a parse or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vnet_dataplane::packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = packet::parse(data) {
        let _ = h.flow_key(1);
        if let packet::L3::Ipv4(ip, _) = h.l3 {
            let _ = packet::icmp_quote(data, &ip);
            let mut copy = data.to_vec();
            let rw = packet::Rewrite { src: Some([1, 2, 3, 4]), sport: Some(7), ..Default::default() };
            let end = h.l3_offset + ip.total_len as usize;
            packet::rewrite_ipv4(&mut copy, h.l3_offset, end, &rw);
        }
    }
});
