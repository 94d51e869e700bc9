//! A zip unpacked through a staging folder beside its destination: every
//! entry written there, the result checked, synced, then renamed into
//! place. A bad zip, a full disk or a failed check leaves nothing at the
//! destination, and the staging folder is removed.

use std::path::{Path, PathBuf};

use crate::error::FetchError;
use crate::http::{Progress, Unit};

/// Unpacks `zip` to the folder `dest`, which must not exist. The zip's
/// contents are its folder's: where the zip holds one top folder and
/// nothing else (`broden1_224/…`), that folder's. `check` sees the
/// unpacked folder before it takes its name; its error refuses it.
pub fn unpack_zip(
    zip: &Path,
    dest: &Path,
    check: &mut dyn FnMut(&Path) -> Result<(), String>,
    progress: &mut dyn Progress,
) -> Result<(), FetchError> {
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(FetchError::Exists {
            path: dest.to_path_buf(),
        });
    }
    let parent = store::parent_of(dest);
    let staging = parent.join(format!(".{}.unpacking", store::name_of(dest)));
    // What a killed earlier run left.
    store::remove(&staging).map_err(FetchError::io(&staging))?;
    let done = (|| {
        store::create_dir_all(&staging).map_err(FetchError::io(&staging))?;
        extract(zip, &staging, progress)?;
        let root = single_top_folder(&staging)?;
        check(&root).map_err(|message| FetchError::Refused {
            path: zip.to_path_buf(),
            message,
        })?;
        sync_written(&root)?;
        store::rename(&root, dest).map_err(FetchError::io(dest))
    })();
    let cleaned = store::remove(&staging).map_err(FetchError::io(&staging));
    done.and(cleaned)
}

/// Every entry of `zip` written under `to`.
fn extract(zip: &Path, to: &Path, progress: &mut dyn Progress) -> Result<(), FetchError> {
    let bad = |message: String| FetchError::Zip {
        path: zip.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(zip).map_err(FetchError::io(zip))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not a readable zip: {e}")))?;
    progress.begin("unpacking", Some(archive.len() as u64), 0, Unit::Files);
    let mut made = std::collections::HashSet::new();
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| bad(format!("entry {i}: {e}")))?;
        let Some(rel) = entry.enclosed_name() else {
            let name = entry.name().map(|n| n.into_owned()).unwrap_or_default();
            return Err(bad(format!("entry `{name}` would land outside its folder")));
        };
        let out = to.join(&rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&out).map_err(FetchError::io(&out))?;
        } else {
            let dir = store::parent_of(&out).to_path_buf();
            if made.insert(dir.clone()) {
                std::fs::create_dir_all(&dir).map_err(FetchError::io(&dir))?;
            }
            let mut f = std::fs::File::create(&out).map_err(FetchError::io(&out))?;
            copy_entry(&mut entry, &mut f).map_err(|e| match e {
                Copy::Read(e) => bad(format!("{}: {e}", rel.display())),
                Copy::Write(e) => FetchError::io(&out)(e),
            })?;
        }
        progress.advance(i as u64 + 1);
    }
    progress.end();
    Ok(())
}

/// What failed while copying an entry: reading it (the zip is bad: a
/// short entry, a corrupt stream, a CRC) or writing it (the disk).
enum Copy {
    Read(std::io::Error),
    Write(std::io::Error),
}

fn copy_entry(entry: &mut impl std::io::Read, out: &mut std::fs::File) -> Result<(), Copy> {
    use std::io::Write;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Copy::Read(e)),
        };
        out.write_all(&buf[..n]).map_err(Copy::Write)?;
    }
}

/// `staging`, or its one top folder when it holds nothing else.
fn single_top_folder(staging: &Path) -> Result<PathBuf, FetchError> {
    let entries: Vec<_> = std::fs::read_dir(staging)
        .map_err(FetchError::io(staging))?
        .collect::<Result<_, _>>()
        .map_err(FetchError::io(staging))?;
    match entries.as_slice() {
        [one] if one.file_type().is_ok_and(|t| t.is_dir()) => Ok(one.path()),
        _ => Ok(staging.to_path_buf()),
    }
}

