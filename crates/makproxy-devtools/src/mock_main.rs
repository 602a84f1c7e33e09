//! makproxy-mock: the loopback BatchActivation mock as a process, for benchmarks and
//! manual trials. Prints the endpoint URL, serves until stdin closes, then prints the
//! number of requests served.
//! `makproxy-mock --help` shows the options.

use clap::Parser;
use makproxy_testkit::mock::MockServer;
use std::io::Read;
use std::time::Duration;

/// A loopback mock of Microsoft's BatchActivation service (developer tool): prints its
/// endpoint URL, serves until stdin closes, then prints how many requests it served.
///
/// Example: makproxy-mock --latency-ms 50 < fifo
#[derive(Parser)]
#[command(name = "makproxy-mock", version)]
struct Args {
    /// Delay before each answer, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    latency_ms: u64,
}

fn main() {
    let latency = Args::parse().latency_ms;
    let mock = MockServer::start();
    mock.set_latency(Duration::from_millis(latency));
    mock.set_remaining(i64::MAX / 2);
    println!("{}", mock.url);
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    eprintln!(
        "served {} requests ({} with a bad digest)",
        mock.total_requests(),
        mock.bad_digests()
    );
}
