//! The Slurm scripts of `deploy/slurm` on a real one-node Slurm cluster,
//! started by `deploy/slurm/cluster.sh` from Debian's slurm-wlm and munge
//! (as root; `cargo xtask test` installs them). The chain `submit.sh`
//! submits gives the single run's results folder byte for byte (but for
//! durations), also when array tasks are killed mid-run, by Slurm and by
//! a signal to the worker, and run again; the retries leave nothing of the
//! killed attempts behind. A task that fails every time stops the chain,
//! and a message names its shard and its log. One test, so that one
//! cluster runs at a time; the other one needs no cluster.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// 1498 images in batches of 4: 375 batches, the last of 2, 125 a shard,
/// so that a shard runs a second or two, long enough to be killed mid-run.
/// The whole test takes about 45 s on two cores.
const IMAGES: usize = 1498;
const SHARDS: u32 = 3;
const FLAGS: &str = "--model planted-colors --layers color4,color16 --batch-size 4";
/// How long a chain may take before the test gives up, loudly.
const CHAIN_LIMIT: Duration = Duration::from_secs(300);

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/slurm")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn ok(o: Output) -> Output {
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    o
}

/// Panics, saying what to install, unless this machine can run the
/// cluster: the test never passes by skipping.
fn require_slurm() {
    let runs = |p: &str| {
        Command::new(p)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let missing: Vec<&str> = ["slurmctld", "slurmd", "munged"]
        .into_iter()
        .filter(|p| !runs(p))
        .collect();
    assert!(
        missing.is_empty(),
        "this test runs a real Slurm cluster: {missing:?} not found; install Debian's \
         slurm-wlm and munge (`apt-get install -y slurm-wlm munge`, as root; `cargo xtask \
         test` does)"
    );
    let uid = Command::new("id").arg("-u").output().expect("id runs");
    assert_eq!(
        stdout(&uid).trim(),
        "0",
        "this test runs a real Slurm cluster and must run as root: slurmd starts jobs as \
         their users"
    );
}

/// Two free TCP ports in a row on this machine, for slurmctld and slurmd.
fn free_ports() -> u16 {
    use std::net::TcpListener;
    for _ in 0..100 {
        let first = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = first.local_addr().unwrap().port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
    panic!("no two free ports in a row");
}

/// The cluster that `cluster.sh` started in `dir`; dropping it stops it,
/// also when a test panics.
#[derive(Debug)]
struct Cluster {
    dir: PathBuf,
    port: u16,
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        require_slurm();
        let cluster = Cluster {
            dir: dir.to_path_buf(),
            port: free_ports(),
        };
        let o = cluster.script("start");
        assert!(
            o.status.success(),
            "cluster.sh start: {}{}",
            stdout(&o),
            stderr(&o)
        );
        cluster
    }

    fn script(&self, what: &str) -> Output {
        self.command("bash")
            .arg(deploy().join("cluster.sh"))
            .arg(what)
            .env("SLURM_TEST_DIR", &self.dir)
            .env("SLURM_TEST_PORT", self.port.to_string())
            .output()
            .expect("bash runs")
    }

    /// `program` talking to this cluster: Slurm's settings of the
    /// environment (as inside a job of another cluster) are dropped.
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        for (key, _) in std::env::vars() {
            if key.starts_with("SLURM_") || key.starts_with("SBATCH_") {
                c.env_remove(key);
            }
        }
        c.env("SLURM_CONF", self.dir.join("slurm.conf"));
        c
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let o = self.command(program).args(args).output().expect("runs");
        ok(o)
    }

    /// What there is to read when a chain went wrong: the queue, each log
    /// of `work`, the end of the daemons' logs.
    fn diagnosis(&self, work: &Path) -> String {
        let o = self.command("squeue").args(["-o", "%i %j %T %r"]).output();
        let mut text = o.map(|o| stdout(&o) + &stderr(&o)).unwrap_or_default();
        let mut logs = vec![];
        for dir in [work.join("logs"), self.dir.join("log")] {
            for e in std::fs::read_dir(&dir).into_iter().flatten() {
                logs.push(e.unwrap().path());
            }
        }
        for log in logs {
            let body = std::fs::read_to_string(&log).unwrap_or_default();
            let cut = body.len().saturating_sub(3000);
            let cut = (cut..).find(|&i| body.is_char_boundary(i)).unwrap();
            let tail = &body[cut..];
            text += &format!("\n== {}\n{tail}", log.display());
        }
        text
    }

    /// Waits until the queue is empty: every chain ended or was cancelled.
    fn wait_for_empty_queue(&self, works: &[&Path]) {
        let start = Instant::now();
        loop {
            // A failed squeue (the controller busy) counts as jobs left.
            let o = self.command("squeue").args(["-h", "-o", "%i"]).output();
            if o.is_ok_and(|o| o.status.success() && stdout(&o).trim().is_empty()) {
                eprintln!("chains ended after {:?}", start.elapsed());
                return;
            }
            if start.elapsed() > CHAIN_LIMIT {
                let text: Vec<String> = works.iter().map(|w| self.diagnosis(w)).collect();
                panic!(
                    "the chains did not end in {CHAIN_LIMIT:?}:\n{}",
                    text.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The job `id`'s `scontrol show job` line (a task: `<array>_<i>`).
    fn job(&self, id: &str) -> String {
        stdout(&self.run("scontrol", &["show", "job", "-o", id]))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let o = self.script("stop");
        if !o.status.success() {
            eprintln!("cluster.sh stop: {}{}", stdout(&o), stderr(&o));
        }
    }
}

/// The job ids `submit.sh` printed, by role.
#[derive(Debug)]
struct Chain {
    thresholds: String,
    counts: String,
}

/// The number after `label ` in `out`.
fn id_after(out: &str, label: &str) -> String {
    let at = out
        .find(&format!("{label} "))
        .unwrap_or_else(|| panic!("`{label}` in {out}"));
    let rest = &out[at + label.len() + 1..];
    rest.chars().take_while(char::is_ascii_digit).collect()
}

/// Submits the chain of `deploy/slurm/submit.sh` for `dissect_args`.
fn submit(cluster: &Cluster, work: &Path, dissect_args: &str) -> Chain {
    let o = cluster
        .command("bash")
        .arg(deploy().join("submit.sh"))
        .env("WORK", work)
        .env("SHARDS", SHARDS.to_string())
        .env("NETDISSECT", env!("CARGO_BIN_EXE_netdissect"))
        .env("DEVICE_ARGS", "--backend cpu")
        .env("DISSECT_ARGS", dissect_args)
        // The test node has two CPUs and maybe little memory: the scripts'
        // 8 CPUs and 32 GB a job would never be scheduled. Their one GPU
        // is one of the cluster's two GPUs in name only.
        .env("SBATCH_ARGS", "--cpus-per-task=1 --mem=500M")
        .output()
        .expect("bash runs");
    let out = stdout(&ok(o));
    assert!(out.contains(&format!("submitted {SHARDS} shards")), "{out}");
    Chain {
        thresholds: id_after(&out, "thresholds"),
        counts: id_after(&out, "counts"),
    }
}

/// Waits until shard `i` in `dir` (`$WORK/thresholds` or `$WORK/counts`)
/// is being written: its staging folder exists.
fn wait_for_staging(dir: &Path, i: u32) {
    let prefix = format!(".{i}.staging-");
    let start = Instant::now();
    while !dir.exists() || names_with(dir, &prefix).is_empty() {
        assert!(
            start.elapsed() < CHAIN_LIMIT,
            "shard {i} never started in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The names under `dir`, at any depth, of what a killed attempt can leave:
/// staging folders, lock files, temporary files (all hidden or `.tmp`).
fn leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') || name.ends_with(".tmp") {
            found.push(path.clone());
        }
        if path.is_dir() {
            found.extend(leftovers(&path));
        }
    }
    found
}

#[test]
fn the_chain_on_a_real_slurm_cluster_gives_the_single_run_through_kills_and_failures() {
    let tmp = tempfile::tempdir().unwrap();
    let data = synth(tmp.path(), IMAGES, 11, 112, 10);
    let flags = format!("{FLAGS} --dataset {}", s(&data));
    let single = tmp.path().join("single");
    let mut a: Vec<&str> = vec!["dissect"];
    a.extend(flags.split(' '));
    let tail = ["--backend", "cpu", "--cache-mib", "0", "--quiet", "--out"];
    a.extend(tail);
    a.push(s(&single));
    ok(netdissect(&a));

    let cluster = Cluster::start(&tmp.path().join("slurm"));
    let work = tmp.path().join("work");
    let chain = submit(&cluster, &work, &flags);
    // Shard 1 of a failing chain finds its folder claimed every time (a
    // lock file that is no lock of netdissect's): that chain stops there.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(broken.join("thresholds")).unwrap();
    std::fs::write(
        broken.join("thresholds/.1.lock"),
        "the test's, never taken over\n",
    )
    .unwrap();
    submit(&cluster, &broken, &flags);
    kill_two_tasks(&cluster, &work, &chain);
    cluster.wait_for_empty_queue(&[work.as_path(), broken.as_path()]);
    check_retried(&cluster, &work, &chain);

    let reporter = work_log(&work, "netdissect-failed-");
    assert!(reporter.contains("the chain succeeded"), "{reporter}");
    assert!(!work.join("FAILED").exists());
    assert_same_folders(&single, &work.join("results"));
    for phase in ["thresholds", "counts"] {
        let left = leftovers(&work.join(phase));
        assert!(left.is_empty(), "killed attempts left {left:?}");
    }
    let warm_up = work_log(&work, "netdissect-warm-up-");
    assert!(warm_up.contains("batches of 4 and 2 images"), "{warm_up}");

    check_failed_chain(&cluster, &broken);
}

/// Kills thresholds task 1 by Slurm (`scontrol requeue`: what a node
/// failure or a preemption does) and counts task 2 by `kill -9` of its
/// netdissect, each once its shard is being written.
fn kill_two_tasks(cluster: &Cluster, work: &Path, chain: &Chain) {
    wait_for_staging(&work.join("thresholds"), 1);
    let task = format!("{}_1", chain.thresholds);
    cluster.run("scontrol", &["requeue", task.as_str()]);
    wait_for_staging(&work.join("counts"), 2);
    let pids = processes_with(&format!("--out {} ", s(&work.join("counts/2"))));
    assert_eq!(pids.len(), 1, "one netdissect for counts task 2: {pids:?}");
    let kill = ["-c", "kill -9 \"$1\"", "kill", pids[0].as_str()];
    ok(Command::new("bash").args(kill).output().unwrap());
}

/// The ids of the processes whose command line contains `words`, from
/// /proc (procps, with pgrep and kill, may not be installed).
fn processes_with(words: &str) -> Vec<String> {
    let mut found = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if pid.bytes().all(|b| b.is_ascii_digit()) && cmdline.contains(words) {
            found.push(pid);
        }
    }
    found
}

/// Both killed tasks ran again, once: the one killed by its worker's
/// death requeued itself, and its log says why.
fn check_retried(cluster: &Cluster, work: &Path, chain: &Chain) {
    let killed = format!("{}_2", chain.counts);
    for task in [format!("{}_1", chain.thresholds), killed.clone()] {
        let job = cluster.job(&task);
        assert!(job.contains("Restarts=1"), "{task} ran twice: {job}");
    }
    let log = work_log(work, &format!("netdissect-counts-{killed}"));
    assert!(log.contains("died of signal 9: requeueing"), "{log}");
}

/// The contents of the one log in `$WORK/logs` whose name starts with
/// `prefix`, or "" before it exists.
fn work_log(work: &Path, prefix: &str) -> String {
    let logs = work.join("logs");
    let names = names_with(&logs, prefix);
    assert!(names.len() <= 1, "{names:?}");
    (names.first())
        .map(|n| std::fs::read_to_string(logs.join(n)).unwrap())
        .unwrap_or_default()
}

/// The chain whose shard 1 failed every time: `$WORK/FAILED` names that
/// shard and its log, which says why; nothing after phase 1 ran, and
/// nothing of the chain is left waiting.
fn check_failed_chain(cluster: &Cluster, broken: &Path) {
    let failed = std::fs::read_to_string(broken.join("FAILED"))
        .unwrap_or_else(|e| panic!("no FAILED ({e}):\n{}", cluster.diagnosis(broken)));
    let line = (failed.lines())
        .find(|l| l.contains(&format!("netdissect-thresholds shard 1/{SHARDS}")))
        .unwrap_or_else(|| panic!("shard 1 named in: {failed}"));
    assert_eq!(failed.lines().count(), 2, "only shard 1 failed: {failed}");
    let log = PathBuf::from(line.rsplit("see ").next().unwrap());
    assert!(log.starts_with(broken.join("logs")), "{line}");
    let why = std::fs::read_to_string(&log).unwrap();
    assert!(why.contains("is being written by another run"), "{why}");
    let reporter = work_log(broken, "netdissect-failed-");
    assert!(reporter.contains(line), "{reporter}");
    assert!(!broken.join("thresholds.json").exists());
    assert!(!broken.join("results").exists());
    assert!(names_with(&broken.join("counts"), "").is_empty());
}

/// `submit.sh` checks SHARDS before it makes a folder or calls sbatch, so
/// this needs no cluster (an `sbatch` first on the PATH shows it is never
/// called). A leading zero is refused with its reason: bash arithmetic
/// would read the number as octal.
#[test]
fn submit_sh_refuses_a_shard_count_with_a_leading_zero_saying_why() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let mark = tmp.path().join("sbatch-ran");
    let sbatch = bin.join("sbatch");
    std::fs::write(
        &sbatch,
        format!("#!/bin/sh\ntouch '{}'\necho 1\n", mark.display()),
    )
    .unwrap();
    std::fs::set_permissions(&sbatch, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    // (SHARDS, what the refusal says beyond "not '<SHARDS>'", or None where
    // it must not blame a leading zero)
    let cases = [
        (
            "08",
            Some("it has a leading zero, which bash arithmetic reads as octal; write 8"),
        ),
        ("010", Some("leading zero")),
        ("0", None),
        ("8x", None),
    ];
    for (shards, reason) in cases {
        let o = Command::new("bash")
            .arg(deploy().join("submit.sh"))
            .env("WORK", &work)
            .env("DISSECT_ARGS", FLAGS)
            .env("SHARDS", shards)
            .env("PATH", &path)
            .output()
            .expect("bash runs");
        let said = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "SHARDS={shards}: {said}");
        assert!(
            said.contains(&format!("SHARDS must be a positive number, not '{shards}'")),
            "{said}"
        );
        match reason {
            Some(reason) => assert!(said.contains(reason), "SHARDS={shards}: {said}"),
            None => assert!(!said.contains("leading zero"), "SHARDS={shards}: {said}"),
        }
    }
    assert!(!mark.exists(), "sbatch was called");
    let made: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
    assert!(made.is_empty(), "submit.sh wrote to WORK: {made:?}");
}
