//! `netdissect fetch` and `--weights NAME` against a file server on the
//! loopback address started by each test (`crates/fetch/tests/server`),
//! with registries the tests write: a dataset fetched, checked and
//! installed, then found again; a zip missing a category file refused with
//! nothing installed; a full disk while unpacking (a small tmpfs in a
//! mount namespace of the test's own) leaving nothing but the download; a
//! zip at hand (`--from`); a checkpoint by name into $TORCH_HOME, then
//! used from there; the listing of `netdissect models`.

mod common;
#[path = "../../fetch/tests/server/mod.rs"]
mod server;

use common::*;

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use server::{Fault, Server};

/// `dir` zipped with its files under `top/`, leaving out `skip`.
fn zip_folder(dir: &Path, top: &str, skip: &[&str]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (rel, bytes) in files(dir) {
        let rel = rel.to_string_lossy().replace('\\', "/");
        if skip.contains(&rel.as_str()) {
            continue;
        }
        w.start_file(format!("{top}/{rel}"), opts).unwrap();
        w.write_all(&bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// A registry of one item, written to `dir/registry.json`.
fn registry(dir: &Path, name: &str, item: serde_json::Value) -> PathBuf {
    let path = dir.join("registry.json");
    let text = serde_json::json!({ "items": { name: item } });
    std::fs::write(&path, text.to_string()).unwrap();
    path
}

/// `netdissect` with `args`, no proxy, and `TORCH_HOME` set.
fn run(args: &[&str], torch_home: &Path) -> Output {
    binary()
        .args(args)
        .env("TORCH_HOME", torch_home)
        .env_remove("NETDISSECT_MIRROR")
        .env_remove("NETDISSECT_REGISTRY")
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .output()
        .expect("the netdissect binary runs")
}

/// `netdissect fetch mini` of the registry `reg` into `to`, quietly.
fn fetch_mini(reg: &Path, to: &Path, torch_home: &Path) -> Output {
    run(
        &[
            "fetch",
            "mini",
            "--registry",
            s(reg),
            "--to",
            s(to),
            "--quiet",
        ],
        torch_home,
    )
}

/// A small generated dataset, zipped as Broden's zips are (one top
/// folder), served as `mini.zip`.
fn served_dataset(tmp: &Path, skip: &[&str], fault: Fault) -> (Server, usize) {
    let data = dataset(&tmp.join("src"), 6);
    let zip = zip_folder(&data, "mini", skip);
    let len = zip.len();
    (
        Server::start(HashMap::from([("mini.zip".into(), zip)]), fault),
        len,
    )
}

fn broden_item(server: &Server) -> serde_json::Value {
    serde_json::json!({
        "file": "mini.zip",
        "mirrors": [server.url()],
        "unpack": "zip",
        "kind": "broden"
    })
}

#[test]
fn a_dataset_is_fetched_checked_installed_and_found_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, _) = served_dataset(tmp.path(), &[], Fault::CutFirstAt(5_000));
    let reg = registry(tmp.path(), "mini", broden_item(&server));
    let to = tmp.path().join("data");
    let args = [
        "fetch",
        "mini",
        "--registry",
        s(&reg),
        "--to",
        s(&to),
        "--quiet",
    ];
    let o = run(&args, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let installed = to.join("mini");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), s(&installed));
    // The cut transfer was resumed, not started over.
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[1].range.as_deref(), Some("bytes=5000-"));
    assert!(stderr(&o).contains("broke after 5000"), "{}", stderr(&o));
    // The dataset is whole, the zip gone, the digest recorded beside it.
    assert!(netdissect(&["info", s(&installed)]).status.success());
    assert!(!to.join("mini.zip").exists() && !to.join("mini.zip.part").exists());
    let record = std::fs::read_to_string(to.join("mini.sha256")).unwrap();
    assert!(
        record.ends_with("  mini.zip\n") && record.len() == 64 + 2 + 9,
        "{record}"
    );
    assert!(
        stderr(&o).contains("the registry records none"),
        "{}",
        stderr(&o)
    );

    let again = run(&args, tmp.path());
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("is already there"),
        "{}",
        stderr(&again)
    );
    assert_eq!(server.requests().len(), 2, "nothing fetched again");

    // A folder of that name that no fetch made is left alone.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(other.join("mini")).unwrap();
    let o = fetch_mini(&reg, &other, tmp.path());
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
}

#[test]
fn a_wrong_digest_is_refused_and_nothing_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, _) = served_dataset(tmp.path(), &[], Fault::None);
    let mut item = broden_item(&server);
    item["sha256"] = serde_json::json!("ab".repeat(32));
    let reg = registry(tmp.path(), "mini", item);
    let to = tmp.path().join("data");
    let o = fetch_mini(&reg, &to, tmp.path());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains(&format!("where the registry records {}", "ab".repeat(32))),
        "{e}"
    );
    assert!(e.contains("removed"), "{e}");
    assert_eq!(names_with(&to, ""), Vec::<String>::new());
}

