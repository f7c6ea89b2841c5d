//! Tunnel keys: the VXLAN network identifier (VNI) of each port placed on
//! a host. The ingress host encapsulates a frame for a port on another host
//! with that port's key; the egress host's kernel delivers by the key alone,
//! without simulating. So every host must agree on a port's key at every
//! revision, and a key must never be handed to another port while a host
//! may still hold the old topology: keys are stored in the topology, given
//! once by the store (MidoNet's API allocated them the same way) and kept
//! for as long as the port exists.
use crate::{Topology, ValidationError};
use std::collections::BTreeSet;

/// The first key given, and the last a port may have: 0xFF_FFFF is
/// reserved (flow state between hosts, HOSTS.md).
pub const FIRST_TUNNEL_KEY: u32 = 1;
pub const LAST_TUNNEL_KEY: u32 = 0xFF_FFFE;

impl Topology {
    /// Gives a tunnel key to every port placed on a host (`host:`) that has
    /// none: the key the same port (same `device/port` path) had in
    /// `previous`, else one above every key either topology holds (a key
    /// released by this change is not handed out: a host still on
    /// `previous` would send the released port's traffic to the new one).
    /// Keys written in the topology are kept, but a port's key never
    /// changes, and a new port may not be written a key at or below the
    /// highest one `previous` holds (it may have been another port's).
    /// Stores call this on every change before validating it.
    ///
    /// A key released by one change (the highest) would be given by the
    /// next while a host that lost the store still routes by it: a store
    /// shared by many hosts keeps the highest key it ever gave and calls
    /// [`Topology::keep_tunnel_keys_above`] with it.
    pub fn keep_tunnel_keys(&mut self, previous: &Topology) -> Result<(), Vec<ValidationError>> {
        self.keep_tunnel_keys_above(previous, 0)
    }

