//! Packet tests of the XDP flow executor (ebpf/xdp) through
//! BPF_PROG_TEST_RUN, as tables of {description, input frame, installed
//! flows, expected verdict, expected output frame, expected counters}.
//!
//! Frames are built from named addresses with the small builder below, which
//! computes every checksum from scratch: an expected output frame is the
//! frame the builder makes with the rewritten fields, so comparing bytes
//! also checks the kernel's incremental checksum updates. Every IPv4 output
//! is additionally checked by summing its checksums from scratch.
//!
//! Needs root (BPF); prints "skipped" and passes otherwise, except under CI
//! (`CI` set), where a test that cannot run fails. Each case loads its own
//! program, so its maps and counters start empty.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use vnet_common::{
    act, FlowActions, FlowKey, IfaceConfig, Reason, FRAG_FRAGMENT, FRAG_NONE, KEY_TAGGED,
};
use vnet_dataplane::kernel::{
    xdp_action::{XDP_DROP, XDP_REDIRECT},
    Kernel, KernelError, MAX_TEST_FRAME, XDP_STATS,
};

// ---------------------------------------------------------------------------
// Named addresses

type Mac = [u8; 6];
type Ip4 = [u8; 4];

const VM1_MAC: Mac = [0x02, 0, 0, 0, 0, 0x01];
const VM2_MAC: Mac = [0x02, 0, 0, 0, 0, 0x02];
/// The tenant router's port on the VMs' subnet.
const RTR_MAC: Mac = [0x02, 0, 0, 0, 0, 0xfe];
/// The router's uplink port and the provider gateway behind it.
const UPLINK_MAC: Mac = [0x02, 0, 0, 0, 1, 0xfe];
const EXT_GW_MAC: Mac = [0x02, 0, 0, 0, 1, 0x01];

const VM1_IP: Ip4 = [10, 0, 0, 1];
const VM2_IP: Ip4 = [10, 0, 0, 2];
const FLOATING_IP: Ip4 = [203, 0, 113, 10];
const REMOTE_IP: Ip4 = [198, 51, 100, 7];

/// Ingress ifindex of every test run: the kernel resolves it, and lo exists
/// in every network namespace.
const LO: u32 = 1;
/// Egress interface of the flows (never resolved by a test run).
const OUT_IF: u32 = 7;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;

// ---------------------------------------------------------------------------
// Packet builder (checksums from scratch)

mod pkt {
    use super::{Ip4, Mac};

    /// One's-complement sum of `data` as big-endian words, not folded.
    pub fn sum(data: &[u8]) -> u32 {
        data.chunks(2)
            .map(|c| u32::from(c[0]) << 8 | u32::from(*c.get(1).unwrap_or(&0)))
            .sum()
    }

    pub fn fold(mut s: u32) -> u16 {
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    /// The Internet checksum of `data` plus `extra` (a pseudo-header sum).
    pub fn checksum(data: &[u8], extra: u32) -> u16 {
        !fold(sum(data) + extra)
    }

    pub fn pseudo(src: Ip4, dst: Ip4, proto: u8, len: usize) -> u32 {
        sum(&src) + sum(&dst) + u32::from(proto) + len as u32
    }

    pub fn eth(dst: Mac, src: Mac, vlan: Option<u16>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src);
        if let Some(vid) = vlan {
            f.extend_from_slice(&0x8100u16.to_be_bytes());
            f.extend_from_slice(&vid.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[derive(Clone)]
    pub struct Ip {
        pub src: Ip4,
        pub dst: Ip4,
        pub proto: u8,
        pub ttl: u8,
        pub id: u16,
        /// Flags and fragment offset as on the wire (MF = 0x2000).
        pub frag: u16,
        /// Options, a multiple of 4 bytes.
        pub options: Vec<u8>,
    }

    impl Ip {
        pub fn new(src: Ip4, dst: Ip4, proto: u8) -> Ip {
            Ip {
                src,
                dst,
                proto,
                ttl: 64,
                id: 0x1c46,
                frag: 0x4000, // DF
                options: Vec::new(),
            }
        }
    }

    pub fn ipv4(ip: &Ip, payload: &[u8]) -> Vec<u8> {
        assert_eq!(ip.options.len() % 4, 0);
        let hlen = 20 + ip.options.len();
        let mut h = vec![0u8; hlen];
        h[0] = 0x40 | (hlen / 4) as u8;
        h[2..4].copy_from_slice(&((hlen + payload.len()) as u16).to_be_bytes());
        h[4..6].copy_from_slice(&ip.id.to_be_bytes());
        h[6..8].copy_from_slice(&ip.frag.to_be_bytes());
        h[8] = ip.ttl;
        h[9] = ip.proto;
        h[12..16].copy_from_slice(&ip.src);
        h[16..20].copy_from_slice(&ip.dst);
        h[20..].copy_from_slice(&ip.options);
        let c = checksum(&h, 0);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    pub fn tcp(src: Ip4, dst: Ip4, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&sport.to_be_bytes());
        t[2..4].copy_from_slice(&dport.to_be_bytes());
        t[4..8].copy_from_slice(&0x0102_0304u32.to_be_bytes());
        t[8..12].copy_from_slice(&0x0a0b_0c0du32.to_be_bytes());
        t[12] = 5 << 4;
        t[13] = 0x18; // PSH, ACK
        t[14..16].copy_from_slice(&64240u16.to_be_bytes());
        t.extend_from_slice(payload);
        let c = checksum(&t, pseudo(src, dst, 6, t.len()));
        t[16..18].copy_from_slice(&c.to_be_bytes());
        t
    }

    /// A UDP datagram; `with_checksum: false` leaves the checksum 0 ("none").
    pub fn udp(
        src: Ip4,
        dst: Ip4,
        sport: u16,
        dport: u16,
        payload: &[u8],
        with_checksum: bool,
    ) -> Vec<u8> {
        let mut u = vec![0u8; 8];
        u[0..2].copy_from_slice(&sport.to_be_bytes());
        u[2..4].copy_from_slice(&dport.to_be_bytes());
        u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(payload);
        if with_checksum {
            let mut c = checksum(&u, pseudo(src, dst, 17, u.len()));
            if c == 0 {
                c = 0xffff;
            }
            u[6..8].copy_from_slice(&c.to_be_bytes());
        }
        u
    }

    pub fn icmp_echo(kind: u8, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, 0, 0, 0];
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&seq.to_be_bytes());
        m.extend_from_slice(payload);
        let c = checksum(&m, 0);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        m
    }

    pub fn icmp(kind: u8, code: u8, rest: &[u8]) -> Vec<u8> {
        let mut m = vec![kind, code, 0, 0];
        m.extend_from_slice(rest);
        let c = checksum(&m, 0);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        m
    }

    pub fn arp(op: u16, sha: Mac, spa: Ip4, tha: Mac, tpa: Ip4) -> Vec<u8> {
        let mut a = vec![0, 1, 0x08, 0x00, 6, 4];
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&sha);
        a.extend_from_slice(&spa);
        a.extend_from_slice(&tha);
        a.extend_from_slice(&tpa);
        a
    }
}

use pkt::Ip;

const PAYLOAD: &[u8] = b"vnet says hello over the fast path";

fn tcp_frame(
    src_mac: Mac,
    dst_mac: Mac,
    vlan: Option<u16>,
    ip: &Ip,
    sport: u16,
    dport: u16,
) -> Vec<u8> {
    let seg = pkt::tcp(ip.src, ip.dst, sport, dport, PAYLOAD);
    pkt::eth(dst_mac, src_mac, vlan, ETH_P_IP, &pkt::ipv4(ip, &seg))
}

fn tcp_frame_with_payload(
    src_mac: Mac,
    dst_mac: Mac,
    ip: &Ip,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let seg = pkt::tcp(ip.src, ip.dst, sport, dport, payload);
    pkt::eth(dst_mac, src_mac, None, ETH_P_IP, &pkt::ipv4(ip, &seg))
}

fn udp_frame(ip: &Ip, sport: u16, dport: u16, with_checksum: bool) -> Vec<u8> {
    udp_frame_with(ip, sport, dport, PAYLOAD, with_checksum)
}

fn udp_frame_with(ip: &Ip, sport: u16, dport: u16, payload: &[u8], with_checksum: bool) -> Vec<u8> {
    let dgram = pkt::udp(ip.src, ip.dst, sport, dport, payload, with_checksum);
    pkt::eth(RTR_MAC, VM1_MAC, None, ETH_P_IP, &pkt::ipv4(ip, &dgram))
}

/// A payload whose UDP checksum, for this address/port pair, computes to 0
/// (so it must be sent as 0xffff): its last word cancels the rest.
fn payload_with_zero_checksum(src: Ip4, dst: Ip4, sport: u16, dport: u16) -> Vec<u8> {
    let mut payload = PAYLOAD.to_vec();
    if payload.len() % 2 == 1 {
        payload.push(0);
    }
    payload.extend_from_slice(&[0, 0]);
    let u = pkt::udp(src, dst, sport, dport, &payload, false);
    let folded = pkt::fold(pkt::sum(&u) + pkt::pseudo(src, dst, UDP, u.len()));
    let n = payload.len();
    payload[n - 2..].copy_from_slice(&(0xffff - folded).to_be_bytes());
    let u = pkt::udp(src, dst, sport, dport, &payload, true);
    assert_eq!(
        u[6..8],
        [0xff, 0xff],
        "the builder sends a computed 0 as 0xffff"
    );
    payload
}

fn icmp_echo_frame(ip: &Ip, kind: u8, id: u16) -> Vec<u8> {
    let msg = pkt::icmp_echo(kind, id, 1, PAYLOAD);
    pkt::eth(RTR_MAC, VM1_MAC, None, ETH_P_IP, &pkt::ipv4(ip, &msg))
}

/// `frame` (untagged IPv4) with its IPv4 header changed by `change` and the
/// header checksum computed again, so that only the change is wrong.
fn with_ip_header(frame: &[u8], change: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut f = frame.to_vec();
    let ip = &mut f[14..];
    change(ip);
    let hlen = (usize::from(ip[0] & 0x0f) * 4).clamp(20, ip.len());
    ip[10..12].copy_from_slice(&[0, 0]);
    let c = pkt::checksum(&ip[..hlen], 0);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f
}

fn set16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// VM1 → REMOTE, TCP 40000 → 80, through the router.
fn vm1_web() -> Ip {
    Ip::new(VM1_IP, REMOTE_IP, TCP)
}

// ---------------------------------------------------------------------------
// Flow keys, written by hand from the rule on `FlowKey` (not derived from
// the frame, so the tests check the kernel's parser).

/// The key of an untagged IPv4 packet with TOS 0.
fn ip_key(
    eth_src: Mac,
    eth_dst: Mac,
    src: Ip4,
    dst: Ip4,
    proto: u8,
    l4_src: u16,
    l4_dst: u16,
) -> FlowKey {
    FlowKey {
        ifindex: LO,
        eth_src,
        eth_dst,
        vlan_tci: 0,
        ethertype: ETH_P_IP,
        src,
        dst,
        proto,
        frag: FRAG_NONE,
        l4_src,
        l4_dst,
        tos: 0,
        flags: 0,
    }
}

/// `key` for the frame with an 802.1Q tag whose TCI is `tci`.
fn with_tci(key: FlowKey, tci: u16) -> FlowKey {
    FlowKey {
        vlan_tci: tci,
        flags: KEY_TAGGED,
        ..key
    }
}

fn vm1_web_key() -> FlowKey {
    ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, TCP, 40000, 80)
}

fn output(flags: u32) -> FlowActions {
    FlowActions {
        flags: flags | act::OUTPUT,
        out_ifindex: OUT_IF,
        ..FlowActions::default()
    }
}

/// The router's rewrite: MACs of the next hop, TTL - 1.
fn routed(flags: u32) -> FlowActions {
    FlowActions {
        eth_src: UPLINK_MAC,
        eth_dst: EXT_GW_MAC,
        ..output(flags | act::SET_ETH_SRC | act::SET_ETH_DST | act::DEC_TTL)
    }
}

// ---------------------------------------------------------------------------
// Checks

