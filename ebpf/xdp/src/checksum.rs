//! Internet checksums (RFC 1071): the IPv4 header check of the parser and
//! the incremental updates (RFC 1624) of the rewrites. All words are wire
//! bytes read in native order: one's-complement sums are byte-order
//! independent (RFC 1071 §2(B)), so nothing is byte-swapped.

use crate::access::{bounded, Frame};

/// Whether the IPv4 header of `ip_len` bytes at `ip_off` has a correct
/// checksum: its one's-complement sum, checksum field included, is 0xffff.
/// Summed as 32-bit words (5 to 15 of them) and folded: the same sum as
/// over 16-bit words (RFC 1071 §2(B)), with fewer loads.
#[inline(always)]
pub(crate) fn ipv4_header_ok(f: &Frame, ip_off: usize, ip_len: usize) -> bool {
    // Verifier workaround: a loop with a constant trip count (15 words, the
    // longest header) and an early exit, instead of one bounded by the IHL,
    // which the verifier cannot prove finite; and every load re-proves its
    // own bounds through `Frame::bytes`, as the verifier does not carry the
    // length check of the caller into the loop. `bounded` gives the header
    // offset a range again after it went through the stack (it is 14 or 18).
    let ip_off = bounded::<0x1f>(ip_off);
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < 15 {
        if i * 4 >= ip_len {
            break;
        }
        let Some(word) = f.bytes::<4>(ip_off + i * 4) else {
            return false;
        };
        sum += word.raw32::<0>() as u64;
        i += 1;
    }
    // At most 15 words of 32 bits: two folds to 32 bits, two to 16.
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    let sum = (sum & 0xffff_ffff) + (sum >> 32);
    fold(sum as u32) == 0xffff
}

/// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), in one's-complement arithmetic,
/// for one 16-bit word `old` → `new` covered by checksum `csum`.
#[inline(always)]
pub(crate) fn replace2(csum: u16, old: u16, new: u16) -> u16 {
    let sum = (!csum) as u32 + (!old) as u32 + new as u32;
    !fold(sum)
}

/// [`replace2`] for a 32-bit field (an IPv4 address): the old value as its
/// two wire words, the new one as wire bytes.
#[inline(always)]
pub(crate) fn replace4(csum: u16, old_hi: u16, old_lo: u16, new: [u8; 4]) -> u16 {
    let new_hi = u16::from_ne_bytes([new[0], new[1]]);
    let new_lo = u16::from_ne_bytes([new[2], new[3]]);
    let sum = (!csum) as u32 + (!old_hi) as u32 + (!old_lo) as u32 + new_hi as u32 + new_lo as u32;
    !fold(sum)
}

/// Folds a 32-bit sum of at most a few 16-bit words into 16 bits, adding
/// the carries back (end-around carry).
#[inline(always)]
fn fold(sum: u32) -> u16 {
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

#[cfg(all(test, not(target_arch = "bpf")))]
mod tests {
    use super::*;
    use crate::wire::{ETH_HLEN, IPPROTO_UDP};

    /// Internet checksum from scratch over big-endian words.
    fn checksum(words: &[u16]) -> u16 {
        let mut s: u32 = words.iter().map(|&w| u32::from(w)).sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    /// Incremental updates agree with recomputing from scratch over a chain
    /// of random one-word changes (0x0000 and 0xffff are the same number in
    /// one's complement, so either may come out).
    #[test]
    fn replace2_matches_recompute() {
        let mut words = [
            0x4500u16, 0x0054, 0x1c46, 0x4000, 0x4006, 0, 0x0a00, 0x0001, 0xc633, 0x6407,
        ];
        words[5] = checksum(&words);
        let mut seed = 0x1234_5678u32;
        for _ in 0..100_000 {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let i = (seed >> 8) as usize % words.len();
            if i == 5 {
                continue;
            }
            let new = (seed >> 16) as u16;
            let old = words[i];
            // The helpers work on native-order words read from wire bytes.
            let csum = u16::from_ne_bytes(words[5].to_be_bytes());
            let updated = replace2(
                csum,
                u16::from_ne_bytes(old.to_be_bytes()),
                u16::from_ne_bytes(new.to_be_bytes()),
            );
            words[i] = new;
            words[5] = 0;
            let scratch = checksum(&words);
            let got = u16::from_be_bytes(updated.to_ne_bytes());
            assert!(
                got == scratch || (got == 0 && scratch == 0xffff) || (got == 0xffff && scratch == 0),
                "word {i}: {old:#06x} -> {new:#06x}: incremental {got:#06x}, from scratch {scratch:#06x}"
            );
            words[5] = got;
        }
    }

    /// The header checksum check over real headers of every IHL: right
    /// checksums pass, any single flipped bit fails, and a header cut by
    /// the frame end fails rather than reading past it.
    #[test]
    fn ipv4_header_ok_checks_every_header_word() {
        for ihl in 5..=15usize {
            let len = ihl * 4;
            // 14 bytes of Ethernet header, then the IPv4 header.
            let mut buf = vec![0u8; ETH_HLEN + len];
            let ip = &mut buf[ETH_HLEN..];
            ip[0] = 0x40 | ihl as u8;
            ip[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            ip[8] = 64;
            ip[9] = IPPROTO_UDP;
            for (i, b) in ip[12..].iter_mut().enumerate() {
                *b = (i as u8).wrapping_mul(37).wrapping_add(ihl as u8);
            }
            let words: Vec<u16> = ip
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            let c = checksum(&words);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            assert!(
                ipv4_header_ok(&Frame::over(&mut buf), ETH_HLEN, len),
                "IHL {ihl}"
            );
            for bit in 0..len * 8 {
                let mut bad = buf.clone();
                bad[ETH_HLEN + bit / 8] ^= 1 << (bit % 8);
                assert!(
                    !ipv4_header_ok(&Frame::over(&mut bad), ETH_HLEN, len),
                    "IHL {ihl}, bit {bit} flipped"
                );
            }
            let cut = buf.len() - 1;
            assert!(
                !ipv4_header_ok(&Frame::over(&mut buf[..cut]), ETH_HLEN, len),
                "IHL {ihl}, cut"
            );
        }
    }

    #[test]
    fn replace4_is_two_replace2() {
        let csum = 0xb1e6u16;
        let old = [10u8, 0, 0, 1];
        let new = [203u8, 0, 113, 10];
        let hi = |a: [u8; 4]| u16::from_ne_bytes([a[0], a[1]]);
        let lo = |a: [u8; 4]| u16::from_ne_bytes([a[2], a[3]]);
        assert_eq!(
            replace4(csum, hi(old), lo(old), new),
            replace2(replace2(csum, hi(old), hi(new)), lo(old), lo(new))
        );
    }
}
