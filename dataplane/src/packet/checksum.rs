//! Internet checksums (RFC 1071) and their incremental update (RFC 1624).

/// One's complement sum of `data` folded to 16 bits, added to `initial`.
pub fn sum(data: &[u8], initial: u32) -> u32 {
    let mut acc = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        acc += (*last as u64) << 8;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u32
}

/// The checksum to write: the complement of the folded sum.
pub fn finish(acc: u32) -> u16 {
    !(acc as u16)
}

/// Checksum of an IPv4 header (with its checksum field as stored).
pub fn ipv4_header(header: &[u8]) -> u16 {
    finish(sum(header, 0))
}

/// Sum of the IPv4 pseudo header of a TCP/UDP segment.
pub fn pseudo_header(src: [u8; 4], dst: [u8; 4], proto: u8, l4_len: u16) -> u32 {
    let mut acc = sum(&src, 0);
    acc = sum(&dst, acc);
    sum(&[0, proto, (l4_len >> 8) as u8, l4_len as u8], acc)
}

/// RFC 1624 eqn. 3: the checksum after a 16-bit word changed from `old` to `new`.
pub fn update16(check: u16, old: u16, new: u16) -> u16 {
    let mut acc = (!check as u32) + (!old as u32) + new as u32;
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// The checksum after a 4-byte field changed from `old` to `new`.
pub fn update32(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let c = update16(
        check,
        u16::from_be_bytes([old[0], old[1]]),
        u16::from_be_bytes([new[0], new[1]]),
    );
    update16(
        c,
        u16::from_be_bytes([old[2], old[3]]),
        u16::from_be_bytes([new[2], new[3]]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // IPv4 header from RFC 1071-style worked examples (checksum 0xb861).
    const HEADER: [u8; 20] = [
        0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00,
        0x01, 0xc0, 0xa8, 0x00, 0xc7,
    ];

    #[test]
    fn header_checksum_verifies_to_zero() {
        assert_eq!(ipv4_header(&HEADER), 0);
        let mut h = HEADER;
        h[10] = 0;
        h[11] = 0;
        assert_eq!(ipv4_header(&h), 0xb861);
    }

    #[test]
    fn incremental_update_equals_recomputation() {
        let mut h = HEADER;
        let old = [h[12], h[13], h[14], h[15]];
        let new = [10, 0, 0, 99];
        let check = u16::from_be_bytes([h[10], h[11]]);
        h[12..16].copy_from_slice(&new);
        let updated = update32(check, old, new);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(updated, ipv4_header(&h));
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(sum(&[0x01], 0), 0x0100);
    }
}
