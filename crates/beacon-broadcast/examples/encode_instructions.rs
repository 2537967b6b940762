//! Instructions per span encoding, for a deterministic comparison of two builds (wall-clock
//! benchmarks move by ±20 % on a shared machine): encodes the span benchmark's record
//! (`benches/common/record.rs`) as one span and as an agent's three, `N` times each, for
//! valgrind to count. The difference between two counts, divided by the difference in `N`,
//! is the cost of one pair:
//!
//! ```sh
//! cargo build --release -p beacon-broadcast --example encode_instructions
//! for n in 100 1100; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!   target/release/examples/encode_instructions $n 2>&1 | grep Collected; done
//! ```

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

#[path = "../benches/common/record.rs"]
mod fixture;

use beacon_broadcast::span::{encode_export, RandomIds, SpanSettings};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1);
    let settings = SpanSettings {
        privacy_mode: false,
        sampling_rate: 1.0,
        dialect: Default::default(),
    };
    let (one, agent) = (fixture::record(false), fixture::record(true));
    let mut bytes = 0usize;
    for _ in 0..n {
        bytes += encode_export(std::iter::once(&one), &settings, &mut RandomIds).len();
        bytes += encode_export(std::iter::once(&agent), &settings, &mut RandomIds).len();
    }
    println!("{n} pairs encoded, {bytes} bytes");
}
