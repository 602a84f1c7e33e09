//! makproxy-mock: the loopback BatchActivation mock as a process, for benchmarks and
//! manual trials. Prints the endpoint URL, serves until stdin closes, then prints the
//! number of requests served.
//!
//! Usage: makproxy-mock [--latency-ms N]

use makproxy_backend::mock::MockServer;
use std::io::Read;
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let latency = args
        .iter()
        .position(|a| a == "--latency-ms")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
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