/// Verifies the IPv4 header checksum and, for a packet that carries its
/// transport header, the TCP/UDP/ICMP checksum, all summed from scratch.
fn check_ipv4_checksums(frame: &[u8]) -> Result<(), String> {
    let mut l3 = 14;
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ethertype == 0x8100 {
        ethertype = u16::from_be_bytes([frame[16], frame[17]]);
        l3 = 18;
    }
    if ethertype != ETH_P_IP || frame.len() < l3 + 20 {
        return Ok(());
    }
    let ip = &frame[l3..];
    let hlen = usize::from(ip[0] & 0x0f) * 4;
    if pkt::fold(pkt::sum(&ip[..hlen])) != 0xffff {
        return Err("IPv4 header checksum does not verify".into());
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x3fff != 0 {
        return Ok(()); // a fragment's L4 checksum covers the whole datagram
    }
    let l4 = &ip[hlen..total];
    let (src, dst) = (
        [ip[12], ip[13], ip[14], ip[15]],
        [ip[16], ip[17], ip[18], ip[19]],
    );
    let ok = match ip[9] {
        TCP => pkt::fold(pkt::sum(l4) + pkt::pseudo(src, dst, TCP, l4.len())) == 0xffff,
        UDP if l4[6..8] == [0, 0] => true,
        UDP => pkt::fold(pkt::sum(l4) + pkt::pseudo(src, dst, UDP, l4.len())) == 0xffff,
        ICMP => pkt::fold(pkt::sum(l4)) == 0xffff,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err(format!("protocol {} checksum does not verify", ip[9]))
    }
}

fn counters(list: &[(Reason, u64)]) -> [u64; XDP_STATS] {
    let mut c = [0; XDP_STATS];
    for &(r, n) in list {
        c[r as usize] += n;
    }
    c
}

fn named(c: &[u64; XDP_STATS]) -> String {
    c.iter()
        .enumerate()
        .filter(|(_, n)| **n != 0)
        .map(|(i, n)| format!("{}={n}", Reason::ALL[i].name()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn hex(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join("")
}

// ---------------------------------------------------------------------------
// The table

struct Case {
    name: &'static str,
    frame: Vec<u8>,
    flows: Vec<(FlowKey, FlowActions)>,
    /// IFACES entry for the ingress interface (misses go to its socket).
    iface: Option<IfaceConfig>,
    verdict: u32,
    /// `None`: the frame leaves exactly as it came.
    output: Option<Vec<u8>>,
    /// Every STATS counter after the run except xdp_rx (always 1).
    counts: &'static [(Reason, u64)],
}

impl Case {
    fn new(name: &'static str, frame: Vec<u8>) -> Case {
        Case {
            name,
            frame,
            flows: Vec::new(),
            iface: None,
            verdict: XDP_DROP,
            output: None,
            counts: &[],
        }
    }
    fn flow(mut self, key: FlowKey, actions: FlowActions) -> Case {
        self.flows.push((key, actions));
        self
    }
    fn iface(mut self, slot: u32) -> Case {
        self.iface = Some(IfaceConfig {
            xsk_slot: slot,
            queues: 1,
        });
        self
    }
    fn expect(
        mut self,
        verdict: u32,
        output: Option<Vec<u8>>,
        counts: &'static [(Reason, u64)],
    ) -> Case {
        self.verdict = verdict;
        self.output = output;
        self.counts = counts;
        self
    }
}

const HIT_REDIRECT: &[(Reason, u64)] = &[(Reason::XdpHitRedirect, 1)];
const HIT_DROP: &[(Reason, u64)] = &[(Reason::XdpHitDrop, 1)];
const MISS_NO_SOCKET: &[(Reason, u64)] = &[(Reason::XdpMiss, 1), (Reason::XdpNoSocket, 1)];
const UNPARSED: &[(Reason, u64)] = &[(Reason::XdpUnparsed, 1), (Reason::XdpNoSocket, 1)];
const ACTION_FAILED: &[(Reason, u64)] = &[(Reason::XdpActionFailed, 1), (Reason::XdpNoSocket, 1)];
const MALFORMED: &[(Reason, u64)] = &[(Reason::XdpMalformed, 1), (Reason::XdpNoSocket, 1)];

fn cases() -> Vec<Case> {
    let web = vm1_web();
    let web_frame = tcp_frame(VM1_MAC, RTR_MAC, None, &web, 40000, 80);
    // --- misses -----------------------------------------------------------
    let mut cases = vec![
        Case::new(
            "miss, interface without socket: dropped, never passed",
            web_frame.clone(),
        )
        .expect(XDP_DROP, None, MISS_NO_SOCKET),
        Case::new(
            "miss, IFACES entry but empty XSK slot: fallback drop",
            web_frame.clone(),
        )
        .iface(3)
        .expect(XDP_DROP, None, MISS_NO_SOCKET),
        Case::new(
            "miss on another flow's key (other source port)",
            web_frame.clone(),
        )
        .flow(
            ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, TCP, 40001, 80),
            output(0),
        )
        .expect(XDP_DROP, None, MISS_NO_SOCKET),
    ];

    // --- plain hits ---------------------------------------------------------
    cases.push(
        Case::new("hit OUTPUT: redirect, frame unchanged", web_frame.clone())
            .flow(vm1_web_key(), output(0))
            .expect(XDP_REDIRECT, None, HIT_REDIRECT),
    );
    cases.push(
        Case::new("hit DROP", web_frame.clone())
            .flow(
                vm1_web_key(),
                FlowActions {
                    flags: act::DROP,
                    ..FlowActions::default()
                },
            )
            .expect(XDP_DROP, None, HIT_DROP),
    );
    cases.push(
        Case::new(
            "hit DROP with rewrites: rewrites skipped, dropped",
            web_frame.clone(),
        )
        .flow(vm1_web_key(), routed(act::DROP))
        .expect(XDP_DROP, None, HIT_DROP),
    );
    cases.push(
        Case::new(
            "hit without verdict drops (empty action list)",
            web_frame.clone(),
        )
        .flow(
            vm1_web_key(),
            FlowActions {
                flags: act::SET_ETH_DST,
                ..FlowActions::default()
            },
        )
        .expect(XDP_DROP, None, HIT_DROP),
    );

    // --- TOS: DSCP and ECN are in the key ----------------------------------------
    let tos16 = with_ip_header(&web_frame, |ip| ip[1] = 16);
    cases.push(
        Case::new("TOS 16 does not ride the TOS 0 flow", tos16.clone())
            .flow(vm1_web_key(), output(0))
            .expect(XDP_DROP, None, MISS_NO_SOCKET),
    );
    cases.push(
        Case::new("TOS 16 hits its own flow", tos16)
            .flow(
                FlowKey {
                    tos: 16,
                    ..vm1_web_key()
                },
                output(0),
            )
            .expect(XDP_REDIRECT, None, HIT_REDIRECT),
    );
    cases.push(
        Case::new(
            "ECN CE (TOS 0x03) does not ride the TOS 0 flow",
            with_ip_header(&web_frame, |ip| ip[1] = 0x03),
        )
        .flow(vm1_web_key(), output(0))
        .expect(XDP_DROP, None, MISS_NO_SOCKET),
    );

    // --- Ethernet rewrites ----------------------------------------------------
    cases.push(
        Case::new("SET_ETH_SRC + SET_ETH_DST", web_frame.clone())
            .flow(
                vm1_web_key(),
                FlowActions {
                    eth_src: UPLINK_MAC,
                    eth_dst: EXT_GW_MAC,
                    ..output(act::SET_ETH_SRC | act::SET_ETH_DST)
                },
            )
            .expect(
                XDP_REDIRECT,
                Some(tcp_frame(UPLINK_MAC, EXT_GW_MAC, None, &web, 40000, 80)),
                HIT_REDIRECT,
            ),
    );
    cases.push(
        Case::new("SET_ETH_DST only", web_frame.clone())
            .flow(
                vm1_web_key(),
                FlowActions {
                    eth_dst: VM2_MAC,
                    ..output(act::SET_ETH_DST)
                },
            )
            .expect(
                XDP_REDIRECT,
                Some(tcp_frame(VM1_MAC, VM2_MAC, None, &web, 40000, 80)),
                HIT_REDIRECT,
            ),
    );

    // --- routing: TTL -----------------------------------------------------------
    let mut web_ttl = web.clone();
    web_ttl.ttl -= 1;
    cases.push(
        Case::new("DEC_TTL + next-hop MACs (a routed hop)", web_frame.clone())
            .flow(vm1_web_key(), routed(0))
            .expect(
                XDP_REDIRECT,
                Some(tcp_frame(UPLINK_MAC, EXT_GW_MAC, None, &web_ttl, 40000, 80)),
                HIT_REDIRECT,
            ),
    );
    let ttl1 = Ip {
        ttl: 1,
        ..vm1_web()
    };
    cases.push(
        Case::new(
            "DEC_TTL with TTL 1: to userspace untouched (ICMP time exceeded)",
            tcp_frame(VM1_MAC, RTR_MAC, None, &ttl1, 40000, 80),
        )
        .flow(vm1_web_key(), routed(0))
        .expect(XDP_DROP, None, ACTION_FAILED),
    );
    let ttl0 = Ip {
        ttl: 0,
        ..vm1_web()
    };
    cases.push(
        Case::new(
            "DEC_TTL with TTL 0: to userspace untouched",
            tcp_frame(VM1_MAC, RTR_MAC, None, &ttl0, 40000, 80),
        )
        .flow(vm1_web_key(), routed(0))
        .expect(XDP_DROP, None, ACTION_FAILED),
    );
    let mut web_ttl2 = web.clone();
    web_ttl2.ttl -= 2;
    cases.push(
        Case::new("ttl_dec 2: a flow through two routers", web_frame.clone())
            .flow(
                vm1_web_key(),
                FlowActions {
                    ttl_dec: 2,
                    ..routed(0)
                },
            )
            .expect(
                XDP_REDIRECT,
                Some(tcp_frame(
                    UPLINK_MAC, EXT_GW_MAC, None, &web_ttl2, 40000, 80,
                )),
                HIT_REDIRECT,
            ),
    );
    let ttl2 = Ip {
        ttl: 2,
        ..vm1_web()
    };
    cases.push(
        Case::new(
            "ttl_dec 2 with TTL 2: to userspace (the second router answers time exceeded)",
            tcp_frame(VM1_MAC, RTR_MAC, None, &ttl2, 40000, 80),
        )
        .flow(
            vm1_web_key(),
            FlowActions {
                ttl_dec: 2,
                ..routed(0)
            },
        )
        .expect(XDP_DROP, None, ACTION_FAILED),
    );
    let web_len = (web_frame.len() - 14) as u16;
    cases.push(
        Case::new("mtu equal to the packet: forwarded", web_frame.clone())
            .flow(
                vm1_web_key(),
                FlowActions {
                    mtu: web_len,
                    ..routed(0)
                },
            )
            .expect(
                XDP_REDIRECT,
                Some(tcp_frame(UPLINK_MAC, EXT_GW_MAC, None, &web_ttl, 40000, 80)),
                HIT_REDIRECT,
            ),
    );
    cases.push(
        Case::new(
            "packet longer than the flow's mtu: to userspace untouched",
            web_frame.clone(),
        )
        .flow(
            vm1_web_key(),
            FlowActions {
                mtu: web_len - 1,
                ..routed(0)
            },
        )
        .expect(XDP_DROP, None, ACTION_FAILED),
    );

    // --- NAT ----------------------------------------------------------------------
    let snat = Ip {
        src: FLOATING_IP,
        ttl: 63,
        ..vm1_web()
    };
    cases.push(
        Case::new(
            "SNAT: SET_IP_SRC on TCP (IPv4 + TCP checksums)",
            web_frame.clone(),
        )
        .flow(
            vm1_web_key(),
            FlowActions {
                ip_src: FLOATING_IP,
                ..routed(act::SET_IP_SRC)
            },
        )
        .expect(
            XDP_REDIRECT,
            Some(tcp_frame(UPLINK_MAC, EXT_GW_MAC, None, &snat, 40000, 80)),
            HIT_REDIRECT,
        ),
    );
    let snat_port = snat.clone();
    cases.push(
        Case::new(
            "SNAT with port: SET_IP_SRC + SET_L4_SRC on TCP",
            web_frame.clone(),
        )
        .flow(
            vm1_web_key(),
            FlowActions {
                ip_src: FLOATING_IP,
                l4_src: 61000,
                ..routed(act::SET_IP_SRC | act::SET_L4_SRC)
            },
        )
        .expect(
            XDP_REDIRECT,
            Some(tcp_frame(
                UPLINK_MAC, EXT_GW_MAC, None, &snat_port, 61000, 80,
            )),
            HIT_REDIRECT,
        ),
    );
    // Return traffic of a floating IP: REMOTE → FLOATING becomes → VM1.
    let inbound = Ip::new(REMOTE_IP, FLOATING_IP, TCP);
    let dnat = Ip {
        dst: VM1_IP,
        ttl: 63,
        ..inbound.clone()
    };
    cases.push(
        Case::new(
            "DNAT + port forward: SET_IP_DST + SET_L4_DST on TCP",
            tcp_frame(EXT_GW_MAC, UPLINK_MAC, None, &inbound, 55555, 8080),
        )
        .flow(
            ip_key(
                EXT_GW_MAC,
                UPLINK_MAC,
                REMOTE_IP,
                FLOATING_IP,
                TCP,
                55555,
                8080,
            ),
            FlowActions {
                eth_src: RTR_MAC,
                eth_dst: VM1_MAC,
                ip_dst: VM1_IP,
                l4_dst: 80,
                ..output(
                    act::SET_ETH_SRC
                        | act::SET_ETH_DST
                        | act::SET_IP_DST
                        | act::SET_L4_DST
                        | act::DEC_TTL,
                )
            },
        )
        .expect(
            XDP_REDIRECT,
            Some(tcp_frame(RTR_MAC, VM1_MAC, None, &dnat, 55555, 80)),
            HIT_REDIRECT,
        ),
    );
    cases.push(
        Case::new(
            "static NAT both ways in one flow: SET_IP_SRC + SET_IP_DST",
            web_frame.clone(),
        )
        .flow(
            vm1_web_key(),
            FlowActions {
                ip_src: FLOATING_IP,
                ip_dst: VM2_IP,
                ..output(act::SET_IP_SRC | act::SET_IP_DST)
            },
        )
        .expect(
            XDP_REDIRECT,
            Some(tcp_frame(
                VM1_MAC,
                RTR_MAC,
                None,
                &Ip {
                    src: FLOATING_IP,
                    dst: VM2_IP,
                    ..vm1_web()
                },
                40000,
                80,
            )),
            HIT_REDIRECT,
        ),
    );

    // UDP
    let dns = Ip::new(VM1_IP, REMOTE_IP, UDP);
    let dns_key = ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, UDP, 5353, 53);
    let dns_snat = Ip {
        src: FLOATING_IP,
        ..dns.clone()
    };
    cases.push(
        Case::new(
            "UDP SET_IP_SRC + SET_L4_SRC (UDP checksum)",
            udp_frame(&dns, 5353, 53, true),
        )
        .flow(
            dns_key,
            FlowActions {
                ip_src: FLOATING_IP,
                l4_src: 61001,
                ..output(act::SET_IP_SRC | act::SET_L4_SRC)
            },
        )
        .expect(
            XDP_REDIRECT,
            Some(udp_frame(&dns_snat, 61001, 53, true)),
            HIT_REDIRECT,
        ),
    );
    cases.push(
        Case::new(
            "UDP checksum 0 stays 0 through SET_IP_SRC + ports",
            udp_frame(&dns, 5353, 53, false),
        )
        .flow(
            dns_key,
            FlowActions {
                ip_src: FLOATING_IP,
                l4_src: 61001,
                l4_dst: 5300,
                ..output(act::SET_IP_SRC | act::SET_L4_SRC | act::SET_L4_DST)
            },
        )
        .expect(
            XDP_REDIRECT,
            Some(udp_frame(&dns_snat, 61001, 5300, false)),
            HIT_REDIRECT,
        ),
    );
    let zero = payload_with_zero_checksum(FLOATING_IP, REMOTE_IP, 61001, 53);
    cases.push(
        Case::new(
            "UDP checksum computing to 0 after SNAT is sent as 0xffff",
            udp_frame_with(&dns, 5353, 53, &zero, true),
        )
        .flow(
            dns_key,
            FlowActions {
                ip_src: FLOATING_IP,
                l4_src: 61001,
                ..output(act::SET_IP_SRC | act::SET_L4_SRC)
            },
        )
        .expect(
            XDP_REDIRECT,
            Some(udp_frame_with(&dns_snat, 61001, 53, &zero, true)),
            HIT_REDIRECT,
        ),
    );
    cases.push(
        Case::new("UDP SET_L4_DST only", udp_frame(&dns, 5353, 53, true))
            .flow(
                dns_key,
                FlowActions {
                    l4_dst: 5353,
                    ..output(act::SET_L4_DST)
                },
            )
            .expect(
                XDP_REDIRECT,
                Some(udp_frame(&dns, 5353, 5353, true)),
                HIT_REDIRECT,
            ),
    );

    // ICMP echo: the identifier is the "source port"
    let ping = Ip::new(VM1_IP, REMOTE_IP, ICMP);
    let ping_key = ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, ICMP, 0x4242, 8 << 8);
    let ping_snat = Ip {
        src: FLOATING_IP,
        ..ping.clone()
    };
    cases.push(
        Case::new(
            "ICMP echo request SNAT: SET_IP_SRC + echo id (ICMP checksum)",
            icmp_echo_frame(&ping, 8, 0x4242),
        )
        .flow(
            ping_key,
            FlowActions {
                ip_src: FLOATING_IP,
                l4_src: 0x0101,
                ..output(act::SET_IP_SRC | act::SET_L4_SRC)
            },
        )
        .expect(
            XDP_REDIRECT,
            Some(icmp_echo_frame(&ping_snat, 8, 0x0101)),
            HIT_REDIRECT,
        ),
    );
    cases.push(
        Case::new(
            "ICMP echo reply key: l4_src = id, l4_dst = 0 << 8",
            icmp_echo_frame(&ping, 0, 0x4242),
        )
        .flow(
            ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, ICMP, 0x4242, 0),
            output(0),
        )
        .expect(XDP_REDIRECT, None, HIT_REDIRECT),
    );
    let unreach = pkt::eth(
        RTR_MAC,
        VM1_MAC,
        None,
        ETH_P_IP,
        &pkt::ipv4(&ping, &pkt::icmp(3, 3, &[0; 28])),
    );
    cases.push(
        Case::new(
            "ICMP port unreachable key: no id, l4_dst = 3 << 8 | 3",
            unreach.clone(),
        )
        .flow(
            ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, ICMP, 0, 3 << 8 | 3),
            output(0),
        )
        .expect(XDP_REDIRECT, None, HIT_REDIRECT),
    );
    cases.push(
        Case::new(
            "SET_L4_SRC on a non-echo ICMP: cannot apply, to userspace",
            unreach,
        )
        .flow(
            ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, ICMP, 0, 3 << 8 | 3),
            output(act::SET_L4_SRC),
        )
        .expect(XDP_DROP, None, ACTION_FAILED),
    );

    // --- VLAN ---------------------------------------------------------------------
    cases.push(
        Case::new("PUSH_VLAN 100", web_frame.clone())
            .flow(
                vm1_web_key(),
                FlowActions {
                    vlan: 100,
                    ..output(act::PUSH_VLAN)
                },
            )
            .expect(
                XDP_REDIRECT,
                Some(tcp_frame(VM1_MAC, RTR_MAC, Some(100), &web, 40000, 80)),
                HIT_REDIRECT,
            ),
    );
    let tagged = tcp_frame(VM1_MAC, RTR_MAC, Some(100), &web, 40000, 80);
    let tagged_key = with_tci(vm1_web_key(), 100);
    cases.push(
        Case::new("POP_VLAN", tagged.clone())
            .flow(tagged_key, output(act::POP_VLAN))
            .expect(XDP_REDIRECT, Some(web_frame.clone()), HIT_REDIRECT),
    );
    cases.push(
        Case::new(
            "POP_VLAN + PUSH_VLAN: VID 100 → 200, routed and SNATed",
            tagged.clone(),
        )
        .flow(
            tagged_key,
            FlowActions {
                vlan: 200,
                ip_src: FLOATING_IP,
                ..routed(act::POP_VLAN | act::PUSH_VLAN | act::SET_IP_SRC)
            },
        )
        .expect(
            XDP_REDIRECT,
            Some(tcp_frame(
                UPLINK_MAC,
                EXT_GW_MAC,
                Some(200),
                &snat,
                40000,
                80,
            )),
            HIT_REDIRECT,
        ),
    );
    cases.push(
        Case::new(
            "POP_VLAN + routed + SNAT: rewrites after the head moved",
            tagged.clone(),
        )
        .flow(
            tagged_key,
            FlowActions {
                ip_src: FLOATING_IP,
                ..routed(act::POP_VLAN | act::SET_IP_SRC)
            },
        )
        .expect(
            XDP_REDIRECT,
            Some(tcp_frame(UPLINK_MAC, EXT_GW_MAC, None, &snat, 40000, 80)),
            HIT_REDIRECT,
        ),
    );
    cases.push(
        Case::new("PUSH_VLAN + routed + SNAT", web_frame.clone())
            .flow(
                vm1_web_key(),
                FlowActions {
                    vlan: 300,
                    ip_src: FLOATING_IP,
                    ..routed(act::PUSH_VLAN | act::SET_IP_SRC)
                },
            )
            .expect(
                XDP_REDIRECT,
                Some(tcp_frame(
                    UPLINK_MAC,
                    EXT_GW_MAC,
                    Some(300),
                    &snat,
                    40000,
                    80,
                )),
                HIT_REDIRECT,
            ),
    );
    cases.push(
        Case::new(
            "POP_VLAN on an untagged frame: to userspace",
            web_frame.clone(),
        )
        .flow(vm1_web_key(), output(act::POP_VLAN))
        .expect(XDP_DROP, None, ACTION_FAILED),
    );
    cases.push(
        Case::new(
            "PUSH_VLAN on a tagged frame (no QinQ): to userspace",
            tagged.clone(),
        )
        .flow(
            tagged_key,
            FlowActions {
                vlan: 5,
                ..output(act::PUSH_VLAN)
            },
        )
        .expect(XDP_DROP, None, ACTION_FAILED),
    );
    // A priority tag (VID 0) is a tag: its key is not the untagged one.
    let priority_tagged = tcp_frame(VM1_MAC, RTR_MAC, Some(0), &web, 40000, 80);
    cases.push(
        Case::new(
            "priority-tagged frame (VID 0): tagged key, POP_VLAN works",
            priority_tagged.clone(),
        )
        .flow(with_tci(vm1_web_key(), 0), output(act::POP_VLAN))
        .expect(XDP_REDIRECT, Some(web_frame.clone()), HIT_REDIRECT),
    );
    cases.push(
        Case::new(
            "priority-tagged frame (VID 0) misses the untagged key's drop flow",
            priority_tagged,
        )
        .flow(
            vm1_web_key(),
            FlowActions {
                flags: act::DROP,
                ..FlowActions::default()
            },
        )
        .expect(XDP_DROP, None, MISS_NO_SOCKET),
    );
    cases.push(
        Case::new(
            "untagged frame misses the priority-tagged key's drop flow",
            web_frame.clone(),
        )
        .flow(
            with_tci(vm1_web_key(), 0),
            FlowActions {
                flags: act::DROP,
                ..FlowActions::default()
            },
        )
        .expect(XDP_DROP, None, MISS_NO_SOCKET),
    );
    // PCP 5 on VID 100: the whole TCI is the key's.
    cases.push(
        Case::new(
            "VID 100 with PCP 5 misses the PCP 0 flow",
            tcp_frame(VM1_MAC, RTR_MAC, Some(5 << 13 | 100), &web, 40000, 80),
        )
        .flow(tagged_key, output(act::POP_VLAN))
        .expect(XDP_DROP, None, MISS_NO_SOCKET),
    );

    // --- IPv4 options -----------------------------------------------------------------
    // Record route (7), 11 bytes, + NOP padding... 12 bytes: IHL 8.
    let mut opts = vec![7, 11, 4];
    opts.extend_from_slice(&[0; 8]);
    opts.push(1);
    let with_opts = Ip {
        options: opts.clone(),
        ..vm1_web()
    };
    let with_opts_nat = Ip {
        options: opts,
        src: FLOATING_IP,
        ttl: 63,
        ..vm1_web()
    };
    cases.push(
        Case::new(
            "IPv4 with options (IHL 8): routed, SNAT + port",
            tcp_frame(VM1_MAC, RTR_MAC, None, &with_opts, 40000, 80),
        )
        .flow(
            vm1_web_key(),
            FlowActions {
                ip_src: FLOATING_IP,
                l4_src: 61000,
                ..routed(act::SET_IP_SRC | act::SET_L4_SRC)
            },
        )
        .expect(
            XDP_REDIRECT,
            Some(tcp_frame(
                UPLINK_MAC,
                EXT_GW_MAC,
                None,
                &with_opts_nat,
                61000,
                80,
            )),
            HIT_REDIRECT,
        ),
    );
    let max_opts = Ip {
        options: vec![1; 40],
        ..vm1_web()
    };
    cases.push(
        Case::new(
            "IPv4 with 40 bytes of options (IHL 15)",
            tcp_frame(VM1_MAC, RTR_MAC, None, &max_opts, 40000, 80),
        )
        .flow(vm1_web_key(), output(0))
        .expect(XDP_REDIRECT, None, HIT_REDIRECT),
    );

    // --- other protocols ------------------------------------------------------------
    let arp = pkt::eth(
        [0xff; 6],
        VM1_MAC,
        None,
        ETH_P_ARP,
        &pkt::arp(1, VM1_MAC, VM1_IP, [0; 6], VM2_IP),
    );
    cases.push(
        Case::new("ARP request key: sender/target IP, opcode", arp.clone())
            .flow(
                FlowKey {
                    ifindex: LO,
                    eth_src: VM1_MAC,
                    eth_dst: [0xff; 6],
                    ethertype: ETH_P_ARP,
                    src: VM1_IP,
                    dst: VM2_IP,
                    l4_dst: 1,
                    ..FlowKey::default()
                },
                output(0),
            )
            .expect(XDP_REDIRECT, None, HIT_REDIRECT),
    );
    cases.push(Case::new("ARP without a flow: miss", arp).expect(XDP_DROP, None, MISS_NO_SOCKET));
    // The whole 16-bit opcode: 0x0101 is not request 0x0001.
    let arp_key = |op: u16| FlowKey {
        ifindex: LO,
        eth_src: VM1_MAC,
        eth_dst: [0xff; 6],
        ethertype: ETH_P_ARP,
        src: VM1_IP,
        dst: VM2_IP,
        l4_dst: op,
        ..FlowKey::default()
    };
    let arp_0101 = pkt::eth(
        [0xff; 6],
        VM1_MAC,
        None,
        ETH_P_ARP,
        &pkt::arp(0x0101, VM1_MAC, VM1_IP, [0; 6], VM2_IP),
    );
    cases.push(
        Case::new(
            "ARP opcode 0x0101 misses the request's flow",
            arp_0101.clone(),
        )
        .flow(arp_key(1), output(0))
        .expect(XDP_DROP, None, MISS_NO_SOCKET),
    );
    cases.push(
        Case::new("ARP opcode 0x0101 has its own key", arp_0101)
            .flow(arp_key(0x0101), output(0))
            .expect(XDP_REDIRECT, None, HIT_REDIRECT),
    );
    let ipv6 = pkt::eth(VM2_MAC, VM1_MAC, None, ETH_P_IPV6, &[0x60; 40]);
    cases.push(
        Case::new("IPv6 (not parsed further): L2-only key", ipv6)
            .flow(
                FlowKey {
                    ifindex: LO,
                    eth_src: VM1_MAC,
                    eth_dst: VM2_MAC,
                    ethertype: ETH_P_IPV6,
                    ..FlowKey::default()
                },
                output(0),
            )
            .expect(XDP_REDIRECT, None, HIT_REDIRECT),
    );
    let gre = pkt::eth(
        RTR_MAC,
        VM1_MAC,
        None,
        ETH_P_IP,
        &pkt::ipv4(&Ip::new(VM1_IP, REMOTE_IP, 47), &[0; 24]),
    );
    cases.push(
        Case::new("IPv4 GRE: no ports in the key", gre)
            .flow(
                ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, 47, 0, 0),
                output(0),
            )
            .expect(XDP_REDIRECT, None, HIT_REDIRECT),
    );

    // --- frames the parser does not take: to userspace, no crash -------------------------
    let mut unparsed = |name: &'static str, frame: Vec<u8>| {
        cases.push(
            Case::new(name, frame)
                .flow(vm1_web_key(), output(0))
                .expect(XDP_DROP, None, UNPARSED),
        );
    };
    unparsed(
        "Ethernet header only, IPv4 EtherType",
        web_frame[..14].to_vec(),
    );
    unparsed("IPv4 header cut at 10 bytes", web_frame[..24].to_vec());
    unparsed(
        "ICMP header of 6 bytes (total length 26)",
        with_ip_header(&icmp_echo_frame(&ping, 8, 1)[..40], |ip| set16(ip, 2, 26)),
    );
    unparsed("VLAN tag cut", tagged[..16].to_vec());
    let mut bad = web_frame.clone();
    bad[14] = 0x65; // version 6
    unparsed("version 6 under EtherType IPv4", bad);
    unparsed(
        "QinQ (802.1ad outer tag)",
        pkt::eth(
            RTR_MAC,
            VM1_MAC,
            None,
            0x88a8,
            &[
                0x00, 0x64, 0x81, 0x00, 0x00, 0x0a, 0x08, 0x00, 0x45, 0, 0, 20,
            ],
        ),
    );
    unparsed(
        "two 802.1Q tags",
        pkt::eth(
            RTR_MAC,
            VM1_MAC,
            Some(100),
            0x8100,
            &[0x00, 0x0a, 0x08, 0x00, 0x45, 0, 0, 20],
        ),
    );
    let mut bad_arp = pkt::arp(1, VM1_MAC, VM1_IP, [0; 6], VM2_IP);
    bad_arp[4] = 8; // hlen 8
    unparsed(
        "ARP with hardware length 8",
        pkt::eth([0xff; 6], VM1_MAC, None, ETH_P_ARP, &bad_arp),
    );
    unparsed(
        "ARP cut at 20 bytes",
        pkt::eth(
            [0xff; 6],
            VM1_MAC,
            None,
            ETH_P_ARP,
            &pkt::arp(1, VM1_MAC, VM1_IP, [0; 6], VM2_IP)[..20],
        ),
    );

    // --- malformed IPv4: never keyed, so the flow installed for the good
    // packet (same addresses, ports, TOS) is never applied to it ----------------------------
    let mut malformed = |name: &'static str, key: FlowKey, frame: Vec<u8>| {
        cases.push(
            Case::new(name, frame)
                .flow(key, output(0))
                .expect(XDP_DROP, None, MALFORMED),
        );
    };
    let web_ip_len = (web_frame.len() - 14) as u16;
    let mut bad = web_frame.clone();
    bad[14 + 10] ^= 0x40;
    malformed("bad IPv4 header checksum", vm1_web_key(), bad);
    let mut bad = web_frame.clone();
    bad[14] = 0x44; // IHL 4
    malformed("IHL 4", vm1_web_key(), bad);
    let mut bad = web_frame.clone();
    bad[16..18].copy_from_slice(&10u16.to_be_bytes());
    malformed("total length shorter than the header", vm1_web_key(), bad);
    malformed(
        "total length one byte beyond the frame",
        vm1_web_key(),
        with_ip_header(&web_frame, |ip| set16(ip, 2, web_ip_len + 1)),
    );
    malformed(
        "total length 65535",
        vm1_web_key(),
        with_ip_header(&web_frame, |ip| set16(ip, 2, 0xffff)),
    );
    let mut bad = web_frame.clone();
    bad[14] = 0x4f; // IHL 15 = 60 bytes, frame has them but they are TCP
    bad.truncate(14 + 50);
    malformed("IHL 15 beyond the frame", vm1_web_key(), bad);
    malformed(
        "IPv4 options cut (IHL 8, 24 bytes present)",
        vm1_web_key(),
        tcp_frame(VM1_MAC, RTR_MAC, None, &with_opts, 40000, 80)[..38].to_vec(),
    );
    malformed(
        "TCP header cut at 2 bytes (total length beyond the frame)",
        vm1_web_key(),
        web_frame[..36].to_vec(),
    );
    let tcp_at = 14 + 20;
    for (name, doff) in [
        ("TCP data offset 0", 0u8),
        ("TCP data offset 4", 4),
        ("TCP data offset 15, beyond the 54-byte segment", 15),
    ] {
        let mut bad = web_frame.clone();
        bad[tcp_at + 12] = doff << 4;
        malformed(name, vm1_web_key(), bad);
    }
    malformed(
        "TCP header of 8 bytes (total length 28)",
        vm1_web_key(),
        with_ip_header(&web_frame[..tcp_at + 8], |ip| set16(ip, 2, 28)),
    );
    let dns_frame = udp_frame(&dns, 5353, 53, true);
    let udp_at = 14 + 20;
    let udp_len = (dns_frame.len() - udp_at) as u16;
    for (name, len) in [
        ("UDP length 0", 0u16),
        ("UDP length 7", 7),
        ("UDP length 65535", 0xffff),
        ("UDP length one byte beyond the packet", udp_len + 1),
    ] {
        let mut bad = dns_frame.clone();
        set16(&mut bad, udp_at + 4, len);
        malformed(name, dns_key, bad);
    }
    malformed(
        "UDP header of 7 bytes (total length 27)",
        dns_key,
        with_ip_header(&dns_frame[..udp_at + 7], |ip| set16(ip, 2, 27)),
    );
    let mut padded = with_ip_header(&dns_frame, |ip| set16(ip, 2, 20 + 6));
    padded.truncate(udp_at + 6);
    padded.resize(udp_at + 40, 0);
    malformed(
        "UDP header in the Ethernet padding, not in the packet",
        dns_key,
        padded,
    );

    // --- lengths that are legal ------------------------------------------------------------
    let mut padded = web_frame.clone();
    padded.extend_from_slice(&[0xee; 20]);
    cases.push(
        Case::new(
            "Ethernet padding after the packet: keyed, flow applies",
            padded,
        )
        .flow(vm1_web_key(), output(0))
        .expect(XDP_REDIRECT, None, HIT_REDIRECT),
    );
    let mut short_udp = dns_frame.clone();
    set16(&mut short_udp, udp_at + 4, udp_len - 2);
    set16(&mut short_udp, udp_at + 6, 0); // no checksum: it covered the 2 bytes
    cases.push(
        Case::new(
            "UDP length under the IP payload (trailing bytes, as Linux trims)",
            short_udp,
        )
        .flow(dns_key, output(0))
        .expect(XDP_REDIRECT, None, HIT_REDIRECT),
    );
    cases
}

