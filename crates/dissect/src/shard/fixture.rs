//! What the shard tests share: the description of a shard of a small run.

use super::{Shard, ShardInfo};
use crate::options::Options;
use crate::results::Timings;

/// Shard `index` of `count` of a run over 30 images in batches of 4, with
/// `digest` for the run's digest.
pub(crate) fn info(index: u32, count: u32, digest: &str) -> ShardInfo {
    let options = Options {
        batch_size: 4,
        ..Options::preset(
            crate::Preset::Original,
            &broden::Preprocess::torchvision(224),
        )
    };
    let r = Shard { index, count }.range(30, 4).unwrap();
    ShardInfo {
        digest: digest.into(),
        shard: Shard { index, count },
        images: [r.start, r.end],
        n_images: 30,
        model: "m".into(),
        weights: None,
        dataset: "d".into(),
        dataset_digest: "dd".into(),
        adapter: "a".into(),
        tool_version: "0".into(),
        options,
        duration_secs: 0.0,
        timings: Timings::default(),
    }
}
