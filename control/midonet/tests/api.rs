//! The MidoNet API in process, over a real embedded store: what the
//! end-to-end tests (tests/tests/midonet.rs, with the real midonet-cli) do
//! not reach: the 12.12 client generation CloudStack 4.2 uses, negotiation,
//! paths, and the mapping's edge cases.
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use vnet_midonet::{Ctx, HostInfo};
use vnet_store::{EmbeddedStore, Store};

const LEGACY: &str = "application/vnd.com.midokura.midolman.mgmt.";
const CURRENT: &str = "application/vnd.org.midonet.";

struct Api {
    app: axum::Router,
    store: Arc<EmbeddedStore>,
    _dir: tempfile::TempDir,
}

struct Answer {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    body: Value,
}

impl Api {
    fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(EmbeddedStore::open(&dir.path().join("state")).unwrap());
        let host = HostInfo::load_or_create(&dir.path().join("host_uuid.properties")).unwrap();
        let ctx = Ctx {
            store: store.clone(),
            running: None,
            token: None,
            host,
        };
        Api {
            app: vnet_midonet::server::app(Arc::new(ctx)),
            store,
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        media: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let mut r = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "api.test:8080");
        if let Some(m) = media {
            r = r.header(
                if body.is_some() {
                    header::CONTENT_TYPE
                } else {
                    header::ACCEPT
                },
                m,
            );
        }
        let r = r
            .body(body.map_or(Body::empty(), |b| Body::from(b.to_string())))
            .unwrap();
        let resp = self.app.clone().oneshot(r).await.unwrap();
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let location = resp
            .headers()
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap().to_string());
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Answer {
            status,
            content_type,
            location,
            body,
        }
    }

    /// POST, then GET of the Location, as both clients do: the object.
    async fn create(&self, path: &str, media: &str, body: Value) -> Value {
        let a = self
            .call("POST", path, Some(media), Some(body.clone()))
            .await;
        assert_eq!(
            a.status,
            StatusCode::CREATED,
            "POST {path} {body}: {}",
            a.body
        );
        let loc = a.location.expect("201 has a Location");
        assert!(
            loc.starts_with("http://api.test:8080/midonet-api/"),
            "{loc}"
        );
        let path = loc.trim_start_matches("http://api.test:8080");
        let got = self.call("GET", path, Some(media), None).await;
        assert_eq!(got.status, StatusCode::OK, "GET {path}: {}", got.body);
        got.body
    }

    fn topology(&self) -> vnet_model::Topology {
        self.store.current().unwrap().topology
    }
}

fn path(uri: &Value) -> String {
    uri.as_str()
        .unwrap()
        .trim_start_matches("http://api.test:8080")
        .to_string()
}

