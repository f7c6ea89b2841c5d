//! A router's routing table: longest prefix match, then source prefix,
//! weight and ECMP.
//!
//! Routes are kept in one hash map per prefix length, and a lookup probes
//! only the lengths that have routes, longest first: at most 33 hash probes
//! whatever the number of routes (not a scan). Among the routes of the
//! longest matching prefix whose source prefix (if any) matches, the lowest
//! weight wins (as MidoNet and Linux metrics: lower is preferred); equal
//! weights share the traffic by flow hash (ECMP). If no route of a length
//! matches the source, shorter prefixes are tried.
use super::PortId;
use crate::hash::HashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// Out of `port`, to `gateway` or (on-link) to the destination itself.
    Port {
        port: PortId,
        gateway: Option<[u8; 4]>,
    },
    Blackhole,
    Reject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: [u8; 4],
    pub dst_len: u8,
    pub src: Option<([u8; 4], u8)>,
    pub next_hop: NextHop,
    pub weight: u32,
    /// Position in the router's `routes` list, for the trace.
    pub index: usize,
}

pub fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

pub fn in_prefix(addr: [u8; 4], prefix: [u8; 4], len: u8) -> bool {
    u32::from_be_bytes(addr) & mask(len) == u32::from_be_bytes(prefix) & mask(len)
}

#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// (prefix length, routes by masked destination), longest first.
    by_len: Vec<(u8, HashMap<u32, Vec<Route>>)>,
}

impl RouteTable {
    pub fn new(routes: impl IntoIterator<Item = Route>) -> RouteTable {
        let mut lens: HashMap<u8, HashMap<u32, Vec<Route>>> = HashMap::default();
        for r in routes {
            let key = u32::from_be_bytes(r.dst) & mask(r.dst_len);
            lens.entry(r.dst_len)
                .or_default()
                .entry(key)
                .or_default()
                .push(r);
        }
        let mut by_len: Vec<_> = lens.into_iter().collect();
        by_len.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        RouteTable { by_len }
    }

    pub fn len(&self) -> usize {
        self.by_len
            .iter()
            .map(|(_, m)| m.values().map(Vec::len).sum::<usize>())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_len.is_empty()
    }

    /// The best routes for a packet from `src` to `dst`: those of the
    /// longest matching prefix whose source prefix matches, at the lowest
    /// weight (the equal-cost ones, in table order); `None` when no route
    /// matches.
    fn best(&self, dst: [u8; 4], src: [u8; 4]) -> Option<impl Iterator<Item = &Route> + Clone> {
        let dst = u32::from_be_bytes(dst);
        for (len, routes) in &self.by_len {
            let Some(candidates) = routes.get(&(dst & mask(*len))) else {
                continue;
            };
            let matching = candidates
                .iter()
                .filter(move |r| r.src.is_none_or(|(p, l)| in_prefix(src, p, l)));
            let Some(best) = matching.clone().map(|r| r.weight).min() else {
                continue;
            };
            return Some(matching.filter(move |r| r.weight == best));
        }
        None
    }

    /// Whether one of the best routes for a packet from `src` to `dst` (any
    /// of the equal-cost ones, whatever the flow hash) satisfies `pred`;
    /// false when no route matches. For reverse-path checks.
    pub fn any_best(&self, dst: [u8; 4], src: [u8; 4], pred: impl Fn(&Route) -> bool) -> bool {
        self.best(dst, src)
            .is_some_and(|mut routes| routes.any(pred))
    }

    /// The route for a packet from `src` to `dst`; `flow_hash` picks among
    /// equal-cost routes, so one flow always takes the same path.
    pub fn lookup(&self, dst: [u8; 4], src: [u8; 4], flow_hash: u64) -> Option<&Route> {
        let mut routes = self.best(dst, src)?;
        let n = routes.clone().count() as u64;
        routes.nth((flow_hash % n) as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: [u8; 4], len: u8, port: PortId, weight: u32) -> Route {
        Route {
            dst,
            dst_len: len,
            src: None,
            next_hop: NextHop::Port {
                port,
                gateway: None,
            },
            weight,
            index: port,
        }
    }

    fn port_of(r: Option<&Route>) -> Option<PortId> {
        match r?.next_hop {
            NextHop::Port { port, .. } => Some(port),
            _ => None,
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let t = RouteTable::new([
            route([0, 0, 0, 0], 0, 1, 0),
            route([10, 0, 0, 0], 8, 2, 0),
            route([10, 1, 0, 0], 16, 3, 0),
        ]);
        assert_eq!(port_of(t.lookup([10, 1, 2, 3], [1, 1, 1, 1], 0)), Some(3));
        assert_eq!(port_of(t.lookup([10, 2, 2, 3], [1, 1, 1, 1], 0)), Some(2));
        assert_eq!(port_of(t.lookup([8, 8, 8, 8], [1, 1, 1, 1], 0)), Some(1));
        assert_eq!(
            RouteTable::new([route([10, 0, 0, 0], 8, 2, 0)]).lookup([11, 0, 0, 1], [0; 4], 0),
            None
        );
    }

    #[test]
    fn lower_weight_wins_and_equal_weights_share_by_hash() {
        let t = RouteTable::new([
            route([10, 0, 0, 0], 8, 1, 20),
            route([10, 0, 0, 0], 8, 2, 10),
            route([10, 0, 0, 0], 8, 3, 10),
        ]);
        let picks: Vec<_> = (0..8)
            .map(|h| port_of(t.lookup([10, 0, 0, 1], [0; 4], h)))
            .collect();
        assert!(
            picks.contains(&Some(2)) && picks.contains(&Some(3)),
            "both equal routes used: {picks:?}"
        );
        assert!(!picks.contains(&Some(1)), "the heavier route is never used");
        assert_eq!(
            t.lookup([10, 0, 0, 1], [0; 4], 5),
            t.lookup([10, 0, 0, 1], [0; 4], 5),
            "stable per flow"
        );
    }

    #[test]
    fn source_prefix_restricts_and_falls_back_to_shorter_prefixes() {
        let mut sourced = route([10, 2, 0, 0], 16, 5, 0);
        sourced.src = Some(([10, 0, 0, 0], 24));
        let t = RouteTable::new([sourced, route([10, 0, 0, 0], 8, 6, 0)]);
        assert_eq!(port_of(t.lookup([10, 2, 0, 1], [10, 0, 0, 7], 0)), Some(5));
        assert_eq!(port_of(t.lookup([10, 2, 0, 1], [10, 9, 0, 7], 0)), Some(6));
    }

    #[test]
    fn blackhole_and_reject_are_routes_too() {
        let mut b = route([10, 66, 0, 0], 16, 0, 0);
        b.next_hop = NextHop::Blackhole;
        let t = RouteTable::new([b, route([10, 0, 0, 0], 8, 1, 0)]);
        assert_eq!(
            t.lookup([10, 66, 1, 1], [0; 4], 0).unwrap().next_hop,
            NextHop::Blackhole
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn ten_thousand_routes_resolve_by_prefix() {
        let routes = (0..10_000u32).map(|i| {
            let b = (i + 1).to_be_bytes();
            route([10, b[1], b[2], b[3]], 32, i as usize, 0)
        });
        let t = RouteTable::new(routes);
        assert_eq!(
            port_of(t.lookup([10, 0, 0x27, 0x10], [0; 4], 0)),
            Some(9_999)
        );
    }
}