/// Makes what was written under `root` durable before it is renamed into
/// place: on Linux one `syncfs` of its file system, elsewhere each file;
/// then every folder.
fn sync_written(root: &Path) -> Result<(), FetchError> {
    #[cfg(target_os = "linux")]
    {
        let dir = std::fs::File::open(root).map_err(FetchError::io(root))?;
        rustix::fs::syncfs(&dir).map_err(|e| FetchError::io(root)(e.into()))?;
    }
    #[cfg(not(target_os = "linux"))]
    sync_files(root)?;
    store::sync_tree(root).map_err(FetchError::io(root))
}

#[cfg(not(target_os = "linux"))]
fn sync_files(dir: &Path) -> Result<(), FetchError> {
    for entry in std::fs::read_dir(dir).map_err(FetchError::io(dir))? {
        let path = entry.map_err(FetchError::io(dir))?.path();
        if path.is_dir() {
            sync_files(&path)?;
        } else {
            let f = std::fs::File::open(&path).map_err(FetchError::io(&path))?;
            store::sync_data(&f).map_err(FetchError::io(&path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Quiet;
    use std::io::Write;

    fn zip_of(path: &Path, entries: &[(&str, &[u8])]) {
        let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in entries {
            if name.ends_with('/') {
                w.add_directory(*name, opts).unwrap();
            } else {
                w.start_file(*name, opts).unwrap();
                w.write_all(bytes).unwrap();
            }
        }
        w.finish().unwrap();
    }

    #[test]
    fn a_zip_with_one_top_folder_unpacks_to_its_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let zip = tmp.path().join("d.zip");
        zip_of(
            &zip,
            &[
                ("d/", b""),
                ("d/index.csv", b"x"),
                ("d/images/a.jpg", b"jpg"),
            ],
        );
        let dest = tmp.path().join("out");
        let mut seen = None;
        unpack_zip(
            &zip,
            &dest,
            &mut |root| {
                seen = Some(root.join("index.csv").is_file());
                Ok(())
            },
            &mut Quiet,
        )
        .unwrap();
        assert_eq!(seen, Some(true));
        assert_eq!(std::fs::read(dest.join("images/a.jpg")).unwrap(), b"jpg");
        assert!(!tmp.path().join(".out.unpacking").exists());
    }

    #[test]
    fn a_refused_check_or_an_escaping_entry_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let zip = tmp.path().join("d.zip");
        zip_of(&zip, &[("index.csv", b"x"), ("b.csv", b"y")]);
        let dest = tmp.path().join("out");
        let e =
            unpack_zip(&zip, &dest, &mut |_| Err("no label.csv".into()), &mut Quiet).unwrap_err();
        assert!(e.is_input());
        assert!(
            e.to_string()
                .contains("no label.csv: nothing was installed"),
            "{e}"
        );
        assert!(!dest.exists());
        assert!(!tmp.path().join(".out.unpacking").exists());

        zip_of(&zip, &[("../evil.csv", b"x")]);
        let e = unpack_zip(&zip, &dest, &mut |_| Ok(()), &mut Quiet).unwrap_err();
        assert!(e.to_string().contains("outside its folder"), "{e}");
        assert!(!tmp.path().join("evil.csv").exists() && !dest.exists());

        std::fs::write(&zip, b"not a zip").unwrap();
        let e = unpack_zip(&zip, &dest, &mut |_| Ok(()), &mut Quiet).unwrap_err();
        assert!(e.to_string().contains("not a readable zip"), "{e}");

        std::fs::create_dir(&dest).unwrap();
        let e = unpack_zip(&zip, &dest, &mut |_| Ok(()), &mut Quiet).unwrap_err();
        assert!(e.to_string().contains("already exists"), "{e}");
    }
}
