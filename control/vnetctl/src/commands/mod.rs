//! One function per subcommand. Each takes a connected client and its
//! parsed arguments, prints its answer as [`crate::output`] writes it, and
//! returns the error for the operator.
mod apply;
mod objects;
mod reports;
mod trace;
mod watch;

pub use apply::apply;
pub use objects::{delete, get};
pub use reports::{flows, stats, status};
pub use trace::trace;
pub use watch::watch;

use vnet_model::Topology;

use crate::output;

/// `shown` (the server's error for a change), or, when the server counted
/// `total` validation errors of `topology` but could list only the first
/// ones (its list stops where a gRPC trailer is full), every error as
/// validated here, so that the operator sees them all at once. The
/// server's text stays when this vnetctl finds other errors than the
/// server did (another version).
fn with_every_validation_error(shown: String, total: Option<usize>, topology: &Topology) -> String {
    let Some(total) = total.filter(|&n| n > 0) else {
        return shown;
    };
    match topology.validate() {
        // The same errors (the same count), of which the server's list
        // lacks the last.
        Err(all) if all.len() == total && !shown.contains(&all[total - 1].to_string()) => {
            output::every_validation_error(&all)
        }
        _ => shown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two bad VLANs: the server lists one of them, and says there are 2.
    fn two_errors() -> Topology {
        vnet_model::parse_str(
            "version: 1\nbridges:\n  b:\n    ports:\n      \
             p0: {interface: if0, vlan: 5000}\n      p1: {interface: if1, vlan: 5001}\n",
        )
        .unwrap()
    }

    fn server_text(topology: &Topology) -> String {
        let first = &topology.validate().unwrap_err()[0];
        format!("nothing changed: rejected: invalid topology (2 errors):\n  {first}")
    }

    #[test]
    fn a_cut_list_is_completed_here() {
        let t = two_errors();
        let all = t.validate().unwrap_err();
        assert_eq!(
            with_every_validation_error(server_text(&t), Some(2), &t),
            output::every_validation_error(&all)
        );
    }

    #[test]
    fn the_servers_text_stays_when_it_is_whole_or_differs() {
        let t = two_errors();
        let shown = server_text(&t);
        // No count: not a validation error.
        assert_eq!(with_every_validation_error(shown.clone(), None, &t), shown);
        // Another count than found here (another version of vnetctl).
        assert_eq!(
            with_every_validation_error(shown.clone(), Some(3), &t),
            shown
        );
        // The server's list already ends with the last error.
        let whole = t
            .validate()
            .unwrap_err()
            .iter()
            .map(|e| format!("\n  {e}"))
            .collect::<String>();
        assert_eq!(
            with_every_validation_error(whole.clone(), Some(2), &t),
            whole
        );
        // Valid here.
        let valid = vnet_model::parse_str("version: 1\n").unwrap();
        assert_eq!(
            with_every_validation_error(shown.clone(), Some(2), &valid),
            shown
        );
    }
}
