//! What a run's timestamps and the process say: the seconds of each stage
//! of a dissection, peak memory, and the build the figures come from.

use dissect::Pass;
use serde::{Deserialize, Serialize};

/// Seconds spent in each stage of one dissection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Stages {
    pub(super) decode: f64,
    pub(super) upload: f64,
    pub(super) forward: f64,
    pub(super) quantile: f64,
    pub(super) count: f64,
    pub(super) scores: f64,
    pub(super) report: f64,
}

impl Stages {
    /// The stages' names, in the order of [`Stages::values`].
    pub(super) const NAMES: [&str; 7] = [
        "decode", "upload", "forward", "quantile", "count", "scores", "report",
    ];

    /// The seconds of every stage, in the order of [`Stages::NAMES`].
    pub(super) fn values(&self) -> [f64; 7] {
        [
            self.decode,
            self.upload,
            self.forward,
            self.quantile,
            self.count,
            self.scores,
            self.report,
        ]
    }
}

/// The wall time of each pass of a dissection, from its progress events.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct PassTimes {
    /// Pass 1, first round: decode, upload, forward, histogram and top-k.
    first: f64,
    /// Further threshold rounds, up to the first count event.
    refine: f64,
    count: f64,
    /// After the last count event until the run returned.
    scores: f64,
}

/// Splits a run into passes from `(seconds since start, pass)` events;
/// `end` is when the run returned.
pub(super) fn pass_times(events: &[(f64, Pass)], end: f64) -> PassTimes {
    let last = |pass: Pass| {
        events
            .iter()
            .rev()
            .find(|(_, p)| *p == pass)
            .map(|(t, _)| *t)
    };
    let first_of = |pass: Pass| events.iter().find(|(_, p)| *p == pass).map(|(t, _)| *t);
    let first = last(Pass::Thresholds).unwrap_or(0.0);
    let count_start = first_of(Pass::Counts).unwrap_or(end);
    let count_end = last(Pass::Counts).unwrap_or(end);
    PassTimes {
        first,
        refine: (count_start - first).max(0.0),
        count: (count_end - count_start).max(0.0),
        scores: (end - count_end).max(0.0),
    }
}

/// Decode, upload and forward seconds of one pass over the data, each
/// measured on its own.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct PerPass {
    pub(super) decode: f64,
    pub(super) upload: f64,
    pub(super) forward: f64,
}

/// Stage times of a run. The threshold stage is what its passes took beyond
/// decode, upload and forward; in re-running mode every pass after the first
/// (`passes - 1` of them, the last being the count pass) ran those again, so
/// they are charged to their own stages, not to the kernels'.
pub(super) fn stages_of(
    times: PassTimes,
    per_pass: PerPass,
    report: f64,
    recomputed_passes: u32,
) -> Stages {
    let PerPass {
        decode,
        upload,
        forward,
    } = per_pass;
    let network = decode + upload + forward;
    let reruns = recomputed_passes.saturating_sub(1);
    let refine_reruns = reruns.saturating_sub(1) as f64;
    let count_reruns = reruns.min(1) as f64;
    let runs = 1.0 + reruns as f64;
    Stages {
        decode: decode * runs,
        upload: upload * runs,
        forward: forward * runs,
        quantile: (times.first - network).max(0.0)
            + (times.refine - refine_reruns * network).max(0.0),
        count: (times.count - count_reruns * network).max(0.0),
        scores: times.scores,
        report,
    }
}

/// The process's peak resident memory in bytes, from `/proc/self/status`.
pub(crate) fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_vm_hwm(&status)
}

/// The `VmHWM` line of a `/proc/<pid>/status` text, in bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let mut fields = line["VmHWM:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") => Some(value * 1024),
        _ => None,
    }
}

/// The build profile the figures were measured with, as one line.
pub(crate) fn build_line() -> String {
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    match std::env::var("CARGO_PROFILE_DEV_OPT_LEVEL") {
        Ok(level) if cfg!(debug_assertions) => {
            format!("{profile} build, workspace crates at opt-level {level}")
        }
        _ => format!("{profile} build"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_is_read_in_bytes() {
        let status = "Name:\txtask\nVmPeak:\t  900 kB\nVmHWM:\t  123456 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(123_456 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS:\t1 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\tlots kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM:\t12 MB\n"), None);
    }

    #[test]
    fn passes_are_cut_at_their_progress_events() {
        let events = [
            (0.0, Pass::Thresholds),
            (1.0, Pass::Thresholds),
            (3.0, Pass::Thresholds),
            (3.5, Pass::Refine),
            (4.0, Pass::Refine),
            (4.5, Pass::Counts),
            (6.0, Pass::Counts),
        ];
        let p = pass_times(&events, 6.25);
        assert_eq!(
            p,
            PassTimes {
                first: 3.0,
                refine: 1.5,
                count: 1.5,
                scores: 0.25
            }
        );
    }

    #[test]
    fn threshold_stage_is_what_decode_upload_and_forward_leave() {
        let passes = PassTimes {
            first: 10.0,
            refine: 1.0,
            count: 2.0,
            scores: 0.5,
        };
        let per_pass = PerPass {
            decode: 2.0,
            upload: 1.0,
            forward: 5.0,
        };
        let s = stages_of(passes, per_pass, 0.25, 0);
        assert_eq!((s.decode, s.upload, s.forward), (2.0, 1.0, 5.0));
        assert_eq!(s.quantile, 3.0);
        assert_eq!(s.count, 2.0);
        assert_eq!((s.scores, s.report), (0.5, 0.25));
        // Decode overlapping the forward pass can exceed the first pass: never negative.
        let slow_decode = PerPass {
            decode: 6.0,
            ..per_pass
        };
        assert_eq!(stages_of(passes, slow_decode, 0.0, 0).quantile, 1.0);
    }

    #[test]
    fn rerunning_mode_charges_every_pass_its_network_time() {
        // 4 passes: the first, two refinements and the count pass each ran
        // decode + upload + forward = 1 s.
        let times = PassTimes {
            first: 1.5,
            refine: 2.75,
            count: 1.5,
            scores: 0.0,
        };
        let per_pass = PerPass {
            decode: 0.25,
            upload: 0.25,
            forward: 0.5,
        };
        let s = stages_of(times, per_pass, 0.0, 4);
        assert_eq!((s.decode, s.upload, s.forward), (1.0, 1.0, 2.0));
        assert_eq!(s.quantile, 0.5 + 0.75);
        assert_eq!(s.count, 0.5);
    }
}