/// True (after saying why) when these tests cannot run here: not root, or
/// the crate was built with AYA_BUILD_SKIP=1 and embeds no XDP object.
/// Under CI a test that cannot run fails instead: a skip there would hide
/// the kernel path entirely.
fn needs_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return skip("needs root for BPF_PROG_TEST_RUN");
    }
    if let Err(KernelError::NotBuilt) = Kernel::load(1) {
        return skip("built with AYA_BUILD_SKIP=1, no XDP program to test");
    }
    false
}

/// Says why a test does not run, and fails it under CI.
fn skip(why: &str) -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    assert!(!ci, "CI is set and this test cannot run: {why}");
    eprintln!("skipped: {why}");
    true
}

fn load(max_flows: u32) -> Kernel {
    match Kernel::load(max_flows) {
        Ok(k) => k,
        Err(e) => panic!("{e}"),
    }
}

fn run_case(c: &Case) -> Result<(), String> {
    let mut k = Kernel::load(64).map_err(|e| e.to_string())?;
    for (key, a) in &c.flows {
        k.insert_flow(key, a).map_err(|e| e.to_string())?;
    }
    if let Some(cfg) = c.iface {
        k.set_iface(LO, cfg).map_err(|e| e.to_string())?;
    }
    let r = k.test_run(&c.frame, LO, 1).map_err(|e| e.to_string())?;
    let mut errors = Vec::new();
    if r.action != c.verdict {
        errors.push(format!("verdict {} (expected {})", r.action, c.verdict));
    }
    let want = c.output.as_ref().unwrap_or(&c.frame);
    if &r.data != want {
        errors.push(format!(
            "output\n       got {}\n  expected {}",
            hex(&r.data),
            hex(want)
        ));
    }
    if c.verdict == XDP_REDIRECT {
        if let Err(e) = check_ipv4_checksums(&r.data) {
            errors.push(e);
        }
    }
    let mut want_counts = counters(c.counts);
    want_counts[Reason::XdpRx as usize] += 1;
    let got = k.stats().map_err(|e| e.to_string())?;
    if got != want_counts {
        errors.push(format!(
            "counters {} (expected {})",
            named(&got),
            named(&want_counts)
        ));
    }
    // A hit (redirect or drop) accounts the packet on its flow; nothing else does.
    let hits: u64 = c
        .flows
        .iter()
        .map(|(key, _)| k.flow(key).ok().flatten().map_or(0, |v| v.packets))
        .sum();
    let want_hits =
        (c.verdict == XDP_REDIRECT || c.counts == HIT_DROP) as u64 * u64::from(!c.flows.is_empty());
    if hits != want_hits {
        errors.push(format!("flow packet counter {hits} (expected {want_hits})"));
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n    "))
    }
}

