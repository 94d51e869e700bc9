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

/// One file from one mirror: where it comes from, where it goes, how long
/// it is (where known).
struct Transfer<'a> {
    url: &'a str,
    file: &'a str,
    part: &'a Path,
    size: Option<u64>,
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
        Self::with_proxy(retry, ureq::Proxy::try_from_env())
    }

    /// A client that ignores the environment's proxy settings (for servers
    /// on the loopback address).
    pub fn direct(retry: Retry) -> Self {
        Self::with_proxy(retry, None)
    }

    fn with_proxy(retry: Retry, proxy: Option<ureq::Proxy>) -> Self {
        let config = ureq::Agent::config_builder()
            .proxy(proxy)
            // Statuses are ours to read: a 416 says how long the file is.
            .http_status_as_error(false)
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_recv_response(Some(Duration::from_secs(60)))
            // A stalled body ends the try; the next resumes where it was.
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .user_agent(concat!("netdissect/", env!("CARGO_PKG_VERSION")))
            .build();
        Self {
            agent: ureq::Agent::new_with_config(config),
            retry,
        }
    }

    /// Downloads `file` from the first of `mirrors` that delivers it whole,
    /// as `expect` says and passing `check` (which sees the downloaded
    /// file before it takes its name), to `dest` (`<dest>.part` on the way,
    /// resumed if an earlier run left one). A file that fails its checks is
    /// removed and the next mirror tried; a local disk error ends the
    /// download at once. Returns its SHA-256.
    pub fn download(
        &self,
        file: &str,
        mirrors: &[String],
        dest: &Path,
        expect: &Expect,
        check: &mut dyn FnMut(&Path) -> Result<(), String>,
        progress: &mut dyn Progress,
    ) -> Result<String, FetchError> {
        let part = store::with_suffix(dest, ".part");
        let mut errors = Vec::new();
        for (i, mirror) in mirrors.iter().enumerate() {
            let next = if i + 1 < mirrors.len() {
                "; trying the next mirror"
            } else {
                ""
            };
            let url = mirror_url(mirror, file);
            let t = Transfer {
                url: &url,
                file,
                part: &part,
                size: expect.size,
            };
            match self.transfer(&t, progress) {
                Ok(()) => {}
                Err(e @ FetchError::Io { .. }) => return Err(e),
                Err(e) => {
                    progress.note(&format!("{e}{next}"));
                    errors.push(e.to_string());
                    continue;
                }
            }
            let checked = expect
                .check(&part)
                .map_err(|e| e.to_string())
                .and_then(|digest| check(&part).map(|()| digest));
            match checked {
                Ok(digest) => {
                    store::rename(&part, dest).map_err(FetchError::io(dest))?;
                    return Ok(digest);
                }
                Err(e) => {
                    store::remove(&part).map_err(FetchError::io(&part))?;
                    let e = format!("{url}: {e}: removed");
                    progress.note(&format!("{e}{next}"));
                    errors.push(e);
                }
            }
        }
        Err(FetchError::Mirrors {
            file: file.to_string(),
            errors,
        })
    }

    /// `url` into `part`, with retries: `retry.tries` in a row that bring
    /// no byte end it (a try that brings some starts the count again).
    fn transfer(&self, t: &Transfer<'_>, progress: &mut dyn Progress) -> Result<(), FetchError> {
        let (url, part) = (t.url, t.part);
        let tries = self.retry.tries.max(1);
        let mut wait = self.retry.first_wait;
        let mut failed = 0;
        let len = || std::fs::metadata(part).map_or(0, |m| m.len());
        loop {
            let before = len();
            let why = match self.try_once(t, progress) {
                Ok(()) => return Ok(()),
                Err(Failed::Fatal(e)) => return Err(e),
                Err(Failed::Again(why)) => why,
            };
            if len() > before {
                failed = 0;
                wait = self.retry.first_wait;
            }
            failed += 1;
            if failed >= tries {
                return Err(FetchError::Transfer {
                    url: url.to_string(),
                    message: format!("{why} ({tries} tries in a row)"),
                });
            }
            progress.note(&format!(
                "{url}: {why}; trying again in {wait:?} ({failed} of {tries} tries)"
            ));
            std::thread::sleep(wait);
            wait = wait.saturating_mul(2);
        }
    }

    /// One request: the rest of `part`, or all of it.
    fn try_once(&self, t: &Transfer<'_>, progress: &mut dyn Progress) -> Result<(), Failed> {
        let Transfer {
            url,
            file,
            part,
            size,
        } = *t;
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
            // The network, worth another try.
            Err(
                e @ (ureq::Error::Io(_)
                | ureq::Error::Timeout(_)
                | ureq::Error::ConnectionFailed
                | ureq::Error::Protocol(_)),
            ) => return Err(Failed::Again(e.to_string())),
            // A bad URL, an unknown host, TLS, redirects: no retry helps.
            Err(e) => {
                return Err(Failed::Fatal(FetchError::Transfer {
                    url: url.to_string(),
                    message: e.to_string(),
                }));
            }
        };
        let header = |name: &str| {
            (response.headers().get(name))
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let (start, total) = match response.status().as_u16() {
            206 => match header("content-range").as_deref().and_then(content_range) {
                Some((Some(start), total)) if start == have => {
                    (start, total.or(length.and_then(|l| start.checked_add(l))))
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
            // The range starts at or past the end: done if the server's
            // length is ours, else what we have is no prefix of the file.
            416 => {
                let total = header("content-range").as_deref().and_then(content_range);
                if matches!(total, Some((None, Some(t))) if t == have) && have > 0 {
                    return Ok(());
                }
                truncate(part).map_err(io)?;
                return Err(Failed::Again(
                    "the server refused the range asked for: starting over".into(),
                ));
            }
            status @ (408 | 429 | 500..) => {
                return Err(Failed::Again(format!("the server answered HTTP {status}")));
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
                    if let Some(limit) = total.or(size)
                        && done > limit
                    {
                        progress.end();
                        return Err(Failed::Fatal(FetchError::Transfer {
                            url: url.to_string(),
                            message: format!(
                                "the server sent more than the {limit} bytes of the file"
                            ),
                        }));
                    }
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

/// The first byte and the total of a `Content-Range` header: `bytes A-B/T`
/// (`T` may be `*`) or, answering an unsatisfiable range, `bytes */T`.
fn content_range(value: &str) -> Option<(Option<u64>, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    if range.trim() == "*" {
        return Some((None, total));
    }
    let (first, _) = range.split_once('-')?;
    Some((Some(first.trim().parse().ok()?), total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_ranges_are_parsed() {
        assert_eq!(
            content_range("bytes 100-199/200"),
            Some((Some(100), Some(200)))
        );
        assert_eq!(content_range("bytes 5-9/*"), Some((Some(5), None)));
        assert_eq!(content_range("bytes */300"), Some((None, Some(300))));
        assert_eq!(content_range("items 1-2/3"), None);
        assert_eq!(content_range("bytes x-2/3"), None);
    }
}
