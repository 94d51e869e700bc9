//! Tests of the synthetic generator and the writer through the reader:
//! round trips, determinism, compatibility with NetDissect-Lite's loader
//! rules, and the structure of the generated concepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::synth::{self, CATEGORIES, SynthImage, SynthOptions};
use crate::{BatchOptions, Dataset, DatasetOptions, LabelPlane, Preprocess};

fn opts(images: usize, seed: u64, size: u32) -> SynthOptions {
    SynthOptions {
        images,
        seed,
        size,
        swatch_percent: 0,
    }
}

/// Every file under `root`, by relative path.
fn files(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn csv_rows(path: &Path) -> Vec<Vec<String>> {
    let mut r = csv::Reader::from_path(path).unwrap();
    r.records()
        .map(|rec| rec.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

/// Generate, then read back with `Dataset::open` and `batches`: every
/// image, label map, image-level label and statistic is what the generator
/// drew and reported.
#[test]
fn round_trip_through_the_reader() {
    round_trip(&opts(21, 3, 48));
}

/// The same with texture swatches, whose images have no scene label and
/// no object, part or material plane.
#[test]
fn round_trip_with_swatches() {
    round_trip(&SynthOptions {
        swatch_percent: 40,
        ..opts(21, 4, 48)
    });
}

fn round_trip(o: &SynthOptions) {
    let dir = tempfile::tempdir().unwrap();
    let report = synth::generate(dir.path(), o).unwrap();
    assert_eq!((report.images, report.size, report.seg_size), (21, 48, 24));

    let ds = Dataset::open(dir.path(), &DatasetOptions::default()).unwrap();
    let names: Vec<&str> = ds.categories.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, CATEGORIES);
    assert_eq!(ds.images.len(), 21);
    for c in synth::concepts() {
        assert_eq!(ds.labels[c.number as usize].name, c.name);
    }

    let batch_opts = BatchOptions {
        batch_size: 4,
        preprocess: Preprocess::torchvision(48),
        prefetch: 2,
        labels_only: false,
    };
    let mut seen = 0;
    for batch in ds.batches(&batch_opts) {
        let batch = batch.unwrap();
        assert_eq!((batch.seg_height, batch.seg_width), (24, 24));
        let plane_len = 3 * 48 * 48;
        for (j, (&idx, labels)) in batch.indices.iter().zip(&batch.labels).enumerate() {
            let want: SynthImage = synth::render(o, idx).unwrap();
            assert_eq!(ds.images[idx].image, want.path);
            let planes: Vec<LabelPlane> = want
                .planes()
                .into_iter()
                .map(|(category, l)| LabelPlane {
                    category,
                    labels: l.to_vec(),
                })
                .collect();
            assert_eq!(labels.planes, planes, "image {idx}");
            let mut got_image = labels.image_labels.clone();
            got_image.sort_unstable();
            assert_eq!(got_image, want.image_labels(), "image {idx}");
            let mut expected = vec![0f32; plane_len];
            batch_opts.preprocess.apply(&want.rgb, &mut expected);
            assert!(
                batch.pixels[j * plane_len..(j + 1) * plane_len] == expected[..],
                "pixels of image {idx}"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 21);

    // The statistics in label.csv and c_*.csv are those of the maps read.
    let counts = ds.label_counts().unwrap();
    assert_eq!(counts.mismatches(&ds), vec![]);
    assert_eq!(counts.images, report.labels.frequency);
    assert_eq!(counts.coverage, report.labels.coverage);
    for (cat, rows) in ds.category_labels.iter().enumerate() {
        for cl in rows {
            let n = cl.number as usize;
            assert_eq!(cl.frequency, counts.images[cat][n]);
            // c_*.csv holds the exact value (shortest round-trip form).
            assert_eq!(cl.coverage, counts.coverage[cat][n], "{}", cl.name);
        }
    }
    for label in ds.labels.iter().skip(1) {
        let n = label.number as usize;
        let freq: u64 = counts.images.iter().map(|c| c[n]).sum();
        let cov: f64 = counts.coverage.iter().map(|c| c[n]).sum();
        assert_eq!(label.frequency, freq, "{}", label.name);
        // label.csv has six decimals, as joinseg.py's '%f'.
        assert!((label.coverage - cov).abs() <= 5e-7, "{}", label.name);
    }
    // category.csv: per category the label range, count and summed
    // per-label image counts of its c_*.csv.
    for (cat, c) in ds.categories.iter().enumerate() {
        let rows = &ds.category_labels[cat];
        assert_eq!(c.count, rows.len() as u64);
        assert_eq!(c.first, rows.iter().map(|r| r.number).min().unwrap());
        assert_eq!(c.last, rows.iter().map(|r| r.number).max().unwrap());
        assert_eq!(c.frequency, rows.iter().map(|r| r.frequency).sum::<u64>());
    }
}

#[test]
fn same_seed_same_bytes_other_seed_other_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    synth::generate(&a, &opts(10, 11, 40)).unwrap();
    synth::generate(&b, &opts(10, 11, 40)).unwrap();
    synth::generate(&c, &opts(10, 12, 40)).unwrap();
    let (fa, fb, fc) = (files(&a), files(&b), files(&c));
    // 10 images, up to 4 segmentation PNGs each, 4 metadata CSVs, 6 c_*.csv.
    assert!(fa.len() >= 10 * 3 + 10, "{} files", fa.len());
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (path, bytes) in &fa {
        assert!(fb[path] == *bytes, "{} differs", path.display());
    }
    for i in 1..=10 {
        let image = PathBuf::from(format!("images/synth/{i:06}.png"));
        assert!(fa[&image] != fc[&image], "{} is the same", image.display());
    }
    // Rendering one image alone gives what the dataset holds.
    let one = synth::render(&opts(10, 11, 40), 4).unwrap();
    let decoded = image::open(a.join("images").join(&one.path))
        .unwrap()
        .to_rgb8();
    assert_eq!(decoded.as_raw(), &one.rgb);
}

/// The rules of NetDissect-Lite's `loader/data_loader.py` that a dataset
/// must satisfy to load there.
#[test]
fn output_meets_netdissect_lite_loader_rules() {
    let dir = tempfile::tempdir().unwrap();
    synth::generate(dir.path(), &opts(6, 5, 32)).unwrap();
    let root = dir.path();
    let is_int = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // decode_label_dict reads `^\d+\.\d*$` as a float and anything else
    // that is not an integer as text.
    let is_number = |s: &str| {
        is_int(s)
            || s.split_once('.')
                .is_some_and(|(a, b)| is_int(a) && b.bytes().all(|c| c.is_ascii_digit()))
    };
    for row in csv_rows(&root.join("label.csv")) {
        // Each `;` entry must match ^([^(]*)\(([^)]*)\)$ (an empty cell fails).
        for entry in row[2].split(';') {
            let (name, rest) = entry.split_once('(').expect(entry);
            assert!(!name.is_empty() && rest.ends_with(')'), "{entry}");
            assert!(is_int(&rest[..rest.len() - 1]), "{entry}");
        }
        assert!(
            is_int(&row[0]) && is_int(&row[3]) && is_number(&row[4]),
            "{row:?}"
        );
    }
    let mut listed: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for cat in CATEGORIES {
        let rows = csv_rows(&root.join(format!("c_{cat}.csv")));
        // build_numpy_category_map takes max() over the rows.
        assert!(!rows.is_empty(), "c_{cat}.csv is empty");
        for (k, row) in rows.iter().enumerate() {
            assert_eq!(row[0], (k + 1).to_string());
            assert!(is_int(&row[3]) && is_number(&row[4]), "{row:?}");
        }
        listed.insert(
            cat.into(),
            rows.iter().map(|r| r[1].parse().unwrap()).collect(),
        );
    }
    // Every pixel label of a category's PNG must be in that category's
    // c_*.csv: the loader indexes its number-to-code map with it.
    let mut r = csv::Reader::from_path(root.join("index.csv")).unwrap();
    let header: Vec<String> = r.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(
        header.join(","),
        "image,split,ih,iw,sh,sw,color,object,part,material,scene,texture"
    );
    for rec in r.records() {
        let rec = rec.unwrap();
        let stem = rec[0].strip_suffix(".png").unwrap().to_owned();
        for (col, cat) in header.iter().enumerate().skip(6) {
            for entry in rec[col].split(';').filter(|e| !e.is_empty()) {
                if is_int(entry) {
                    assert!(listed[cat].contains(&entry.parse().unwrap()));
                    continue;
                }
                assert_eq!(entry, format!("{stem}_{cat}.png"));
                let png = image::open(root.join("images").join(entry))
                    .unwrap()
                    .to_rgb8();
                assert_eq!(png.dimensions(), (16, 16));
                for p in png.pixels() {
                    assert_eq!(p[2], 0);
                    let label = u32::from(p[0]) + 256 * u32::from(p[1]);
                    assert!(
                        label == 0 || listed[cat].contains(&label),
                        "{entry}: {label}"
                    );
                }
            }
        }
    }
}

/// The concepts have the structure the generator promises: parts and
/// materials lie on objects, parts on the right objects, colour everywhere,
/// scenes favour their objects, and every concept occurs.
#[test]
fn concepts_have_structure() {
    let o = opts(150, 9, 48);
    let n = |cat: &str, name: &str| synth::concept_number(cat, name).unwrap();
    let object_of = |k: u32| synth::concepts()[k as usize - 1].name;
    let parts_on: [(&str, &[&str]); 6] = [
        ("rim", &["disc", "square", "diamond"]),
        ("hub", &["disc", "square", "cross", "star"]),
        ("apex", &["triangle", "diamond"]),
        ("base", &["triangle"]),
        ("arm", &["cross", "star"]),
        ("end", &["bar"]),
    ];
    let mut occurs = vec![0usize; synth::concepts().len() + 1];
    // (scene, object) image counts.
    let mut forest_triangles = 0;
    let mut office_triangles = 0;
    for i in 0..o.images {
        let im = synth::render(&o, i).unwrap();
        assert!(im.color.iter().all(|&c| (1..=11).contains(&c)));
        let mut here = vec![false; occurs.len()];
        for j in 0..im.color.len() {
            for l in [im.color[j], im.object[j], im.part[j], im.material[j]] {
                here[l as usize] = true;
            }
            if im.part[j] != 0 || im.material[j] != 0 {
                assert_ne!(
                    im.object[j], 0,
                    "image {i} pixel {j}: part or material off objects"
                );
            }
            if im.part[j] != 0 {
                let part = object_of(im.part[j]);
                let allowed = parts_on.iter().find(|(p, _)| *p == part).unwrap().1;
                assert!(
                    allowed.contains(&object_of(im.object[j])),
                    "{part} on {}",
                    object_of(im.object[j])
                );
            }
        }
        here[im.scene.unwrap() as usize] = true;
        here[im.texture.unwrap() as usize] = true;
        for (k, h) in here.iter().enumerate().skip(1) {
            occurs[k] += usize::from(*h);
        }
        let has_triangle = im.object.contains(&n("object", "triangle"));
        if im.scene == Some(n("scene", "forest-s")) {
            forest_triangles += usize::from(has_triangle);
        }
        if im.scene == Some(n("scene", "office-s")) {
            office_triangles += usize::from(has_triangle);
        }
    }
    for c in synth::concepts() {
        assert!(
            occurs[c.number as usize] > 0,
            "{} {} never occurs",
            c.category,
            c.name
        );
    }
    assert!(
        forest_triangles > 3 * office_triangles.max(1),
        "forest {forest_triangles}, office {office_triangles}"
    );
}

#[test]
fn concept_lookup_and_bad_options() {
    assert_eq!(synth::concept_number("color", "black-c"), Some(1));
    assert_eq!(synth::concept_number("color", "red-c"), Some(9));
    assert_eq!(synth::concept_number("object", "disc"), Some(12));
    assert_eq!(synth::concept_number("object", "red-c"), None);
    assert_eq!(synth::category_concepts("scene").unwrap().len(), 6);
    let all = synth::concepts();
    assert!(
        all.iter()
            .enumerate()
            .all(|(k, c)| c.number == k as u32 + 1)
    );
    assert!(
        all.iter()
            .filter(|c| c.category == "scene")
            .all(|c| c.name.ends_with("-s"))
    );
    assert!(
        all.iter()
            .filter(|c| c.category == "color")
            .all(|c| c.name.ends_with("-c"))
    );

    let dir = tempfile::tempdir().unwrap();
    let err = synth::generate(dir.path(), &opts(0, 1, 32)).unwrap_err();
    assert!(
        err.to_string().contains("images must be at least 1"),
        "{err}"
    );
    let err = synth::generate(dir.path(), &opts(1, 1, 4)).unwrap_err();
    assert!(err.to_string().contains("size 4"), "{err}");
    let over = SynthOptions {
        swatch_percent: 101,
        ..opts(1, 1, 32)
    };
    let err = synth::generate(dir.path(), &over).unwrap_err();
    assert!(err.to_string().contains("swatch percentage 101"), "{err}");
    // Odd sizes work, with seg = size / 2 as broden1_227 pairs 227 with 113.
    let im = synth::render(&opts(1, 1, 27), 0).unwrap();
    assert_eq!(
        (im.seg_size, im.object.len(), im.rgb.len()),
        (13, 169, 27 * 27 * 3)
    );
}

/// With swatches the sources mix as in Broden: a swatch has a texture label,
/// colours and nothing else; a scene image has a scene label and no
/// texture label; the share of swatches follows the option; and the scene
/// images are the images drawn without swatches, objects and all.
#[test]
fn swatches_mix_sources_as_broden() {
    let plain = opts(200, 5, 32);
    let mixed = SynthOptions {
        swatch_percent: 30,
        ..plain.clone()
    };
    let mut swatches = 0;
    let mut textures = [0usize; 6];
    let first_texture = synth::concept_number("texture", "striped").unwrap();
    for i in 0..mixed.images {
        let im = synth::render(&mixed, i).unwrap();
        assert!(
            im.color.iter().all(|&c| c != 0),
            "image {i}: unlabelled colour"
        );
        match (im.scene, im.texture) {
            (None, Some(t)) => {
                swatches += 1;
                textures[(t - first_texture) as usize] += 1;
                assert_eq!(
                    im.planes().iter().map(|(c, _)| *c).collect::<Vec<_>>(),
                    vec![0],
                    "image {i}: a swatch has only colours"
                );
                assert_eq!(im.image_labels(), vec![(5, t)]);
            }
            (Some(s), None) => {
                assert_eq!(im.image_labels(), vec![(4, s)]);
                assert!(
                    im.object.iter().any(|&o| o != 0),
                    "image {i}: a scene without objects"
                );
            }
            other => panic!("image {i}: image-level labels {other:?}"),
        }
    }
    assert!((35..=85).contains(&swatches), "{swatches} swatches of 200");
    assert!(textures.iter().all(|&n| n > 0), "textures {textures:?}");

    // Without swatches every image has both labels.
    let a = synth::render(&plain, 0).unwrap();
    assert!(a.scene.is_some() && a.texture.is_some());
}

/// The probe set shipped in `assets/default/probe` is byte for byte what the
/// generator makes with the options its README states, so the README's
/// command reproduces it.
#[test]
fn shipped_probe_is_reproducible() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/default/probe");
    let dir = tempfile::tempdir().unwrap();
    let o = SynthOptions {
        swatch_percent: 10,
        ..opts(500, 7, 112)
    };
    synth::generate(dir.path(), &o).unwrap();
    let (want, got) = (files(&shipped), files(dir.path()));
    assert_eq!(
        want.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &want {
        assert!(got[path] == *bytes, "{} differs", path.display());
    }
}
