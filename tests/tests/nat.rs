//! NAT end to end on the example tenant-nat.yaml: SNAT, the floating IP
//! behind its firewall, the port forward, ICMP through NAT (both ways),
//! fragments of a first datagram, hairpin.
//!
//! The outside: `out` is the uplink's gateway 192.0.2.1 and forwards to
//! `far` (198.18.0.2), one hop further, where the test servers run.
use anyhow::Result;
use std::time::Duration;
use vnet_e2e::{have_root, repo_root, Background, Guest, World};

/// A web server that answers with the client's address as it sees it.
const WHOAMI: &str = "import http.server\n\
class H(http.server.BaseHTTPRequestHandler):\n    \
def do_GET(self):\n        b=self.client_address[0].encode()\n        self.send_response(200)\n        \
self.send_header('Content-Length',str(len(b)))\n        self.end_headers()\n        self.wfile.write(b)\n    \
def log_message(self,*a):\n        pass\n\
http.server.HTTPServer(('0.0.0.0',80),H).serve_forever()\n";

struct Tenant {
    w: World,
    vm1: Guest,
    vm2: Guest,
    far: Guest,
    /// A third guest, when the topology has a vm3 port.
    vm3: Option<Guest>,
}

fn tenant(test: &str, topology: Option<&str>) -> Result<Tenant> {
    let mut w = World::new(test)?;
    let vm1 = w.guest("vm1", "vm1-h", "02:00:00:00:01:01", "10.0.0.11")?;
    let vm2 = w.guest("vm2", "vm2-h", "02:00:00:00:01:02", "10.0.0.12")?;
    let vm3 = match topology {
        Some(yaml) if yaml.contains("vm3-h") => {
            Some(w.guest("vm3", "vm3-h", "02:00:00:00:01:03", "10.0.0.13")?)
        }
        _ => None,
    };
    let (_out, far) = w.outside()?;
    w.route(&vm1, &["default", "via", "10.0.0.1"])?;
    w.route(&vm2, &["default", "via", "10.0.0.1"])?;
    if let Some(vm3) = &vm3 {
        w.route(vm3, &["default", "via", "10.0.0.1"])?;
    }
    let path = match topology {
        Some(yaml) => w.topology_file(yaml)?,
        None => repo_root().join("examples/tenant-nat.yaml"),
    };
    w.start_vnetd(&path)?;
    Ok(Tenant {
        w,
        vm1,
        vm2,
        far,
        vm3,
    })
}

fn whoami(t: &Tenant, g: &Guest) -> Result<Background> {
    t.w.spawn(g, &["/usr/bin/python3", "-c", WHOAMI])
}

