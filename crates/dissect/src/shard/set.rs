//! Whether shards make one run's complete set: every shard of one run,
//! once each.

use super::ShardInfo;
use super::digest::short;
use crate::DissectError;

/// Errors unless `shards` (each with the name of the folder it came from)
/// are every shard of one run, once each: the same digest and shard
/// count, each index once, and the images [`super::Shard::range`] gives.
pub fn check_set(shards: &[(String, &ShardInfo)]) -> Result<(), DissectError> {
    let Some((first_name, first)) = shards.first() else {
        return Err(DissectError::Usage("no shard folders to merge".into()));
    };
    for (name, info) in shards {
        check_member(name, info, first_name, first)?;
    }
    check_each_index_once(shards, first.shard.count)
}

/// Errors unless shard `name` is of the run of shard `first_name` (the
/// same shard count and digest) and holds the images of its split.
fn check_member(
    name: &str,
    info: &ShardInfo,
    first_name: &str,
    first: &ShardInfo,
) -> Result<(), DissectError> {
    if info.shard.count != first.shard.count {
        return Err(DissectError::Input(format!(
            "{name} is shard {} but {first_name} is shard {}",
            info.shard, first.shard
        )));
    }
    if info.digest != first.digest {
        return Err(DissectError::Input(format!(
            "{name} and {first_name} are shards of different runs (other options, network, \
             weights or dataset: digest {} against {})",
            short(&info.digest),
            short(&first.digest)
        )));
    }
    let want = info
        .shard
        .range(info.n_images, info.options.batch_size)
        .map_err(|e| DissectError::Input(format!("{name}: {e}")))?;
    if info.images != [want.start, want.end] {
        return Err(DissectError::Input(format!(
            "{name}: shard {} holds images {}..{}, not the {}..{} of its split",
            info.shard, info.images[0], info.images[1], want.start, want.end
        )));
    }
    Ok(())
}

/// Errors unless each of the `n` shard indices is given exactly once,
/// naming the twice-given folders or the missing shards.
fn check_each_index_once(shards: &[(String, &ShardInfo)], n: u32) -> Result<(), DissectError> {
    let mut by_index: Vec<Vec<&str>> = vec![Vec::new(); n as usize];
    for (name, info) in shards {
        by_index[info.shard.index as usize].push(name);
    }
    if let Some((i, names)) = by_index.iter().enumerate().find(|(_, v)| v.len() > 1) {
        return Err(DissectError::Input(format!(
            "shard {i}/{n} is given twice: {}",
            names.join(" and ")
        )));
    }
    let missing: Vec<String> = (by_index.iter().enumerate())
        .filter(|(_, v)| v.is_empty())
        .map(|(i, _)| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(DissectError::Input(format!(
            "shard{} {} of the run missing (given: {})",
            if missing.len() > 1 { "s" } else { "" },
            missing.join(", "),
            (shards.iter())
                .map(|(name, info)| format!("{name} ({})", info.shard))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixture::info;
    use super::*;

    #[test]
    fn incomplete_duplicated_and_foreign_sets_are_named() {
        let set = |infos: &[(&str, ShardInfo)]| {
            let named: Vec<(String, &ShardInfo)> =
                infos.iter().map(|(n, i)| (n.to_string(), i)).collect();
            check_set(&named).map_err(|e| e.to_string())
        };
        let all = [
            ("a", info(0, 3, "d")),
            ("b", info(1, 3, "d")),
            ("c", info(2, 3, "d")),
        ];
        assert_eq!(set(&all), Ok(()));
        let err = set(&all[..2]).unwrap_err();
        assert!(err.contains("2/3") && err.contains("missing"), "{err}");
        let err = set(&[all[0].clone(), all[1].clone(), ("b2", info(1, 3, "d"))]).unwrap_err();
        assert!(err.contains("1/3") && err.contains("b and b2"), "{err}");
        let err = set(&[all[0].clone(), ("x", info(1, 3, "other"))]).unwrap_err();
        assert!(
            err.contains("x and a") && err.contains("different runs"),
            "{err}"
        );
        let err = set(&[all[0].clone(), ("y", info(1, 2, "d"))]).unwrap_err();
        assert!(err.contains("y is shard 1/2"), "{err}");
        let mut cut = info(1, 3, "d");
        cut.images[1] -= 1;
        let err = set(&[all[0].clone(), ("z", cut), all[2].clone()]).unwrap_err();
        assert!(err.contains("z: shard 1/3 holds images"), "{err}");
        assert!(set(&[]).is_err());
    }
}
