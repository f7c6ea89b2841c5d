//! The bridge's DHCP server, on packet bytes: request frames built here go
//! through the simulation; the reply frames that come out are parsed back
//! and compared field by field.
use std::path::Path;
use vnet_common::Reason;
use vnet_dataplane::packet::build::{arp_frame, udp_frame, with_vlan};
use vnet_dataplane::packet::{self, Mac, ARP_REPLY, ARP_REQUEST, BROADCAST, L3, L4};
use vnet_dataplane::sim::dhcp::leases::{Holder, DECLINE_HOLD_NS};
use vnet_dataplane::sim::dhcp::message::{opt, Message, FLAG_BROADCAST, OP_REPLY, OP_REQUEST};
use vnet_dataplane::sim::dhcp::{server_mac, MessageType, NoReply};
use vnet_dataplane::sim::{simulate, Decision, PortId, Snapshot, State, Step, Verdict};

const VM1_MAC: Mac = [2, 0, 0, 0, 1, 1];
const VM2_MAC: Mac = [2, 0, 0, 0, 1, 2];
const NEW_MAC: Mac = [2, 0, 0, 0, 1, 0x33];
const OTHER_MAC: Mac = [2, 0, 0, 0, 1, 0x44];
const SERVER: [u8; 4] = [10, 0, 0, 2];
const VM1: [u8; 4] = [10, 0, 0, 11];
const VM2: [u8; 4] = [10, 0, 0, 12];
const ANY: [u8; 4] = [0; 4];
const ALL: [u8; 4] = [255; 4];
const S: u64 = 1_000_000_000;

/// examples/bridge.yaml, the contract.
fn example() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/bridge.yaml");
    std::fs::read_to_string(path).expect("examples/bridge.yaml is readable")
}

struct Bench {
    snap: Snapshot,
    state: State,
    now: u64,
}

impl Bench {
    fn new(yaml: &str) -> Bench {
        let topo = vnet_model::parse_str(yaml).expect("test topology is valid");
        Bench {
            snap: Snapshot::compile(&topo, 1),
            state: State::default(),
            now: 1,
        }
    }
    fn example() -> Bench {
        Bench::new(&example())
    }
    fn port(&self, name: &str) -> PortId {
        self.snap.port_by_name(name).expect("port exists")
    }
    fn send(&mut self, port: &str, frame: &[u8]) -> Decision {
        self.now += 1000;
        let p = self.port(port);
        simulate(&self.snap, &mut self.state, p, frame, self.now, true)
    }
    /// Sends `req` from vm1's port and returns the one reply.
    fn ask(&mut self, req: &Req) -> Reply {
        let d = self.send("tenant/vm1", &req.frame());
        assert_eq!(d.verdict, Verdict::Answered, "trace: {:?}", d.trace);
        assert!(d.install.is_none(), "DHCP is never installed as a flow");
        assert_eq!(d.emit.len(), 1, "one reply: {:?}", d.trace);
        assert_eq!(
            d.emit[0].port,
            self.port("tenant/vm1"),
            "back to the client's port"
        );
        Reply::parse(&d.emit[0].frame)
    }
    /// Sends `req` and expects no reply; returns the decision.
    fn silent(&mut self, req: &Req) -> Decision {
        let d = self.send("tenant/vm1", &req.frame());
        assert!(d.install.is_none(), "DHCP is never installed as a flow");
        assert!(
            d.emit.iter().all(|e| e.port != self.port("tenant/vm1")),
            "no reply to the client: {:?}",
            d.trace
        );
        d
    }
    fn no_reply_why(d: &Decision) -> Option<NoReply> {
        d.trace.iter().find_map(|s| match s {
            Step::DhcpNoReply { why } => Some(*why),
            _ => None,
        })
    }
}

/// A request frame, built from a [`Message`] value.
#[derive(Clone)]
struct Req {
    msg: Message,
    eth_src: Mac,
    eth_dst: Mac,
    ip_src: [u8; 4],
    ip_dst: [u8; 4],
    sport: u16,
}

fn req(kind: MessageType, mac: Mac) -> Req {
    let mut chaddr = [0; 16];
    chaddr[..6].copy_from_slice(&mac);
    Req {
        msg: Message {
            op: OP_REQUEST,
            htype: 1,
            hlen: 6,
            xid: 0xdead_beef,
            chaddr,
            options: vec![(opt::MESSAGE_TYPE, vec![kind.into()])],
            ..Message::default()
        },
        eth_src: mac,
        eth_dst: BROADCAST,
        ip_src: ANY,
        ip_dst: ALL,
        sport: 68,
    }
}