fn curl(t: &Tenant, g: &Guest, url: &str) -> Result<String> {
    let out = t.w.exec(g, &["curl", "-s", "-m", "3", url])?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// One-shot TCP server answering `pong` on `port`.
fn pong_server(t: &Tenant, g: &Guest, port: u16) -> Result<Background> {
    let code = format!(
        "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
         s.bind(('0.0.0.0',{port}))\ns.listen()\ns.settimeout(8)\nc,a=s.accept()\nc.sendall(b'pong')\n"
    );
    t.w.spawn(g, &["/usr/bin/python3", "-c", &code])
}

fn tcp_client(t: &Tenant, g: &Guest, host: &str, port: u16) -> Result<String> {
    let code = format!(
        "import socket\ns=socket.socket()\ns.settimeout(2)\ntry:\n    s.connect(('{host}',{port}))\n    \
         print(s.recv(10).decode())\nexcept socket.timeout:\n    print('timeout')\n"
    );
    Ok(t.w.python(g, &code)?.trim().to_string())
}

#[test]
fn guests_reach_the_outside_through_snat_and_their_floating_ip() -> Result<()> {
    if !have_root("guests_reach_the_outside_through_snat_and_their_floating_ip") {
        return Ok(());
    }
    let t = tenant("snat", None)?;
    let _web = whoami(&t, &t.far)?;
    assert_eq!(
        curl(&t, &t.vm2, "http://198.18.0.2/")?,
        "192.0.2.10",
        "vm2 leaves as the SNAT address"
    );
    assert_eq!(
        curl(&t, &t.vm1, "http://198.18.0.2/")?,
        "192.0.2.50",
        "vm1 leaves as its floating IP"
    );
    // After the first packets, NAT'ed traffic stays in the kernel.
    let before = t.w.kernel_flow_packets("vm2-h")?;
    assert_eq!(t.w.ping(&t.vm2, "198.18.0.2", 50)?, 50);
    let in_kernel = t.w.kernel_flow_packets("vm2-h")? - before;
    assert!(
        in_kernel >= 96,
        "only {in_kernel} of 100 NAT'ed packets were handled by kernel flows"
    );
    Ok(())
}

#[test]
fn the_floating_ip_is_reachable_through_its_firewall_only() -> Result<()> {
    if !have_root("the_floating_ip_is_reachable_through_its_firewall_only") {
        return Ok(());
    }
    let t = tenant("floating", None)?;
    assert_eq!(t.w.ping(&t.far, "192.0.2.50", 3)?, 3, "icmp is allowed");
    let _ssh = pong_server(&t, &t.vm1, 22)?;
    assert_eq!(
        tcp_client(&t, &t.far, "192.0.2.50", 22)?,
        "pong",
        "tcp/22 is allowed"
    );
    let _web = pong_server(&t, &t.vm1, 80)?;
    assert_eq!(
        tcp_client(&t, &t.far, "192.0.2.50", 80)?,
        "timeout",
        "tcp/80 is dropped"
    );
    Ok(())
}

#[test]
fn the_port_forward_reaches_vm2() -> Result<()> {
    if !have_root("the_port_forward_reaches_vm2") {
        return Ok(());
    }
    let t = tenant("forward", None)?;
    let _web = whoami(&t, &t.vm2)?;
    assert_eq!(
        curl(&t, &t.far, "http://192.0.2.10:8080/")?,
        "198.18.0.2",
        "DNAT keeps the client's address"
    );
    Ok(())
}

#[test]
fn icmp_errors_cross_the_nat_both_ways() -> Result<()> {
    if !have_root("icmp_errors_cross_the_nat_both_ways") {
        return Ok(());
    }
    let t = tenant("icmp", None)?;
    // traceroute through SNAT: out's time exceeded is translated back.
    let trace = t.w.exec(
        &t.vm2,
        &[
            "traceroute",
            "-n",
            "-q",
            "2",
            "-w",
            "1",
            "-m",
            "4",
            "198.18.0.2",
        ],
    )?;
    let trace = String::from_utf8_lossy(&trace.stdout).into_owned();
    let hop = |n: usize| {
        trace
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{n} ")))
            .unwrap_or("")
    };
    assert!(
        hop(1).contains("10.0.0.1"),
        "hop 1 is the tenant router: {trace}"
    );
    assert!(
        hop(2).contains("192.0.2.1"),
        "hop 2 answered through SNAT: {trace}"
    );
    assert!(
        hop(3).contains("198.18.0.2"),
        "hop 3 is the destination: {trace}"
    );
    // A port unreachable about vm1's datagram comes back through the
    // floating IP's DNAT with its quoted header restored: the socket sees
    // "connection refused".
    let code = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\n\
                s.connect(('198.18.0.2',9))\ns.send(b'x')\ntry:\n    s.recv(10)\n    print('data')\n\
                except ConnectionRefusedError:\n    print('refused')\nexcept socket.timeout:\n    print('timeout')\n";
    assert_eq!(t.w.python(&t.vm1, code)?.trim(), "refused");
    assert_eq!(
        t.w.python(&t.vm2, code)?.trim(),
        "refused",
        "and through SNAT"
    );
    Ok(())
}

#[test]
fn hairpin_to_the_floating_ip_and_the_port_forward() -> Result<()> {
    if !have_root("hairpin_to_the_floating_ip_and_the_port_forward") {
        return Ok(());
    }
    let t = tenant("hairpin", None)?;
    let ping = t.w.exec(
        &t.vm2,
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "192.0.2.50"],
    )?;
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(
        text.contains("3 received"),
        "vm2 reaches vm1's floating IP: {text}"
    );
    assert!(
        text.contains("from 192.0.2.50"),
        "and the replies come from it: {text}"
    );
    assert_eq!(
        t.w.ping(&t.vm1, "192.0.2.50", 2)?,
        2,
        "vm1 reaches its own floating IP"
    );
    let _web = whoami(&t, &t.vm2)?;
    assert_eq!(
        curl(&t, &t.vm1, "http://192.0.2.10:8080/")?,
        "10.0.0.1",
        "through the router, SNAT'ed to its port"
    );
    Ok(())
}

