//! The Kubernetes manifests of deploy/k8s, checked without a cluster:
//! every file and what `run.sh` would apply (its `DRY_RUN=1` output, the
//! image substituted) against the API's schemas of Kubernetes 1.29, the
//! oldest the Indexed Jobs' `backoffLimitPerIndex` allows, strictly (an
//! unknown field is an error). The validator is PyPI's
//! `kubernetes-validate`, which `cargo xtask test` installs into
//! target/kubernetes-validate (`kubectl --dry-run=client` cannot: it asks
//! an API server for the schemas). Also: a retried shard pod, run as a pod
//! runs, takes over what its killed attempt left.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Kubernetes version the manifests are checked against.
const KUBERNETES: &str = "1.29.0";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn k8s_dir() -> PathBuf {
    root().join("deploy/k8s")
}

/// `kubernetes-validate`: `$KUBERNETES_VALIDATE`, else the one `cargo
/// xtask test` installs, else one on the PATH. Missing, the test fails.
fn validator() -> PathBuf {
    let runs = |tool: &Path| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let candidates = (std::env::var_os("KUBERNETES_VALIDATE").map(PathBuf::from))
        .into_iter()
        .chain([
            root().join("target/kubernetes-validate/bin/kubernetes-validate"),
            PathBuf::from("kubernetes-validate"),
        ]);
    for tool in candidates {
        if runs(&tool) {
            return tool;
        }
    }
    panic!(
        "kubernetes-validate (PyPI) is missing: `cargo xtask test` installs it into \
         target/kubernetes-validate, or set KUBERNETES_VALIDATE to one"
    );
}

/// Validates `files`; `Ok` with the resources that passed (`kind/name`),
/// or `Err` with what the validator said. A resource without a schema (an
/// unknown kind or version), which the validator only warns about, fails.
fn validate(files: &[PathBuf]) -> Result<Vec<String>, String> {
    let o = Command::new(validator())
        .args(["--kubernetes-version", KUBERNETES, "--strict"])
        .args(files)
        .output()
        .expect("kubernetes-validate runs");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // "INFO <file> passed for resource <kind>/<name> against version …"
    let passed: Option<Vec<String>> = (said.lines())
        .map(|l| {
            let (head, rest) = l.split_once(" passed for resource ")?;
            head.starts_with("INFO ")
                .then(|| rest.split_whitespace().next().map(String::from))?
        })
        .collect();
    match passed {
        Some(passed) if o.status.success() && !passed.is_empty() => Ok(passed),
        _ => Err(said),
    }
}

/// The YAML files of deploy/k8s, sorted.
fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = (std::fs::read_dir(k8s_dir()).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// `run.sh` of `dir` with `DRY_RUN=1` and `IMAGE`.
fn dry_run(dir: &Path, image: &str) -> Output {
    Command::new("bash")
        .arg(dir.join("run.sh"))
        .env("DRY_RUN", "1")
        .env("IMAGE", image)
        .env_remove("NAMESPACE")
        .output()
        .expect("bash runs")
}

#[test]
fn every_manifest_and_what_run_sh_applies_pass_the_schemas() {
    let files = manifests();
    assert_eq!(files.len(), 7, "{files:?}");
    let mut each = Vec::new();
    for file in &files {
        let passed = validate(std::slice::from_ref(file))
            .unwrap_or_else(|said| panic!("{} is refused:\n{said}", file.display()));
        each.extend(passed);
    }
    each.sort();

    let image = "registry.example.com/netdissect:9.9.9";
    let o = dry_run(&k8s_dir(), image);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8(o.stdout).unwrap();
    assert_eq!(
        text.matches(&format!("image: {image}")).count(),
        5,
        "{text}"
    );
    assert!(!text.contains("image: netdissect:"), "{text}");
    let tmp = tempfile::tempdir().unwrap();
    let applied = tmp.path().join("applied.yaml");
    std::fs::write(&applied, &text).unwrap();
    let mut passed = validate(std::slice::from_ref(&applied))
        .unwrap_or_else(|said| panic!("run.sh's manifests are refused:\n{said}\n{text}"));
    passed.sort();
    // run.sh applies every manifest of the folder, each once.
    assert_eq!(passed, each);
}

#[test]
fn a_wrong_field_a_wrong_type_or_an_unknown_kind_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let job = std::fs::read_to_string(k8s_dir().join("2-thresholds.yaml")).unwrap();
    // (from, to, what the refusal says: any of these, since the validator
    // reports one of a manifest's errors, not always the same one)
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "completions: 8",
            "completionz: 8",
            &["'completionz' was unexpected"],
        ),
        (
            "completions: 8",
            "completions: \"eight\"",
            &["'eight' is not of type 'integer'"],
        ),
        (
            "mountPath: /work\n",
            "mountPth: /work\n",
            &[
                "'mountPth' was unexpected",
                "'mountPath' is a required property",
            ],
        ),
        ("kind: Job", "kind: Jobb", &["Jobb"]),
    ];
    for (from, to, expected) in cases {
        assert_eq!(job.matches(from).count(), 1, "{from}");
        let broken = tmp.path().join("broken.yaml");
        std::fs::write(&broken, job.replace(from, to)).unwrap();
        let said = validate(&[broken]).expect_err(to);
        assert!(expected.iter().any(|e| said.contains(e)), "{to}: {said}");
    }
}