/// CloudStack 4.2's client (midonet-client 12.12.2): unversioned
/// com.midokura types, `Interior*` port types, its /32 link network, link
/// and unlink both as POST, routes naming only the port, flat rule port
/// ranges and an int dlType, `dnsServerAddr`, `vifId`.
#[tokio::test]
async fn the_12_12_client_generation_is_served_in_its_own_form() {
    let api = Api::new();
    let root = api
        .call(
            "GET",
            "/midonet-api",
            Some(&format!("{LEGACY}Application+json")),
            None,
        )
        .await;
    assert_eq!(root.status, StatusCode::OK);
    assert_eq!(root.content_type, format!("{LEGACY}Application+json"));
    assert!(root.body["bgpTemplate"].is_string() && root.body["adRouteTemplate"].is_string());

    let r = format!("{LEGACY}Router+json");
    let p = format!("{LEGACY}Port+json");
    let provider = api
        .create(
            "/midonet-api/routers",
            &r,
            json!({"name": "provider", "tenantId": "admin"}),
        )
        .await;
    let tenant = api
        .create(
            "/midonet-api/routers",
            &r,
            json!({"name": "7", "tenantId": "acct"}),
        )
        .await;
    let down = api
        .create(
            &path(&provider["ports"]),
            &p,
            json!({"type": "InteriorRouter", "networkAddress": "169.254.255.0", "networkLength": 32, "portAddress": "169.254.255.1"}),
        )
        .await;
    let up = api
        .create(
            &path(&tenant["ports"]),
            &p,
            json!({"type": "InteriorRouter", "networkAddress": "169.254.255.0", "networkLength": 32, "portAddress": "169.254.255.2"}),
        )
        .await;
    assert_eq!(down["type"], "ExteriorRouter", "unlinked yet: {down}");
    // Both ends share a /30: vnet keeps a port's address inside its subnet.
    assert_eq!(down["networkLength"], 30);
    assert_eq!(up["networkAddress"], "169.254.255.0");

    let link = api
        .call(
            "POST",
            &path(&down["link"]),
            Some(&p),
            Some(json!({"peerId": up["id"]})),
        )
        .await;
    assert_eq!(link.status, StatusCode::CREATED, "{}", link.body);
    let down_now = api
        .call("GET", &path(&down["uri"]), Some(&p), None)
        .await
        .body;
    assert_eq!(down_now["type"], "InteriorRouter");
    assert_eq!(down_now["peerId"], up["id"]);
    let up_now = api
        .call("GET", &path(&up["uri"]), Some(&p), None)
        .await
        .body;
    assert_eq!(up_now["peerId"], down["id"], "both ends are linked");
    let again = api
        .call(
            "POST",
            &path(&up["link"]),
            Some(&p),
            Some(json!({"peerId": "5fd57e1c-6a1c-4b5c-9d43-8d5c3f0e1a2b"})),
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::BAD_REQUEST,
        "an unknown peer: {}",
        again.body
    );

    // A route naming only the port over the router link: its gateway is
    // the peer router's address.
    let route = api
        .create(
            &path(&tenant["routes"]),
            &format!("{LEGACY}Route+json"),
            json!({"type": "Normal", "weight": 100, "srcNetworkAddr": "0.0.0.0", "srcNetworkLength": 0,
                   "dstNetworkAddr": "0.0.0.0", "dstNetworkLength": 0, "nextHopPort": up["id"], "nextHopGateway": null}),
        )
        .await;
    assert_eq!(route["nextHopGateway"], "169.254.255.1");
    assert_eq!(route["nextHopPort"], up["id"]);

    // A rule in the 12.12 spelling, read back in it.
    let c = format!("{LEGACY}Chain+json");
    let chain = api
        .create(
            "/midonet-api/chains",
            &c,
            json!({"name": "7-tenantrouter-pre-nat", "tenantId": "acct"}),
        )
        .await;
    let rule = api
        .create(
            &path(&chain["rules"]),
            &format!("{LEGACY}Rule+json"),
            json!({"type": "dnat", "flowAction": "accept", "nwDstAddress": "203.0.113.30", "nwDstLength": 32,
                   "nwProto": 6, "dlType": 2048, "tpSrcStart": 0, "tpSrcEnd": 0, "tpDstStart": 8080, "tpDstEnd": 8080,
                   "natTargets": [{"addressFrom": "10.0.1.6", "addressTo": "10.0.1.6", "portFrom": 80, "portTo": 80}],
                   "position": 1}),
        )
        .await;
    assert_eq!(rule["tpDstStart"], 8080);
    assert_eq!(rule["tpSrcStart"], 0);
    assert_eq!(rule["dlType"], 2048);
    assert!(rule.get("tpDst").is_none(), "12.12 form only: {rule}");
    let t = api.topology();
    let r = &t.chains["7-tenantrouter-pre-nat"][0];
    assert_eq!(r.condition.dst_ports.unwrap().start, 8080);
    assert_eq!(r.condition.src_ports, None, "0 is any");
    assert_eq!(r.condition.ethertype, Some(2048));

    // Unlink as 12.12 does it: POST the link with peerId null.
    let unlink = api
        .call(
            "POST",
            &path(&down["link"]),
            Some(&p),
            Some(json!({"peerId": null})),
        )
        .await;
    assert_eq!(unlink.status, StatusCode::NO_CONTENT, "{}", unlink.body);
    let t = api.topology();
    assert!(t.routers["provider"]
        .ports
        .values()
        .all(|p| p.peer.is_none()));
    assert!(t.routers["7"].ports.values().all(|p| p.peer.is_none()));

    // DHCP with the singular dnsServerAddr; a bridge port's vifId.
    let b = format!("{LEGACY}Bridge+json");
    let bridge = api
        .create(
            "/midonet-api/bridges",
            &b,
            json!({"name": "204", "tenantId": "acct"}),
        )
        .await;
    let subnet = api
        .create(
            &path(&bridge["dhcpSubnets"]),
            &format!("{LEGACY}DhcpSubnet+json"),
            json!({"subnetPrefix": "10.0.1.0", "subnetLength": 24, "defaultGateway": "10.0.1.1", "dnsServerAddr": "192.0.2.53"}),
        )
        .await;
    assert_eq!(subnet["dnsServerAddr"], "192.0.2.53");
    assert_eq!(
        subnet["serverAddr"], "10.0.1.1",
        "served from the gateway, as MidoNet"
    );
    let port = api
        .create(
            &path(&bridge["ports"]),
            &p,
            json!({"type": "ExteriorBridge"}),
        )
        .await;
    let nic = "0b0c0d0e-1111-4222-8333-444455556666";
    let mut put = port.clone();
    put["vifId"] = json!(nic);
    let updated = api
        .call("PUT", &path(&port["uri"]), Some(&p), Some(put))
        .await;
    assert_eq!(updated.status, StatusCode::NO_CONTENT, "{}", updated.body);
    let ports = api
        .call(
            "GET",
            &path(&bridge["ports"]),
            Some(&format!("{LEGACY}collection.Port+json")),
            None,
        )
        .await;
    assert_eq!(ports.content_type, format!("{LEGACY}collection.Port+json"));
    assert_eq!(
        ports.body[0]["vifId"], nic,
        "the KVM agent finds the port by it"
    );
}

