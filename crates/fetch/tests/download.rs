//! Downloads against a server on the loopback address that each test
//! starts: a whole file, a connection cut halfway then resumed with a
//! range request, servers without range support (ours and Python's
//! `http.server`, as Debian ships it), a wrong digest refused and the file
//! removed, a mirror that fails and then one that works.

mod server;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use fetch::{Expect, Fetcher, Progress, Retry, Unit, sha256_file};
use server::{Fault, Seen, Server};

/// Deterministic bytes that no shift of themselves repeats.
fn payload(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_u32;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn serve(name: &str, bytes: &[u8], fault: Fault) -> Server {
    Server::start(HashMap::from([(name.to_string(), bytes.to_vec())]), fault)
}

/// `w.bin` from `mirrors` to `dest`, no check beyond `expect`, unwatched.
fn get(mirrors: &[String], dest: &Path, expect: &Expect) -> Result<String, fetch::FetchError> {
    let mut none = |_: &Path| Ok(());
    fast().download(
        "w.bin",
        mirrors,
        dest,
        expect,
        &mut none,
        &mut Watched::default(),
    )
}

fn fast() -> Fetcher {
    Fetcher::direct(Retry {
        tries: 3,
        first_wait: Duration::from_millis(20),
    })
}

fn digest_of(bytes: &[u8], dir: &Path) -> String {
    let p = dir.join("reference");
    std::fs::write(&p, bytes).unwrap();
    sha256_file(&p).unwrap()
}

/// What a download said and showed.
#[derive(Debug, Default)]
struct Watched {
    notes: Vec<String>,
    begun: Vec<(Option<u64>, u64)>,
    last: u64,
}

impl Progress for Watched {
    fn begin(&mut self, _what: &str, total: Option<u64>, done: u64, unit: Unit) {
        assert_eq!(unit, Unit::Bytes);
        self.begun.push((total, done));
    }
    fn advance(&mut self, done: u64) {
        self.last = done;
    }
    fn note(&mut self, line: &str) {
        self.notes.push(line.to_string());
    }
}

#[test]
fn a_whole_download_is_checked_and_takes_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = payload(300_000);
    let server = serve("w.bin", &bytes, Fault::None);
    let dest = tmp.path().join("w.bin");
    let expect = Expect {
        size: Some(bytes.len() as u64),
        sha256: Some(digest_of(&bytes, tmp.path())),
        sha256_from: "the registry".into(),
        prefix: None,
    };
    let mut watched = Watched::default();
    let digest = fast()
        .download(
            "w.bin",
            &[server.url()],
            &dest,
            &expect,
            &mut |_| Ok(()),
            &mut watched,
        )
        .unwrap();
    assert_eq!(Some(digest), expect.sha256);
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(!tmp.path().join("w.bin.part").exists());
    assert_eq!(watched.begun, [(Some(300_000), 0)]);
    assert_eq!(watched.last, 300_000);
    assert_eq!(
        server.requests(),
        [Seen {
            path: "/data/w.bin".into(),
            range: None
        }]
    );
}

#[test]
fn a_cut_connection_is_resumed_with_a_range_request() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = payload(500_000);
    let server = serve("w.bin", &bytes, Fault::CutFirstAt(200_000));
    let dest = tmp.path().join("w.bin");
    let expect = Expect {
        sha256: Some(digest_of(&bytes, tmp.path())),
        ..Expect::default()
    };
    let mut watched = Watched::default();
    fast()
        .download(
            "w.bin",
            &[server.url()],
            &dest,
            &expect,
            &mut |_| Ok(()),
            &mut watched,
        )
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].range.as_deref(), Some("bytes=200000-"));
    assert_eq!(
        watched.begun,
        [(Some(500_000), 0), (Some(500_000), 200_000)]
    );
    assert!(
        watched.notes[0].contains("broke after 200000 of 500000 bytes"),
        "{:?}",
        watched.notes
    );
}

#[test]
fn a_partial_file_of_an_earlier_run_is_resumed() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = payload(100_000);
    let server = serve("w.bin", &bytes, Fault::None);
    let dest = tmp.path().join("w.bin");
    std::fs::write(tmp.path().join("w.bin.part"), &bytes[..40_000]).unwrap();
    let expect = Expect {
        size: Some(100_000),
        ..Expect::default()
    };
    get(&[server.url()], &dest, &expect).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(server.requests()[0].range.as_deref(), Some("bytes=40000-"));
}

#[test]
fn a_server_without_ranges_restarts_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = payload(100_000);
    let server = serve("w.bin", &bytes, Fault::NoRanges);
    let dest = tmp.path().join("w.bin");
    // What an earlier run left: not even a prefix of the file.
    std::fs::write(tmp.path().join("w.bin.part"), vec![7u8; 60_000]).unwrap();
    let mut watched = Watched::default();
    let expect = Expect {
        sha256: Some(digest_of(&bytes, tmp.path())),
        ..Expect::default()
    };
    fast()
        .download(
            "w.bin",
            &[server.url()],
            &dest,
            &expect,
            &mut |_| Ok(()),
            &mut watched,
        )
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(
        watched.notes.iter().any(|n| n.contains("ignores ranges")),
        "{:?}",
        watched.notes
    );
}

