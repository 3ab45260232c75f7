//! End to end across processes: a `based miner serve` process and `based chat` processes talk
//! over a real loopback socket, exactly as a user would run them.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use based_model::LlamaConfig;
use based_model::testutil::write_random_gguf;

/// `based`, with its caches (saved chat states, miner plans) in [`based_home`].
fn based() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_based"));
    command.env("RUST_LOG", "warn").env("BASED_HOME", based_home());
    command
}

/// A `BASED_HOME` of this test process's own.
fn based_home() -> PathBuf {
    std::env::temp_dir().join(format!("based-e2e-zkllm-{}", std::process::id()))
}

/// A miner process that is killed when the test ends, however it ends.
struct MinerProcess {
    child: Child,
    address: String,
}

impl MinerProcess {
    fn start(model: &Path) -> MinerProcess {
        Self::start_with(model, &[])
    }

    fn start_with(model: &Path, options: &[&str]) -> MinerProcess {
        let (child, address) = spawn_miner(model, options, None);
        MinerProcess { child, address }
    }
}

/// A miner process and the address it listens on; with `log`, its log at that level is piped
/// to stderr for the test to read.
fn spawn_miner(model: &Path, options: &[&str], log: Option<&str>) -> (Child, String) {
    let mut command = based();
    command.args(["miner", "serve", "--listen", "127.0.0.1:0"]).args(options).arg("--model");
    command.arg(model).stdout(Stdio::piped());
    match log {
        Some(level) => command.env("RUST_LOG", level).stderr(Stdio::piped()),
        None => command.stderr(Stdio::null()),
    };
    let mut child = command.spawn().expect("start the miner");
    let mut first_line = String::new();
    BufReader::new(child.stdout.take().expect("piped stdout"))
        .read_line(&mut first_line)
        .expect("read the miner's address");
    let address = first_line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the miner: {first_line:?}"))
        .to_string();
    (child, address)
}

impl Drop for MinerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tiny_model(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let path = dir.join(name);
    write_random_gguf(&path, &LlamaConfig::tiny(), seed).expect("write a tiny model");
    path
}

fn chat(model: &Path, how: &[&str], prompt: &str) -> Output {
    based()
        .arg("chat")
        .args(how)
        .args(["-n", "12", "--model"])
        .arg(model)
        .arg(prompt)
        .output()
        .expect("run based chat")
}

#[test]
fn an_encrypted_chat_with_a_miner_process_matches_the_plaintext_model() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "tiny.gguf", 7);
    let miner = MinerProcess::start(&model);

    let encrypted = chat(&model, &["--miner", &miner.address], "hello there");
    let plain = chat(&model, &["--plain"], "hello there");
    assert!(encrypted.status.success(), "{}", String::from_utf8_lossy(&encrypted.stderr));
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    assert_eq!(encrypted.stdout, plain.stdout);
    // A random tiny model may well print only white space: compare how many tokens each made.
    let plain_report = String::from_utf8_lossy(&plain.stderr);
    let encrypted_report = String::from_utf8_lossy(&encrypted.stderr);
    let generated = tokens_generated(&plain_report, "[plain: ");
    assert!(generated > 0, "the model generated nothing: {plain_report}");
    assert_eq!(tokens_generated(&encrypted_report, "[encrypted: "), generated);
    assert!(encrypted_report.contains("rounds") && encrypted_report.contains("MB up"));
}

/// Without a prompt argument `based chat` reads one message per line and keeps the
/// conversation (and the encrypted session) going: the same replies as the plaintext model's,
/// turn after turn.
#[test]
fn an_interactive_encrypted_chat_matches_the_plaintext_model_turn_after_turn() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "tiny.gguf", 9);
    let miner = MinerProcess::start(&model);
    let conversation = |how: &[&str], pause| conversation(&model, how, pause);
    let encrypted = conversation(&["--miner", &miner.address], Duration::ZERO);
    let plain = conversation(&["--plain"], Duration::ZERO);
    assert!(encrypted.status.success(), "{}", String::from_utf8_lossy(&encrypted.stderr));
    assert!(plain.status.success(), "{}", String::from_utf8_lossy(&plain.stderr));
    assert_eq!(encrypted.stdout, plain.stdout);
    // Two turns each (the empty line is skipped), the second continuing the first.
    let turns = |output: &Output, prefix: &str| {
        String::from_utf8_lossy(&output.stderr).lines().filter(|l| l.starts_with(prefix)).count()
    };
    assert_eq!(turns(&plain, "[plain: "), 2);
    assert_eq!(turns(&encrypted, "[encrypted: "), 2);
    let report = String::from_utf8_lossy(&encrypted.stderr);
    assert!(report.contains("tokens precomputed") && report.contains("[session: "), "{report}");
}

/// Two messages (and an empty line, skipped) to an interactive `based chat`, the second sent
/// `pause` after the first reply's summary line.
fn conversation(model: &Path, how: &[&str], pause: Duration) -> Output {
    let mut child = based()
        .arg("chat")
        .args(how)
        .args(["-n", "6", "--model"])
        .arg(model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run based chat");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let printed = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut text).map(|_| text)
    });
    std::io::Write::write_all(&mut stdin, b"first question\n\n").unwrap();
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut report = String::new();
    while !report.lines().any(|line| line.starts_with('[')) {
        if stderr.read_line(&mut report).unwrap() == 0 {
            break; // ended early: the assertions will show why
        }
    }
    std::thread::sleep(pause);
    // The chat may already have failed and closed its stdin.
    let _ = std::io::Write::write_all(&mut stdin, b"and a second one\n");
    drop(stdin);
    std::io::Read::read_to_string(&mut stderr, &mut report).unwrap();
    let status = child.wait().expect("wait for based chat");
    let stdout = printed.join().unwrap().unwrap();
    Output { status, stdout, stderr: report.into_bytes() }
}