#[test]
fn a_zip_missing_a_category_file_is_refused_and_nothing_installed() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, _) = served_dataset(tmp.path(), &["c_part.csv"], Fault::None);
    let reg = registry(tmp.path(), "mini", broden_item(&server));
    let to = tmp.path().join("data");
    let o = fetch_mini(&reg, &to, tmp.path());
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("c_part.csv") && e.contains("nothing was installed"),
        "{e}"
    );
    assert_eq!(
        names_with(&to, ""),
        Vec::<String>::new(),
        "no dataset, staging or zip"
    );
}

#[test]
fn a_zip_at_hand_is_checked_and_installed_without_a_download() {
    let tmp = tempfile::tempdir().unwrap();
    let data = dataset(&tmp.path().join("src"), 4);
    let zip = tmp.path().join("mine.zip");
    std::fs::write(&zip, zip_folder(&data, "mini", &[])).unwrap();
    // A mirror nobody serves: nothing may be downloaded.
    let item = serde_json::json!({
        "file": "mini.zip", "mirrors": ["http://127.0.0.1:9/"], "unpack": "zip", "kind": "broden"
    });
    let reg = registry(tmp.path(), "mini", item);
    let to = tmp.path().join("data");
    let args = [
        "fetch",
        "mini",
        "--registry",
        s(&reg),
        "--to",
        s(&to),
        "--from",
        s(&zip),
        "--quiet",
    ];
    let o = run(&args, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(to.join("mini/index.csv").is_file());
    assert!(zip.is_file(), "the user's zip stays");
    let missing = run(
        &[
            "fetch",
            "mini",
            "--registry",
            s(&reg),
            "--from",
            "/nonexistent.zip",
        ],
        tmp.path(),
    );
    assert_eq!(missing.status.code(), Some(3));
    assert!(stderr(&missing).contains("/nonexistent.zip: no such file"));
}

/// A full disk while unpacking: the destination on a tmpfs a little larger
/// than the zip, mounted in a mount namespace of this test's own
/// (`unshare`, util-linux). The run fails naming the cause, leaves no
/// dataset and no staging folder, and keeps the download.
#[test]
fn a_full_disk_while_unpacking_leaves_nothing_but_the_download() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, zip_len) = served_dataset(tmp.path(), &[], Fault::None);
    let reg = registry(tmp.path(), "mini", broden_item(&server));
    let mount = tmp.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let size = zip_len + zip_len / 2;
    let script = r#"mount -t tmpfs -o size="$2" tmpfs "$1" || exit 90
"$3" fetch mini --registry "$4" --to "$1/d" --quiet
echo "exit=$?"
ls -A "$1/d""#;
    // As root, a mount namespace alone; otherwise a user namespace too.
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let flags = if root { "-m" } else { "-rm" };
    let o = Command::new("unshare")
        .args([
            flags,
            "sh",
            "-c",
            script,
            "sh",
            s(&mount),
            &size.to_string(),
        ])
        .arg(env!("CARGO_BIN_EXE_netdissect"))
        .arg(&reg)
        .env("TORCH_HOME", tmp.path())
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .output()
        .expect("unshare (util-linux) runs");
    let (out, err) = (String::from_utf8_lossy(&o.stdout), stderr(&o));
    assert!(
        o.status.code() != Some(90) && !err.contains("unshare failed"),
        "this test needs a mount namespace with a tmpfs (unshare {flags}): {err}"
    );
    assert!(out.contains("exit=1"), "{out}\n{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(err.contains("the download is kept"), "{err}");
    let left: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("exit="))
        .skip(1)
        .collect();
    assert_eq!(left, ["mini.zip"], "{out}");
}