#[test]
fn packet_table() {
    if needs_root() {
        return;
    }
    let cases = cases();
    let mut failed = Vec::new();
    for c in &cases {
        match run_case(c) {
            Ok(()) => println!("ok    {}", c.name),
            Err(e) => {
                println!("FAIL  {}\n    {e}", c.name);
                failed.push(c.name);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed: {failed:#?}",
        failed.len(),
        cases.len()
    );
}

/// An (unbound) AF_XDP socket in XSKMAP slot `slot`, declared as `LO`'s:
/// misses on `LO` then redirect successfully. Keep it alive while testing.
fn xsk_on_lo(k: &mut Kernel, slot: u32) -> OwnedFd {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    assert!(
        fd >= 0,
        "socket(AF_XDP): {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    k.set_iface(
        LO,
        IfaceConfig {
            xsk_slot: slot,
            queues: 1,
        },
    )
    .unwrap();
    k.set_xsk(slot, sock.as_raw_fd()).unwrap();
    sock
}

/// A miss goes to the interface's AF_XDP socket: an (unbound) AF_XDP socket
/// in the XSKMAP slot makes the redirect succeed.
#[test]
fn miss_redirects_to_the_xsk_slot() {
    if needs_root() {
        return;
    }
    let mut k = load(16);
    let _sock = xsk_on_lo(&mut k, 5);
    let frame = tcp_frame(VM1_MAC, RTR_MAC, None, &vm1_web(), 40000, 80);
    let r = k.test_run(&frame, LO, 1).unwrap();
    assert_eq!(r.action, XDP_REDIRECT, "miss with a socket redirects");
    assert_eq!(r.data, frame);
    // The frame the parser does not take goes the same way.
    let r = k.test_run(&frame[..20], LO, 1).unwrap();
    assert_eq!(r.action, XDP_REDIRECT);
    let s = k.stats().unwrap();
    assert_eq!(
        s,
        counters(&[
            (Reason::XdpRx, 2),
            (Reason::XdpMiss, 1),
            (Reason::XdpUnparsed, 1)
        ]),
        "{}",
        named(&s)
    );

    // Emptying the slot falls back to XDP_DROP.
    k.clear_xsk(5).unwrap();
    k.clear_xsk(5).unwrap(); // already empty: fine
    assert_eq!(k.test_run(&frame, LO, 1).unwrap().action, XDP_DROP);
    k.remove_iface(LO).unwrap();
    k.remove_iface(LO).unwrap();
    assert_eq!(k.test_run(&frame, LO, 1).unwrap().action, XDP_DROP);
    assert_eq!(k.stats().unwrap()[Reason::XdpNoSocket as usize], 2);
}

/// A datagram in two fragments: the first records its ports, the later one
/// takes them and hits the same flow; L4 rewrites apply to the first only.
#[test]
fn fragments_share_the_datagram_flow() {
    if needs_root() {
        return;
    }
    let mut k = load(16);
    let payload = [0x5a; 40];
    let dgram = pkt::udp(VM1_IP, REMOTE_IP, 5353, 53, &payload, true); // 48 bytes
    let ip = |frag: u16, dst: Ip4| Ip {
        id: 0xbeef,
        frag,
        dst,
        ..Ip::new(VM1_IP, REMOTE_IP, UDP)
    };
    let first = |d: &[u8], dst| {
        pkt::eth(
            RTR_MAC,
            VM1_MAC,
            None,
            ETH_P_IP,
            &pkt::ipv4(&ip(0x2000, dst), &d[..24]),
        )
    };
    let later = |d: &[u8], dst| {
        pkt::eth(
            RTR_MAC,
            VM1_MAC,
            None,
            ETH_P_IP,
            &pkt::ipv4(&ip(3, dst), &d[24..]),
        )
    };

    // A later fragment before any first one: unknown ports, to userspace.
    let r = k.test_run(&later(&dgram, REMOTE_IP), LO, 1).unwrap();
    assert_eq!(r.action, XDP_DROP);
    assert_eq!(k.stats().unwrap()[Reason::XdpFragUnknown as usize], 1);

    let key = FlowKey {
        frag: FRAG_FRAGMENT,
        ..ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, UDP, 5353, 53)
    };
    k.insert_flow(
        &key,
        &FlowActions {
            ip_dst: VM2_IP,
            l4_dst: 5300,
            ..output(act::SET_IP_DST | act::SET_L4_DST)
        },
    )
    .unwrap();
    let nat = pkt::udp(VM1_IP, VM2_IP, 5353, 5300, &payload, true);

    let r = k.test_run(&first(&dgram, REMOTE_IP), LO, 1).unwrap();
    assert_eq!(r.action, XDP_REDIRECT, "first fragment hits");
    assert_eq!(
        hex(&r.data),
        hex(&first(&nat, VM2_IP)),
        "first fragment: IP, port and UDP checksum rewritten"
    );
    let r = k.test_run(&later(&dgram, REMOTE_IP), LO, 1).unwrap();
    assert_eq!(r.action, XDP_REDIRECT, "later fragment hits the same flow");
    assert_eq!(
        hex(&r.data),
        hex(&later(&nat, VM2_IP)),
        "later fragment: IP rewritten, payload untouched"
    );
    check_ipv4_checksums(&r.data).unwrap();
    // The reassembled datagram's UDP checksum verifies.
    let mut whole = first(&nat, VM2_IP)[34..].to_vec();
    whole.extend_from_slice(&r.data[34..]);
    assert_eq!(
        pkt::fold(pkt::sum(&whole) + pkt::pseudo(VM1_IP, VM2_IP, UDP, whole.len())),
        0xffff
    );

    let s = k.stats().unwrap();
    assert_eq!(
        s,
        counters(&[
            (Reason::XdpRx, 3),
            (Reason::XdpFragUnknown, 1),
            (Reason::XdpNoSocket, 1),
            (Reason::XdpHitRedirect, 2)
        ]),
        "{}",
        named(&s)
    );
    assert_eq!(k.flow(&key).unwrap().unwrap().packets, 2);
}

/// The kernel's key is userspace's `flow_key`, field for field: every frame
/// of the table, run through the program with the flows userspace would
/// install for all of them, hits exactly the flow of its own key. The
/// table has the fields the key rule is about: tagged VID 0 next to
/// untagged, PCP and DEI, TOS values, the whole ARP opcode, fragments.
#[test]
fn kernel_key_is_userspace_flow_key() {
    if needs_root() {
        return;
    }
    use vnet_dataplane::packet;
    let web = vm1_web();
    let tcp = |vlan| tcp_frame(VM1_MAC, RTR_MAC, vlan, &web, 40000, 80);
    let untagged = tcp(None);
    let tos = |t: u8| with_ip_header(&untagged, |ip| ip[1] = t);
    let arp = |op| {
        pkt::eth(
            [0xff; 6],
            VM1_MAC,
            None,
            ETH_P_ARP,
            &pkt::arp(op, VM1_MAC, VM1_IP, [0; 6], VM2_IP),
        )
    };
    let ping = Ip::new(VM1_IP, REMOTE_IP, ICMP);
    let mut small_udp = pkt::eth(
        RTR_MAC,
        VM1_MAC,
        None,
        ETH_P_IP,
        &pkt::ipv4(
            &Ip::new(VM1_IP, REMOTE_IP, UDP),
            &pkt::udp(VM1_IP, REMOTE_IP, 7, 9, b"", true),
        ),
    );
    small_udp.resize(60, 0); // Ethernet padding
    let opts = Ip {
        options: vec![1; 8],
        ..vm1_web()
    };
    let dgram = pkt::udp(VM1_IP, REMOTE_IP, 5353, 53, &[0x5a; 40], true);
    let frag = |f: u16, d: &[u8]| {
        let ip = Ip {
            id: 0x7777,
            frag: f,
            ..Ip::new(VM1_IP, REMOTE_IP, UDP)
        };
        pkt::eth(RTR_MAC, VM1_MAC, None, ETH_P_IP, &pkt::ipv4(&ip, d))
    };
    let table: Vec<(&str, Vec<u8>)> = vec![
        ("TCP untagged", untagged.clone()),
        ("TCP priority-tagged (VID 0)", tcp(Some(0))),
        ("TCP VID 0 with PCP 6", tcp(Some(6 << 13))),
        ("TCP VID 100", tcp(Some(100))),
        (
            "TCP VID 100, PCP 3, DEI",
            tcp(Some(3 << 13 | 1 << 12 | 100)),
        ),
        ("TCP TOS 16", tos(16)),
        ("TCP TOS 0xb8 (EF)", tos(0xb8)),
        ("TCP TOS 0x01 (ECT(1))", tos(0x01)),
        ("TCP TOS 0xff", tos(0xff)),
        (
            "TCP with IPv4 options",
            tcp_frame(VM1_MAC, RTR_MAC, None, &opts, 40000, 81),
        ),
        ("UDP, padded to 60 bytes", small_udp),
        ("ICMP echo request", icmp_echo_frame(&ping, 8, 0x4242)),
        ("ICMP echo reply", icmp_echo_frame(&ping, 0, 0x4242)),
        (
            "ICMP port unreachable",
            pkt::eth(
                RTR_MAC,
                VM1_MAC,
                None,
                ETH_P_IP,
                &pkt::ipv4(&ping, &pkt::icmp(3, 3, &[0; 28])),
            ),
        ),
        ("ARP request", arp(1)),
        ("ARP reply", arp(2)),
        ("ARP opcode 0x0101", arp(0x0101)),
        ("ARP opcode 0x0201", arp(0x0201)),
        (
            "IPv6",
            pkt::eth(VM2_MAC, VM1_MAC, None, ETH_P_IPV6, &[0x60; 40]),
        ),
        (
            "IPv4 GRE",
            pkt::eth(
                RTR_MAC,
                VM1_MAC,
                None,
                ETH_P_IP,
                &pkt::ipv4(&Ip::new(VM1_IP, REMOTE_IP, 47), &[0; 24]),
            ),
        ),
        ("UDP first fragment", frag(0x2000, &dgram[..24])),
    ];
    let keys: Vec<FlowKey> = table
        .iter()
        .map(|(name, f)| {
            packet::parse(f)
                .unwrap_or_else(|e| panic!("{name}: userspace does not parse it: {e}"))
                .flow_key(LO)
                .unwrap_or_else(|| panic!("{name}: no userspace key"))
        })
        .collect();
    for (i, a) in keys.iter().enumerate() {
        for (j, b) in keys.iter().enumerate().skip(i + 1) {
            assert_ne!(a, b, "{} and {} share a key", table[i].0, table[j].0);
        }
    }
    let mut k = load(64);
    for key in &keys {
        k.insert_flow(key, &output(0)).unwrap();
    }
    let hits = |k: &Kernel| -> Vec<u64> {
        keys.iter()
            .map(|key| k.flow(key).unwrap().map_or(0, |v| v.packets))
            .collect()
    };
    let mut want = vec![0u64; keys.len()];
    for (i, (name, frame)) in table.iter().enumerate() {
        let r = k.test_run(frame, LO, 1).unwrap();
        assert_eq!(r.action, XDP_REDIRECT, "{name}: no flow hit");
        want[i] += 1;
        assert_eq!(hits(&k), want, "{name}: hit another key's flow");
    }
    // A later fragment has no userspace key: the kernel gives it the first
    // fragment's, whose flow it hits.
    let first = keys.len() - 1;
    let r = k.test_run(&frag(3, &dgram[24..]), LO, 1).unwrap();
    assert_eq!(r.action, XDP_REDIRECT, "later fragment");
    want[first] += 1;
    assert_eq!(
        hits(&k),
        want,
        "later fragment: not the first fragment's flow"
    );
    assert_eq!(
        packet::parse(&frag(3, &dgram[24..])).unwrap().flow_key(LO),
        None
    );
}

/// A malformed IPv4 packet whose key fields equal an installed flow's goes
/// to the interface's AF_XDP socket, like a miss, and the flow is never
/// applied to it (its counters stay 0).
#[test]
fn malformed_ipv4_goes_to_the_socket_not_to_the_flow() {
    if needs_root() {
        return;
    }
    let mut k = load(16);
    let _sock = xsk_on_lo(&mut k, 2);
    let web = tcp_frame(VM1_MAC, RTR_MAC, None, &vm1_web(), 40000, 80);
    let dns = udp_frame(&Ip::new(VM1_IP, REMOTE_IP, UDP), 5353, 53, true);
    let web_key = vm1_web_key();
    let dns_key = ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, UDP, 5353, 53);
    k.insert_flow(&web_key, &output(0)).unwrap();
    k.insert_flow(&dns_key, &output(0)).unwrap();

    let mut bad_csum = web.clone();
    bad_csum[14 + 11] ^= 0x01;
    let long = with_ip_header(&web, |ip| set16(ip, 2, (web.len() - 14 + 8) as u16));
    let mut doff0 = web.clone();
    doff0[14 + 20 + 12] = 0;
    let mut ulen0 = dns.clone();
    set16(&mut ulen0, 14 + 20 + 4, 0);
    let bad = [
        ("bad header checksum", bad_csum),
        ("total length beyond the frame", long),
        ("TCP data offset 0", doff0),
        ("UDP length 0", ulen0),
    ];
    for (name, frame) in &bad {
        let r = k.test_run(frame, LO, 1).unwrap();
        assert_eq!(r.action, XDP_REDIRECT, "{name}: not sent to the socket");
        assert_eq!(&r.data, frame, "{name}: changed on its way to userspace");
    }
    assert_eq!(k.flow(&web_key).unwrap().unwrap().packets, 0);
    assert_eq!(k.flow(&dns_key).unwrap().unwrap().packets, 0);
    // The good packets do hit: the flows are the right ones.
    for frame in [&web, &dns] {
        assert_eq!(k.test_run(frame, LO, 1).unwrap().action, XDP_REDIRECT);
    }
    assert_eq!(k.flow(&web_key).unwrap().unwrap().packets, 1);
    assert_eq!(k.flow(&dns_key).unwrap().unwrap().packets, 1);
    let s = k.stats().unwrap();
    assert_eq!(
        s,
        counters(&[
            (Reason::XdpRx, 6),
            (Reason::XdpMalformed, 4),
            (Reason::XdpHitRedirect, 2)
        ]),
        "{}",
        named(&s)
    );
}

/// The fragment table is keyed by ingress interface too: a later fragment
/// arriving on another interface, with the same addresses and IP id as a
/// first fragment seen on this one (another tenant with overlapping
/// addresses), does not pick up its ports. Runs in a private network
/// namespace with a veth pair, for a second ifindex.
#[test]
fn fragments_do_not_cross_interfaces() {
    if needs_root() {
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare only affects this thread, which we own.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            skip(&format!(
                "fragment test: unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
            return;
        }
        // Children inherit this thread's network namespace.
        let out = std::process::Command::new("ip")
            .args([
                "link", "add", "vnet-fa", "type", "veth", "peer", "name", "vnet-fb",
            ])
            .output()
            .expect("running ip");
        assert!(
            out.status.success(),
            "ip link add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let c = std::ffi::CString::new("vnet-fa").unwrap();
        // SAFETY: valid NUL-terminated name.
        let other = unsafe { libc::if_nametoindex(c.as_ptr()) };
        assert!(other > 1, "vnet-fa has no ifindex");

        let mut k = load(16);
        let dgram = |sport| pkt::udp(VM1_IP, REMOTE_IP, sport, 53, &[0x5a; 40], true);
        let frag = |f: u16, d: &[u8]| {
            let ip = Ip {
                id: 0xbeef,
                frag: f,
                ..Ip::new(VM1_IP, REMOTE_IP, UDP)
            };
            pkt::eth(RTR_MAC, VM1_MAC, None, ETH_P_IP, &pkt::ipv4(&ip, d))
        };
        let key = |ifindex, sport| FlowKey {
            ifindex,
            frag: FRAG_FRAGMENT,
            ..ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, UDP, sport, 53)
        };
        // The first fragment on lo records ports 5353 under lo.
        let lo_dgram = dgram(5353);
        k.insert_flow(&key(LO, 5353), &output(0)).unwrap();
        let r = k.test_run(&frag(0x2000, &lo_dgram[..24]), LO, 1).unwrap();
        assert_eq!(r.action, XDP_REDIRECT);
        // The same datagram id's later fragment on the other interface:
        // unknown there, not lo's ports.
        k.insert_flow(&key(other, 5353), &output(0)).unwrap();
        let later = frag(3, &lo_dgram[24..]);
        assert_eq!(k.test_run(&later, other, 1).unwrap().action, XDP_DROP);
        assert_eq!(k.stats().unwrap()[Reason::XdpFragUnknown as usize], 1);
        assert_eq!(k.flow(&key(other, 5353)).unwrap().unwrap().packets, 0);
        // The other interface's own first fragment (ports 1111) records
        // its ports; each interface's later fragment gets its own.
        let other_dgram = dgram(1111);
        k.insert_flow(&key(other, 1111), &output(0)).unwrap();
        let r = k
            .test_run(&frag(0x2000, &other_dgram[..24]), other, 1)
            .unwrap();
        assert_eq!(r.action, XDP_REDIRECT);
        let r = k.test_run(&frag(3, &other_dgram[24..]), other, 1).unwrap();
        assert_eq!(r.action, XDP_REDIRECT);
        assert_eq!(k.flow(&key(other, 1111)).unwrap().unwrap().packets, 2);
        let r = k.test_run(&later, LO, 1).unwrap();
        assert_eq!(r.action, XDP_REDIRECT);
        assert_eq!(k.flow(&key(LO, 5353)).unwrap().unwrap().packets, 2);
        assert_eq!(k.flow(&key(other, 5353)).unwrap().unwrap().packets, 0);
    })
    .join()
    .unwrap();
}

/// A miss larger than an AF_XDP frame holds (`XSK_MAX_RX_FRAME`) cannot
/// reach userspace: the socket would drop it uncounted, so the program
/// drops it and counts `XdpTooBig`. One byte less still goes to the socket,
/// and a big frame that hits a flow is forwarded. The frames are IPv6 (an
/// L2-only key): over `MAX_TEST_FRAME` a test run makes them multi-buffer,
/// whose IPv4 header the program could not check past the linear part.
#[test]
fn oversized_miss_is_dropped_and_counted() {
    use vnet_common::XSK_MAX_RX_FRAME;
    use vnet_dataplane::kernel::MAX_TEST_JUMBO_FRAME;
    if needs_root() {
        return;
    }
    let mut k = load(16);
    let _sock = xsk_on_lo(&mut k, 1);
    let ipv6 = |len: usize, dst: Mac| {
        let mut f = pkt::eth(dst, VM1_MAC, None, ETH_P_IPV6, &[0x60; 40]);
        f.resize(len, 0x5a);
        f
    };
    let max = XSK_MAX_RX_FRAME as usize;
    let fits = ipv6(max, VM2_MAC);
    let r = k.test_run(&fits, LO, 1).unwrap();
    assert_eq!(r.action, XDP_REDIRECT, "{max} bytes fit an AF_XDP frame");
    assert_eq!(r.data, fits);
    for len in [max + 1, MAX_TEST_JUMBO_FRAME] {
        let r = k.test_run(&ipv6(len, VM2_MAC), LO, 1).unwrap();
        assert_eq!(r.action, XDP_DROP, "{len} bytes");
    }
    let s = k.stats().unwrap();
    assert_eq!(
        s,
        counters(&[
            (Reason::XdpRx, 3),
            (Reason::XdpMiss, 3),
            (Reason::XdpTooBig, 2)
        ]),
        "{}",
        named(&s)
    );
    // A jumbo frame with a flow never needs userspace.
    let key = FlowKey {
        ifindex: LO,
        eth_src: VM1_MAC,
        eth_dst: RTR_MAC,
        ethertype: ETH_P_IPV6,
        ..FlowKey::default()
    };
    k.insert_flow(&key, &output(0)).unwrap();
    let jumbo = ipv6(MAX_TEST_JUMBO_FRAME, RTR_MAC);
    let r = k.test_run(&jumbo, LO, 1).unwrap();
    assert_eq!(r.action, XDP_REDIRECT, "jumbo hit");
    assert_eq!(r.data, jumbo);
    assert_eq!(k.stats().unwrap()[Reason::XdpTooBig as usize], 2);
}

/// The clock the programs stamp flows with (`bpf_ktime_get_coarse_ns`).
fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn counters_after_n_hits() {
    if needs_root() {
        return;
    }
    let mut k = load(16);
    let frame = tcp_frame(VM1_MAC, RTR_MAC, None, &vm1_web(), 40000, 80);
    k.insert_flow(&vm1_web_key(), &output(0)).unwrap();
    let before = monotonic_coarse_ns();
    k.test_run(&frame, LO, 10).unwrap();
    for _ in 0..5 {
        k.test_run(&frame, LO, 1).unwrap();
    }
    let after = monotonic_coarse_ns();
    let v = k.flow(&vm1_web_key()).unwrap().expect("flow installed");
    assert_eq!(v.packets, 15);
    assert_eq!(v.bytes, 15 * frame.len() as u64);
    assert!(
        (before..=after).contains(&v.last_used_ns),
        "last_used_ns {} outside [{before}, {after}] (CLOCK_MONOTONIC_COARSE)",
        v.last_used_ns
    );
    assert_eq!(v.actions, output(0), "actions untouched by the counters");
    let s = k.stats().unwrap();
    assert_eq!(
        s,
        counters(&[(Reason::XdpRx, 15), (Reason::XdpHitRedirect, 15)]),
        "{}",
        named(&s)
    );

    // Re-inserting replaces the flow and restarts its counters.
    k.insert_flow(&vm1_web_key(), &output(0)).unwrap();
    assert_eq!(k.flow(&vm1_web_key()).unwrap().unwrap().packets, 0);
}

#[test]
fn full_flow_table() {
    if needs_root() {
        return;
    }
    let mut k = load(4);
    assert_eq!(k.max_flows(), 4);
    let key = |port: u16| ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, TCP, port, 80);
    for port in 40000..40004 {
        k.insert_flow(&key(port), &output(0)).unwrap();
    }
    match k.insert_flow(&key(40004), &output(0)) {
        Err(KernelError::FlowTableFull { max_flows: 4 }) => {}
        other => panic!("5th flow: expected FlowTableFull, got {other:?}"),
    }
    // Replacing an existing flow still works when full.
    k.insert_flow(&key(40000), &output(act::SET_ETH_DST))
        .unwrap();
    k.insert_flow(&key(40000), &output(0)).unwrap();
    let mut keys = k.flow_keys().unwrap();
    keys.sort();
    assert_eq!(keys, (40000..40004).map(key).collect::<Vec<_>>());
    for port in 40000..40004 {
        let frame = tcp_frame(VM1_MAC, RTR_MAC, None, &vm1_web(), port, 80);
        assert_eq!(
            k.test_run(&frame, LO, 1).unwrap().action,
            XDP_REDIRECT,
            "flow {port} still hits"
        );
    }
    assert_eq!(k.flow(&key(40004)).unwrap(), None);
    // Removing one makes room.
    assert!(k.remove_flow(&key(40001)).unwrap());
    assert!(
        !k.remove_flow(&key(40001)).unwrap(),
        "second removal finds nothing"
    );
    k.insert_flow(&key(40004), &output(0)).unwrap();
    let frame = tcp_frame(VM1_MAC, RTR_MAC, None, &vm1_web(), 40001, 80);
    assert_eq!(
        k.test_run(&frame, LO, 1).unwrap().action,
        XDP_DROP,
        "removed flow misses"
    );
}

