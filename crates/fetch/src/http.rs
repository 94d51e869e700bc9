//! Downloads over HTTP(S): mirror after mirror, each retried with
//! back-off, a cut transfer resumed with a range request (or started over
//! where the server ignores ranges), the result checked before it takes
//! its name. The bytes go to `<file>.part` beside the destination, which a
//! later run resumes.

use std::io::{Read, Seek, Write};
use std::path::Path;
use std::time::Duration;

use crate::digest::Expect;
use crate::error::FetchError;
use crate::registry::mirror_url;

/// What a progress bar counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Files,
}

/// Who watches a fetch: a bar per step, and lines for the user.
pub trait Progress {
    /// A step starts: `what` (a file, "unpacking"), its total where known,
    /// and how much of it is already done (a resumed download).
    fn begin(&mut self, _what: &str, _total: Option<u64>, _done: u64, _unit: Unit) {}
    /// How much of the step is done.
    fn advance(&mut self, _done: u64) {}
    /// The step is over.
    fn end(&mut self) {}
    /// A line for the user: a retry, a mirror given up, a note.
    fn note(&mut self, _line: &str) {}
}

/// Progress nobody watches.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {}

/// How often a mirror is tried, and the wait before the first retry (it
/// doubles after each).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retry {
    pub tries: u32,
    pub first_wait: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            tries: 5,
            first_wait: Duration::from_secs(1),
        }
    }
}

/// An HTTP(S) client (rustls, the system's proxy settings) with its retry
/// rule.
#[derive(Debug, Clone)]
pub struct Fetcher {
    agent: ureq::Agent,
    pub retry: Retry,
}

/// What one try of one mirror came to.
enum Failed {
    /// Worth another try: the connection broke, the server is busy.
    Again(String),
    /// Not worth another try of this mirror.
    Fatal(FetchError),
}

impl Fetcher {
    pub fn new(retry: Retry) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            .user_agent(concat!("netdissect/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
            retry,
        }
    }

    /// Downloads `file` from the first of `mirrors` that delivers it whole
    /// and as `expect` says, to `dest` (`<dest>.part` on the way, resumed
    /// if an earlier run left one). A file that fails its checks is
    /// removed and the next mirror tried. Returns its SHA-256.
    pub fn download(
        &self,
        file: &str,
        mirrors: &[String],
        dest: &Path,
        expect: &Expect,
        progress: &mut dyn Progress,
    ) -> Result<String, FetchError> {
        let part = store::with_suffix(dest, ".part");
        let mut errors = Vec::new();
        for mirror in mirrors {
            let url = mirror_url(mirror, file);
            if let Err(e) = self.transfer(&url, file, &part, expect.size, progress) {
                progress.note(&format!("{e}; trying the next mirror"));
                errors.push(e.to_string());
                continue;
            }
            match expect.check(&part) {
                Ok(digest) => {
                    store::rename(&part, dest).map_err(FetchError::io(dest))?;
                    return Ok(digest);
                }
                Err(e) => {
                    store::remove(&part).map_err(FetchError::io(&part))?;
                    let e = format!("{url}: {e}: removed");
                    progress.note(&e);
                    errors.push(e);
                }
            }
        }
        Err(FetchError::Mirrors {
            file: file.to_string(),
            errors,
        })
    }

    /// `url` into `part`, with retries.
    fn transfer(
        &self,
        url: &str,
        file: &str,
        part: &Path,
        size: Option<u64>,
        progress: &mut dyn Progress,
    ) -> Result<(), FetchError> {
        let mut wait = self.retry.first_wait;
        let tries = self.retry.tries.max(1);
        let mut last = String::new();
        for attempt in 1..=tries {
            match self.try_once(url, file, part, size, progress) {
                Ok(()) => return Ok(()),
                Err(Failed::Fatal(e)) => return Err(e),
                Err(Failed::Again(why)) => {
                    if attempt < tries {
                        progress.note(&format!(
                            "{url}: {why}; trying again in {wait:?} ({attempt} of {tries} tries)"
                        ));
                        std::thread::sleep(wait);
                        wait = wait.saturating_mul(2);
                    }
                    last = why;
                }
            }
        }
        Err(FetchError::Transfer {
            url: url.to_string(),
            message: format!("{last} ({tries} tries)"),
        })
    }

