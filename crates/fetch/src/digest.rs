//! The checks of a fetched file: its size, and its SHA-256 against the
//! registry's, against the prefix torchvision puts in its file names, or
//! against the digest recorded beside it at its first verified download.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::FetchError;

/// What a file must be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// Its size in bytes.
    pub size: Option<u64>,
    /// Its whole SHA-256, hex: the registry's, or one recorded earlier.
    pub sha256: Option<String>,
    /// Where the digest came from, for messages ("the registry", a file).
    pub sha256_from: String,
    /// The start of its SHA-256, from its file name (torchvision's
    /// `resnet18-f37072fd.pth`), checked as `torch.hub` checks it.
    pub prefix: Option<String>,
}

impl Expect {
    /// The checks of `file`: the registry's size and digest, the digest
    /// prefix in the file's name where `name_prefix` says it carries one
    /// (torchvision's), and where the registry has no digest, the one
    /// recorded beside `recorded_beside` (if any).
    pub fn of(
        size: Option<u64>,
        sha256: Option<&str>,
        file: &str,
        name_prefix: bool,
        recorded_beside: &Path,
    ) -> Result<Expect, FetchError> {
        let (sha256, sha256_from) = match sha256 {
            Some(d) => (Some(d.to_ascii_lowercase()), "the registry".to_string()),
            None => match read_recorded_digest(recorded_beside)? {
                Some(d) => (
                    Some(d),
                    digest_record_path(recorded_beside).display().to_string(),
                ),
                None => (None, String::new()),
            },
        };
        Ok(Expect {
            size,
            sha256,
            sha256_from,
            prefix: name_prefix
                .then(|| self::name_prefix(file).map(str::to_string))
                .flatten(),
        })
    }

    /// Whether a digest is known in full (the registry's or a recorded
    /// one); without one, the first verified download records its own.
    pub fn has_digest(&self) -> bool {
        self.sha256.is_some()
    }

    /// Checks the file at `path`; returns its SHA-256.
    pub fn check(&self, path: &Path) -> Result<String, FetchError> {
        let bad = |message: String| FetchError::Digest {
            path: path.to_path_buf(),
            message,
        };
        let len = std::fs::metadata(path).map_err(FetchError::io(path))?.len();
        if let Some(size) = self.size
            && len != size
        {
            return Err(bad(format!("{len} bytes where {size} were expected")));
        }
        let digest = sha256_file(path)?;
        if let Some(want) = &self.sha256
            && &digest != want
        {
            return Err(bad(format!(
                "SHA-256 {digest}, where {} records {want}",
                self.sha256_from
            )));
        }
        if let Some(prefix) = &self.prefix
            && !digest.starts_with(prefix.as_str())
        {
            return Err(bad(format!(
                "SHA-256 {digest} does not start with {prefix}, the digest prefix in its name"
            )));
        }
        Ok(digest)
    }
}

