//! Ctrl-C and termination signals (SIGTERM: Slurm's `scancel`, a
//! Kubernetes pod deleted): the first asks the run to stop after the batch
//! in progress, so that a run with checkpoints keeps its last one and says
//! how to resume; a second one ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

/// The flag the signals set, the handler installed at the first call.
pub fn stop_flag() -> Arc<AtomicBool> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    FLAG.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let seen = flag.clone();
        // Without a handler (another one installed first) the signals keep
        // their default: the process ends at once, as before.
        let _ = ctrlc::set_handler(move || {
            if seen.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after the batch in progress (again to quit at once)");
        });
        flag
    })
    .clone()
}