    /// One request: the rest of `part`, or all of it.
    fn try_once(
        &self,
        url: &str,
        file: &str,
        part: &Path,
        size: Option<u64>,
        progress: &mut dyn Progress,
    ) -> Result<(), Failed> {
        let io = |e: std::io::Error| Failed::Fatal(FetchError::io(part)(e));
        let mut have = match std::fs::metadata(part) {
            Ok(m) => m.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(e)),
        };
        if let Some(size) = size {
            if have == size {
                return Ok(());
            }
            if have > size {
                have = 0;
            }
        }
        let mut request = self.agent.get(url);
        if have > 0 {
            request = request.header("Range", format!("bytes={have}-"));
        }
        let response = match request.call() {
            Ok(r) => r,
            // The range starts at or past the end: what we have is no
            // prefix of the file; start over.
            Err(ureq::Error::StatusCode(416)) => {
                truncate(part).map_err(io)?;
                return Err(Failed::Again(
                    "the server refused the range asked for: starting over".into(),
                ));
            }
            Err(ureq::Error::StatusCode(status))
                if status == 408 || status == 429 || status >= 500 =>
            {
                return Err(Failed::Again(format!("the server answered HTTP {status}")));
            }
            Err(ureq::Error::StatusCode(status)) => {
                return Err(Failed::Fatal(FetchError::Status {
                    url: url.to_string(),
                    status,
                }));
            }
            Err(e @ (ureq::Error::BadUri(_) | ureq::Error::HostNotFound)) => {
                return Err(Failed::Fatal(FetchError::Transfer {
                    url: url.to_string(),
                    message: e.to_string(),
                }));
            }
            Err(e) => return Err(Failed::Again(e.to_string())),
        };
        let header = |name: &str| {
            (response.headers().get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let (start, total) = match response.status().as_u16() {
            206 => match header("content-range").as_deref().and_then(content_range) {
                Some((start, total)) if start == have => {
                    (start, total.or(length.map(|l| start + l)))
                }
                _ => {
                    truncate(part).map_err(io)?;
                    return Err(Failed::Again(
                        "the server answered with another range: starting over".into(),
                    ));
                }
            },
            200 => {
                if have > 0 {
                    progress.note(&format!(
                        "{url}: the server ignores ranges: downloading from the start"
                    ));
                }
                (0, length)
            }
            status => {
                return Err(Failed::Fatal(FetchError::Status {
                    url: url.to_string(),
                    status,
                }));
            }
        };
        if let (Some(total), Some(size)) = (total, size)
            && total != size
        {
            return Err(Failed::Fatal(FetchError::Transfer {
                url: url.to_string(),
                message: format!("the server sends {total} bytes where the registry says {size}"),
            }));
        }
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(part)
            .map_err(io)?;
        out.set_len(start).map_err(io)?;
        out.seek(std::io::SeekFrom::Start(start)).map_err(io)?;
        let mut done = start;
        progress.begin(file, total, done, Unit::Bytes);
        let mut body = response.into_body().into_reader();
        let mut buf = vec![0u8; 256 * 1024];
        let read = loop {
            match body.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => {
                    out.write_all(&buf[..n]).map_err(io)?;
                    done += n as u64;
                    progress.advance(done);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        progress.end();
        out.flush().map_err(io)?;
        out.sync_data().map_err(io)?;
        if let Err(e) = read {
            let of = total.map_or(String::new(), |t| format!(" of {t}"));
            return Err(Failed::Again(format!(
                "the transfer broke after {done}{of} bytes ({e})"
            )));
        }
        match total {
            Some(total) if done != total => Err(Failed::Again(format!(
                "the connection closed after {done} of {total} bytes"
            ))),
            _ => Ok(()),
        }
    }
}

/// Empties `part` (a download that must start over).
fn truncate(part: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new().write(true).open(part) {
        Ok(f) => f.set_len(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// The first byte and the total of a `Content-Range: bytes A-B/T` header
/// (`T` may be `*`).
fn content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (first, _) = range.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_parsed() {
        assert_eq!(content_range("bytes 100-199/200"), Some((100, Some(200))));
        assert_eq!(content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(content_range("items 1-2/3"), None);
        assert_eq!(content_range("bytes x-2/3"), None);
    }
}
