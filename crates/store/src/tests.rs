//! The commit primitives, on a real folder.

use super::*;

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_write_replaces_the_file_whole_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.json");
    std::fs::write(&path, b"old").unwrap();
    write_atomic(&path, b"new").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    assert_eq!(names(dir.path()), ["a.json"]);
    let missing = dir.path().join("no/such/b.json");
    assert!(write_atomic(&missing, b"x").is_err());
    assert_eq!(names(dir.path()), ["a.json"]);
}

#[test]
fn a_file_created_whole_is_complete_or_absent_and_never_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let lock = dir.path().join(".out.lock");
    create_whole(&lock, b"netdissect host 12\n").unwrap();
    assert_eq!(std::fs::read(&lock).unwrap(), b"netdissect host 12\n");
    // The temporary file is gone: only the lock is there.
    assert_eq!(names(dir.path()), [".out.lock"]);
    let again = create_whole(&lock, b"netdissect other 13\n").unwrap_err();
    assert_eq!(again.kind(), std::io::ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&lock).unwrap(), b"netdissect host 12\n");
    assert_eq!(names(dir.path()), [".out.lock"]);
}

#[test]
fn renames_and_removals_move_files_and_folders() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    std::fs::create_dir(&a).unwrap();
    std::fs::write(a.join("f"), b"1").unwrap();
    let b = dir.path().join("sub/b");
    create_dir_all(b.parent().unwrap()).unwrap();
    rename(&a, &b).unwrap();
    assert_eq!(std::fs::read(b.join("f")).unwrap(), b"1");
    assert!(!a.exists());
    link_back(&b.join("f"), &dir.path().join("g")).unwrap();
    assert!(link_back(&b.join("f"), &dir.path().join("g")).is_err());
    remove(&b).unwrap();
    remove(&b).unwrap();
    assert_eq!(names(dir.path()), ["g", "sub"]);
}

#[test]
fn names_beside_a_path() {
    assert_eq!(parent_of(Path::new("out")), Path::new("."));
    assert_eq!(parent_of(Path::new("a/out")), Path::new("a"));
    assert_eq!(name_of(Path::new("a/out")), "out");
    assert_eq!(with_suffix(Path::new("a/b"), ".old"), Path::new("a/b.old"));
    assert!(temp_file_name("x").starts_with(".x."));
}

#[test]
fn staged_files_land_whole_and_the_tree_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("images/a");
    std::fs::create_dir_all(&deep).unwrap();
    write_staged(&deep.join("x.png"), b"png").unwrap();
    assert_eq!(std::fs::read(deep.join("x.png")).unwrap(), b"png");
    assert_eq!(names(&deep), ["x.png"]);
    sync_tree(dir.path()).unwrap();
    assert!(sync_tree(&dir.path().join("missing")).is_err());
}