/// The SHA-256 of the file at `path`, hex.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = std::fs::File::open(path).map_err(FetchError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(FetchError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The digest prefix in a torchvision-style file name: the hex digits (at
/// least 6) between the last `-` before the first `.` after it, as in
/// `resnet18-f37072fd.pth` or `alexnet-owt-7be5be79.pth`.
pub(crate) fn name_prefix(file: &str) -> Option<&str> {
    file.match_indices('-').find_map(|(i, _)| {
        let rest = &file[i + 1..];
        let end = rest.find('.')?;
        let hex = &rest[..end];
        (hex.len() >= 6 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then_some(hex)
    })
}

/// The file beside `path` that records its digest: `<path>.sha256`, in
/// `sha256sum`'s format (so `sha256sum -c` checks it too).
pub fn digest_record_path(path: &Path) -> PathBuf {
    store::with_suffix(path, ".sha256")
}

/// Records `digest` as the SHA-256 of `path` (named `file` in the record),
/// written atomically beside it.
pub fn record_digest(path: &Path, file: &str, digest: &str) -> Result<(), FetchError> {
    let record = digest_record_path(path);
    store::write_atomic(&record, format!("{digest}  {file}\n").as_bytes())
        .map_err(FetchError::io(&record))
}

/// The digest recorded beside `path`, if a record exists. A record that
/// is not a digest is an error naming it.
pub fn read_recorded_digest(path: &Path) -> Result<Option<String>, FetchError> {
    let record = digest_record_path(path);
    let text = match std::fs::read_to_string(&record) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(FetchError::io(&record)(e)),
    };
    let digest = text
        .split_whitespace()
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    if digest.len() != 64 || !digest.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(FetchError::Record {
            path: record,
            message: "holds no SHA-256: remove it, and the file is checked anew".into(),
        });
    }
    Ok(Some(digest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_read_from_torchvision_names() {
        assert_eq!(name_prefix("resnet18-f37072fd.pth"), Some("f37072fd"));
        assert_eq!(name_prefix("alexnet-owt-7be5be79.pth"), Some("7be5be79"));
        assert_eq!(name_prefix("vgg16_bn-6c64b313.pth"), Some("6c64b313"));
        assert_eq!(name_prefix("resnet18_places365.pth.tar"), None);
        assert_eq!(
            name_prefix("epoch-12.pth"),
            None,
            "too short to be a digest"
        );
        assert_eq!(name_prefix("broden1_224.zip"), None);
        // Only where the registry says the name carries a digest.
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("x");
        let named = |on| {
            Expect::of(None, None, "ckpt-20240101.pth", on, &p)
                .unwrap()
                .prefix
        };
        assert_eq!(named(false), None);
        assert_eq!(named(true).as_deref(), Some("20240101"));
    }

    #[test]
    fn files_are_checked_by_size_digest_and_name_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f.bin");
        std::fs::write(&path, b"abc").unwrap();
        let sha = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_file(&path).unwrap(), sha);
        let ok = Expect {
            size: Some(3),
            sha256: Some(sha.into()),
            sha256_from: "the registry".into(),
            prefix: Some("ba7816".into()),
        };
        assert_eq!(ok.check(&path).unwrap(), sha);
        let short = Expect {
            size: Some(4),
            ..ok.clone()
        };
        assert!(
            short
                .check(&path)
                .unwrap_err()
                .to_string()
                .contains("3 bytes where 4")
        );
        let wrong = Expect {
            sha256: Some("00".repeat(32)),
            ..ok.clone()
        };
        let e = wrong.check(&path).unwrap_err().to_string();
        assert!(e.contains("where the registry records 0000"), "{e}");
        let prefix = Expect {
            prefix: Some("f37072".into()),
            ..Expect::default()
        };
        assert!(
            prefix
                .check(&path)
                .unwrap_err()
                .to_string()
                .contains("prefix in its name")
        );
    }

    #[test]
    fn recorded_digests_are_read_back_and_bad_records_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("w.pth");
        assert_eq!(read_recorded_digest(&path).unwrap(), None);
        record_digest(&path, "w.pth", &"ab".repeat(32)).unwrap();
        let text = std::fs::read_to_string(tmp.path().join("w.pth.sha256")).unwrap();
        assert_eq!(text, format!("{}  w.pth\n", "ab".repeat(32)));
        assert_eq!(read_recorded_digest(&path).unwrap(), Some("ab".repeat(32)));
        let expect = Expect::of(None, None, "w.pth", false, &path).unwrap();
        assert_eq!(expect.sha256, Some("ab".repeat(32)));
        assert!(expect.sha256_from.ends_with("w.pth.sha256"));
        std::fs::write(tmp.path().join("w.pth.sha256"), "garbage\n").unwrap();
        let e = read_recorded_digest(&path).unwrap_err().to_string();
        assert!(e.contains("w.pth.sha256: holds no SHA-256"), "{e}");
    }
}