    /// [`Topology::keep_tunnel_keys`], with every key up to `given` (the
    /// highest a store ever gave) counted as given: new keys are above it,
    /// and a new port may not be written one at or below it.
    pub fn keep_tunnel_keys_above(
        &mut self,
        previous: &Topology,
        given: u32,
    ) -> Result<(), Vec<ValidationError>> {
        // One pass over each topology: every port of a large one passes
        // here on every change.
        let mut highest_before = given.min(LAST_TUNNEL_KEY);
        let mut taken: BTreeSet<u32> = BTreeSet::new();
        for key in keys(previous) {
            taken.insert(key);
            highest_before = highest_before.max(key);
        }
        taken.extend(keys(self));
        // Above every key in use or ever given; only when the range is used
        // up are gaps filled, lowest first.
        let mut next = taken
            .last()
            .copied()
            .unwrap_or(0)
            .max(highest_before)
            .saturating_add(1)
            .max(FIRST_TUNNEL_KEY);
        let mut fresh = |taken: &mut BTreeSet<u32>| {
            if next > LAST_TUNNEL_KEY {
                next = FIRST_TUNNEL_KEY;
            }
            while taken.contains(&next) && next <= LAST_TUNNEL_KEY {
                next += 1;
            }
            taken.insert(next);
            next
        };
        let mut errors = Vec::new();
        // The port's path (section, device, port) is written only into an
        // error: every port of a large topology passes here on every change.
        let mut keep = |path: (&str, &str, &str),
                        placed: bool,
                        key: &mut Option<u32>,
                        old: Option<u32>| {
            let path = || format!("{}.{}.ports.{}.tunnel_key", path.0, path.1, path.2);
            match (*key, old) {
                (Some(k), Some(o)) if k != o => errors.push(ValidationError::new(
                    path(),
                    format!(
                        "a port's tunnel key cannot change (it is {o}): other hosts may still send its traffic by it; leave it out"
                    ),
                )),
                (Some(k), None) if k <= highest_before => errors.push(ValidationError::new(
                    path(),
                    format!(
                        "tunnel key {k} is not above the keys already given (up to {highest_before}): it may have been another port's; leave it out and the store gives one"
                    ),
                )),
                (None, _) if placed => *key = Some(old.unwrap_or_else(|| fresh(&mut taken))),
                _ => {}
            }
        };
        for (dname, b) in &mut self.bridges {
            for (pname, p) in &mut b.ports {
                // A port with no key that is placed on no host keeps none:
                // nothing to look up.
                if p.tunnel_key.is_none() && p.host.is_none() {
                    continue;
                }
                let old = port_key(previous, "bridges", dname, pname);
                keep(
                    ("bridges", dname, pname),
                    p.host.is_some(),
                    &mut p.tunnel_key,
                    old,
                );
            }
        }
        for (dname, r) in &mut self.routers {
            for (pname, p) in &mut r.ports {
                // A port with no key that is placed on no host keeps none:
                // nothing to look up.
                if p.tunnel_key.is_none() && p.host.is_none() {
                    continue;
                }
                let old = port_key(previous, "routers", dname, pname);
                keep(
                    ("routers", dname, pname),
                    p.host.is_some(),
                    &mut p.tunnel_key,
                    old,
                );
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

impl Topology {
    /// The highest tunnel key of any port (0: none).
    pub fn highest_tunnel_key(&self) -> u32 {
        keys(self).max().unwrap_or(0)
    }
}

/// The tunnel key of `section.device.ports.port` in `t`.
fn port_key(t: &Topology, section: &str, device: &str, port: &str) -> Option<u32> {
    match section {
        "bridges" => t.bridges.get(device)?.ports.get(port)?.tunnel_key,
        _ => t.routers.get(device)?.ports.get(port)?.tunnel_key,
    }
}

/// The tunnel keys of the ports that have one.
fn keys(t: &Topology) -> impl Iterator<Item = u32> + '_ {
    t.ports().filter_map(|(_, _, _, port)| port.tunnel_key())
}

/// Keys in range and held by one port each. A port's path is written only
/// into an error.
pub(crate) fn validate(t: &Topology, errors: &mut Vec<ValidationError>) {
    let mut owner: std::collections::BTreeMap<u32, (&str, &str, &str)> = Default::default();
    let path = |(section, d, p): (&str, &str, &str)| format!("{section}.{d}.ports.{p}");
    for (section, d, p, port) in t.ports() {
        let Some(key) = port.tunnel_key() else {
            continue;
        };
        if !(FIRST_TUNNEL_KEY..=LAST_TUNNEL_KEY).contains(&key) {
            errors.push(ValidationError::new(
                format!("{}.tunnel_key", path((section, d, p))),
                format!(
                    "tunnel key {key} is out of range; give {FIRST_TUNNEL_KEY}-{LAST_TUNNEL_KEY}, or none and the store gives one"
                ),
            ));
        } else if let Some(&first) = owner.get(&key) {
            errors.push(ValidationError::new(
                format!("{}.tunnel_key", path((section, d, p))),
                format!(
                    "tunnel key {key} is already {}'s; each port needs its own (or give none and the store gives one)",
                    path(first)
                ),
            ));
        } else {
            owner.insert(key, (section, d, p));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::load_str;

    const TWO_HOSTS: &str = "version: 1\nhosts:\n  h1: {tunnel_address: 192.0.2.1}\n  \
        h2: {tunnel_address: 192.0.2.2}\nbridges:\n  b:\n    ports:\n      \
        a: {interface: a-h, host: h1}\n      c: {interface: c-h, host: h2}\n      \
        local: {interface: l-h}\n";

    fn key(t: &crate::Topology, port: &str) -> Option<u32> {
        t.bridges["b"].ports[port].tunnel_key
    }

    #[test]
    fn placed_ports_get_keys_that_survive_changes_and_are_never_reused() {
        let empty = crate::Topology::default();
        let mut t = load_str(TWO_HOSTS).unwrap();
        t.keep_tunnel_keys(&empty).unwrap();
        assert_eq!((key(&t, "a"), key(&t, "c")), (Some(1), Some(2)));
        assert_eq!(key(&t, "local"), None, "a port on no host needs no key");
        assert!(t.validate().is_ok());

        // Re-applied from the file (no keys in it): the same keys.
        let mut again = load_str(TWO_HOSTS).unwrap();
        again.keep_tunnel_keys(&t).unwrap();
        assert_eq!(again, t);

        // `a` removed and `d` added in one change: `d` does not get `a`'s
        // key, which a host still on the old topology would use for `a`.
        let mut next = load_str(&TWO_HOSTS.replace(
            "a: {interface: a-h, host: h1}",
            "d: {interface: d-h, host: h1}",
        ))
        .unwrap();
        next.keep_tunnel_keys(&t).unwrap();
        assert_eq!((key(&next, "c"), key(&next, "d")), (Some(2), Some(3)));

        // A port's key cannot change, nor a new port be written an old key.
        let mut changed = load_str(&TWO_HOSTS.replace(
            "c: {interface: c-h, host: h2}",
            "c: {interface: c-h, host: h2, tunnel_key: 9}",
        ))
        .unwrap();
        let errors = changed.keep_tunnel_keys(&t).unwrap_err();
        assert!(
            errors[0].to_string().contains("cannot change (it is 2)"),
            "{errors:?}"
        );
        let mut reused = load_str(&TWO_HOSTS.replace(
            "a: {interface: a-h, host: h1}",
            "e: {interface: e-h, host: h1, tunnel_key: 1}",
        ))
        .unwrap();
        let errors = reused.keep_tunnel_keys(&t).unwrap_err();
        assert!(
            errors[0]
                .to_string()
                .contains("not above the keys already given"),
            "{errors:?}"
        );
    }

    #[test]
    fn written_keys_are_kept_and_checked() {
        let mut t = load_str(&TWO_HOSTS.replace(
            "c: {interface: c-h, host: h2}",
            "c: {interface: c-h, host: h2, tunnel_key: 1}",
        ))
        .unwrap();
        t.keep_tunnel_keys(&crate::Topology::default()).unwrap();
        assert_eq!((key(&t, "a"), key(&t, "c")), (Some(2), Some(1)));

        let invalid = |yaml: String| match load_str(&yaml) {
            Err(crate::TopologyError::Invalid(errors)) => errors,
            other => panic!("not refused: {other:?}"),
        };
        let errors = invalid(
            TWO_HOSTS
                .replace(
                    "a: {interface: a-h, host: h1}",
                    "a: {interface: a-h, host: h1, tunnel_key: 7}",
                )
                .replace(
                    "c: {interface: c-h, host: h2}",
                    "c: {interface: c-h, host: h2, tunnel_key: 7}",
                ),
        );
        assert!(
            errors.iter().any(|e| e
                .to_string()
                .contains("tunnel key 7 is already bridges.b.ports.a's")),
            "{errors:?}"
        );
        let errors = invalid(TWO_HOSTS.replace(
            "a: {interface: a-h, host: h1}",
            "a: {interface: a-h, host: h1, tunnel_key: 16777215}",
        ));
        assert!(
            errors
                .iter()
                .any(|e| e.to_string().contains("out of range")),
            "{errors:?}"
        );
    }
}