impl Req {
    fn option(mut self, code: u8, value: &[u8]) -> Req {
        self.msg.options.push((code, value.to_vec()));
        self
    }
    fn requested(self, ip: [u8; 4]) -> Req {
        self.option(opt::REQUESTED_IP, &ip)
    }
    fn server(self, ip: [u8; 4]) -> Req {
        self.option(opt::SERVER_ID, &ip)
    }
    fn ciaddr(mut self, ip: [u8; 4]) -> Req {
        self.msg.ciaddr = ip;
        self.ip_src = ip;
        self
    }
    fn broadcast_flag(mut self) -> Req {
        self.msg.flags = FLAG_BROADCAST;
        self
    }
    /// Unicast to the server, as a renewing client sends it.
    fn unicast_to_server(mut self) -> Req {
        self.eth_dst = server_mac("tenant");
        self.ip_dst = SERVER;
        self
    }
    fn payload(&self) -> Vec<u8> {
        self.msg.emit()
    }
    fn frame(&self) -> Vec<u8> {
        self.frame_with(&self.payload())
    }
    fn frame_with(&self, payload: &[u8]) -> Vec<u8> {
        udp_frame(
            self.eth_src,
            self.eth_dst,
            self.ip_src,
            self.ip_dst,
            self.sport,
            67,
            payload,
        )
    }
}

/// A reply frame taken apart.
#[derive(Debug)]
struct Reply {
    eth_src: Mac,
    eth_dst: Mac,
    ip_src: [u8; 4],
    ip_dst: [u8; 4],
    ports: (u16, u16),
    msg: Message,
}

impl Reply {
    fn parse(frame: &[u8]) -> Reply {
        let h = packet::parse(frame).expect("the reply parses");
        let L3::Ipv4(ip, L4::Ports { src, dst }) = h.l3 else {
            panic!("not UDP: {h:?}")
        };
        let udp = &frame[ip.l4_offset()..ip.offset + usize::from(ip.total_len)];
        let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        assert_eq!(udp_len, udp.len(), "UDP length covers the message");
        let ck = vnet_dataplane::packet::build::l4_checksum(ip.src, ip.dst, 17, &{
            let mut s = udp.to_vec();
            s[6] = 0;
            s[7] = 0;
            s
        });
        assert_eq!(u16::from_be_bytes([udp[6], udp[7]]), ck, "UDP checksum");
        Reply {
            eth_src: h.src,
            eth_dst: h.dst,
            ip_src: ip.src,
            ip_dst: ip.dst,
            ports: (src, dst),
            msg: Message::parse_bytes(&udp[8..]).expect("the reply is a valid DHCP message"),
        }
    }
    fn kind(&self) -> MessageType {
        self.msg.message_type().expect("replies have a type")
    }
    fn option(&self, code: u8) -> Option<&[u8]> {
        self.msg.option(code)
    }
    fn codes(&self) -> Vec<u8> {
        self.msg.options.iter().map(|(c, _)| *c).collect()
    }
}

/// The options the example gives every client, as bytes.
fn example_options() -> Vec<(u8, Vec<u8>)> {
    vec![
        (opt::SUBNET_MASK, vec![255, 255, 255, 0]),
        (opt::BROADCAST, vec![10, 0, 0, 255]),
        (opt::ROUTER, vec![10, 0, 0, 1]),
        (opt::DNS, vec![10, 0, 0, 2]),
        (opt::INTERFACE_MTU, 1450u16.to_be_bytes().to_vec()),
        (
            opt::CLASSLESS_ROUTES,
            vec![32, 169, 254, 169, 254, 10, 0, 0, 3, 0, 10, 0, 0, 1],
        ),
    ]
}

fn assert_addressed_reply(r: &Reply, kind: MessageType, yiaddr: [u8; 4], lease: u32) {
    assert_eq!(r.kind(), kind);
    assert_eq!((r.msg.op, r.msg.htype, r.msg.hlen), (OP_REPLY, 1, 6));
    assert_eq!(r.msg.xid, 0xdead_beef, "xid copied");
    assert_eq!(r.msg.yiaddr, yiaddr);
    assert_eq!(r.eth_src, server_mac("tenant"));
    assert_eq!((r.ip_src, r.ports), (SERVER, (67, 68)));
    assert_eq!(r.option(opt::SERVER_ID), Some(&SERVER[..]));
    assert_eq!(r.msg.lease_time(), Some(lease));
    assert_eq!(r.msg.renewal_time(), Some(lease / 2), "T1 = 50%");
    assert_eq!(
        r.msg.rebinding_time(),
        Some((u64::from(lease) * 7 / 8) as u32),
        "T2 = 87.5%"
    );
    for (code, value) in example_options() {
        assert_eq!(r.option(code), Some(&value[..]), "option {code}");
    }
}

#[test]
fn discover_from_a_static_host_gets_an_offer_with_every_option() {
    let mut b = Bench::example();
    let r = b.ask(&req(MessageType::Discover, VM1_MAC));
    assert_addressed_reply(&r, MessageType::Offer, VM1, 3600);
    assert_eq!(r.option(opt::HOST_NAME), Some(&b"vm1"[..]));
    assert_eq!(
        r.option(opt::DOMAIN_NAME),
        None,
        "the example has no domain"
    );
    assert_eq!(
        r.codes()[..2],
        [opt::MESSAGE_TYPE, opt::SERVER_ID],
        "type and server id first"
    );
    // No broadcast flag, no ciaddr: to the new address at the client's MAC.
    assert_eq!((r.eth_dst, r.ip_dst), (VM1_MAC, VM1));
    assert!(b.state.dhcp.leases.is_empty(), "static hosts take no lease");
}

