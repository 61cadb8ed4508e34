//! Downloads from distribution hosts (not package registries) with the `curl` command: no TLS
//! stack to compile into xtask, and curl honours the usual proxy variables (`https_proxy`,
//! `no_proxy`, ...) and `~/.curlrc` as every other tool on the machine does.
//!
//! A download that fails (no network, mirror down, file gone) is [`Unavailable`]: a VM cell
//! whose fixture cannot be fetched is reported `skipped: <reason>`, never passed or failed. A
//! file that arrives with the wrong sha256 is a hard error.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};
use xshell::{Shell, cmd};

/// A fixture cannot be fetched from this machine: the mirror is unreachable or the file is not
/// there. The root cause of an `anyhow::Error`; find it with `fixtures::unavailable`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub reason: String,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl std::error::Error for Unavailable {}

/// Downloads `url` to `dest`. A failure of curl itself (DNS, connection, HTTP error) is an
/// [`Unavailable`]; a missing curl is a plain error.
pub fn curl(sh: &Shell, url: &str, dest: &Path) -> Result<()> {
    // -f: an HTTP error is a failure, not a saved error page. --retry: transient errors only
    // (timeouts, 5xx). The connect timeout bounds a black-holed mirror.
    let output = cmd!(
        sh,
        "curl -fsSL --retry 2 --connect-timeout 20 -o {dest} {url}"
    )
    .quiet()
    .ignore_status()
    .output()
    .context("running curl (install it: cargo xtask provision)")?;
    if output.status.success() {
        return Ok(());
    }
    let _ = std::fs::remove_file(dest); // a partial download; absent is fine
    let stderr = String::from_utf8_lossy(&output.stderr);
    // With --retry curl repeats its error once per attempt: the last line says it all.
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let code = output
        .status
        .code()
        .map_or_else(|| "killed".to_owned(), |c| c.to_string());
    Err(Unavailable {
        reason: format!("cannot download {url}: {} (curl exit {code})", last.trim()),
    }
    .into())
}

/// Refuses `file` (downloaded from `url`) unless its sha256 is `expected`, which `source` names.
pub fn verify_sha256(file: &Path, url: &str, expected: &str, source: &str) -> Result<()> {
    let actual = sha256_file(file)?;
    if !actual.eq_ignore_ascii_case(expected) {
        bail!(
            "sha256 mismatch for {} (downloaded from {url}): {source} says {expected}, the file has \
             {actual}; refusing to use it (a broken mirror, or the distribution replaced the file: \
             re-pin with `cargo xtask fixtures update`)",
            file.display()
        );
    }
    Ok(())
}

/// The sha256 of a file's contents, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buffer)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
