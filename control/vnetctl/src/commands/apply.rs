//! `vnetctl apply -f FILE`: make the running topology exactly FILE.
use vnet_api::Client;

use super::with_every_validation_error;
use crate::cli::{ApplyArgs, Format, OutputArg};
use crate::{output, Result};

pub async fn apply(client: &mut Client, args: ApplyArgs) -> Result<()> {
    let ApplyArgs {
        file,
        dry_run,
        output: OutputArg { format },
    } = args;
    let bytes = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let topology = vnet_model::parse_bytes(&bytes).map_err(|e| output::in_file(&file, e))?;
    let out = client.apply(&topology, dry_run, None).await.map_err(|e| {
        let total = e.validation_error_count();
        let shown = output::change_error(e);
        output::in_file(&file, with_every_validation_error(shown, total, &topology))
    })?;
    print!("{}", output::apply(&out, dry_run, format)?);
    // JSON carries the warnings in its answer.
    if format != Format::Json {
        eprint!("{}", output::warnings(&out.warnings));
    }
    Ok(())
}