#[test]
fn the_broadcast_flag_gets_a_broadcast_reply() {
    let mut b = Bench::example();
    let r = b.ask(&req(MessageType::Discover, VM2_MAC).broadcast_flag());
    assert_eq!((r.eth_dst, r.ip_dst), (BROADCAST, ALL));
    assert_eq!(r.msg.flags, FLAG_BROADCAST, "flags copied");
    assert_eq!(r.msg.yiaddr, VM2);
    assert_eq!(r.option(opt::HOST_NAME), Some(&b"vm2"[..]));
}

#[test]
fn request_while_selecting_is_acked_and_for_another_address_naked() {
    let mut b = Bench::example();
    let r = b.ask(
        &req(MessageType::Request, VM1_MAC)
            .requested(VM1)
            .server(SERVER),
    );
    assert_addressed_reply(&r, MessageType::Ack, VM1, 3600);
    assert_eq!(r.msg.ciaddr, ANY);

    let r = b.ask(
        &req(MessageType::Request, VM1_MAC)
            .requested(VM2)
            .server(SERVER),
    );
    assert_eq!(r.kind(), MessageType::Nak);
    assert_eq!(
        (r.eth_dst, r.ip_dst),
        (BROADCAST, ALL),
        "NAKs are broadcast"
    );
    assert_eq!(r.msg.yiaddr, ANY);
    assert_eq!(
        r.codes(),
        [opt::MESSAGE_TYPE, opt::SERVER_ID, opt::MESSAGE],
        "a NAK carries no configuration"
    );
    assert_eq!(b.state.dhcp.counters.naks, 1);
}

#[test]
fn init_reboot_gets_its_address_or_a_nak_at_once() {
    let mut b = Bench::example();
    let r = b.ask(&req(MessageType::Request, VM1_MAC).requested(VM1));
    assert_eq!((r.kind(), r.msg.yiaddr), (MessageType::Ack, VM1));
    // A lease file naming another client's address.
    let r = b.ask(&req(MessageType::Request, VM1_MAC).requested(VM2));
    assert_eq!(r.kind(), MessageType::Nak);
    // An address from another network.
    let r = b.ask(&req(MessageType::Request, VM1_MAC).requested([192, 168, 1, 5]));
    assert_eq!(r.kind(), MessageType::Nak);
}

#[test]
fn renewing_is_unicast_to_the_client_and_a_wrong_ciaddr_is_naked() {
    let mut b = Bench::example();
    let renew = req(MessageType::Request, VM1_MAC)
        .ciaddr(VM1)
        .unicast_to_server();
    let r = b.ask(&renew);
    assert_addressed_reply(&r, MessageType::Ack, VM1, 3600);
    assert_eq!(r.msg.ciaddr, VM1, "an ACK to a renewal carries ciaddr");
    assert_eq!((r.eth_dst, r.ip_dst), (VM1_MAC, VM1), "unicast to ciaddr");

    let r = b.ask(
        &req(MessageType::Request, VM1_MAC)
            .ciaddr(VM2)
            .unicast_to_server(),
    );
    assert_eq!(r.kind(), MessageType::Nak);
}

#[test]
fn rebinding_is_broadcast_and_answered_to_ciaddr() {
    let mut b = Bench::example();
    let r = b.ask(&req(MessageType::Request, VM2_MAC).ciaddr(VM2));
    assert_eq!((r.kind(), r.msg.yiaddr), (MessageType::Ack, VM2));
    assert_eq!((r.eth_dst, r.ip_dst), (VM2_MAC, VM2));
}

#[test]
fn a_pool_client_is_offered_an_address_and_binds_it() {
    let mut b = Bench::example();
    let offer = b.ask(&req(MessageType::Discover, NEW_MAC));
    let ip = offer.msg.yiaddr;
    assert!(
        (100..=199).contains(&ip[3]) && ip[..3] == [10, 0, 0],
        "{ip:?}"
    );
    assert_addressed_reply(&offer, MessageType::Offer, ip, 3600);
    assert_eq!(offer.option(opt::HOST_NAME), None);
    assert_eq!(
        b.state.dhcp.leases.holder("tenant", ip, b.now),
        Holder::Client(NEW_MAC),
        "the offered address is held for the client"
    );
    assert_eq!(
        b.state.dhcp.leases.revision(),
        0,
        "offers are not persisted"
    );

    let again = b.ask(&req(MessageType::Discover, NEW_MAC));
    assert_eq!(
        again.msg.yiaddr, ip,
        "a second DISCOVER gets the same offer"
    );

    let ack = b.ask(
        &req(MessageType::Request, NEW_MAC)
            .requested(ip)
            .server(SERVER),
    );
    assert_addressed_reply(&ack, MessageType::Ack, ip, 3600);
    let lease = b
        .state
        .dhcp
        .leases
        .lease("tenant", &NEW_MAC, b.now)
        .unwrap();
    assert!(lease.bound);
    assert_eq!(lease.expires_ns, b.now + 3600 * S);
    assert_eq!(
        b.state.dhcp.leases.revision(),
        1,
        "a binding is to be persisted"
    );

    // Another client is not offered the same address.
    let other = b.ask(&req(MessageType::Discover, OTHER_MAC).requested(ip));
    assert_ne!(other.msg.yiaddr, ip);
}

