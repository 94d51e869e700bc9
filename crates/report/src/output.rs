//! The files of a results folder: one tally CSV per layer, the top-image
//! maps, the HTML report, then `results.json`. `results.json` is written last, atomically, so a folder
//! that has it is complete; [`begin`] removes a stale one before a run.

use std::path::{Path, PathBuf};

use dissect::{Dissection, TopMaps};

use crate::{ReportError, tally, write_atomic};

/// The file that marks a complete results folder.
pub const RESULTS_JSON: &str = "results.json";

/// A layer name made safe for a file name (see
/// [`dissect::results::safe_file_stem`]).
pub(crate) fn safe_name(layer: &str) -> String {
    dissect::results::safe_file_stem(layer)
}

/// File name of a layer's tally (see [`safe_name`]).
pub fn tally_file_name(layer: &str) -> String {
    format!("{}-tally.csv", safe_name(layer))
}

/// Loads the top-image maps of every layer (empty for a layer saved
/// without them), checking their size against the layer's shape.
pub fn load_top_maps(dir: &Path, dissection: &Dissection) -> Result<Vec<TopMaps>, ReportError> {
    let k = dissection.options.top_k;
    dissection
        .layers
        .iter()
        .map(|layer| {
            let [h, w] = layer.feature_size.map(|v| v as usize);
            let Some(name) = &layer.top_maps_file else {
                return Ok(TopMaps::default());
            };
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|source| ReportError::Io {
                path: path.clone(),
                source,
            })?;
            let malformed = |message: String| ReportError::Malformed {
                path: path.clone(),
                row: 0,
                message,
            };
            if bytes.len() % 4 != 0 {
                return Err(malformed(format!(
                    "{} bytes is not whole f32s",
                    bytes.len()
                )));
            }
            let values = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            TopMaps::from_values(layer.n_units, k, [h, w], values).map_err(malformed)
        })
        .collect()
}

/// Prepares `dir` for a run: creates it, and unless `force`, refuses a
/// folder that already holds complete results. Removes a previous
/// `results.json` so that the folder never looks complete mid-run.
pub fn begin(dir: &Path, force: bool) -> Result<(), ReportError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReportError::Io { path, source }
    };
    let marker = dir.join(RESULTS_JSON);
    if marker.exists() {
        if !force {
            return Err(ReportError::Exists { path: marker });
        }
        std::fs::remove_file(&marker).map_err(io(&marker))?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))
}

/// Writes every output of a run into `dir` (tallies, top-image maps,
/// `report.html` with its strips, then `results.json`); `top_maps` is
/// parallel to `dissection.layers`. Returns the paths written.
pub fn write_all(
    dir: &Path,
    dissection: &Dissection,
    top_maps: &[TopMaps],
) -> Result<Vec<PathBuf>, ReportError> {
    let mut written = Vec::new();
    for (layer, maps) in dissection.layers.iter().zip(top_maps) {
        let path = dir.join(tally_file_name(&layer.name));
        tally::write(&path, &layer.units, &dissection.categories)?;
        written.push(path);
        if let Some(name) = &layer.top_maps_file {
            let bytes: Vec<u8> = maps.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            let path = dir.join(name);
            write_atomic(&path, &bytes)?;
            written.push(path);
        }
    }
    written.push(crate::html::write_report(dir, dissection, top_maps)?);
    let json = serde_json::to_vec_pretty(dissection).map_err(|e| ReportError::Io {
        path: dir.join(RESULTS_JSON),
        source: std::io::Error::other(e),
    })?;
    let path = dir.join(RESULTS_JSON);
    write_atomic(&path, &json)?;
    written.push(path);
    Ok(written)
}

/// Reads `results.json` of a results folder, and the layers' top maps.
pub fn read_results(dir: &Path) -> Result<(Dissection, Vec<TopMaps>), ReportError> {
    let path = dir.join(RESULTS_JSON);
    let text = std::fs::read_to_string(&path).map_err(|source| ReportError::Io {
        path: path.clone(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| ReportError::Malformed {
            path: path.clone(),
            row: e.line(),
            message: e.to_string(),
        })?;
    let version = value.get("schema_version").and_then(|v| v.as_u64());
    if version != Some(u64::from(dissect::SCHEMA_VERSION)) {
        return Err(ReportError::Malformed {
            path,
            row: 0,
            message: format!(
                "schema_version {version:?} is not the supported {}",
                dissect::SCHEMA_VERSION
            ),
        });
    }
    let dissection: Dissection =
        serde_json::from_value(value).map_err(|e| ReportError::Malformed {
            path,
            row: 0,
            message: e.to_string(),
        })?;
    let maps = load_top_maps(dir, &dissection)?;
    Ok((dissection, maps))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_names_are_safe_file_names() {
        assert_eq!(tally_file_name("layer4"), "layer4-tally.csv");
        assert_eq!(tally_file_name("features.28"), "features.28-tally.csv");
        assert_eq!(tally_file_name("a/b c"), "a_b_c-tally.csv");
    }

    #[test]
    fn begin_refuses_complete_results_unless_forced() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        begin(&out, false).unwrap();
        std::fs::write(out.join(RESULTS_JSON), "{}").unwrap();
        let err = begin(&out, false).unwrap_err().to_string();
        assert!(
            err.contains("results.json") && err.contains("--force"),
            "{err}"
        );
        begin(&out, true).unwrap();
        assert!(
            !out.join(RESULTS_JSON).exists(),
            "a forced run starts incomplete"
        );
    }

    #[test]
    fn results_of_another_schema_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RESULTS_JSON), r#"{"schema_version": 999}"#).unwrap();
        let err = read_results(dir.path()).unwrap_err().to_string();
        assert!(err.contains("schema_version"), "{err}");
    }
}
