//! The upcall path of the skb executor (`vnet_common::upcall`): vnetd's veth
//! pair, and the frames that come out of it.
//!
//! The tc program sends each first packet out of the pair's near end behind
//! an `UpcallHeader` (its ingress interface and its VLAN tag, which the
//! kernel keeps outside the bytes); the upcall program on the far end
//! redirects every frame into the socket here. The pair carries nothing
//! else: IPv6 is off on both ends, so the host sends no neighbour discovery
//! into it, and anything without the header is dropped, counted.
//!
//! The pair stays when vnetd exits (the pinned tc programs keep sending into
//! it across a restart) and is reused by the next vnetd.

use std::process::Command;

use anyhow::{bail, Context};
use vnet_common::upcall::{self, UpcallHeader, FAR, NEAR};

use crate::afxdp::{RxDrops, Xsk};
use crate::binding;
use crate::packet::{ETHERTYPE_QINQ, ETHERTYPE_VLAN, ETH_HLEN};
use crate::ports::QueueSocket;

/// The sockets on the far end: one per queue of the pair.
pub struct UpcallPath {
    /// Queue 0's.
    pub xsk: Xsk,
    /// The socket's drop counters at their last reading (a full ring: the
    /// worker fell behind the first packets of all skb ports together).
    pub drops: RxDrops,
    /// Queues 1.. (a pair made for several workers), in queue order.
    pub queues: Vec<QueueSocket>,
}

impl UpcallPath {
    pub fn new(xsk: Xsk) -> UpcallPath {
        UpcallPath {
            xsk,
            drops: RxDrops::default(),
            queues: Vec::new(),
        }
    }

    /// The socket of queue `queue`, if the pair has that many.
    pub fn socket_mut(&mut self, queue: usize) -> Option<&mut Xsk> {
        crate::ports::queue_socket_mut(&mut self.xsk, &mut self.queues, queue)
    }

    /// Its receive sockets, by queue.
    pub fn receive_sockets(&self) -> impl Iterator<Item = (usize, &Xsk)> {
        crate::ports::queue_sockets(&self.xsk, &self.queues)
    }
}

/// An upcall as it sits in the socket's frame: the header read and checked,
/// the frame not copied yet (the worker charges it to its port first).
pub struct Received<'a> {
    /// The interface it entered on.
    pub ifindex: u32,
    header: UpcallHeader,
    /// The frame behind the header, at least an Ethernet header long.
    rest: &'a [u8],
}

/// The header of `bytes`, checked; `None` if there is none.
pub fn read(bytes: &[u8]) -> Option<Received<'_>> {
    let head = bytes.get(..upcall::HEADER_LEN)?;
    let rest = bytes.get(upcall::HEADER_LEN..)?;
    if head[12..14] != upcall::ETHERTYPE.to_be_bytes() || rest.len() < ETH_HLEN {
        return None;
    }
    let header = UpcallHeader {
        ifindex: head[14..18].try_into().ok()?,
        vlan_tci: head[18..20].try_into().ok()?,
        flags: head[20],
        ..UpcallHeader::default()
    };
    Some(Received {
        ifindex: u32::from_be_bytes(header.ifindex),
        header,
        rest,
    })
}

impl Received<'_> {
    /// The frame as the guest sent it: its outer tag back in the bytes.
    pub fn frame(&self) -> Vec<u8> {
        let mut frame = Vec::with_capacity(self.rest.len() + 4);
        self.append_frame_to(&mut frame);
        frame
    }

    /// Appends [`Received::frame`] to `frame` (the worker's one receive
    /// buffer: no allocation per frame).
    pub fn append_frame_to(&self, frame: &mut Vec<u8>) {
        let (header, rest) = (&self.header, self.rest);
        if header.flags & upcall::TAGGED != 0 {
            // MACs, the outer tag, then the frame's own EtherType onward (an
            // inner tag included). `rest` holds an Ethernet header (`read`).
            let tpid = if header.flags & upcall::TAGGED_8021AD != 0 {
                ETHERTYPE_QINQ
            } else {
                ETHERTYPE_VLAN
            };
            frame.extend_from_slice(&rest[..12]);
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&header.vlan_tci);
            frame.extend_from_slice(&rest[12..]);
        } else {
            frame.extend_from_slice(rest);
        }
    }
}