#[test]
fn a_requested_free_pool_address_is_granted() {
    let mut b = Bench::example();
    let want = [10, 0, 0, 150];
    let offer = b.ask(&req(MessageType::Discover, NEW_MAC).requested(want));
    assert_eq!(offer.msg.yiaddr, want);
    // INIT-REBOOT with no record (a lease lost, or from before a restart
    // without the lease file): granted when free.
    let mut b = Bench::example();
    let ack = b.ask(&req(MessageType::Request, NEW_MAC).requested(want));
    assert_eq!((ack.kind(), ack.msg.yiaddr), (MessageType::Ack, want));
    // Not when another client has it.
    let nak = b.ask(&req(MessageType::Request, OTHER_MAC).requested(want));
    assert_eq!(nak.kind(), MessageType::Nak);
    // Nor a static host's address, nor the server's.
    for ip in [VM1, SERVER] {
        let nak = b.ask(&req(MessageType::Request, OTHER_MAC).requested(ip));
        assert_eq!(nak.kind(), MessageType::Nak, "{ip:?}");
    }
}

#[test]
fn a_lease_runs_out_and_its_address_goes_to_someone_else() {
    let short = example().replace("lease_seconds: 3600", "lease_seconds: 10");
    let mut b = Bench::new(&short);
    let want = [10, 0, 0, 150];
    let ack = b.ask(&req(MessageType::Request, NEW_MAC).requested(want));
    assert_eq!(ack.msg.lease_time(), Some(10));
    assert_eq!(ack.msg.renewal_time(), Some(5));
    assert_eq!(ack.msg.rebinding_time(), Some(8));
    b.now += 5 * S;
    let nak = b.ask(&req(MessageType::Request, OTHER_MAC).requested(want));
    assert_eq!(nak.kind(), MessageType::Nak, "still leased");
    b.now += 6 * S;
    let ack = b.ask(&req(MessageType::Request, OTHER_MAC).requested(want));
    assert_eq!(ack.kind(), MessageType::Ack, "the lease ran out");
}

#[test]
fn selecting_another_server_gets_no_reply_and_frees_the_offer() {
    let mut b = Bench::example();
    let offer = b.ask(&req(MessageType::Discover, NEW_MAC));
    let ip = offer.msg.yiaddr;
    let d = b.silent(
        &req(MessageType::Request, NEW_MAC)
            .requested(ip)
            .server([10, 0, 0, 99]),
    );
    assert_eq!(Bench::no_reply_why(&d), Some(NoReply::OtherServer));
    assert_eq!(
        d.verdict,
        Verdict::Flooded,
        "the other server may answer it"
    );
    assert_eq!(
        b.state.dhcp.leases.holder("tenant", ip, b.now),
        Holder::Free
    );
}

#[test]
fn release_frees_a_pool_lease_without_a_reply() {
    let mut b = Bench::example();
    let want = [10, 0, 0, 150];
    b.ask(&req(MessageType::Request, NEW_MAC).requested(want));
    let d = b.silent(
        &req(MessageType::Release, NEW_MAC)
            .ciaddr(want)
            .server(SERVER)
            .unicast_to_server(),
    );
    assert_eq!(d.verdict, Verdict::Consumed);
    assert!(d.emit.is_empty());
    assert_eq!(Bench::no_reply_why(&d), Some(NoReply::Released));
    assert_eq!(b.state.dhcp.leases.lease("tenant", &NEW_MAC, b.now), None);
    let ack = b.ask(&req(MessageType::Request, OTHER_MAC).requested(want));
    assert_eq!(ack.kind(), MessageType::Ack, "free for another client");
}

#[test]
fn decline_holds_the_address_back() {
    let mut b = Bench::example();
    let ip = b.ask(&req(MessageType::Discover, NEW_MAC)).msg.yiaddr;
    b.ask(
        &req(MessageType::Request, NEW_MAC)
            .requested(ip)
            .server(SERVER),
    );
    let d = b.silent(
        &req(MessageType::Decline, NEW_MAC)
            .requested(ip)
            .server(SERVER),
    );
    assert_eq!(d.verdict, Verdict::Consumed);
    assert_eq!(Bench::no_reply_why(&d), Some(NoReply::Declined));
    assert_eq!(
        b.state.dhcp.leases.holder("tenant", ip, b.now),
        Holder::Declined
    );
    let next = b.ask(&req(MessageType::Discover, NEW_MAC).requested(ip));
    assert_ne!(next.msg.yiaddr, ip, "not offered again for a while");
    let nak = b.ask(&req(MessageType::Request, OTHER_MAC).requested(ip));
    assert_eq!(nak.kind(), MessageType::Nak);
    b.now += DECLINE_HOLD_NS;
    let ack = b.ask(&req(MessageType::Request, OTHER_MAC).requested(ip));
    assert_eq!(ack.kind(), MessageType::Ack, "usable again later");
}

