//! `vnetctl flows`, `stats` and `status`: what the dataplane reports.
use vnet_api::Client;

use crate::cli::Format;
use crate::{output, Result};

pub async fn flows(client: &mut Client, page_size: u32, format: Format) -> Result<()> {
    let (revision, flows) = client
        .flows_paged(page_size)
        .await
        .map_err(output::client_error)?;
    print!("{}", output::flows(revision, &flows, format)?);
    Ok(())
}

pub async fn stats(client: &mut Client, format: Format) -> Result<()> {
    let counters = client.counters().await.map_err(output::client_error)?;
    print!("{}", output::stats(&counters, format)?);
    Ok(())
}

pub async fn status(client: &mut Client, format: Format) -> Result<()> {
    let health = client.health().await.map_err(output::client_error)?;
    print!("{}", output::status(&health, format)?);
    Ok(())
}