#[test]
fn run_sh_refuses_a_shard_count_that_the_jobs_do_not_have() {
    let tmp = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(k8s_dir()).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, tmp.path().join(path.file_name().unwrap())).unwrap();
    }
    let config = tmp.path().join("config.yaml");
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(text.matches("SHARDS: \"8\"").count(), 1);
    std::fs::write(&config, text.replace("SHARDS: \"8\"", "SHARDS: \"4\"")).unwrap();
    let o = dry_run(tmp.path(), "netdissect:0.1.0");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "nothing printed to apply");
    assert!(stderr(&o).contains("SHARDS=4"), "{}", stderr(&o));
}

/// What `run.sh` says of an image reference it refuses.
const NOT_A_REFERENCE: &str = "is not a valid image reference";

#[test]
fn run_sh_refuses_an_image_reference_outside_the_grammar() {
    // `&` and `|` broke the sed substitution run.sh used to make; the others
    // are each outside one rule of the grammar.
    let sha = "0123456789abcdef".repeat(4);
    let bad = [
        "reg.io/nd:1&x".to_string(),
        "reg.io/a|b".to_string(),
        "reg.io/NetDissect:1".to_string(),
        "reg.io//nd".to_string(),
        "nd:".to_string(),
        "nd:.1".to_string(),
        format!("nd:{}", "x".repeat(129)),
        "nd@sha256:abc".to_string(),
        format!("nd@sha256:{}", sha.to_uppercase()),
        "nd:1 --privileged".to_string(),
        "nd\nimage: other".to_string(),
    ];
    for image in &bad {
        let o = dry_run(&k8s_dir(), image);
        assert_eq!(o.status.code(), Some(2), "{image:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty(), "{image:?}: nothing printed to apply");
        let said = stderr(&o);
        assert!(
            said.contains(&format!("IMAGE='{image}' {NOT_A_REFERENCE}")),
            "{image:?}: {said}"
        );
    }
}

#[test]
fn run_sh_puts_a_full_image_reference_in_verbatim() {
    let sha = "0123456789abcdef".repeat(4);
    let good = [
        format!("registry.example.com:5000/team/net_dissect__x/nd-b.c:v1.2-rc_3@sha256:{sha}"),
        format!("localhost:5000/nd@sha256:{sha}"),
        "10.0.0.1:443/a/b:latest".to_string(),
        "netdissect".to_string(),
        format!("nd:{}", "x".repeat(128)),
    ];
    for image in &good {
        let o = dry_run(&k8s_dir(), image);
        assert!(o.status.success(), "{image:?}: {}", stderr(&o));
        let text = String::from_utf8(o.stdout).unwrap();
        let lines: Vec<&str> = (text.lines())
            .filter(|l| l.trim_start().starts_with("image: "))
            .collect();
        assert_eq!(lines.len(), 5, "{text}");
        for line in lines {
            assert_eq!(line.trim_start(), format!("image: {image}"), "{text}");
        }
    }
}

/// The test hook of `report::swap`: the process exits with code 86 once
/// this many steps of the swap are done, leaving what a kill would.
const STOP_VAR: &str = "NETDISSECT_TEST_STOP_IN_COMMIT";

/// Runs `netdissect args` as in a pod of an Indexed Job: process 1 of a
/// PID namespace of its own (the manifests `exec` it from `sh -c`), on the
/// host name `$(job-name)-$(index)`, which Kubernetes gives every attempt
/// of that index alike.
fn in_pod(hostname: &str, args: &[String], stop_after: Option<u32>) -> Output {
    let mut command = Command::new("unshare");
    command
        .args(["--uts", "--pid", "--fork", "--mount-proc", "sh", "-c"])
        .arg(r#"hostname "$0" && exec "$@""#)
        .arg(hostname)
        .arg(env!("CARGO_BIN_EXE_netdissect"))
        .args(args)
        .env_remove(STOP_VAR);
    if let Some(steps) = stop_after {
        command.env(STOP_VAR, steps.to_string());
    }
    command.output().expect("unshare runs")
}

#[test]
fn a_retried_shard_pod_takes_over_what_its_killed_attempt_left() {
    let probe = Command::new("unshare")
        .args(["--uts", "--pid", "--fork", "--mount-proc", "true"])
        .output();
    let probe = probe.expect("util-linux's unshare runs");
    assert!(
        probe.status.success(),
        "this test runs netdissect as a pod would, with util-linux's unshare \
         (namespaces: root, as CI is): {}",
        stderr(&probe)
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = synth(tmp.path(), 3, 5, 112, 0);
    let parent = tmp.path().join("thresholds");
    std::fs::create_dir(&parent).unwrap();
    let out = parent.join("3");
    let mut args = planted_dissect(&data, &out);
    args.extend(["--backend", "cpu", "--force"].map(String::from));

    // The first attempt dies with its results staged, before the swap.
    let o = in_pod("netdissect-thresholds-3", &args, Some(0));
    assert_eq!(o.status.code(), Some(86), "{}", stderr(&o));
    let left = names_with(&parent, ".");
    assert!(
        left.contains(&".3.lock".to_string()) && left.iter().any(|n| n.contains(".staging-")),
        "{left:?}"
    );

    // Its retry: the same host name, and process 1 again.
    let o = in_pod("netdissect-thresholds-3", &args, None);
    assert!(
        o.status.success(),
        "the retry of a killed shard pod is refused: {}",
        stderr(&o)
    );
    assert!(out.join("results.json").is_file());
    let left = names_with(&parent, ".");
    assert!(left.is_empty(), "the killed attempt's leftovers: {left:?}");
}