#[test]
fn inform_gets_configuration_without_lease_or_mask() {
    let mut b = Bench::example();
    let r = b.ask(
        &req(MessageType::Inform, VM1_MAC)
            .ciaddr(VM1)
            .unicast_to_server(),
    );
    assert_eq!(r.kind(), MessageType::Ack);
    assert_eq!((r.msg.yiaddr, r.msg.ciaddr), (ANY, VM1));
    assert_eq!((r.eth_dst, r.ip_dst), (VM1_MAC, VM1));
    for code in [
        opt::LEASE_TIME,
        opt::RENEWAL_TIME,
        opt::REBINDING_TIME,
        opt::SUBNET_MASK,
        opt::BROADCAST,
    ] {
        assert_eq!(r.option(code), None, "option {code}");
    }
    for code in [
        opt::ROUTER,
        opt::DNS,
        opt::INTERFACE_MTU,
        opt::CLASSLESS_ROUTES,
    ] {
        assert!(r.option(code).is_some(), "option {code}");
    }
    assert!(b.state.dhcp.leases.is_empty());
    // From outside every served subnet: not ours.
    let d = b.silent(&req(MessageType::Inform, VM1_MAC).ciaddr([192, 168, 0, 9]));
    assert_eq!(Bench::no_reply_why(&d), Some(NoReply::NotOnSubnet));
}

#[test]
fn unknown_mac_without_a_pool_gets_no_reply_and_the_request_goes_on() {
    let no_pool = example().replace("        pool: 10.0.0.100-10.0.0.199\n", "");
    assert_ne!(no_pool, example());
    let mut b = Bench::new(&no_pool);
    for r in [
        req(MessageType::Discover, NEW_MAC),
        req(MessageType::Request, NEW_MAC).requested([10, 0, 0, 150]),
    ] {
        let d = b.silent(&r);
        assert_eq!(Bench::no_reply_why(&d), Some(NoReply::UnknownClient));
        assert_eq!(d.verdict, Verdict::Flooded, "as in MidoNet");
    }
    // Static hosts are still served.
    assert_eq!(b.ask(&req(MessageType::Discover, VM1_MAC)).msg.yiaddr, VM1);
}

#[test]
fn an_exhausted_pool_gets_no_reply() {
    let tiny = example().replace("10.0.0.100-10.0.0.199", "10.0.0.100-10.0.0.100");
    let mut b = Bench::new(&tiny);
    let ip = b.ask(&req(MessageType::Discover, NEW_MAC)).msg.yiaddr;
    assert_eq!(ip, [10, 0, 0, 100]);
    let d = b.silent(&req(MessageType::Discover, OTHER_MAC));
    assert_eq!(Bench::no_reply_why(&d), Some(NoReply::PoolExhausted));
}

#[test]
fn a_disabled_subnet_answers_nothing_and_dhcp_is_forwarded() {
    let disabled = example().replace("        pool:", "        enabled: false\n        pool:");
    let mut b = Bench::new(&disabled);
    let d = b.silent(&req(MessageType::Discover, VM1_MAC));
    assert_eq!(d.verdict, Verdict::Flooded);
    assert!(!d
        .trace
        .iter()
        .any(|s| matches!(s, Step::DhcpRequest { .. })));
    // Nor does the bridge answer ARP for the server address.
    let arp = arp_frame(ARP_REQUEST, VM1_MAC, VM1, [0; 6], SERVER, BROADCAST);
    assert_eq!(b.send("tenant/vm1", &arp).verdict, Verdict::Flooded);
}

#[test]
fn a_bridge_without_dhcp_forwards_dhcp_like_any_frame() {
    let mut b = Bench::new(
        "version: 1\nbridges:\n  plain:\n    ports:\n      a: {interface: a-h}\n      b: {interface: b-h}\n",
    );
    let discover = req(MessageType::Discover, VM1_MAC).frame();
    let d = b.send("plain/a", &discover);
    assert_eq!(d.verdict, Verdict::Flooded);
    assert_eq!(d.emit.len(), 1);
    assert_eq!(d.emit[0].frame, discover, "unchanged");
    // A DHCP server behind port b answers unicast: forwarded and installed.
    let offer = udp_frame(VM2_MAC, VM1_MAC, VM2, VM1, 67, 68, b"offer");
    let d = b.send("plain/b", &offer);
    assert_eq!(d.verdict, Verdict::Forwarded);
    assert!(d.install.is_some());
}

#[test]
fn the_bridge_answers_arp_for_the_server_address() {
    let mut b = Bench::example();
    let arp = arp_frame(ARP_REQUEST, VM1_MAC, VM1, [0; 6], SERVER, BROADCAST);
    let d = b.send("tenant/vm1", &arp);
    assert_eq!(d.verdict, Verdict::Answered);
    assert_eq!(
        d.emit[0].frame,
        arp_frame(
            ARP_REPLY,
            server_mac("tenant"),
            SERVER,
            VM1_MAC,
            VM1,
            VM1_MAC
        )
    );
}

