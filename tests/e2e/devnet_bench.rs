//! `based bench devnet` at tiny scale, so that its machinery cannot rot: a 4-node devnet with
//! 200 ms blocks, funding, a few one-at-a-time transfers and a flood of 50. The command itself
//! fails unless every transfer is in exactly one finalized block and every balance and nonce is
//! exact on all nodes; the test checks that it succeeded and wrote its section.

use std::process::Command;

#[test]
fn the_devnet_benchmark_finalizes_every_transfer_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("BENCHMARKS.md");
    std::fs::write(
        &out,
        "# Benchmarks\n\n<!-- bench:state:start -->\nkept\n<!-- bench:state:end -->\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_based"))
        .env("RUST_LOG", "warn")
        .args(["bench", "devnet", "--block-time-ms", "200", "--latency-samples", "3"])
        .args(["--transfers", "50", "--senders", "10", "--threads", "2"])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("run based bench devnet");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "based bench devnet failed: {stderr}");
    let written = std::fs::read_to_string(&out).unwrap();
    assert!(written.contains("kept"), "other sections survive: {written}");
    let section = &written[written.find("<!-- bench:devnet:start -->").expect("section")..];
    assert!(section.contains("| 200 ms blocks |"), "{section}");
    assert!(
        section.contains("| every transfer finalized exactly once, balances exact | yes: 63 transactions (10 funding, 3 latency, 50 flood)"),
        "{section}"
    );
    assert!(
        section
            .contains("time to finality: submit -> visible in finalized state over RPC | median"),
        "{section}"
    );
}
