//! makproxy-online as a library: the journal (all of the online side's state and SQL)
//! and the activate/worksheet flows. The `makproxy-online` binary is the command-line
//! edge around it (clap definitions, backend construction, printing), so the flows can
//! be driven and tested in process.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod activate;
pub mod journal;
pub mod reports;