/// Random bytes of every length: the program must never fail (no
/// XDP_ABORTED), and the counters must add up.
#[test]
fn garbage_frames() {
    if needs_root() {
        return;
    }
    let mut k = load(16);
    k.insert_flow(&vm1_web_key(), &output(0)).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut n = 0;
    let template = tcp_frame(VM1_MAC, RTR_MAC, None, &vm1_web(), 40000, 80);
    for len in 14..200 {
        for round in 0..4 {
            let mut f: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
            // Half the frames look like IPv4/ARP/VLAN to get past the first checks.
            match round {
                1 => f[12..14].copy_from_slice(&[0x08, 0x00]),
                2 => {
                    let keep = len.min(template.len()).min(34);
                    f[..keep].copy_from_slice(&template[..keep]);
                }
                3 => f[12..14].copy_from_slice(&[0x81, 0x00]),
                _ => {}
            }
            let r = k.test_run(&f, LO, 1).unwrap();
            assert!(
                r.action == XDP_DROP || r.action == XDP_REDIRECT,
                "frame {} gave {}",
                hex(&f),
                r.action
            );
            n += 1;
        }
    }
    let s = k.stats().unwrap();
    assert_eq!(s[Reason::XdpRx as usize], n);
    let outcomes = s[Reason::XdpMiss as usize]
        + s[Reason::XdpUnparsed as usize]
        + s[Reason::XdpMalformed as usize]
        + s[Reason::XdpFragUnknown as usize]
        + s[Reason::XdpHitRedirect as usize]
        + s[Reason::XdpHitDrop as usize]
        + s[Reason::XdpActionFailed as usize];
    assert_eq!(
        outcomes,
        n,
        "every frame has exactly one outcome: {}",
        named(&s)
    );
}