#[test]
fn other_frames_to_the_server_mac_are_dropped_not_flooded() {
    let mut b = Bench::example();
    // A DNS query to 10.0.0.2, which is also the DNS address.
    let dns = udp_frame(VM1_MAC, server_mac("tenant"), VM1, SERVER, 5353, 53, b"q");
    let d = b.send("tenant/vm1", &dns);
    assert_eq!(d.verdict, Verdict::Dropped(Reason::DhcpUnanswered));
    assert!(d.emit.is_empty());
    assert!(
        d.install.is_some(),
        "not DHCP: the kernel may drop the rest"
    );
    // A unicast DHCP request the server does not answer (an unknown client
    // without a pool) is dropped too, and not installed.
    let no_pool = example().replace("        pool: 10.0.0.100-10.0.0.199\n", "");
    let mut b = Bench::new(&no_pool);
    let d = b.silent(
        &req(MessageType::Request, NEW_MAC)
            .ciaddr([10, 0, 0, 150])
            .unicast_to_server(),
    );
    assert_eq!(d.verdict, Verdict::Dropped(Reason::DhcpUnanswered));
}

#[test]
fn requests_to_other_addresses_are_not_the_servers() {
    let mut b = Bench::example();
    // To a unicast address that is not a server address: an ordinary frame.
    let mut r = req(MessageType::Discover, VM1_MAC);
    r.ip_dst = [10, 0, 0, 99];
    let d = b.send("tenant/vm1", &r.frame());
    assert_eq!(d.verdict, Verdict::Flooded);
    // From another source port than 67/68.
    let mut r = req(MessageType::Discover, VM1_MAC);
    r.sport = 1234;
    assert_eq!(b.send("tenant/vm1", &r.frame()).verdict, Verdict::Flooded);
}

#[test]
fn host_extra_options_are_sent_and_replace_the_subnets() {
    let yaml = example().replace(
        "name: vm1}",
        "name: vm1, options: [{code: 42, ips: [10.0.0.5]}, {code: 3, ips: [10.0.0.9]}, {code: 51, hex: \"00001c20\"}]}",
    );
    let mut b = Bench::new(&yaml);
    let r = b.ask(&req(MessageType::Discover, VM1_MAC));
    assert_eq!(r.option(42), Some(&[10, 0, 0, 5][..]));
    assert_eq!(r.option(opt::ROUTER), Some(&[10, 0, 0, 9][..]), "replaced");
    assert_eq!(
        r.codes().iter().filter(|&&c| c == opt::ROUTER).count(),
        1,
        "once"
    );
    assert_eq!(r.msg.lease_time(), Some(7200), "the host's lease time");
    assert_eq!(r.msg.renewal_time(), Some(3600), "T1 follows it");
    assert_eq!(r.msg.rebinding_time(), Some(6300), "T2 follows it");
}

#[test]
fn options_that_do_not_fit_are_left_out_unrequested_first() {
    let big = "a".repeat(200);
    let yaml = example().replace(
        "name: vm1}",
        &format!("name: vm1, options: [{{code: 224, text: {big}}}, {{code: 225, text: {big}}}]}}"),
    );
    let mut b = Bench::new(&yaml);
    // 576 bytes leave room for one of the two.
    let r =
        b.ask(&req(MessageType::Discover, VM1_MAC).option(opt::PARAMETER_REQUEST, &[1, 3, 225]));
    assert!(r.option(225).is_some(), "asked for");
    assert!(r.option(224).is_none(), "not asked for, no room");
    assert!(r.msg.emit().len() + 28 <= 576);
    assert_addressed_reply(&r, MessageType::Offer, VM1, 3600);
    // With a larger maximum message size, both.
    let r = b.ask(
        &req(MessageType::Discover, VM1_MAC)
            .option(opt::PARAMETER_REQUEST, &[1, 3, 225])
            .option(opt::MAX_MESSAGE_SIZE, &1500u16.to_be_bytes()),
    );
    assert!(r.option(224).is_some() && r.option(225).is_some());
}

#[test]
fn a_relayed_request_is_answered_to_the_relay() {
    let mut b = Bench::example();
    let mut r = req(MessageType::Discover, VM1_MAC);
    r.msg.giaddr = [10, 0, 0, 254];
    r.eth_src = OTHER_MAC;
    r.sport = 67;
    let reply = b.ask(&r);
    assert_eq!(reply.msg.giaddr, [10, 0, 0, 254]);
    assert_eq!((reply.eth_dst, reply.ip_dst), (OTHER_MAC, [10, 0, 0, 254]));
    assert_eq!(reply.ports, (67, 67));
}

#[test]
fn a_tagged_port_gets_a_tagged_reply() {
    let yaml = example().replace(
        "vm1: {interface: vm1-h}",
        "vm1: {interface: vm1-h, vlan: 7}",
    );
    let mut b = Bench::new(&yaml);
    let d = b.send(
        "tenant/vm1",
        &with_vlan(&req(MessageType::Discover, VM1_MAC).frame(), 7),
    );
    assert_eq!(d.verdict, Verdict::Answered);
    let h = packet::parse(&d.emit[0].frame).unwrap();
    assert_eq!(h.vlan, Some(7));
}

#[test]
fn the_trace_names_the_request_and_the_reply() {
    let mut b = Bench::example();
    let d = b.send("tenant/vm1", &req(MessageType::Discover, VM1_MAC).frame());
    assert!(d.trace.contains(&Step::DhcpRequest {
        kind: MessageType::Discover,
        mac: VM1_MAC,
        xid: 0xdead_beef
    }));
    assert!(d.trace.contains(&Step::DhcpReply {
        kind: MessageType::Offer,
        ip: VM1,
        to: VM1
    }));
}

