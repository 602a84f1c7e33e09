//! makproxy-mock: the loopback BatchActivation mock as a process, for benchmarks, the
//! guide's drill and manual trials. Prints the endpoint URL, serves until stdin closes
//! (or, with --forever, until killed), then prints the number of requests served.
//! `makproxy-mock --help` shows the options.

use clap::Parser;
use makproxy_testkit::mock::MockServer;
use std::io::Read;
use std::time::Duration;

/// A loopback mock of Microsoft's BatchActivation service (developer tool): prints its
/// endpoint URL, serves until stdin closes (or until killed, with --forever), then
/// prints how many requests it served.
///
/// Example: makproxy-mock --port 8470 --remaining 500 --forever
#[derive(Parser)]
#[command(name = "makproxy-mock", version)]
struct Args {
    /// Delay before each answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,
    /// Loopback port to listen on (0: any free port; the URL printed says which).
    #[arg(long, value_name = "N", default_value_t = 0)]
    port: u16,
    /// Activations left on the mock's MAK, as remaining-count requests report it
    /// (each CID issued spends one).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    remaining: i64,
    /// Serve until killed (Ctrl-C) instead of until stdin closes (a background job's
    /// stdin is often already closed).
    #[arg(long)]
    forever: bool,
}

fn main() {
    let a = Args::parse();
    let mock = match MockServer::start_on(a.port) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: cannot listen on 127.0.0.1:{}: {e}", a.port);
            std::process::exit(1);
        }
    };
    mock.set_latency(Duration::from_millis(a.latency_ms));
    mock.set_remaining(a.remaining);
    println!("{}", mock.url);
    if a.forever {
        loop {
            std::thread::park();
        }
    }
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    eprintln!(
        "served {} requests ({} with a bad digest)",
        mock.total_requests(),
        mock.bad_digests()
    );
}