#[test]
fn two_guests_pinging_out_with_the_same_icmp_id() -> Result<()> {
    if !have_root("two_guests_pinging_out_with_the_same_icmp_id") {
        return Ok(());
    }
    let yaml = std::fs::read_to_string(repo_root().join("examples/tenant-nat.yaml"))?.replace(
        "      vm2: {interface: vm2-h}\n",
        "      vm2: {interface: vm2-h}\n      vm3: {interface: vm3-h}\n",
    );
    let t = tenant("echo-id", Some(&yaml))?;
    let vm3 = t.vm3.as_ref().expect("the topology has vm3");
    let echo = "from scapy.all import IP, ICMP, sr1\n\
                r = sr1(IP(dst='198.18.0.2')/ICMP(id=4242, seq=1)/b'same-id', timeout=3, verbose=False)\n\
                print('none' if r is None else '%s %d' % (r[IP].src, r[ICMP].id))\n";
    let a = t.w.python(&t.vm2, echo)?;
    let b = t.w.python(vm3, echo)?;
    assert_eq!(
        a.trim(),
        "198.18.0.2 4242",
        "vm2's echo comes back with its id"
    );
    assert_eq!(
        b.trim(),
        "198.18.0.2 4242",
        "vm3's too, although both left through one address"
    );
    Ok(())
}

#[test]
fn a_fragmented_first_datagram_reassembles_behind_snat() -> Result<()> {
    if !have_root("a_fragmented_first_datagram_reassembles_behind_snat") {
        return Ok(());
    }
    let t = tenant("frag", None)?;
    let server = t.w.spawn(
        &t.far,
        &[
            "/usr/bin/python3",
            "-c",
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             s.bind(('0.0.0.0',9999))\ns.settimeout(5)\ntry:\n    d,a=s.recvfrom(65535)\n    \
             print(len(d), a[0])\nexcept socket.timeout:\n    print('timeout')\n",
        ],
    )?;
    // vm2's very first datagram to far is larger than its MTU: its kernel
    // sends it in three fragments, all simulated before any flow exists.
    t.w.python(
        &t.vm2,
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.sendto(b'x'*4000,('198.18.0.2',9999))\n",
    )?;
    assert_eq!(
        server.finish(Duration::from_secs(7))?.trim(),
        "4000 192.0.2.10",
        "far reassembles the datagram, every fragment from the SNAT address"
    );
    Ok(())
}

#[test]
fn an_inside_hosts_port_unreachable_leaves_translated() -> Result<()> {
    if !have_root("an_inside_hosts_port_unreachable_leaves_translated") {
        return Ok(());
    }
    let t = tenant("icmp-out", None)?;
    // far answers vm2's datagram after vm2 closed its socket: vm2's kernel
    // answers with port unreachable, which must reach far from the SNAT
    // address and quoting far's own packet, so far's socket sees it.
    // far waits half a second before it answers: vm2's socket must be
    // closed by then (a datagram that finds it still open is queued there
    // and dropped with it, no ICMP), which the fast path made a real race.
    let far_code = "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
                    s.bind(('0.0.0.0',9999))\ns.settimeout(5)\ntry:\n    d,a=s.recvfrom(100)\n    \
                    time.sleep(0.5)\n    s.connect(a)\n    s.send(b'reply')\n    s.recv(100)\n    print('data')\n\
                    except ConnectionRefusedError:\n    print('refused', a[0], a[1])\n\
                    except socket.timeout:\n    print('timeout')\n";
    let cap = t.w.capture(&t.far, "icmp")?;
    let server = t.w.spawn(&t.far, &["/usr/bin/python3", "-c", far_code])?;
    t.w.python(
        &t.vm2,
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('0.0.0.0',5555))\ns.sendto(b'hello',('198.18.0.2',9999))\ns.close()\n",
    )?;
    let got = server.finish(Duration::from_secs(7))?;
    let lines = cap.finish()?;
    assert_eq!(got.trim(), "refused 192.0.2.10 5555", "capture: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l
                .contains("192.0.2.10 > 198.18.0.2: ICMP 192.0.2.10 udp port 5555 unreachable")),
        "the error leaves from the SNAT address about the SNAT port: {lines:?}"
    );
    Ok(())
}
