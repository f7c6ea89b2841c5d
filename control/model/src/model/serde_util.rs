//! Serde helpers shared by the model types.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use ipnet::Ipv4Net;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// Deserializes a map of named objects, rejecting a name given twice.
///
/// serde's own `BTreeMap` impl keeps the last of two equal keys without a
/// word (in YAML and JSON alike); for a topology that would silently drop a
/// whole bridge or port, so a duplicate is an error naming the key.
pub fn unique_map<'de, D, V>(d: D) -> Result<BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    struct UniqueMap<V>(PhantomData<V>);

    impl<'de, V: Deserialize<'de>> Visitor<'de> for UniqueMap<V> {
        type Value = BTreeMap<String, V>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of names to objects")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut map = BTreeMap::new();
            while let Some(key) = access.next_key::<String>()? {
                if map.contains_key(&key) {
                    return Err(de::Error::custom(format!(
                        "duplicate key `{key}`: each name may appear only once"
                    )));
                }
                let value = access.next_value()?;
                map.insert(key, value);
            }
            Ok(map)
        }

        // `ports:` with nothing after it (every entry commented out) is null
        // in YAML; treat it as an empty map rather than an error.
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(BTreeMap::new())
        }
    }

    d.deserialize_map(UniqueMap(PhantomData))
}

pub fn default_true() -> bool {
    true
}

pub fn is_true(v: &bool) -> bool {
    *v
}

pub fn is_false(v: &bool) -> bool {
    !*v
}

/// An IPv4 prefix with a message that says which form is expected (ipnet's
/// own says only "invalid IP address syntax", which puzzles someone who
/// wrote `10.0.0.1` where `10.0.0.1/24` is needed).
struct Cidr(Ipv4Net);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Cidr;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an IPv4 prefix like 10.0.0.0/24")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Cidr, E> {
                v.parse().map(Cidr).map_err(|_| {
                    E::custom(format!(
                        "`{v}` is not an IPv4 address with a prefix length, like 10.0.0.0/24"
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

pub fn cidr<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv4Net, D::Error> {
    Cidr::deserialize(d).map(|c| c.0)
}

pub fn cidr_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Ipv4Net>, D::Error> {
    Option::<Cidr>::deserialize(d).map(|c| c.map(|c| c.0))
}
