//! makproxy-secure as a library: the ledger (all of the secure side's state, its SQL
//! and the product state model) and the flows that read and change it: collect, pack,
//! apply and report. The `makproxy-secure` binary is the command-line edge around it.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod apply;
pub mod collect;
pub mod inventory;
pub mod ledger;
pub mod pack;
pub mod report;

/// The error the flows return: a coded, operator-facing error.
pub type Error = makproxy_cli::CliError;