/// A miner that closes an idle session does not end the conversation: the client starts a new
/// session (fresh keys) and the reply is the same as if nothing had happened.
#[test]
fn a_chat_outlives_the_miner_closing_its_idle_session() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "tiny.gguf", 19);
    let miner = MinerProcess::start_with(&model, &["--idle-timeout-s", "2"]);
    let encrypted = conversation(&model, &["--miner", &miner.address], Duration::from_secs(4));
    let report = String::from_utf8_lossy(&encrypted.stderr);
    assert!(encrypted.status.success(), "{report}");
    assert!(report.contains("session lost; starting a new one"), "{report}");
    let plain = conversation(&model, &["--plain"], Duration::ZERO);
    assert_eq!(encrypted.stdout, plain.stdout);
}

/// The system turn is computed (through the miner) once, saved on the client, and resumed by
/// the next chat with the same reply; a damaged saved state is recomputed, not trusted.
#[test]
fn a_saved_system_turn_is_resumed_and_a_damaged_one_recomputed() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "tiny.gguf", 17);
    let miner = MinerProcess::start(&model);
    let ask = |system: &str| {
        let output = chat(&model, &["--miner", &miner.address, "--system", system], "hi");
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        (output.stdout, String::from_utf8_lossy(&output.stderr).into_owned())
    };
    // A system prompt of this test's own, so no other test's saved state is met.
    let system = "saved-state test, be brief";
    let (first, report) = ask(system);
    assert!(report.contains("computed in") && report.contains("and saved"), "{report}");
    let (second, report) = ask(system);
    assert!(report.contains("resumed from its saved state"), "{report}");
    assert_eq!(second, first);
    let plain = chat(&model, &["--plain", "--system", system, "--no-saved-state"], "hi");
    assert_eq!(plain.stdout, first);

    for entry in std::fs::read_dir(based_home().join("chat-states")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() / 2);
        std::fs::write(&path, bytes).unwrap();
    }
    let (third, report) = ask(system);
    assert!(
        report.contains("unusable saved chat state") && report.contains("and saved"),
        "{report}"
    );
    assert_eq!(third, first);
}

#[test]
fn a_miner_restart_reuses_its_saved_plans_and_a_damaged_record_is_chosen_again() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "tiny.gguf", 23);
    // The miner's log once it listens: stopped there, so its preparation is all it holds.
    let start_log = || {
        let (mut child, _) = spawn_miner(&model, &[], Some("info"));
        child.kill().unwrap();
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let first = start_log();
    assert!(first.contains("plans chosen and saved to"), "{first}");
    let second = start_log();
    assert!(second.contains("plans reused from"), "{second}");

    // This model's record only: the other tests' miners keep theirs in the same folder.
    let record = second
        .split_once("plans reused from ")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(path, _)| PathBuf::from(path))
        .unwrap_or_else(|| panic!("no record path in {second}"));
    let mut bytes = std::fs::read(&record).unwrap();
    bytes.truncate(bytes.len() / 2);
    std::fs::write(&record, bytes).unwrap();
    let third = start_log();
    assert!(
        third.contains("choosing the plans again") && third.contains("plans chosen and saved"),
        "{third}"
    );
    // The rewritten record serves an exact chat.
    let miner = MinerProcess::start(&model);
    let encrypted = chat(&model, &["--miner", &miner.address], "hello");
    assert!(encrypted.status.success(), "{}", String::from_utf8_lossy(&encrypted.stderr));
    let plain = chat(&model, &["--plain"], "hello");
    assert_eq!(encrypted.stdout, plain.stdout);
}

/// Reads N from the summary line `[mode: N tokens in ...]` that `based chat` prints last.
fn tokens_generated(report: &str, prefix: &str) -> usize {
    let line = report.lines().find_map(|l| l.strip_prefix(prefix));
    let count = line.and_then(|l| l.split(' ').next()).and_then(|n| n.parse().ok());
    count.unwrap_or_else(|| panic!("no `{prefix}` summary in: {report}"))
}

#[test]
fn a_miner_refuses_a_client_with_another_model_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let served = tiny_model(dir.path(), "served.gguf", 1);
    let other = tiny_model(dir.path(), "other.gguf", 2);
    let miner = MinerProcess::start(&served);

    let refused = chat(&other, &["--miner", &miner.address], "hi");
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("serves model"), "unclear error: {error}");

    let served_chat = chat(&served, &["--miner", &miner.address], "hi");
    assert!(served_chat.status.success(), "{}", String::from_utf8_lossy(&served_chat.stderr));
}

#[test]
fn a_client_killed_mid_generation_does_not_stop_the_miner() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model(dir.path(), "tiny.gguf", 3);
    let miner = MinerProcess::start(&model);

    let mut vanishing = based()
        .args(["chat", "-n", "200", "--miner", &miner.address, "--model"])
        .arg(&model)
        .arg("a long question that keeps the miner busy")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for the first streamed bytes, so the session is surely mid-generation, then kill it.
    let mut first = [0u8; 1];
    let _ = std::io::Read::read(&mut vanishing.stdout.take().unwrap(), &mut first);
    vanishing.kill().unwrap();
    vanishing.wait().unwrap();

    let next = chat(&model, &["--miner", &miner.address], "are you still there?");
    assert!(next.status.success(), "{}", String::from_utf8_lossy(&next.stderr));
}
