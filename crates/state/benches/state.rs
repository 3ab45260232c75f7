//! `cargo bench -p based-state`: prints the state machine's throughput table.

fn main() {
    let report = based_state::bench::run();
    print!("{}", report.to_markdown());
}