#[test]
fn published_weights_by_name_are_fetched_into_torch_home_then_used_from_there() {
    let tmp = tempfile::tempdir().unwrap();
    let model = std::fs::read(default_model()).unwrap();
    let server = Server::start(
        HashMap::from([
            ("tiny.safetensors".to_string(), model),
            ("bad.safetensors".to_string(), b"not a checkpoint".to_vec()),
        ]),
        Fault::None,
    );
    let reg = tmp.path().join("registry.json");
    let item = |file: &str, mirror: &str| serde_json::json!({"file": file, "mirrors": [mirror], "kind": "weights", "arch": "tiny-resnet"});
    let write_registry = |mirror: &str| {
        let text = serde_json::json!({"items": {
            "tiny": item("tiny.safetensors", mirror),
            "bad": item("bad.safetensors", mirror),
        }});
        std::fs::write(&reg, text.to_string()).unwrap();
    };
    write_registry(&server.url());
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/default/probe");
    let dissect = |weights: &str, model: &str, out: &Path| {
        run(
            &[
                "dissect",
                "--model",
                model,
                "--weights",
                weights,
                "--registry",
                s(&reg),
                "--layers",
                "layer4",
                "--dataset",
                s(&probe),
                "--max-images",
                "16",
                "--backend",
                "cpu",
                "--out",
                s(out),
                "--quiet",
            ],
            &tmp.path().join("torch"),
        )
    };
    let o = dissect("tiny", "tiny-resnet", &tmp.path().join("a"));
    assert!(o.status.success(), "{}", stderr(&o));
    let cached = tmp.path().join("torch/hub/checkpoints/tiny.safetensors");
    assert_eq!(
        std::fs::read(&cached).unwrap(),
        std::fs::read(default_model()).unwrap()
    );
    assert!(
        tmp.path()
            .join("torch/hub/checkpoints/tiny.safetensors.sha256")
            .is_file()
    );
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("a/results.json")).unwrap()).unwrap();
    assert!(
        results["weights"]
            .as_str()
            .unwrap()
            .ends_with("tiny.safetensors"),
        "{results}"
    );

    // Used from $TORCH_HOME: the mirror may be gone.
    write_registry("http://127.0.0.1:9/");
    let o = dissect("tiny", "tiny-resnet", &tmp.path().join("b"));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(server.requests().len(), 1);

    // A changed cached file is refused against its recorded digest.
    std::fs::write(&cached, b"changed").unwrap();
    let o = dissect("tiny", "tiny-resnet", &tmp.path().join("c"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("remove it to fetch it again"),
        "{}",
        stderr(&o)
    );

    // Another architecture than the checkpoint's is a usage error.
    let o = dissect("tiny", "resnet18", &tmp.path().join("d"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("is a tiny-resnet checkpoint"),
        "{}",
        stderr(&o)
    );

    // A download that is no checkpoint of its architecture is removed
    // before it takes its name, and no mirror delivered the file (exit 1).
    write_registry(&server.url());
    let o = dissect("bad", "tiny-resnet", &tmp.path().join("e"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not load as tiny-resnet"),
        "{}",
        stderr(&o)
    );
    assert!(
        !tmp.path()
            .join("torch/hub/checkpoints/bad.safetensors")
            .exists()
    );

    // A dataset's name is no checkpoint.
    let o = dissect("broden1_224", "tiny-resnet", &tmp.path().join("g"));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("is a dataset"), "{}", stderr(&o));

    // A name the registry does not hold is no file either.
    let o = dissect("nonesuch", "tiny-resnet", &tmp.path().join("f"));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("nonesuch: weights file not found"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn models_lists_the_published_checkpoints_and_datasets() {
    let tmp = tempfile::tempdir().unwrap();
    let reg = registry(
        tmp.path(),
        "lab_copy",
        serde_json::json!({"file": "x.pth", "mirrors": ["http://h/"], "kind": "weights", "arch": "resnet18"}),
    );
    let o = run(&["models", "--registry", s(&reg)], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for name in [
        "resnet18_places365",
        "resnet50_imagenet",
        "broden1_224",
        "broden1_384",
        "lab_copy",
    ] {
        assert!(out.contains(name), "{name} in\n{out}");
    }
    assert!(out.contains("SHA-256 prefix in its name"), "{out}");
    let bad = run(&["models", "--registry", "/nonexistent.json"], tmp.path());
    assert_eq!(bad.status.code(), Some(3));
    assert!(
        stderr(&bad).contains("registry /nonexistent.json"),
        "{}",
        stderr(&bad)
    );
}

/// `--mirror` and `NETDISSECT_MIRROR` come before the registry's mirrors
/// (here a port nobody serves); with the digest in the registry, the
/// dataset is found installed on the second run; a mirror that is no URL
/// is refused.
#[test]
fn mirrors_given_come_first_and_a_recorded_digest_marks_the_install() {
    let tmp = tempfile::tempdir().unwrap();
    let (server, _) = served_dataset(tmp.path(), &[], Fault::None);
    let mut item = serde_json::json!({
        "file": "mini.zip", "mirrors": ["http://127.0.0.1:9/"], "unpack": "zip", "kind": "broden"
    });
    let reg = registry(tmp.path(), "mini", item.clone());
    let to = tmp.path().join("a");
    let url = server.url();
    let args = [
        "fetch",
        "mini",
        "--registry",
        s(&reg),
        "--to",
        s(&to),
        "--mirror",
        &url,
        "--quiet",
    ];
    let o = run(&args, tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let digest = std::fs::read_to_string(to.join("mini.sha256")).unwrap()[..64].to_string();

    item["sha256"] = serde_json::json!(digest);
    let reg = registry(tmp.path(), "mini", item);
    let to = tmp.path().join("b");
    let args = [
        "fetch",
        "mini",
        "--registry",
        s(&reg),
        "--to",
        s(&to),
        "--quiet",
    ];
    let o = binary()
        .args(args)
        .env("NETDISSECT_MIRROR", &url)
        .env("NO_PROXY", "127.0.0.1")
        .env("no_proxy", "127.0.0.1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let again = run(&args, tmp.path());
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("is already there"),
        "{}",
        stderr(&again)
    );
    assert_eq!(server.requests().len(), 2, "one download per folder");

    let mut bad = args.to_vec();
    bad.extend(["--mirror", "host/data"]);
    let bad = run(&bad, tmp.path());
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(
        stderr(&bad).contains("--mirror: mirror `host/data` is not an http"),
        "{}",
        stderr(&bad)
    );
}