/// The malformed requests: each dropped under its reason, never answered,
/// never installed, never a panic.
#[test]
fn malformed_requests_are_counted_and_dropped() {
    let mut b = Bench::example();
    let good = req(MessageType::Discover, VM1_MAC);
    let payload = good.payload();

    // Every truncation of the message (with matching IP/UDP lengths).
    let end = payload.iter().rposition(|&x| x == opt::END).unwrap();
    for len in 0..=end {
        let d = b.send("tenant/vm1", &good.frame_with(&payload[..len]));
        let Verdict::Dropped(reason) = d.verdict else {
            panic!("length {len}: {:?}", d.verdict)
        };
        assert!(
            matches!(reason, Reason::DhcpTruncated | Reason::DhcpBadOption),
            "length {len}: {reason:?}"
        );
        assert!(d.emit.is_empty() && d.install.is_none());
    }
    assert_eq!(
        b.send("tenant/vm1", &good.frame_with(&payload[..100]))
            .verdict,
        Verdict::Dropped(Reason::DhcpTruncated)
    );

    let mut no_cookie = payload.clone();
    no_cookie[236] = 0;
    let cases: Vec<(&str, Vec<u8>, Reason)> = vec![
        (
            "no cookie",
            good.frame_with(&no_cookie),
            Reason::DhcpNoCookie,
        ),
        (
            "overload",
            good.clone().option(opt::OVERLOAD, &[3]).frame(),
            Reason::DhcpOverload,
        ),
        (
            "bad option length",
            good.clone().option(opt::REQUESTED_IP, &[10, 0, 0]).frame(),
            Reason::DhcpBadOption,
        ),
        (
            "no message type",
            {
                let mut r = good.clone();
                r.msg.options.clear();
                r.frame()
            },
            Reason::DhcpBadOption,
        ),
        (
            "a reply sent to the server",
            {
                let mut r = good.clone();
                r.msg.op = OP_REPLY;
                r.frame()
            },
            Reason::DhcpBadHeader,
        ),
        (
            "not Ethernet",
            {
                let mut r = good.clone();
                r.msg.hlen = 16;
                r.frame()
            },
            Reason::DhcpBadHeader,
        ),
    ];
    for (what, frame, reason) in cases {
        let d = b.send("tenant/vm1", &frame);
        assert_eq!(d.verdict, Verdict::Dropped(reason), "{what}");
        assert!(d.emit.is_empty() && d.install.is_none(), "{what}");
        assert!(
            d.trace
                .iter()
                .any(|s| matches!(s, Step::DhcpInvalid { .. })),
            "{what}: the trace says why"
        );
    }

    // IPv4 and UDP lengths that do not match the frame.
    let frame = good.frame();
    let ip = 14;
    let udp = ip + 20;
    let set16 =
        |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_be_bytes());
    let total = u16::from_be_bytes([frame[ip + 2], frame[ip + 3]]);
    let mut long_ip = frame.clone();
    set16(&mut long_ip, ip + 2, total + 10);
    let mut long_udp = frame.clone();
    set16(&mut long_udp, udp + 4, total - 20 + 1);
    let mut short_udp = frame.clone();
    set16(&mut short_udp, udp + 4, 7);
    let mut fragment = frame.clone();
    fragment[ip + 6] = 0x20; // more fragments
    fragment[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let c = packet::checksum::ipv4_header(&fragment[ip..ip + 20]);
    fragment[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    // Lengths inconsistent with the frame never reach DHCP: the parser
    // drops them first (as the kernel refuses to key them).
    for (what, f, reason) in [
        (
            "IP total length past the frame",
            long_ip,
            Reason::Ipv4BadLength,
        ),
        (
            "UDP length past the IP packet",
            long_udp,
            Reason::L4BadHeader,
        ),
        (
            "UDP length under its header",
            short_udp,
            Reason::L4BadHeader,
        ),
        ("a first fragment", fragment, Reason::DhcpBadLength),
    ] {
        let d = b.send("tenant/vm1", &f);
        assert_eq!(d.verdict, Verdict::Dropped(reason), "{what}");
        assert!(d.emit.is_empty() && d.install.is_none(), "{what}");
    }

    // Every truncation of the whole frame: whatever the verdict, no reply.
    for len in 0..frame.len() {
        let d = b.send("tenant/vm1", &frame[..len]);
        assert!(d.emit.is_empty(), "frame cut at {len}");
    }
    assert!(b.state.dhcp.leases.is_empty());
    assert_eq!(b.state.dhcp.counters.offers, 0);
}

/// Random bytes after a valid fixed header: never a panic, and any reply is
/// a valid message.
#[test]
fn garbage_options_never_panic() {
    let mut b = Bench::example();
    let good = req(MessageType::Discover, NEW_MAC);
    let header = &good.payload()[..240];
    let mut seed: u64 = 0x1234_5678_9abc_def0;
    for _ in 0..2000 {
        let mut p = header.to_vec();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 64) as usize;
        for i in 0..len {
            p.push((seed >> (i % 56)) as u8 ^ (i as u8).wrapping_mul(31));
        }
        let d = b.send("tenant/vm1", &good.frame_with(&p));
        for e in &d.emit {
            if e.port == b.port("tenant/vm1") {
                Reply::parse(&e.frame);
            }
        }
    }
}