/// Creates the pair, with `queues` queues at each end, if it is missing or
/// has another number, and brings it up: returns the near and far ends'
/// ifindexes. The tc program's redirect into the near end picks a transmit
/// queue by the packet's flow hash (no XPS on the pair), and the far end's
/// native XDP receives it on the queue of the same number, whose socket
/// one worker serves: a flow's first packets stay in order on one queue.
pub fn ensure_pair(queues: u32) -> anyhow::Result<(u32, u32)> {
    let present = binding::ifindex(FAR).is_some() && binding::ifindex(NEAR).is_some();
    let have = binding::rx_queues(FAR);
    if !present || have != queues {
        // A half-left pair (one end renamed or moved), or one made for
        // another number of workers, is replaced.
        let _ = ip(&["link", "del", NEAR]);
        let args = crate::veth::add_pair_args(NEAR, FAR, queues);
        ip(&args.iter().map(String::as_str).collect::<Vec<_>>())
            .context("creating the upcall pair")?;
        tracing::info!(near = NEAR, far = FAR, queues, "created the upcall pair");
    }
    let mtu = upcall::MTU.to_string();
    for end in [NEAR, FAR] {
        // No IPv6: the host would send neighbour discovery into the pair.
        let sysctl = format!("/proc/sys/net/ipv6/conf/{end}/disable_ipv6");
        if let Err(e) = std::fs::write(&sysctl, "1") {
            tracing::warn!(file = %sysctl, error = %e, "cannot turn IPv6 off on the upcall pair");
        }
        ip(&["link", "set", end, "mtu", &mtu, "arp", "off", "up"])
            .with_context(|| format!("bringing up {end} of the upcall pair"))?;
    }
    match (binding::ifindex(NEAR), binding::ifindex(FAR)) {
        (Some(near), Some(far)) => Ok((near, far)),
        _ => bail!("the upcall pair {NEAR}/{FAR} vanished while it was set up"),
    }
}

/// Deletes the pair (`vnetd --detach-on-exit`).
pub fn remove_pair() {
    if binding::ifindex(NEAR).is_some() {
        if let Err(e) = ip(&["link", "del", NEAR]) {
            tracing::warn!(error = %e, "deleting the upcall pair");
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A first packet off the pair, copied out.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Upcall {
        ifindex: u32,
        frame: Vec<u8>,
    }

    fn decode(bytes: &[u8]) -> Option<Upcall> {
        let up = read(bytes)?;
        Some(Upcall {
            ifindex: up.ifindex,
            frame: up.frame(),
        })
    }

    fn header(ifindex: u32, tci: Option<u16>) -> Vec<u8> {
        let mut h = vec![0; 12];
        h.extend_from_slice(&upcall::ETHERTYPE.to_be_bytes());
        h.extend_from_slice(&ifindex.to_be_bytes());
        h.extend_from_slice(&tci.unwrap_or(0).to_be_bytes());
        h.push(if tci.is_some() { upcall::TAGGED } else { 0 });
        h.push(0);
        h
    }

    const FRAME: [u8; 18] = [
        2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0, 0, 20,
    ];

    #[test]
    fn the_header_names_the_interface_and_gives_the_tag_back() {
        let mut bytes = header(7, None);
        bytes.extend_from_slice(&FRAME);
        assert_eq!(
            decode(&bytes),
            Some(Upcall {
                ifindex: 7,
                frame: FRAME.to_vec()
            })
        );
        let mut bytes = header(9, Some(0x2064));
        bytes.extend_from_slice(&FRAME);
        let up = decode(&bytes).unwrap();
        assert_eq!(up.ifindex, 9);
        assert_eq!(up.frame[..12], FRAME[..12]);
        assert_eq!(up.frame[12..16], [0x81, 0x00, 0x20, 0x64]);
        assert_eq!(up.frame[16..], FRAME[12..]);
        // An 802.1ad outer tag comes back as one.
        let mut bytes = header(9, Some(0x0064));
        bytes[20] |= upcall::TAGGED_8021AD;
        bytes.extend_from_slice(&FRAME);
        assert_eq!(
            decode(&bytes).unwrap().frame[12..16],
            [0x88, 0xa8, 0x00, 0x64]
        );
    }

    #[test]
    fn frames_without_the_header_are_refused() {
        assert_eq!(decode(&FRAME), None);
        assert_eq!(decode(&header(7, None)), None, "a header and no frame");
        for len in 0..upcall::HEADER_LEN + 14 {
            let mut bytes = header(7, None);
            bytes.extend_from_slice(&FRAME);
            assert_eq!(decode(&bytes[..len]), None, "cut at {len}");
        }
    }
}
