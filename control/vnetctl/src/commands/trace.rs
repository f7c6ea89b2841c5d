//! `vnetctl trace`: simulate a packet entering a port.
use vnet_api::Client;
use vnet_model::reports::TraceRequest;
use vnet_model::{MacAddr, PortRef, Protocol};

use crate::cli::TraceArgs;
use crate::{output, Result};

pub async fn trace(client: &mut Client, args: TraceArgs) -> Result<()> {
    let format = args.output.format;
    let report = client
        .trace(&request(args)?)
        .await
        .map_err(output::client_error)?;
    print!("{}", output::trace(&report, format)?);
    Ok(())
}

/// The packet the flags describe; an error names the flag.
fn request(args: TraceArgs) -> Result<TraceRequest> {
    let ip = |flag: &str, v: &str| {
        v.parse()
            .map_err(|_| format!("--{flag} {v}: not an IPv4 address like 10.0.0.1"))
    };
    let mac = |flag: &str, v: Option<String>| {
        v.map(|m| m.parse::<MacAddr>().map_err(|e| format!("--{flag}: {e}")))
            .transpose()
    };
    Ok(TraceRequest {
        port: args
            .port
            .parse::<PortRef>()
            .map_err(|e| format!("--port: {e}"))?,
        protocol: args
            .proto
            .parse::<Protocol>()
            .map_err(|e| format!("--proto: {e}"))?,
        src: ip("src", &args.src)?,
        dst: ip("dst", &args.dst)?,
        src_port: args.sport,
        dst_port: args.dport,
        src_mac: mac("src-mac", args.src_mac)?,
        dst_mac: mac("dst-mac", args.dst_mac)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Format, OutputArg};

    fn args() -> TraceArgs {
        TraceArgs {
            port: "tenant/vm1".into(),
            proto: "tcp".into(),
            src: "10.0.0.11".into(),
            dst: "10.0.0.12".into(),
            sport: Some(1000),
            dport: Some(80),
            src_mac: Some("02:00:00:00:01:01".into()),
            dst_mac: None,
            output: OutputArg {
                format: Format::Table,
            },
        }
    }

    #[test]
    fn the_flags_make_the_packet() {
        let r = request(args()).unwrap();
        assert_eq!(r.port.to_string(), "tenant/vm1");
        assert_eq!(
            (r.src.to_string(), r.dst.to_string()),
            ("10.0.0.11".into(), "10.0.0.12".into())
        );
        assert_eq!((r.src_port, r.dst_port), (Some(1000), Some(80)));
        assert_eq!(
            r.src_mac.map(|m| m.to_string()).as_deref(),
            Some("02:00:00:00:01:01")
        );
        assert_eq!(r.dst_mac, None);
    }

    #[test]
    fn a_bad_flag_is_named() {
        let err = |change: fn(&mut TraceArgs)| {
            let mut a = args();
            change(&mut a);
            request(a).unwrap_err()
        };
        assert_eq!(
            err(|a| a.src = "10.0.0".into()),
            "--src 10.0.0: not an IPv4 address like 10.0.0.1"
        );
        assert_eq!(
            err(|a| a.dst = "x".into()),
            "--dst x: not an IPv4 address like 10.0.0.1"
        );
        assert!(err(|a| a.port = "tenantvm1".into()).starts_with("--port: "));
        assert!(err(|a| a.dst_mac = Some("zz".into())).starts_with("--dst-mac: "));
    }
}