#[test]
fn api_errors_are_typed() {
    if needs_root() {
        return;
    }
    let mut k = load(16);
    let e = k
        .attach("vnet-no-such-if", vnet_dataplane::kernel::AttachMode::Skb)
        .unwrap_err();
    assert!(matches!(e, KernelError::UnknownInterface { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "attaching a program to interface vnet-no-such-if: no such interface"
    );
    let e = k
        .attach("bad\0name", vnet_dataplane::kernel::AttachMode::Native)
        .unwrap_err();
    assert!(matches!(e, KernelError::UnknownInterface { .. }), "{e}");
    let e = k.detach("vnet-no-such-if").unwrap_err();
    assert!(matches!(e, KernelError::NotAttached { .. }), "{e}");
    let e = k.test_run(&[0; 10], LO, 1).unwrap_err();
    assert!(
        matches!(e, KernelError::TestFrameSize { len: 10, .. }),
        "{e}"
    );
    let e = k.set_xsk(100_000, 0).unwrap_err();
    assert!(e.to_string().contains("XSKS"), "{e}");
    let e = k.test_run(&[0; 60], 999_999, 1).unwrap_err();
    assert!(e.to_string().contains("ingress ifindex 999999"), "{e}");
    assert!(matches!(Kernel::load(0), Err(KernelError::InvalidMaxFlows)));
}

/// Without capabilities (what a non-root vnetd has) loading fails with a
/// clear, typed error. Capabilities are per thread, so one thread drops them.
#[test]
fn load_without_capabilities_is_a_clear_error() {
    if needs_root() {
        return;
    }
    std::thread::spawn(|| {
        #[repr(C)]
        struct CapHeader {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct CapData {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
        let mut header = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [CapData {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        }; 2];
        // SAFETY: capset(2) with valid header/data; affects this thread only.
        let r = unsafe { libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) };
        assert_eq!(r, 0, "capset: {}", std::io::Error::last_os_error());
        match Kernel::load(16) {
            Err(e @ KernelError::NotPermitted { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("needs root"), "{msg}");
                assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{msg}");
                println!("without capabilities: {msg}");
            }
            other => panic!("expected NotPermitted, got {other:?}"),
        }
    })
    .join()
    .unwrap();
}

/// Attach and detach on a real interface: `lo` of a private network
/// namespace (so nothing else on the host sees the program).
#[test]
fn attach_detach_in_private_netns() {
    if needs_root() {
        return;
    }
    std::thread::spawn(|| {
        // SAFETY: unshare only affects this thread, which we own.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            skip(&format!(
                "attach test: unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
            return;
        }
        use vnet_dataplane::kernel::{AttachMode, Hook};
        let mut k = load(16);
        assert_eq!(k.attach("lo", AttachMode::Skb).unwrap(), 1);
        assert_eq!(
            k.attached().collect::<Vec<_>>(),
            vec![("lo", 1, Hook::Xdp(AttachMode::Skb))]
        );
        // Attaching again replaces the attachment.
        assert_eq!(k.attach("lo", AttachMode::Skb).unwrap(), 1);
        k.detach("lo").unwrap();
        assert!(matches!(
            k.detach("lo"),
            Err(KernelError::NotAttached { .. })
        ));
        // lo has no native XDP: the error names the interface and the mode.
        match k.attach("lo", AttachMode::Native) {
            Ok(_) => k.detach("lo").unwrap(),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.starts_with(
                        "attaching XDP program vnet_xdp (native mode) to interface lo: "
                    ),
                    "{msg}"
                );
                println!("native on lo: {msg}");
            }
        }
        k.attach("lo", AttachMode::Skb).unwrap();
        drop(k); // detaches
    })
    .join()
    .unwrap();
}