/// Negotiation, paths and what the mapping refuses.
#[tokio::test]
async fn negotiation_paths_and_refusals() {
    let api = Api::new();
    let b = format!("{CURRENT}Bridge-v4+json");
    let refused = api
        .call("GET", "/midonet-api/bridges", Some("text/html"), None)
        .await;
    assert_eq!(refused.status, StatusCode::NOT_ACCEPTABLE);
    assert_eq!(refused.body["code"], 406);
    // With and without a trailing slash, never a redirect.
    for p in [
        "/midonet-api/bridges",
        "/midonet-api/bridges/",
        "/midonet-api/",
    ] {
        let a = api.call("GET", p, None, None).await;
        assert_eq!(a.status, StatusCode::OK, "{p}");
    }
    let outside = api.call("GET", "/bridges", None, None).await;
    assert_eq!(outside.status, StatusCode::NOT_FOUND);
    let unknown = api
        .call("GET", "/midonet-api/no_such_thing", None, None)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert!(unknown.body["message"]
        .as_str()
        .unwrap()
        .contains("no_such_thing"));
    let malformed = api
        .call("GET", "/midonet-api/bridges/not-a-uuid", None, None)
        .await;
    assert_eq!(malformed.status, StatusCode::NOT_FOUND);
    // Stub collections of the root document list empty.
    for p in [
        "mirrors",
        "vteps",
        "load_balancers",
        "tunnel_zones",
        "tenants",
    ] {
        let a = api
            .call("GET", &format!("/midonet-api/{p}"), None, None)
            .await;
        assert_eq!(
            (a.status, a.body.clone()),
            (StatusCode::OK, json!([])),
            "{p}"
        );
    }
    let tz = api
        .call(
            "POST",
            "/midonet-api/tunnel_zones",
            Some(&format!("{CURRENT}TunnelZone-v1+json")),
            Some(json!({"name": "tz", "type": "vxlan"})),
        )
        .await;
    assert_eq!(tz.status, StatusCode::BAD_REQUEST);
    assert!(tz.body["message"]
        .as_str()
        .unwrap()
        .contains("tunnel zones"));

    let bridge = api
        .create(
            "/midonet-api/bridges",
            &b,
            json!({"name": "net", "tenantId": ""}),
        )
        .await;
    assert_eq!(
        bridge["id"],
        api.call("GET", "/midonet-api/bridges", None, None)
            .await
            .body[0]["id"]
    );
    let dup = api
        .call(
            "POST",
            "/midonet-api/bridges",
            Some(&b),
            Some(json!({"name": "net"})),
        )
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let mut renamed = bridge.clone();
    renamed["name"] = json!("other");
    let rename = api
        .call("PUT", &path(&bridge["uri"]), Some(&b), Some(renamed))
        .await;
    assert_eq!(rename.status, StatusCode::BAD_REQUEST);
    assert!(rename.body["message"].as_str().unwrap().contains("rename"));
    let down = api
        .call(
            "PUT",
            &path(&bridge["uri"]),
            Some(&b),
            Some(json!({"name": "net", "adminStateUp": false})),
        )
        .await;
    assert_eq!(down.status, StatusCode::BAD_REQUEST);

    // Rules: position must be 1..n+1; unsupported types and VLAN matches
    // are refused, naming the field.
    let c = format!("{CURRENT}Chain-v1+json");
    let rule_t = format!("{CURRENT}Rule-v2+json");
    let chain = api
        .create("/midonet-api/chains", &c, json!({"name": "c"}))
        .await;
    let rules = path(&chain["rules"]);
    for (body, field) in [
        (json!({"type": "accept", "position": 2}), "position"),
        (json!({"type": "accept", "position": 0}), "position"),
        (json!({"type": "redirect"}), "type"),
        (json!({"type": "accept", "vlan": 5}), "vlan"),
        (json!({"type": "snat", "natTargets": []}), "natTargets"),
        (
            json!({"type": "accept", "nwSrcAddress": "10.0.0.300"}),
            "nwSrcAddress",
        ),
    ] {
        let a = api
            .call("POST", &rules, Some(&rule_t), Some(body.clone()))
            .await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
        assert!(
            a.body["message"].as_str().unwrap().contains(field),
            "{body}: {}",
            a.body
        );
    }
    let first = api
        .create(
            &rules,
            &rule_t,
            json!({"type": "drop", "nwProto": "1", "position": "1"}),
        )
        .await;
    let second = api.create(&rules, &rule_t, json!({"type": "accept", "position": 1, "tpDst": {"start": "80", "end": "81"}, "nwProto": 6})).await;
    let listed = api.call("GET", &rules, None, None).await.body;
    assert_eq!(listed[0]["id"], second["id"], "inserted before");
    assert_eq!(
        listed[1]["id"], first["id"],
        "ids survive an insert before them"
    );
    assert_eq!(listed[1]["position"], 2);
    assert_eq!(listed[0]["tpDst"], json!({"start": 80, "end": 81}));
    let del = api.call("DELETE", &path(&first["uri"]), None, None).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_eq!(api.topology().chains["c"].len(), 1);

    // A change the store refuses as a whole comes back as 400 with the
    // validation's violations: a bridge filter naming a chain that a
    // delete leaves dangling.
    let mut with_filter = bridge.clone();
    with_filter["inboundFilterId"] = chain["id"].clone();
    let set = api
        .call("PUT", &path(&bridge["uri"]), Some(&b), Some(with_filter))
        .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT, "{}", set.body);
    let gone = api.call("DELETE", &path(&chain["uri"]), None, None).await;
    assert_eq!(gone.status, StatusCode::BAD_REQUEST, "{}", gone.body);
    assert!(
        gone.body["violations"][0]["property"]
            .as_str()
            .unwrap()
            .contains("net"),
        "{}",
        gone.body
    );
    assert!(
        api.topology().chains.contains_key("c"),
        "a refused change stores nothing"
    );

    // The store's view is the API's: a change made beside the API (as
    // gRPC makes it) is read back at once.
    api.store
        .transact(None, &mut |t| {
            t.chains.insert("from-grpc".into(), Vec::new());
            Ok(())
        })
        .unwrap();
    let chains = api
        .call("GET", "/midonet-api/chains", None, None)
        .await
        .body;
    assert!(
        chains
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "from-grpc"),
        "{chains}"
    );
}
