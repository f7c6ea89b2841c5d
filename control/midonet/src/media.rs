//! MidoNet's vendor media types, of both client generations:
//! `application/vnd.org.midonet.[collection.]<Name>[-vN]+json` (midonetclient
//! 5.x, later Java clients) and `application/vnd.com.midokura.midolman.mgmt.
//! [collection.]<Name>+json` (the 12.12 Java client CloudStack 4.2 pins).
//! A request is answered in the type it asked for; the generation also
//! decides the field spellings of the answer ([`Generation`]).

/// Which client generation a request comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Generation {
    /// midonetclient 5.x and `vnd.org.midonet` types.
    Current,
    /// `vnd.com.midokura.midolman.mgmt` types (MidoNet 12.12's client):
    /// port types `InteriorBridge`..., rule `tpSrcStart`..., DHCP
    /// `dnsServerAddr`.
    Legacy,
}

const LEGACY_PREFIX: &str = "application/vnd.com.midokura.midolman.mgmt.";
const CURRENT_PREFIX: &str = "application/vnd.org.midonet.";

/// What the media-type headers of a request say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub generation: Generation,
    /// The vendor type the client asked for (Accept), answered verbatim.
    pub asked: Option<String>,
}

/// Whether `t` (no parameters, lower case) is a MidoNet vendor type.
fn vendor(t: &str) -> Option<Generation> {
    let (generation, rest) = if let Some(rest) = t.strip_prefix(CURRENT_PREFIX) {
        (Generation::Current, rest)
    } else if let Some(rest) = t.strip_prefix(LEGACY_PREFIX) {
        (Generation::Legacy, rest)
    } else {
        return None;
    };
    let name = rest.strip_suffix("+json")?;
    let name = name.strip_prefix("collection.").unwrap_or(name);
    let base = match name.rsplit_once("-v") {
        Some((base, v)) if !v.is_empty() && v.bytes().all(|c| c.is_ascii_digit()) => base,
        _ => name,
    };
    (!base.is_empty() && base.bytes().all(|c| c.is_ascii_alphanumeric())).then_some(generation)
}

/// The media types of a header value, without parameters, lower-cased.
fn types(header: &str) -> impl Iterator<Item = String> + '_ {
    header
        .split(',')
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| !t.is_empty())
}

/// Negotiates from the `Accept` and `Content-Type` headers. `Err` names an
/// `Accept` this server cannot answer (MidoNet answers 406 to those).
pub fn negotiate(accept: Option<&str>, content_type: Option<&str>) -> Result<Negotiated, String> {
    let mut generation = content_type
        .and_then(|c| types(c).find_map(|t| vendor(&t)))
        .unwrap_or(Generation::Current);
    let mut asked = None;
    if let Some(accept) = accept {
        let mut acceptable = false;
        for t in types(accept) {
            if let Some(g) = vendor(&t) {
                // Keep the client's spelling: it compares what it gets.
                asked = Some(original_case(accept, &t));
                generation = g;
                acceptable = true;
                break;
            }
            if matches!(t.as_str(), "*/*" | "application/*" | "application/json") {
                acceptable = true;
            }
        }
        if !acceptable {
            return Err(format!(
                "cannot answer Accept: {}; ask for application/json or a MidoNet type \
                 (application/vnd.org.midonet.<Name>-vN+json)",
                accept.escape_debug()
            ));
        }
    }
    Ok(Negotiated { generation, asked })
}

/// `lower` as it is spelt in `header`.
fn original_case(header: &str, lower: &str) -> String {
    header
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim())
        .find(|t| t.eq_ignore_ascii_case(lower))
        .unwrap_or(lower)
        .to_string()
}

impl Negotiated {
    /// The Content-Type of an answer whose default type is `name`
    /// (`Bridge-v4`, `collection.Bridge-v4`).
    pub fn content_type(&self, name: &str) -> String {
        if let Some(asked) = &self.asked {
            return asked.clone();
        }
        match self.generation {
            Generation::Current => format!("{CURRENT_PREFIX}{name}+json"),
            Generation::Legacy => {
                let unversioned = match name.rsplit_once("-v") {
                    Some((base, v)) if v.bytes().all(|c| c.is_ascii_digit()) => base,
                    _ => name,
                };
                format!("{LEGACY_PREFIX}{unversioned}+json")
            }
        }
    }

    pub fn legacy(&self) -> bool {
        self.generation == Generation::Legacy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_generations_are_recognised_and_echoed() {
        let n = negotiate(Some("application/vnd.org.midonet.Bridge-v4+json"), None).unwrap();
        assert_eq!(n.generation, Generation::Current);
        assert_eq!(
            n.content_type("Bridge-v4"),
            "application/vnd.org.midonet.Bridge-v4+json"
        );
        let n = negotiate(
            Some("application/vnd.com.midokura.midolman.mgmt.collection.Bridge+json"),
            None,
        )
        .unwrap();
        assert!(n.legacy());
        assert_eq!(
            n.content_type("collection.Bridge-v4"),
            "application/vnd.com.midokura.midolman.mgmt.collection.Bridge+json"
        );
        let n = negotiate(
            None,
            Some("application/vnd.com.midokura.midolman.mgmt.Port+json"),
        )
        .unwrap();
        assert!(n.legacy());
        assert_eq!(
            n.content_type("Port-v3"),
            "application/vnd.com.midokura.midolman.mgmt.Port+json"
        );
        let n = negotiate(Some("*/*"), None).unwrap();
        assert_eq!(
            n.content_type("Router-v3"),
            "application/vnd.org.midonet.Router-v3+json"
        );
    }

    #[test]
    fn unanswerable_accept_is_refused() {
        assert!(negotiate(Some("text/html"), None).is_err());
        assert!(negotiate(Some("application/vnd.org.midonet.+json"), None).is_err());
    }
}