/// What BPF_PROG_TEST_RUN reports per packet (average over 1,000,000 runs)
/// for a hit and a miss. Printed, not asserted: it depends on the machine.
/// Rewrites here leave the key unchanged (the kernel runs the repeats on the
/// frame the previous run left), so every repeat takes the same path.
#[test]
fn cost_per_packet() {
    if needs_root() {
        return;
    }
    const REPEAT: u32 = 1_000_000;
    let frame = tcp_frame(VM1_MAC, RTR_MAC, None, &vm1_web(), 40000, 80);
    let idempotent_rewrites = FlowActions {
        eth_src: VM1_MAC,
        eth_dst: RTR_MAC,
        ip_src: VM1_IP,
        ip_dst: REMOTE_IP,
        l4_src: 40000,
        l4_dst: 80,
        ..output(
            act::SET_ETH_SRC
                | act::SET_ETH_DST
                | act::SET_IP_SRC
                | act::SET_IP_DST
                | act::SET_L4_SRC
                | act::SET_L4_DST,
        )
    };
    let runs: [(&str, Option<FlowActions>, Option<u32>, u32); 5] = [
        ("hit, OUTPUT", Some(output(0)), None, XDP_REDIRECT),
        (
            "hit, MAC+IP+port rewrites, OUTPUT",
            Some(idempotent_rewrites),
            None,
            XDP_REDIRECT,
        ),
        (
            "hit, DROP",
            Some(FlowActions {
                flags: act::DROP,
                ..FlowActions::default()
            }),
            None,
            XDP_DROP,
        ),
        ("miss, interface without socket", None, None, XDP_DROP),
        ("miss, to the XSK slot (empty)", None, Some(0), XDP_DROP),
    ];
    for (name, flow, slot, verdict) in runs {
        let mut k = load(1024);
        if let Some(a) = flow {
            k.insert_flow(&vm1_web_key(), &a).unwrap();
        }
        if let Some(slot) = slot {
            k.set_iface(
                LO,
                IfaceConfig {
                    xsk_slot: slot,
                    queues: 1,
                },
            )
            .unwrap();
        }
        let r = k.test_run(&frame, LO, REPEAT).unwrap();
        assert_eq!(r.action, verdict, "{name}");
        assert_eq!(
            k.stats().unwrap()[Reason::XdpRx as usize],
            u64::from(REPEAT),
            "{name}"
        );
        println!("test_run cost, {name}: {} ns/packet", r.duration_ns);
    }
}

/// Listing flows (`vnetctl flows`, `stats`, the metrics) reads the flow map
/// in batches: it must see every flow once, with the value a lookup of its
/// own key sees, across many batches.
#[test]
fn all_flows_reads_every_flow_once_across_batches() {
    if needs_root() {
        return;
    }
    let mut kernel = load(8192);
    let n = 5 * vnet_dataplane::kernel::batch::BATCH as u32 + 17;
    for i in 0..n {
        let key = FlowKey {
            ifindex: 1 + i % 7,
            ethertype: 0x0800,
            src: [10, 0, (i >> 8) as u8, i as u8],
            dst: [10, 1, 0, 1],
            proto: 6,
            l4_src: (i % 60000) as u16,
            l4_dst: 80,
            ..FlowKey::default()
        };
        let actions = FlowActions {
            out_ifindex: 100 + i,
            ..FlowActions::default()
        };
        kernel
            .insert_flow(&key, &actions)
            .expect("room for every flow");
    }
    let all = kernel.all_flows().expect("reading the flows");
    assert_eq!(all.len(), n as usize);
    let mut seen = std::collections::HashSet::new();
    for (key, value) in &all {
        assert!(seen.insert(*key), "{key:?} listed twice");
        let looked_up = kernel.flow(key).unwrap().expect("a listed flow exists");
        assert_eq!(*value, looked_up, "{key:?}");
        assert_eq!(
            value.actions.out_ifindex,
            100 + (key.src[2] as u32) * 256 + key.src[3] as u32
        );
    }
    for key in all.iter().map(|(k, _)| *k).take(100) {
        kernel.remove_flow(&key).unwrap();
    }
    assert_eq!(kernel.all_flows().unwrap().len(), n as usize - 100);
}

// ---------------------------------------------------------------------------
// The skb (tc) executor: the same table, the same flows, the same bytes

