//! `vnetctl watch`: every revision as it is stored (what it changed), until
//! the server ends the stream.
use vnet_api::Client;

use crate::cli::WatchArgs;
use crate::{output, Result};

pub async fn watch(client: &mut Client, args: WatchArgs) -> Result<()> {
    let mut watch = client
        .watch(args.from)
        .await
        .map_err(output::client_error)?;
    while let Some(event) = watch.next().await {
        let event = event.map_err(output::client_error)?;
        print!("{}", output::watch_event(&event, args.output.format));
    }
    Ok(())
}
