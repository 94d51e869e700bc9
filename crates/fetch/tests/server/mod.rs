//! A file server on the loopback address for the download tests, started
//! by each test on a port of its own, with the faults a real server or
//! network shows: a connection cut partway, no range support, an error
//! status. It serves HTTP/1.1, one request per connection, and logs the
//! path and `Range` header of every request.
//!
//! Shared by `crates/fetch/tests` and the CLI's tests (`#[path]`).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// How the server misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// The first request for a file gets the whole length announced but
    /// only this many bytes before the connection closes.
    CutFirstAt(usize),
    /// Range headers are ignored: every answer is the whole file (200).
    NoRanges,
    /// Every request is answered with this status and no body.
    Status(u16),
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub path: String,
    pub range: Option<String>,
}

#[derive(Debug)]
pub struct Server {
    pub port: u16,
    pub log: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Serves `files` (by name, under `/`) with `fault`.
    pub fn start(files: HashMap<String, Vec<u8>>, fault: Fault) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut served = 0usize;
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = answer(stream, &files, fault, &seen, &mut served);
            }
        });
        Server { port, log }
    }

    /// The base URL of the served files.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/data/", self.port)
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }
}

fn answer(
    stream: TcpStream,
    files: &HashMap<String, Vec<u8>>,
    fault: Fault,
    log: &Mutex<Vec<Seen>>,
    served: &mut usize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = header.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_string());
        }
    }
    log.lock().unwrap().push(Seen {
        path: path.clone(),
        range: range.clone(),
    });
    let mut out = stream;
    if let Fault::Status(status) = fault {
        return write!(
            out,
            "HTTP/1.1 {status} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
    let name = path.rsplit('/').next().unwrap_or("");
    let Some(body) = path
        .starts_with("/data/")
        .then(|| files.get(name))
        .flatten()
    else {
        return write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    };
    let len = body.len();
    let start = match (fault, range.as_deref()) {
        (Fault::NoRanges, _) | (_, None) => None,
        (_, Some(r)) => r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|s| s.parse::<usize>().ok()),
    };
    if let Some(start) = start
        && start >= len
    {
        return write!(
            out,
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
    }
    let from = start.unwrap_or(0);
    match start {
        Some(s) => write!(
            out,
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{len}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            len - 1,
            len - s
        )?,
        None => write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nAccept-Ranges: {}\r\nConnection: close\r\n\r\n",
            if fault == Fault::NoRanges {
                "none"
            } else {
                "bytes"
            }
        )?,
    }
    *served += 1;
    let end = match fault {
        Fault::CutFirstAt(at) if *served == 1 => at.min(len),
        _ => len,
    };
    out.write_all(&body[from..end.max(from)])?;
    out.flush()?;
    out.shutdown(std::net::Shutdown::Both)
}
