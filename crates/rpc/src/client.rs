//! A small blocking JSON-RPC client over plain HTTP/1.1 (one connection per call), for the CLI
//! and tests.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response body read.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the node at {address}")]
    Io { address: SocketAddr, source: std::io::Error },
    #[error("the node answered with something that is not JSON-RPC: {0}")]
    Malformed(String),
    #[error("{message} (code {code})")]
    Rpc { code: i64, message: String },
}

/// Posts `body` to `http://address/` and returns the HTTP status and the response body.
pub fn post(address: SocketAddr, body: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
    let io = |source| ClientError::Io { address, source };
    let mut stream = TcpStream::connect_timeout(&address, TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let head = format!(
        "POST / HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(io)?;
    // The server may answer (e.g. 413) and close before reading an oversized body.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    stream.take(MAX_RESPONSE_BYTES).read_to_end(&mut response).map_err(io)?;
    let split = response
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .ok_or_else(|| ClientError::Malformed("no HTTP header".into()))?;
    let header = String::from_utf8_lossy(&response[..split]);
    let status = header
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| ClientError::Malformed(format!("bad status line in {header:?}")))?;
    if header.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        return Err(ClientError::Malformed("chunked responses are not supported".into()));
    }
    Ok((status, response[split + 4..].to_vec()))
}

/// Calls `method` and returns its `result`, or the node's error.
pub fn call(address: SocketAddr, method: &str, params: Value) -> Result<Value, ClientError> {
    let request = json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params });
    let (_, body) = post(address, request.to_string().as_bytes())?;
    let mut response: Value = serde_json::from_slice(&body)
        .map_err(|error| ClientError::Malformed(format!("{error}")))?;
    if let Some(error) = response.get("error") {
        return Err(ClientError::Rpc {
            code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
            message: error.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
        });
    }
    response
        .get_mut("result")
        .map(Value::take)
        .ok_or_else(|| ClientError::Malformed("no result and no error".into()))
}
