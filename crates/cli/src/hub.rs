//! Downloads from the Hugging Face hub (or any server with its URL layout, named by
//! `HF_ENDPOINT` as in `huggingface_hub`).
//!
//! `GET {endpoint}/{repo}/resolve/{revision}/{path}` answers large (LFS) files with a redirect to
//! a CDN whose headers carry the file's sha256 (`X-Linked-Etag`) and size (`X-Linked-Size`), and
//! every answer names the commit the revision resolved to (`X-Repo-Commit`). Redirects are
//! therefore followed by hand: those headers are the hub's word on what the file must hash to,
//! and they are lost if the HTTP client follows the redirect itself.

use std::io::Read;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use reqwest::blocking::{Client, Response};
use reqwest::header::{HeaderMap, LOCATION};
use serde::Deserialize;

pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Unreachable hubs (offline machines, firewalls that drop packets) must not stall a fetch that
/// has another source to try.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A model file may take long, but a transfer that stalls for this long is abandoned.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(60 * 60);
const MAX_REDIRECTS: usize = 5;

/// The hub's answer for one file: the body to stream and what the hub says it must be.
pub struct HubDownload {
    pub body: Response,
    /// Bytes announced (`X-Linked-Size` of LFS files, else `Content-Length`).
    pub size: Option<u64>,
    /// sha256 announced for LFS files (lowercase hex).
    pub sha256: Option<String>,
    /// The commit the revision resolved to.
    pub commit: Option<String>,
}

pub struct Hub {
    endpoint: String,
    client: Client,
}

#[derive(Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    siblings: Vec<Sibling>,
}

#[derive(Deserialize)]
struct Sibling {
    rfilename: String,
}

impl Hub {
    /// The hub at `HF_ENDPOINT`, default huggingface.co.
    pub fn from_env() -> Result<Self> {
        let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| DEFAULT_ENDPOINT.into());
        Self::new(&endpoint)
    }

    pub fn new(endpoint: &str) -> Result<Self> {
        // rustls needs one process-wide crypto provider; aws-lc-rs is already built for the
        // node's cryptography. A second install (another fetch in this process) is harmless.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(TRANSFER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("based/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot set up the HTTP client")?;
        Ok(Self { endpoint: endpoint.trim_end_matches('/').to_string(), client })
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Starts downloading `path` of `repo` at `revision`.
    pub fn open(&self, repo: &str, revision: &str, path: &str) -> Result<HubDownload> {
        let mut url = format!("{}/{repo}/resolve/{revision}/{path}", self.endpoint);
        let what = format!("{repo}/{path}@{revision}");
        let (mut sha256, mut size, mut commit) = (None, None, None);
        for _ in 0..=MAX_REDIRECTS {
            let response = self.get(&url, &what)?;
            let headers = response.headers();
            sha256 = sha256.or_else(|| linked_sha256(headers));
            size = size.or_else(|| header_u64(headers, "x-linked-size"));
            commit = commit.or_else(|| header_str(headers, "x-repo-commit"));
            if response.status().is_redirection() {
                let location = header_str(headers, LOCATION.as_str())
                    .with_context(|| format!("the hub redirected {what} without a Location"))?;
                url = response
                    .url()
                    .join(&location)
                    .with_context(|| format!("the hub redirected {what} to a bad URL"))?
                    .to_string();
                continue;
            }
            size = size.or(response.content_length());
            return Ok(HubDownload { body: response, size, sha256, commit });
        }
        bail!("the hub redirected {what} more than {MAX_REDIRECTS} times")
    }

    /// Files of `repo` at `revision` and the commit it resolved to.
    pub fn list_files(&self, repo: &str, revision: &str) -> Result<(Vec<String>, Option<String>)> {
        let url = format!("{}/api/models/{repo}/revision/{revision}", self.endpoint);
        let mut body = String::new();
        self.get(&url, &format!("{repo}@{revision}"))?
            .read_to_string(&mut body)
            .with_context(|| format!("reading the file list of {repo} failed"))?;
        let info: RepoInfo = serde_json::from_str(&body)
            .with_context(|| format!("the hub's file list of {repo} is not the expected JSON"))?;
        Ok((info.siblings.into_iter().map(|s| s.rfilename).collect(), info.sha))
    }

    fn get(&self, url: &str, what: &str) -> Result<Response> {
        let response = self.client.get(url).send().map_err(|error| {
            if error.is_connect() || error.is_timeout() {
                anyhow::anyhow!("the hub at {} is unreachable: {error}", self.endpoint)
            } else {
                anyhow::anyhow!("request for {what} failed: {error}")
            }
        })?;
        match response.status() {
            status if status.is_success() || status.is_redirection() => Ok(response),
            StatusCode::NOT_FOUND => bail!("{what} was not found on the hub at {}", self.endpoint),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                bail!("{what} is gated or private on the hub (HTTP {})", response.status())
            }
            status => bail!("the hub answered HTTP {status} for {what}"),
        }
    }
}

fn header_str(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    header_str(headers, name).and_then(|v| v.parse().ok())
}

/// `X-Linked-Etag` is the quoted sha256 of an LFS file (a plain git file's ETag is a sha1 and is
/// not used).
fn linked_sha256(headers: &HeaderMap) -> Option<String> {
    let value = header_str(headers, "x-linked-etag")?;
    let hex = value.trim_start_matches("W/").trim_matches('"').to_ascii_lowercase();
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then_some(hex)
}