/// Python's `http.server` (Debian's python3) answers a range request with
/// the whole file: a real server without range support.
#[test]
fn pythons_http_server_without_ranges_delivers_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let served = tmp.path().join("served/data");
    std::fs::create_dir_all(&served).unwrap();
    let bytes = payload(150_000);
    std::fs::write(served.join("w.bin"), &bytes).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut python = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(tmp.path().join("served"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 (Debian's) runs http.server");
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "http.server did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let dest = tmp.path().join("w.bin");
    std::fs::write(tmp.path().join("w.bin.part"), &bytes[..50_000]).unwrap();
    let expect = Expect {
        sha256: Some(digest_of(&bytes, tmp.path())),
        ..Expect::default()
    };
    let mut watched = Watched::default();
    let done = fast().download(
        "w.bin",
        &[format!("http://127.0.0.1:{port}/data/")],
        &dest,
        &expect,
        &mut |_| Ok(()),
        &mut watched,
    );
    let _ = python.kill();
    let _ = python.wait();
    done.unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert!(watched.notes.iter().any(|n| n.contains("ignores ranges")));
}

#[test]
fn a_wrong_digest_is_refused_and_the_file_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = payload(10_000);
    let server = serve("w.bin", &bytes, Fault::None);
    let dest = tmp.path().join("w.bin");
    let expect = Expect {
        sha256: Some("00".repeat(32)),
        sha256_from: "the registry".into(),
        ..Expect::default()
    };
    let e = get(&[server.url()], &dest, &expect)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no mirror delivered it"), "{e}");
    assert!(e.contains("where the registry records 0000"), "{e}");
    assert!(e.contains("removed"), "{e}");
    assert!(!dest.exists());
    assert!(!tmp.path().join("w.bin.part").exists());
}

#[test]
fn a_failing_mirror_gives_way_to_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = payload(20_000);
    let broken = serve("w.bin", &bytes, Fault::Status(503));
    let missing = serve("other.bin", &bytes, Fault::None);
    let good = serve("w.bin", &bytes, Fault::None);
    let dest = tmp.path().join("w.bin");
    let mut watched = Watched::default();
    fast()
        .download(
            "w.bin",
            &[broken.url(), missing.url(), good.url()],
            &dest,
            &Expect::default(),
            &mut |_| Ok(()),
            &mut watched,
        )
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    // 503 is worth retrying; 404 is not.
    assert_eq!(broken.requests().len(), 3);
    assert_eq!(missing.requests().len(), 1);
    let notes = watched.notes.join("\n");
    assert!(notes.contains("HTTP 503"), "{notes}");
    assert!(
        notes.contains("answered HTTP 404; trying the next mirror"),
        "{notes}"
    );

    // Every mirror failing names each one.
    let e = get(
        &[broken.url(), missing.url()],
        &tmp.path().join("x"),
        &Expect::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains(&broken.url()) && e.contains(&missing.url()),
        "{e}"
    );
}

#[test]
fn a_server_sending_another_size_than_the_registry_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = payload(1_000);
    let server = serve("w.bin", &bytes, Fault::None);
    let expect = Expect {
        size: Some(999),
        ..Expect::default()
    };
    let e = fast()
        .download(
            "w.bin",
            &[server.url()],
            &tmp.path().join("w.bin"),
            &expect,
            &mut |_| Ok(()),
            &mut Watched::default(),
        )
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sends 1000 bytes where the registry says 999"),
        "{e}"
    );
    assert_eq!(server.requests().len(), 1, "not retried");
}

#[test]
fn a_complete_part_answered_416_is_not_downloaded_again() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = payload(30_000);
    let server = serve("w.bin", &bytes, Fault::None);
    let dest = tmp.path().join("w.bin");
    // A run killed after its last byte, before the rename: its size
    // unknown to the registry, the server says the range is past the end.
    std::fs::write(tmp.path().join("w.bin.part"), &bytes).unwrap();
    get(&[server.url()], &dest, &Expect::default()).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    let seen = server.requests();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].range.as_deref(), Some("bytes=30000-"));
}

#[test]
fn a_part_longer_than_the_file_starts_over() {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = payload(30_000);
    let server = serve("w.bin", &bytes, Fault::None);
    let dest = tmp.path().join("w.bin");
    std::fs::write(tmp.path().join("w.bin.part"), vec![1u8; 40_000]).unwrap();
    let expect = Expect {
        size: Some(30_000),
        ..Expect::default()
    };
    get(&[server.url()], &dest, &expect).unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), bytes);
    assert_eq!(server.requests()[0].range, None);
}

#[test]
fn a_file_its_check_refuses_is_removed_and_the_next_mirror_tried() {
    let tmp = tempfile::tempdir().unwrap();
    let wrong = serve("w.bin", b"not what we want", Fault::None);
    let right = serve("w.bin", b"WANTED", Fault::None);
    let dest = tmp.path().join("w.bin");
    let mut check = |p: &Path| {
        (std::fs::read(p).unwrap() == b"WANTED")
            .then_some(())
            .ok_or_else(|| "does not load".to_string())
    };
    let mut watched = Watched::default();
    fast()
        .download(
            "w.bin",
            &[wrong.url(), right.url()],
            &dest,
            &Expect::default(),
            &mut check,
            &mut watched,
        )
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"WANTED");
    assert!(
        watched.notes[0].contains("does not load: removed; trying the next mirror"),
        "{:?}",
        watched.notes
    );
}
