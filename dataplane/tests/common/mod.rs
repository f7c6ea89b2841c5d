//! The simulation test bench shared by the newer simulation tests: a
//! validated topology compiled into a snapshot, state, a clock, and helpers
//! to send frames and read decisions. (Older sim_*.rs files still carry
//! their own copies.)
#![allow(dead_code)]
use vnet_dataplane::packet::Mac;
use vnet_dataplane::sim::{simulate, Decision, PortId, Snapshot, State};

pub struct Bench {
    pub snap: Snapshot,
    pub state: State,
    pub now: u64,
}

impl Bench {
    /// A bench on `yaml`, which must validate (the tests run what vnetd
    /// would accept).
    pub fn new(yaml: &str) -> Bench {
        let topo = vnet_model::load_str(yaml).expect("test topology is valid");
        Bench {
            snap: Snapshot::compile(&topo, 1),
            state: State::default(),
            now: 1,
        }
    }

    pub fn port(&self, name: &str) -> PortId {
        self.snap
            .port_by_name(name)
            .unwrap_or_else(|| panic!("no port {name}"))
    }

    /// The MAC of a router port.
    pub fn mac(&self, router_port: &str) -> Mac {
        self.snap.ports[self.port(router_port)]
            .l3
            .expect("a router port")
            .mac
    }

    /// Simulates `frame` arriving on `port` a millisecond after the last one.
    pub fn send(&mut self, port: &str, frame: &[u8]) -> Decision {
        self.now += 1_000_000;
        let p = self.port(port);
        simulate(&self.snap, &mut self.state, p, frame, self.now, true)
    }

    /// The ports a decision emitted to, by name, sorted.
    pub fn emitted_to(&self, d: &Decision) -> Vec<String> {
        let mut v: Vec<String> = d
            .emit
            .iter()
            .map(|e| self.snap.ports[e.port].name.clone())
            .collect();
        v.sort();
        v
    }
}
