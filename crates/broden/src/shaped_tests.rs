//! The Broden-shaped generator: its label inventory, the shape of what it
//! writes (long-tailed frequencies, labels in two categories, two part
//! layers, two scene labels), determinism, and the reader's acceptance.

use std::collections::BTreeMap;
use std::path::Path;

use crate::synth::{BRODEN_LABELS, Inventory, ShapedOptions, generate_shaped};
use crate::{Dataset, DatasetOptions, LabelEntry};

#[test]
fn the_inventory_is_brodens() {
    let inv = Inventory::broden();
    assert_eq!(inv.labels.len(), 1197, "unique labels");
    let entries: Vec<usize> = inv.ranked.iter().map(Vec::len).collect();
    assert_eq!(entries, BRODEN_LABELS);
    // Every number is used, and names are unique.
    let mut numbers: Vec<u32> = inv.ranked.iter().flatten().copied().collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(numbers, (1..=1197).collect::<Vec<u32>>());
    let mut names: Vec<&str> = inv.labels.iter().map(|l| l.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), 1197);
    // Part and material entries that are objects too.
    let objects: Vec<u32> = inv.ranked[1].clone();
    let shared = |c: usize| inv.ranked[c].iter().filter(|n| objects.contains(n)).count();
    assert_eq!((shared(2), shared(3)), (155, 24));
    // Numbered by expected frequency: the most frequent label is black-c
    // or the top object.
    assert!(inv.labels[0].category <= 1, "{:?}", inv.labels[0]);
}

/// Every file under `dir`, by relative path.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[test]
fn a_shaped_set_has_brodens_shape_and_is_the_same_every_time() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = ShapedOptions {
        images: 400,
        seed: 7,
        size: 32,
    };
    let done = std::sync::Mutex::new(Vec::new());
    let report = generate_shaped(&tmp.path().join("a"), &opts, &|n| {
        done.lock().unwrap().push(n);
    })
    .unwrap();
    assert_eq!(report.images, 400);
    assert_eq!(
        done.lock().unwrap().last(),
        Some(&400),
        "progress ends at the total"
    );
    let ds = Dataset::open(&tmp.path().join("a"), &DatasetOptions::default()).unwrap();
    assert_eq!(ds.images.len(), 400);
    assert_eq!(ds.labels.len(), 1198, "1,197 labels and label 0");
    let cat = |name: &str| ds.categories.iter().position(|c| c.name == name).unwrap();
    let (part, scene) = (cat("part"), cat("scene"));
    // Some image has two part files, and some two scene labels.
    let count = |c: usize, pick: fn(&LabelEntry) -> bool| {
        (ds.images.iter())
            .map(|im| im.labels[c].iter().filter(|e| pick(e)).count())
            .max()
            .unwrap()
    };
    assert!(count(part, |e| matches!(e, LabelEntry::Pixel(_))) >= 2);
    assert!(count(scene, |e| matches!(e, LabelEntry::Image(_))) >= 2);
    // Some label is in two categories.
    let two = ds.category_labels.iter().flatten().map(|cl| cl.number);
    let mut seen = BTreeMap::new();
    for n in two {
        *seen.entry(n).or_insert(0) += 1;
    }
    assert!(seen.values().any(|&k| k >= 2), "a label in two categories");
    // A long tail: the most frequent object in many more images than the
    // median object that occurs.
    let mut freq: Vec<u64> = (ds.category_labels[cat("object")].iter())
        .map(|cl| cl.frequency)
        .filter(|&f| f > 0)
        .collect();
    freq.sort_unstable();
    let (median, top) = (freq[freq.len() / 2], *freq.last().unwrap());
    assert!(top >= 20 * median, "top {top}, median {median}");

    // The same options give the same files; another seed other ones.
    generate_shaped(&tmp.path().join("b"), &opts, &|_| {}).unwrap();
    assert!(files(&tmp.path().join("a")) == files(&tmp.path().join("b")));
    let other = ShapedOptions { seed: 8, ..opts };
    generate_shaped(&tmp.path().join("c"), &other, &|_| {}).unwrap();
    assert!(files(&tmp.path().join("a")) != files(&tmp.path().join("c")));
}
