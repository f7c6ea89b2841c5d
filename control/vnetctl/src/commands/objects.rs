//! `vnetctl get` and `vnetctl delete`: the stored objects.
use vnet_api::{Client, ClientError};
use vnet_model::objects::ObjectKind;

use super::with_every_validation_error;
use crate::cli::{DeleteArgs, GetArgs};
use crate::{output, Result};

pub async fn get(client: &mut Client, args: GetArgs) -> Result<()> {
    let format = args.output.format;
    if matches!(args.kind.as_deref(), Some("host" | "hosts")) {
        let (revision, hosts) = client.hosts().await.map_err(output::client_error)?;
        print!("{}", output::hosts(revision, &hosts, format)?);
        return Ok(());
    }
    let kind = args.kind.as_deref().map(str::parse).transpose()?;
    let text = match (kind, args.name) {
        (Some(kind), Some(name)) => {
            let (revision, id, object) = client
                .get(kind, &name)
                .await
                .map_err(output::client_error)?;
            let topology = object.into_topology(&name);
            output::object(kind, &name, id, revision, &topology, format)?
        }
        (kind, None) => {
            let listed = client.list(kind).await.map_err(output::client_error)?;
            output::listing(&listed, kind, format)?
        }
        (None, Some(_)) => unreachable!("clap gives NAME only after KIND"),
    };
    print!("{text}");
    Ok(())
}

pub async fn delete(client: &mut Client, args: DeleteArgs) -> Result<()> {
    let kind: ObjectKind = args.kind.parse()?;
    match client.delete(kind, &args.name).await {
        Ok(out) => {
            print!("{}", output::deleted(&out.changes, out.revision));
            Ok(())
        }
        Err(e) => Err(refused_delete(client, kind, &args.name, e).await),
    }
}

/// The error of a delete the server refused, with every validation error
/// when it could list only the first: those of the stored topology without
/// the object, which is what the server validated.
async fn refused_delete(
    client: &mut Client,
    kind: ObjectKind,
    name: &str,
    e: ClientError,
) -> String {
    let total = e.validation_error_count();
    let shown = output::change_error(e);
    if total.is_none() {
        return shown;
    }
    let Ok(listed) = client.list(None).await else {
        return shown;
    };
    let mut topology = listed.topology;
    topology.remove_object(kind, name);
    with_every_validation_error(shown, total, &topology)
}