#[test]
fn a_server_on_the_routers_address_takes_renewals_sent_to_the_routers_mac() {
    let mut b = Bench::new(
        r#"
version: 1
bridges:
  tenant:
    dhcp:
      - {subnet: 10.0.0.0/24, server: 10.0.0.1, gateway: 10.0.0.1, hosts: [{mac: "02:00:00:00:01:01", ip: 10.0.0.11}]}
    ports:
      vm1: {interface: vm1-h}
      gw: {peer: r1/tenant}
routers:
  r1:
    ports:
      tenant: {address: 10.0.0.1/24, peer: tenant/gw}
"#,
    );
    let router_mac = b.snap.ports[b.port("r1/tenant")].l3.unwrap().mac;
    // ARP for the shared address names the router: routing keeps working.
    let arp = arp_frame(ARP_REQUEST, VM1_MAC, VM1, [0; 6], [10, 0, 0, 1], BROADCAST);
    let d = b.send("tenant/vm1", &arp);
    assert_eq!(
        d.emit[0].frame,
        arp_frame(ARP_REPLY, router_mac, [10, 0, 0, 1], VM1_MAC, VM1, VM1_MAC)
    );
    // A renewal sent there is still the DHCP server's.
    let mut renew = req(MessageType::Request, VM1_MAC).ciaddr(VM1);
    renew.eth_dst = router_mac;
    renew.ip_dst = [10, 0, 0, 1];
    let r = b.ask(&renew);
    assert_eq!(
        (r.kind(), r.msg.yiaddr, r.ip_src),
        (MessageType::Ack, VM1, [10, 0, 0, 1])
    );
}

/// A DISCOVER from `port` by a client (spoofed or not) with `mac`; returns
/// the decision and the offered address, if one came.
fn discover_from(b: &mut Bench, port: &str, mac: Mac) -> (Decision, Option<[u8; 4]>) {
    let d = b.send(port, &req(MessageType::Discover, mac).frame());
    let offered =
        (d.verdict == Verdict::Answered).then(|| Reply::parse(&d.emit[0].frame).msg.yiaddr);
    (d, offered)
}

fn spoofed(n: u8) -> Mac {
    [2, 0, 0, 0x5f, 0, n]
}

#[test]
fn spoofed_clients_on_one_port_get_its_share_of_the_pool_and_no_more() {
    let small = example().replace("10.0.0.100-10.0.0.199", "10.0.0.100-10.0.0.109");
    let mut b = Bench::new(&small);
    let mut offered = 0;
    for n in 0..40 {
        match discover_from(&mut b, "tenant/vm3", spoofed(n)) {
            (_, Some(_)) => offered += 1,
            (d, None) => {
                assert_eq!(d.verdict, Verdict::Dropped(Reason::DhcpLeaseLimit));
                assert!(d.emit.is_empty(), "neither answered nor flooded");
                assert_eq!(Bench::no_reply_why(&d), Some(NoReply::PortLeaseLimit));
            }
        }
    }
    let vm3 = b.snap.ports[b.port("tenant/vm3")].tag;
    assert_eq!(offered, 4, "the default share of a port");
    assert_eq!(b.state.dhcp.leases.port_leases(vm3, b.now), 4);
    assert_eq!(b.state.dhcp.leases.counters.port_limit, 36);
    // The pool still serves the clients of the other ports.
    assert!(discover_from(&mut b, "tenant/vm1", NEW_MAC).1.is_some());
    assert!(discover_from(&mut b, "tenant/vm2", OTHER_MAC).1.is_some());
    // And the spoofing port's own clients renew as before.
    let first = b.state.dhcp.leases.lease("tenant", &spoofed(0), b.now);
    let ip = first.expect("the first spoofed client was offered").ip;
    let d = b.send(
        "tenant/vm3",
        &req(MessageType::Request, spoofed(0)).requested(ip).frame(),
    );
    assert_eq!(d.verdict, Verdict::Answered);
    assert_eq!(Reply::parse(&d.emit[0].frame).kind(), MessageType::Ack);
}

#[test]
fn offers_never_taken_free_the_pool_within_seconds() {
    // Four addresses, held by four clients of one port that never ask for
    // their offers (as spoofed DISCOVERs never do).
    let tiny = example().replace("10.0.0.100-10.0.0.199", "10.0.0.100-10.0.0.103");
    let mut b = Bench::new(&tiny);
    for n in 0..4 {
        assert!(discover_from(&mut b, "tenant/vm3", spoofed(n)).1.is_some());
    }
    let (d, offered) = discover_from(&mut b, "tenant/vm1", NEW_MAC);
    assert_eq!(offered, None);
    assert_eq!(Bench::no_reply_why(&d), Some(NoReply::PoolExhausted));
    // Ten seconds later (not a minute) the pool is free again.
    b.now += 10 * S;
    let ip = discover_from(&mut b, "tenant/vm1", NEW_MAC)
        .1
        .expect("an offer");
    assert_eq!(ip[..3], [10, 0, 0]);
}