/// What the tc program must do with a case of the XDP table: a hit that
/// redirects rewrites the frame to the same bytes and redirects; a hit that
/// drops drops; everything XDP hands to userspace (misses, unparsed,
/// malformed, failed actions) goes to userspace here too, which with no
/// upcall interface set is a counted drop. A frame with its VLAN tag in the
/// bytes only exists in a test run (the kernel takes received tags out
/// before tc), and goes to userspace.
#[test]
fn tc_executes_the_table_like_xdp() {
    use vnet_dataplane::kernel::tc_action::{TC_ACT_REDIRECT, TC_ACT_SHOT};
    if needs_root() {
        return;
    }
    let mut failed = Vec::new();
    let cases = cases();
    for c in &cases {
        let mut k = load(64);
        for (key, a) in &c.flows {
            k.insert_flow(key, a).unwrap();
        }
        let tagged_in_bytes = c.frame.len() >= 14 && c.frame[12..14] == [0x81, 0x00];
        let xdp_hit = c.verdict == XDP_REDIRECT || c.counts == HIT_DROP;
        let r = match k.test_run_tc(&c.frame, LO, 0) {
            Ok(r) => r,
            // The skb test run refuses frames shorter than an Ethernet and
            // an IPv4 header (it reads them to build the skb), and jumbo
            // frames: not cases for tc.
            Err(e) if c.frame.len() < 34 || c.frame.len() > MAX_TEST_FRAME => {
                println!("n/a   {}: {e}", c.name);
                continue;
            }
            Err(e) => panic!("{}: {e}", c.name),
        };
        let stats = k.stats().unwrap();
        // A pushed tag is the skb's metadata (bpf_skb_vlan_push), which a
        // test run does not report: the bytes are XDP's without the tag.
        let pushed = c.flows.iter().any(|(_, a)| a.flags & act::PUSH_VLAN != 0);
        let untagged_output = c.output.as_ref().map(|o| {
            let mut o = o.clone();
            if pushed && o.len() >= 16 {
                o.drain(12..16);
            }
            o
        });
        let (want_verdict, want_data, want_count) = if tagged_in_bytes {
            (TC_ACT_SHOT, &c.frame, Reason::TcNoUpcall)
        } else if c.verdict == XDP_REDIRECT {
            (
                TC_ACT_REDIRECT,
                untagged_output.as_ref().unwrap_or(&c.frame),
                Reason::TcHitRedirect,
            )
        } else if xdp_hit {
            (TC_ACT_SHOT, &c.frame, Reason::TcHitDrop)
        } else {
            (TC_ACT_SHOT, &c.frame, Reason::TcNoUpcall)
        };
        let mut errors = Vec::new();
        if r.action != want_verdict {
            errors.push(format!("verdict {} (expected {want_verdict})", r.action));
        }
        if &r.data != want_data {
            errors.push(format!(
                "output\n       got {}\n  expected {}",
                hex(&r.data),
                hex(want_data)
            ));
        }
        if stats[want_count as usize] != 1 || stats[Reason::TcRx as usize] != 1 {
            errors.push(format!(
                "counters {} (expected {} once)",
                named(&stats),
                want_count.name()
            ));
        }
        if errors.is_empty() {
            println!("ok    {}", c.name);
        } else {
            println!("FAIL  {}\n    {}", c.name, errors.join("\n    "));
            failed.push(c.name);
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} cases failed: {failed:#?}",
        failed.len(),
        cases.len()
    );
}

/// A miss goes out of the upcall interface behind the upcall header, which
/// names the ingress interface; the frame behind it is untouched.
#[test]
fn tc_miss_goes_to_the_upcall_interface_behind_its_header() {
    use vnet_common::upcall;
    use vnet_dataplane::kernel::tc_action::TC_ACT_REDIRECT;
    if needs_root() {
        return;
    }
    let mut k = load(16);
    k.set_upcall_ifindex(LO).unwrap();
    let frame = tcp_frame(VM1_MAC, RTR_MAC, None, &vm1_web(), 40000, 80);
    let r = k.test_run_tc(&frame, LO, 0).unwrap();
    assert_eq!(r.action, TC_ACT_REDIRECT);
    let mut header = vec![0u8; 12];
    header.extend_from_slice(&upcall::ETHERTYPE.to_be_bytes());
    header.extend_from_slice(&LO.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(header.len(), upcall::HEADER_LEN);
    assert_eq!(hex(&r.data[..upcall::HEADER_LEN]), hex(&header));
    assert_eq!(hex(&r.data[upcall::HEADER_LEN..]), hex(&frame));
    let stats = k.stats().unwrap();
    assert_eq!(stats[Reason::TcMiss as usize], 1, "{}", named(&stats));
    assert_eq!(stats[Reason::TcNoUpcall as usize], 0, "{}", named(&stats));
}

/// A GSO frame is checked against the flow's MTU by its segments: the
/// headers plus one segment of payload, not the 64 KB super-frame.
#[test]
fn tc_mtu_check_is_on_the_gso_segment() {
    use vnet_dataplane::kernel::tc_action::{TC_ACT_REDIRECT, TC_ACT_SHOT};
    if needs_root() {
        return;
    }
    let web = vm1_web();
    let payload = vec![0x5a; 2000];
    let frame = tcp_frame_with_payload(VM1_MAC, RTR_MAC, &web, 40000, 80, &payload);
    let routed_with_mtu = |mtu: u16| FlowActions {
        mtu,
        ..routed(act::OUTPUT)
    };
    // Segments of 1000 bytes: 20 + 20 + 1000 = 1040 bytes each.
    for (mtu, gso, want) in [
        (1040, 1000, TC_ACT_REDIRECT),
        (1039, 1000, TC_ACT_SHOT),
        (1500, 0, TC_ACT_SHOT),
        (2040, 0, TC_ACT_REDIRECT),
    ] {
        let mut k = load(16);
        k.insert_flow(&vm1_web_key(), &routed_with_mtu(mtu))
            .unwrap();
        let r = k.test_run_tc(&frame, LO, gso).unwrap();
        assert_eq!(r.action, want, "mtu {mtu}, gso_size {gso}");
        let stats = k.stats().unwrap();
        let counted = if want == TC_ACT_REDIRECT {
            Reason::TcHitRedirect
        } else {
            Reason::TcActionFailed
        };
        assert_eq!(
            stats[counted as usize],
            1,
            "mtu {mtu}, gso {gso}: {}",
            named(&stats)
        );
    }
}

/// A port's first packets on the skb path are charged to its budget before
/// they reach the ring all skb ports share: over it, they are dropped and
/// counted there (`tc_upcall_budget`).
#[test]
fn tc_upcalls_over_the_ports_budget_are_dropped_before_the_ring() {
    use vnet_dataplane::kernel::tc_action::{TC_ACT_REDIRECT, TC_ACT_SHOT};
    if needs_root() {
        return;
    }
    let mut k = load(16);
    k.set_upcall_ifindex(LO).unwrap();
    // A burst of 3, refilled at 1 a second: the 4th of a quick run is over.
    k.set_upcall_budget(LO, 1, 3).unwrap();
    let frame = tcp_frame(VM1_MAC, RTR_MAC, None, &vm1_web(), 40000, 80);
    let verdicts: Vec<u32> = (0..4)
        .map(|_| k.test_run_tc(&frame, LO, 0).unwrap().action)
        .collect();
    assert_eq!(
        verdicts,
        [
            TC_ACT_REDIRECT,
            TC_ACT_REDIRECT,
            TC_ACT_REDIRECT,
            TC_ACT_SHOT
        ]
    );
    let stats = k.stats().unwrap();
    assert_eq!(
        stats[Reason::TcUpcallBudget as usize],
        1,
        "{}",
        named(&stats)
    );
    assert_eq!(stats[Reason::TcMiss as usize], 4, "{}", named(&stats));
    // Without a budget, no limit.
    k.remove_upcall_budget(LO).unwrap();
    assert_eq!(
        k.test_run_tc(&frame, LO, 0).unwrap().action,
        TC_ACT_REDIRECT
    );
}

/// Flows written in one batch (`BPF_MAP_UPDATE_BATCH`, what the worker
/// does with a turn's first packets) go in in order up to a full table,
/// which stops the batch with `FlowTableFull` and leaves every installed
/// flow as it was; the flow table writes the rest after a refusal.
#[test]
fn batch_install_stops_at_a_full_table_and_keeps_the_old_flows() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root (BPF maps, BPF_PROG_TEST_RUN): run with sudo"
    );
    use vnet_dataplane::flows::{FlowTable, InstallError};
    use vnet_dataplane::sim::{Flow, Tag};
    let mut k = load(4);
    let key = |port: u16| ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, TCP, port, 80);
    let keys: Vec<FlowKey> = (40000..40006).map(key).collect();
    let acts = vec![output(0); keys.len()];
    match k.insert_flows(&keys, &acts) {
        (4, Some(KernelError::FlowTableFull { max_flows: 4 })) => {}
        other => panic!("6 flows into a table of 4: expected 4 written then full, got {other:?}"),
    }
    let mut installed = k.flow_keys().unwrap();
    installed.sort();
    assert_eq!(installed, keys[..4].to_vec());
    // Every written flow works.
    for port in 40000..40004 {
        let frame = tcp_frame(VM1_MAC, RTR_MAC, None, &vm1_web(), port, 80);
        assert_eq!(
            k.test_run(&frame, LO, 1).unwrap().action,
            XDP_REDIRECT,
            "flow {port} hits"
        );
    }
    // Full: a replacement is written, the new flow behind it is refused.
    let rewrite = output(act::SET_ETH_DST);
    match k.insert_flows(&[key(40000), key(40005)], &[rewrite, output(0)]) {
        (1, Some(KernelError::FlowTableFull { .. })) => {}
        other => panic!("expected the replacement written then full, got {other:?}"),
    }
    let v = k.flow(&key(40000)).unwrap().unwrap();
    assert_eq!(
        (v.actions, v.packets),
        (rewrite, 0),
        "replaced, counters restarted"
    );
    assert_eq!(
        k.flow(&key(40001)).unwrap().unwrap().packets,
        1,
        "others untouched"
    );
    assert_eq!(k.flow(&key(40005)).unwrap(), None);
    // An empty batch is no call and no error.
    assert!(matches!(k.insert_flows(&[], &[]), (0, None)));

    // Through the flow table, as the worker installs: the refused flow is
    // counted, the one queued after it is still written.
    assert!(k.remove_flow(&key(40003)).unwrap());
    assert!(k.remove_flow(&key(40002)).unwrap());
    let mut t = FlowTable::default();
    let flow = |tag: u64| Flow {
        actions: output(0),
        output: None,
        tags: vec![Tag(tag)],
        idle_timeout_ns: 1_000_000_000,
    };
    for (port, tag) in [(40010, 1), (40011, 2), (40012, 3), (40001, 4)] {
        t.queue_for(&mut k, None, key(port), &output(0), flow(tag), 0)
            .unwrap();
    }
    let done = t.flush(&mut k);
    assert_eq!(
        (done.installed, done.full, done.other),
        (3, 1, 0),
        "{done:?}"
    );
    assert_eq!(t.counters.table_full, 1);
    assert!(t.contains(&key(40010)) && t.contains(&key(40011)) && !t.contains(&key(40012)));
    assert_eq!(k.flow(&key(40012)).unwrap(), None);
    assert!(
        k.flow(&key(40001)).unwrap().is_some(),
        "the replacement after the refusal"
    );
    let mut installed = k.flow_keys().unwrap();
    installed.sort();
    assert_eq!(
        installed,
        vec![key(40000), key(40001), key(40010), key(40011)]
    );
    // A refusal is an error the table names; invalidation removes what the
    // batch wrote.
    assert_eq!(InstallError::Full.to_string(), "the flow table is full");
    assert_eq!(t.invalidate(&mut k, Tag(1)), 1);
    assert_eq!(k.flow(&key(40010)).unwrap(), None);
}

/// A worker's batch written after it let go of the runtime (the
/// `FlowWriter`, issue 14): the flows reach the kernel and hit, a full
/// table refuses the ones over it and the writer goes on after each, and
/// while a batch holds the write order a removal (an invalidation under
/// the runtime, on another thread) waits for the write: it can never run
/// before the write and leave the flow in the kernel untracked.
#[test]
fn a_batch_written_outside_the_runtime_is_ordered_before_later_removals() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root (BPF maps, BPF_PROG_TEST_RUN): run with sudo"
    );
    use std::sync::mpsc;
    use std::time::Duration;
    let mut k = load(4);
    let key = |port: u16| ip_key(VM1_MAC, RTR_MAC, VM1_IP, REMOTE_IP, TCP, port, 80);
    let keys: Vec<FlowKey> = (41000..41006).map(key).collect();
    let acts = vec![output(0); keys.len()];
    let mut writer = k.flow_writer();
    let mut failed = Vec::new();

    let pending = writer.begin();
    let (removed_tx, removed) = mpsc::channel();
    let remover = std::thread::spawn(move || {
        let was = k.remove_flow(&key(41000));
        removed_tx.send(()).unwrap();
        (k, was)
    });
    assert!(
        removed.recv_timeout(Duration::from_millis(200)).is_err(),
        "a removal ran while a batch held the write order"
    );
    pending.write(&keys, &acts, &mut failed);
    removed
        .recv_timeout(Duration::from_secs(10))
        .expect("the removal goes on once the batch is written");
    let (mut k, was) = remover.join().unwrap();
    assert!(was.unwrap(), "the removal found the flow the batch wrote");

    // 6 flows into a table of 4: the last two refused, each reported.
    let refused: Vec<usize> = failed
        .iter()
        .map(|(at, e)| {
            assert!(
                matches!(e, KernelError::FlowTableFull { max_flows: 4 }),
                "{e}"
            );
            *at
        })
        .collect();
    assert_eq!(refused, vec![4, 5]);
    let mut installed = k.flow_keys().unwrap();
    installed.sort();
    assert_eq!(installed, keys[1..4].to_vec());
    let frame = tcp_frame(VM1_MAC, RTR_MAC, None, &vm1_web(), 41001, 80);
    assert_eq!(k.test_run(&frame, LO, 1).unwrap().action, XDP_REDIRECT);
    // The writer needs no `Kernel`: it goes on writing after the runtime's
    // own writes, in order.
    assert!(k.insert_flow(&key(41000), &output(0)).is_ok());
    failed.clear();
    writer
        .begin()
        .write(&keys[..1], &[output(act::SET_ETH_DST)], &mut failed);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(
        k.flow(&key(41000)).unwrap().unwrap().actions,
        output(act::SET_ETH_DST),
        "the later write wins"
    );
}
