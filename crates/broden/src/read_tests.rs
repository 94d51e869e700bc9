//! Tests of the reader, validation and batching loader on small datasets
//! written by hand here (independent of the crate's own writer).

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage, Rgba, RgbaImage};

use crate::{
    Batch, BatchOptions, BrodenError, Dataset, DatasetOptions, LabelEntry, LabelPlane, Preprocess,
};

fn write(root: &Path, name: &str, text: &str) {
    std::fs::write(root.join(name), text).expect("write fixture");
}

/// Writes a segmentation PNG whose pixel `(x, y)` carries `label(x, y)`.
fn seg_png(root: &Path, name: &str, w: u32, h: u32, label: impl Fn(u32, u32) -> u32) {
    let im = RgbImage::from_fn(w, h, |x, y| {
        let l = label(x, y);
        Rgb([(l % 256) as u8, (l / 256) as u8, 0])
    });
    im.save(root.join("images").join(name)).expect("write png");
}

/// The colour of pixel `(x, y)` of `img1.png`.
fn img1_pixel(x: u32, y: u32) -> [u8; 3] {
    [(x * 30) as u8, (y * 30) as u8, 100]
}

const INDEX: &str = "\
image,split,ih,iw,sh,sw,scene,object,color,part
img1.png,train,8,8,4,4,6,o1.png,c1.png,p1a.png;p1b.png
img2.png,train,8,8,4,4,7,o2.png,c2.png,
img3.jpg,val,8,8,4,4,7;6,o3.png,,
img4.png,val,6,6,2,2,,,,p4.png
";

// `first` and `last` are the smallest and largest label number each c_*.csv
// lists. As in the real Broden, the ranges overlap (color 1..3 and object
// 3..8 share tree, which is in both; object 3..8 and part 5..10 share tie
// but also hold wheel and sky, which are in one of the two only).
const CATEGORY: &str = "\
name,first,last,count,frequency
color,1,3,3,2
object,3,8,3,3
part,5,10,3,2
scene,6,7,2,3
";

// Label 9 is deliberately missing; label 8 has equal coverage (1.0) in
// object and part, so the tie-break decides its primary category.
const LABEL: &str = "\
number,name,category,frequency,coverage,syns
1,red,color(2),2,1.4375,crimson;scarlet
2,blue,color(1),1,0.5,
3,tree,object(2);color(1),3,1.5625,
4,sky,object(1),1,0.5,
5,wheel,part(1),1,0.0625,
6,beach,scene(2),2,2.0,
7,street,scene(2),2,2.0,road
8,tie,object(1);part(1),2,2.0,
10,leaf,part(1),1,1.0,
";

/// A valid dataset: 4 images (one JPEG, one needing a resize, one with a
/// different segmentation size), 4 categories, pixel- and image-level labels.
fn valid_dataset(root: &Path) {
    std::fs::create_dir_all(root.join("images")).expect("mkdir");
    write(root, "index.csv", INDEX);
    write(root, "category.csv", CATEGORY);
    write(root, "label.csv", LABEL);
    write(
        root,
        "c_color.csv",
        "code,number,name,frequency,coverage\n1,1,red,2,1.4375\n2,2,blue,1,0.5\n3,3,tree,1,0.0625\n",
    );
    write(
        root,
        "c_object.csv",
        "code,number,name,frequency,coverage\n1,3,tree,2,1.5\n2,4,sky,1,0.5\n3,8,tie,1,1.0\n",
    );
    write(
        root,
        "c_part.csv",
        "code,number,name,frequency,coverage\n1,5,wheel,1,0.0625\n2,8,tie,1,1.0\n3,10,leaf,1,1.0\n",
    );
    write(
        root,
        "c_scene.csv",
        "code,number,name,frequency,coverage\n1,6,beach,2,2.0\n2,7,street,2,2.0\n",
    );
    let images = root.join("images");
    RgbImage::from_fn(8, 8, |x, y| Rgb(img1_pixel(x, y)))
        .save(images.join("img1.png"))
        .expect("img1");
    RgbImage::from_pixel(8, 8, Rgb([200, 10, 50]))
        .save(images.join("img2.png"))
        .expect("img2");
    RgbImage::from_pixel(8, 8, Rgb([128, 128, 128]))
        .save(images.join("img3.jpg"))
        .expect("img3");
    RgbImage::from_pixel(6, 6, Rgb([10, 20, 30]))
        .save(images.join("img4.png"))
        .expect("img4");
    // img1: red top half, blue bottom half; tree left, sky right; a wheel
    // pixel at (0, 0) and a leaf plane everywhere.
    seg_png(root, "c1.png", 4, 4, |_, y| if y < 2 { 1 } else { 2 });
    seg_png(root, "o1.png", 4, 4, |x, _| if x < 2 { 3 } else { 4 });
    seg_png(root, "p1a.png", 4, 4, |x, y| {
        u32::from(x == 0 && y == 0) * 5
    });
    seg_png(root, "p1b.png", 4, 4, |_, _| 10);
    // img2: red but one tree pixel; a tie everywhere.
    seg_png(
        root,
        "c2.png",
        4,
        4,
        |x, y| if (x, y) == (3, 3) { 3 } else { 1 },
    );
    seg_png(root, "o2.png", 4, 4, |_, _| 8);
    seg_png(root, "o3.png", 4, 4, |_, _| 3);
    // An RGBA segmentation, as some tools write them.
    RgbaImage::from_pixel(2, 2, Rgba([8, 0, 0, 255]))
        .save(images.join("p4.png"))
        .expect("p4");
}

fn open_valid(opts: &DatasetOptions) -> (tempfile::TempDir, Dataset) {
    let dir = tempfile::tempdir().expect("tempdir");
    valid_dataset(dir.path());
    let ds = Dataset::open(dir.path(), opts).expect("valid dataset opens");
    (dir, ds)
}

fn batch_opts(batch_size: usize, prefetch: usize) -> BatchOptions {
    BatchOptions {
        batch_size,
        preprocess: Preprocess::torchvision(8),
        prefetch,
        labels_only: false,
    }
}

#[test]
fn reads_every_field() {
    let (dir, ds) = open_valid(&DatasetOptions::default());
    assert_eq!(ds.root, dir.path());
    let names: Vec<&str> = ds.categories.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["color", "object", "part", "scene"]);
    let object = &ds.categories[1];
    assert_eq!(
        (object.first, object.last, object.count, object.frequency),
        (3, 8, 3, 3)
    );
    assert_eq!(ds.selected, [0, 1, 2, 3]);

    // Dense labels: 0 and the gap 9 are empty entries.
    assert_eq!(ds.labels.len(), 11);
    assert_eq!(ds.max_label(), 10);
    for (n, l) in ds.labels.iter().enumerate() {
        assert_eq!(l.number as usize, n);
    }
    assert_eq!(ds.labels[9].name, "");
    assert!(ds.labels[9].category_counts.is_empty());
    let red = &ds.labels[1];
    assert_eq!(red.name, "red");
    assert_eq!(red.frequency, 2);
    assert_eq!(red.coverage, 1.4375);
    assert_eq!(red.syns, ["crimson", "scarlet"]);
    assert_eq!(red.category_counts, [("color".to_owned(), 2)]);
    assert!(ds.labels[2].syns.is_empty());
    assert_eq!(
        ds.labels[3].category_counts,
        [("object".to_owned(), 2), ("color".to_owned(), 1)]
    );
    // Primary categories: largest c_*.csv coverage; tree is 1.5 in object
    // against 0.0625 in color; tie (8) is 1.0 in object and part and goes to
    // the later category, part; labels in no category (0, 9) go to the last.
    let primary: Vec<usize> = ds.labels.iter().map(|l| l.category).collect();
    assert_eq!(primary, [3, 0, 0, 1, 1, 2, 3, 3, 2, 3, 2]);

    assert_eq!(ds.category_labels.len(), 4);
    let tie = &ds.category_labels[2][1];
    assert_eq!(
        (
            tie.code,
            tie.number,
            tie.name.as_str(),
            tie.frequency,
            tie.coverage
        ),
        (2, 8, "tie", 1, 1.0)
    );

    assert_eq!(ds.images.len(), 4);
    let px = |s: &str| LabelEntry::Pixel(s.to_owned());
    let im1 = &ds.images[0];
    assert_eq!(
        (im1.row, im1.image.as_str(), im1.split.as_str()),
        (1, "img1.png", "train")
    );
    assert_eq!((im1.ih, im1.iw, im1.sh, im1.sw), (8, 8, 4, 4));
    assert_eq!(
        im1.labels,
        [
            vec![px("c1.png")],
            vec![px("o1.png")],
            vec![px("p1a.png"), px("p1b.png")],
            vec![LabelEntry::Image(6)],
        ]
    );
    let im3 = &ds.images[2];
    assert_eq!(im3.row, 3);
    assert_eq!(
        im3.labels,
        [
            vec![],
            vec![px("o3.png")],
            vec![],
            vec![LabelEntry::Image(7), LabelEntry::Image(6)],
        ]
    );
    let im4 = &ds.images[3];
    assert_eq!((im4.ih, im4.iw, im4.sh, im4.sw), (6, 6, 2, 2));
    assert_eq!(im4.labels[2], [px("p4.png")]);
}

#[test]
fn filters_split_categories_and_count() {
    let (_dir, ds) = open_valid(&DatasetOptions {
        split: Some("val".to_owned()),
        ..Default::default()
    });
    let rows: Vec<usize> = ds.images.iter().map(|i| i.row).collect();
    assert_eq!(rows, [3, 4]);

    let (_dir, ds) = open_valid(&DatasetOptions {
        max_images: Some(2),
        ..Default::default()
    });
    assert_eq!(ds.images.len(), 2);

    let (_dir, ds) = open_valid(&DatasetOptions {
        categories: Some(vec!["scene".to_owned(), "color".to_owned()]),
        ..Default::default()
    });
    assert_eq!(ds.selected, [0, 3]);
    // Unselected cells are empty.
    assert!(ds.images[0].labels[1].is_empty());
    assert!(ds.images[0].labels[2].is_empty());
    assert_eq!(ds.images[0].labels[3], [LabelEntry::Image(6)]);
    // Primary categories are chosen among the selected ones: tree is now a
    // color label; tie has coverage 0 in both and goes to the later (scene).
    assert_eq!(ds.labels[3].category, 0);
    assert_eq!(ds.labels[8].category, 3);
}

#[test]
fn label_counts_match_csv_and_summary() {
    let (_dir, ds) = open_valid(&DatasetOptions::default());
    let counts = ds.label_counts().expect("counts");
    assert_eq!(counts.mismatches(&ds), []);
    assert_eq!(counts.images[1][3], 2);
    assert_eq!(counts.images[0][3], 1);
    assert_eq!(counts.coverage[0][1], 1.4375);
    assert_eq!(counts.coverage[3][6], 2.0);
    assert_eq!(counts.coverage[2][5], 0.0625);

    // A wrong count in label.csv is reported.
    let dir = tempfile::tempdir().expect("tempdir");
    valid_dataset(dir.path());
    write(
        dir.path(),
        "label.csv",
        &LABEL.replace("sky,object(1)", "sky,object(4)"),
    );
    let ds2 = Dataset::open(dir.path(), &DatasetOptions::default()).expect("opens");
    let m = ds2.label_counts().expect("counts").mismatches(&ds2);
    assert_eq!(m.len(), 1);
    assert_eq!(
        (
            m[0].label,
            m[0].category.as_str(),
            m[0].expected,
            m[0].found
        ),
        (4, "object", 4, 1)
    );

    let s = ds.summary();
    assert_eq!((s.n_images, s.n_labels), (4, 9));
    let rows: Vec<(&str, usize, usize)> = s
        .categories
        .iter()
        .map(|c| (c.name.as_str(), c.n_images, c.n_labels))
        .collect();
    assert_eq!(
        rows,
        [
            ("color", 2, 2),
            ("object", 3, 2),
            ("part", 2, 3),
            ("scene", 3, 2)
        ]
    );
    assert!(s.to_string().contains("object"));
}

#[test]
fn batches_cut_at_size_changes_and_preprocess() {
    let (_dir, ds) = open_valid(&DatasetOptions::default());
    let batches: Vec<_> = ds
        .batches(&batch_opts(2, 2))
        .collect::<Result<_, _>>()
        .expect("batches");
    let shape: Vec<(Vec<usize>, u32, u32)> = batches
        .iter()
        .map(|b| (b.indices.clone(), b.seg_height, b.seg_width))
        .collect();
    assert_eq!(
        shape,
        [(vec![0, 1], 4, 4), (vec![2], 4, 4), (vec![3], 2, 2)]
    );
    let sizes: Vec<Vec<usize>> = ds
        .batches(&batch_opts(3, 0))
        .map(|b| b.expect("batch").indices)
        .collect();
    assert_eq!(sizes, [vec![0, 1, 2], vec![3]]);

    let b0 = &batches[0];
    assert_eq!((b0.height, b0.width), (8, 8));
    assert_eq!(b0.pixels.len(), 2 * 3 * 64);
    // torchvision: (v / 255 - mean) / std, planar RGB; pixel (3, 2) of img1.
    let p = Preprocess::torchvision(8);
    let rgb = img1_pixel(3, 2);
    for (c, &v) in rgb.iter().enumerate() {
        let expected = (f32::from(v) / 255.0 - p.mean[c]) / p.std[c];
        let got = b0.pixels[c * 64 + 2 * 8 + 3];
        assert!(
            (got - expected).abs() < 1e-5,
            "channel {c}: {got} vs {expected}"
        );
    }
    // Red of (3, 2) is 90: (90 / 255 - 0.485) / 0.229, worked by hand.
    assert!((b0.pixels[2 * 8 + 3] - -0.576_676).abs() < 1e-5);
    // Second image of the batch, uniform (200, 10, 50).
    let got = b0.pixels[3 * 64 + 64 + 5];
    assert!((got - (10.0 / 255.0 - p.mean[1]) / p.std[1]).abs() < 1e-5);
    // img4 is 6x6, resized to 8x8: a uniform image stays uniform.
    let b3 = &batches[2];
    for c in 0..3 {
        let v = [10.0f32, 20.0, 30.0][c];
        let expected = (v / 255.0 - p.mean[c]) / p.std[c];
        for &got in &b3.pixels[c * 64..(c + 1) * 64] {
            assert!((got - expected).abs() < 1.5 / 255.0 / p.std[c]);
        }
    }
    // The JPEG decodes near its grey value.
    let jpeg = &batches[1].pixels;
    let expected = (128.0 / 255.0 - p.mean[0]) / p.std[0];
    assert!((jpeg[0] - expected).abs() < 4.0 / 255.0 / p.std[0]);

    // Caffe order: channel 0 is blue minus the blue mean, in [0, 255].
    let caffe = BatchOptions {
        preprocess: Preprocess::caffe(8),
        ..batch_opts(1, 1)
    };
    let first = ds.batches(&caffe).next().expect("one").expect("ok");
    assert!((first.pixels[2 * 8 + 3] - (100.0 - 109.5388)).abs() < 1e-4);

    // Labels of img1: planes in category order, then cell order.
    let l = &b0.labels[0];
    let plane = |category: usize, f: &dyn Fn(usize) -> u32| LabelPlane {
        category,
        labels: (0..16).map(f).collect(),
    };
    assert_eq!(
        l.planes,
        [
            plane(0, &|i| if i < 8 { 1 } else { 2 }),
            plane(1, &|i| if i % 4 < 2 { 3 } else { 4 }),
            plane(2, &|i| if i == 0 { 5 } else { 0 }),
            plane(2, &|_| 10),
        ]
    );
    assert_eq!(l.image_labels, [(3, 6)]);
    assert_eq!(batches[1].labels[0].image_labels, [(3, 7), (3, 6)]);
    assert_eq!(
        batches[2].labels[0].planes,
        [LabelPlane {
            category: 2,
            labels: vec![8; 4]
        }]
    );

    let labels_only = BatchOptions {
        labels_only: true,
        ..batch_opts(4, 1)
    };
    let b = ds.batches(&labels_only).next().expect("one").expect("ok");
    assert!(b.pixels.is_empty());
    assert_eq!(b.labels[0], *l);

    // Pixels from image 2 on: the first batch of two (a cache replays it)
    // has labels only, the next ones their pixels, and the labels are the
    // same as ever.
    let from: Vec<Batch> = ds
        .batches_from(&batch_opts(2, 1), 2)
        .collect::<Result<_, _>>()
        .unwrap();
    let all: Vec<Batch> = ds
        .batches(&batch_opts(2, 1))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(from.len(), all.len());
    assert!(from[0].pixels.is_empty());
    for (got, want) in from.iter().zip(&all).skip(1) {
        assert_eq!(got.pixels, want.pixels);
    }
    for (got, want) in from.iter().zip(&all) {
        assert_eq!((&got.indices, &got.labels), (&want.indices, &want.labels));
    }
}

#[test]
fn prefetch_is_bounded_and_drop_does_not_hang() {
    let (_dir, ds) = open_valid(&DatasetOptions::default());
    // Batch size 1: four batches. With prefetch 1 the producer can finish
    // two before anyone consumes (one queued, one blocked in send).
    let mut it = ds.batches(&batch_opts(1, 1));
    let deadline = Instant::now() + Duration::from_secs(20);
    while it.produced() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(it.produced(), 2, "producer did not run ahead");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(it.produced(), 2, "producer ran past the prefetch bound");
    assert_eq!(it.next().expect("first").expect("ok").indices, [0]);
    assert_eq!(it.by_ref().count(), 3);
    assert!(it.next().is_none());

    // Dropping mid-way (producer blocked on a full channel) returns.
    let (tx, rx) = mpsc::channel();
    let ds2 = ds.clone();
    std::thread::spawn(move || {
        let mut it = ds2.batches(&batch_opts(1, 0));
        let first = it.next().map(|b| b.is_ok());
        drop(it);
        let _ = tx.send(first);
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("dropping the iterator hung");
    assert_eq!(first, Some(true));
}

#[test]
fn an_error_ends_the_iteration() {
    let dir = tempfile::tempdir().expect("tempdir");
    valid_dataset(dir.path());
    std::fs::write(dir.path().join("images/o2.png"), b"not a png").expect("write");
    let ds = Dataset::open(dir.path(), &DatasetOptions::default()).expect("opens");
    let items: Vec<bool> = ds.batches(&batch_opts(1, 4)).map(|b| b.is_ok()).collect();
    assert_eq!(items, [true, false]);
}

/// Replaces `from` by `to` in a fixture file, checking that `from` occurs.
fn replace(root: &Path, name: &str, from: &str, to: &str) {
    let path = root.join(name);
    let text = std::fs::read_to_string(&path).expect("read fixture");
    assert!(text.contains(from), "{name} lacks {from:?}");
    std::fs::write(path, text.replacen(from, to, 1)).expect("write fixture");
}

fn remove(root: &Path, name: &str) {
    std::fs::remove_file(root.join(name)).expect("remove fixture");
}

/// One broken dataset: a mutation of the valid one, options, and what the
/// first error must be.
struct Case {
    name: &'static str,
    mutate: fn(&Path),
    opts: fn() -> DatasetOptions,
    is_variant: fn(&BrodenError) -> bool,
    message: &'static str,
}

fn all() -> DatasetOptions {
    DatasetOptions::default()
}

/// The first error that opening and decoding the whole dataset meets.
fn first_error(root: &Path, opts: &DatasetOptions) -> Option<BrodenError> {
    match Dataset::open(root, opts) {
        Err(e) => Some(e),
        Ok(ds) => ds.batches(&batch_opts(2, 1)).find_map(Result::err),
    }
}

#[test]
fn broken_datasets_give_specific_errors() {
    use BrodenError as E;
    let cases: Vec<Case> = vec![
        Case {
            name: "missing index.csv",
            mutate: |r| remove(r, "index.csv"),
            opts: all,
            is_variant: |e| matches!(e, E::MissingFile { .. }),
            message: "index.csv: required file is missing",
        },
        Case {
            name: "missing category.csv",
            mutate: |r| remove(r, "category.csv"),
            opts: all,
            is_variant: |e| matches!(e, E::MissingFile { .. }),
            message: "category.csv",
        },
        Case {
            name: "missing label.csv",
            mutate: |r| remove(r, "label.csv"),
            opts: all,
            is_variant: |e| matches!(e, E::MissingFile { .. }),
            message: "label.csv",
        },
        Case {
            name: "missing c_ file",
            mutate: |r| remove(r, "c_part.csv"),
            opts: all,
            is_variant: |e| matches!(e, E::MissingFile { .. }),
            message: "c_part.csv",
        },
        Case {
            name: "missing image",
            mutate: |r| remove(r, "images/img2.png"),
            opts: all,
            is_variant: |e| matches!(e, E::MissingReference { row: 2, .. }),
            message: "img2.png is missing",
        },
        Case {
            name: "missing png",
            mutate: |r| remove(r, "images/o3.png"),
            opts: all,
            is_variant: |e| matches!(e, E::MissingReference { row: 3, .. }),
            message: "o3.png is missing",
        },
        Case {
            name: "row with an extra field",
            mutate: |r| replace(r, "index.csv", "o3.png,,", "o3.png,,,"),
            opts: all,
            is_variant: |e| {
                matches!(
                    e,
                    E::ColumnCount {
                        row: 3,
                        expected: 10,
                        found: 11,
                        ..
                    }
                )
            },
            message: "row 3: 11 fields, the header has 10",
        },
        Case {
            name: "short row in c_ file",
            mutate: |r| replace(r, "c_scene.csv", "2,7,street,2,2.0", "2,7,street"),
            opts: all,
            is_variant: |e| matches!(e, E::ColumnCount { row: 2, .. }),
            message: "c_scene.csv, row 2",
        },
        Case {
            name: "non-numeric ih",
            mutate: |r| replace(r, "index.csv", "img2.png,train,8", "img2.png,train,eight"),
            opts: all,
            is_variant: |e| matches!(e, E::BadNumber { row: 2, .. }),
            message: "row 2, column ih: \"eight\" is not a positive integer",
        },
        Case {
            name: "zero sh",
            mutate: |r| {
                replace(
                    r,
                    "index.csv",
                    "img2.png,train,8,8,4",
                    "img2.png,train,8,8,0",
                )
            },
            opts: all,
            is_variant: |e| matches!(e, E::BadNumber { row: 2, .. }),
            message: "column sh",
        },
        Case {
            name: "non-numeric coverage",
            mutate: |r| replace(r, "c_object.csv", "2,4,sky,1,0.5", "2,4,sky,1,lots"),
            opts: all,
            is_variant: |e| matches!(e, E::BadNumber { row: 2, .. }),
            message: "c_object.csv, row 2, column coverage",
        },
        Case {
            name: "missing header column",
            mutate: |r| replace(r, "label.csv", "coverage,syns", "cover,syns"),
            opts: all,
            is_variant: |e| matches!(e, E::MissingColumn { .. }),
            message: "header lacks column \"coverage\"",
        },
        Case {
            name: "duplicate label number",
            mutate: |r| replace(r, "label.csv", "10,leaf", "7,leaf"),
            opts: all,
            is_variant: |e| matches!(e, E::Csv { row: 9, .. }),
            message: "duplicate label number 7",
        },
        Case {
            name: "duplicate label name",
            mutate: |r| replace(r, "label.csv", "7,street", "7,beach"),
            opts: all,
            is_variant: |e| matches!(e, E::Csv { row: 7, .. }),
            message: "label.csv, row 7: duplicate label name \"beach\": label 7 has it, \
                      and so has label 6 at row 6",
        },
        Case {
            name: "category range leaves out a label of its own c_ file",
            mutate: |r| replace(r, "category.csv", "object,3,8", "object,3,7"),
            opts: all,
            is_variant: |e| matches!(e, E::Csv { row: 2, .. }),
            message: "category.csv, row 2: category \"object\": range 3..7 leaves out \
                      label 8, which c_object.csv lists at row 3",
        },
        Case {
            name: "category range past the last label",
            mutate: |r| replace(r, "category.csv", "part,5,10", "part,5,11"),
            opts: all,
            is_variant: |e| matches!(e, E::Csv { row: 3, .. }),
            message: "category.csv, row 3: category \"part\": range 5..11 runs past the \
                      last label number, 10",
        },
        Case {
            name: "inverted category range",
            mutate: |r| replace(r, "category.csv", "scene,6,7", "scene,7,6"),
            opts: all,
            is_variant: |e| matches!(e, E::Csv { row: 4, .. }),
            message: "category.csv, row 4: category \"scene\": first label 7 is after \
                      last label 6",
        },
        Case {
            name: "label outside every category range",
            mutate: |r| {
                replace(r, "label.csv", "10,leaf,part(1)", "10,leaf,");
                replace(r, "c_part.csv", "3,10,leaf,1,1.0\n", "");
                replace(r, "category.csv", "part,5,10", "part,5,8");
            },
            opts: all,
            is_variant: |e| matches!(e, E::Csv { row: 9, .. }),
            message: "label.csv, row 9: label 10 \"leaf\" is in no category: no \
                      category.csv range first..last holds it",
        },
        Case {
            name: "label in a range but in no c_ file",
            mutate: |r| {
                replace(r, "label.csv", "4,sky,object(1)", "4,sky,");
                replace(r, "c_object.csv", "2,4,sky,1,0.5\n", "");
            },
            opts: all,
            is_variant: |e| matches!(e, E::Csv { row: 4, .. }),
            message: "label.csv, row 4: label 4 \"sky\" is in no category: no c_*.csv \
                      file lists it",
        },
        Case {
            name: "category cell names a category whose c_ file lacks the label",
            mutate: |r| replace(r, "label.csv", "4,sky,object(1)", "4,sky,object(1);part(1)"),
            opts: all,
            is_variant: |e| matches!(e, E::Csv { row: 4, .. }),
            message: "label.csv, row 4: label 4 \"sky\": its category cell names \"part\", \
                      but c_part.csv does not list label 4",
        },
        Case {
            name: "category cell leaves out a category whose c_ file lists the label",
            mutate: |r| replace(r, "label.csv", "object(2);color(1)", "object(2)"),
            opts: all,
            is_variant: |e| matches!(e, E::Csv { row: 3, .. }),
            message: "label.csv, row 3: label 3 \"tree\": c_color.csv lists it at row 3, \
                      but its category cell \"object(2)\" does not name \"color\"",
        },
        Case {
            name: "image label out of range",
            mutate: |r| replace(r, "index.csv", "4,4,7,", "4,4,11,"),
            opts: all,
            is_variant: |e| {
                matches!(
                    e,
                    E::LabelOutOfRange {
                        row: 2,
                        label: 11,
                        max: 10,
                        ..
                    }
                )
            },
            message: "label 11 is out of range",
        },
        Case {
            name: "image label that label.csv skips",
            mutate: |r| replace(r, "index.csv", "4,4,7,", "4,4,9,"),
            opts: all,
            is_variant: |e| {
                matches!(
                    e,
                    E::UnlistedLabel {
                        row: 2,
                        label: 9,
                        ..
                    }
                )
            },
            message: "label 9 is not in label.csv",
        },
        Case {
            name: "pixel label that label.csv skips",
            mutate: |r| seg_png(r, "o2.png", 4, 4, |x, _| if x == 3 { 9 } else { 8 }),
            opts: all,
            is_variant: |e| {
                matches!(
                    e,
                    E::UnlistedPixelLabel {
                        row: 2,
                        x: 3,
                        y: 0,
                        label: 9,
                        ..
                    }
                )
            },
            message: "which label.csv does not list",
        },
        Case {
            name: "c_ file label out of range",
            mutate: |r| replace(r, "c_color.csv", "2,2,blue", "2,12,blue"),
            opts: all,
            is_variant: |e| {
                matches!(
                    e,
                    E::LabelOutOfRange {
                        row: 2,
                        label: 12,
                        ..
                    }
                )
            },
            message: "c_color.csv",
        },
        Case {
            name: "pixel label out of range",
            // R = 3, G = 1: label 259 at one pixel.
            mutate: |r| {
                seg_png(
                    r,
                    "o2.png",
                    4,
                    4,
                    |x, y| if (x, y) == (1, 2) { 259 } else { 8 },
                )
            },
            opts: all,
            is_variant: |e| {
                matches!(
                    e,
                    E::PixelLabelOutOfRange {
                        row: 2,
                        x: 1,
                        y: 2,
                        label: 259,
                        max: 10,
                        ..
                    }
                )
            },
            message: "pixel (1, 2) has label 259",
        },
        Case {
            name: "png size mismatch",
            mutate: |r| seg_png(r, "c2.png", 5, 4, |_, _| 1),
            opts: all,
            is_variant: |e| {
                matches!(
                    e,
                    E::SizeMismatch {
                        row: 2,
                        found_width: 5,
                        ..
                    }
                )
            },
            message: "image is 5x4, index.csv says sw=4 sh=4",
        },
        Case {
            name: "image size unlike index.csv",
            mutate: |r| {
                RgbImage::from_pixel(8, 7, Rgb([1, 2, 3]))
                    .save(r.join("images/img2.png"))
                    .expect("img2")
            },
            opts: all,
            is_variant: |e| {
                matches!(
                    e,
                    E::ImageSizeMismatch {
                        row: 2,
                        found_height: 7,
                        ..
                    }
                )
            },
            message: "image is 8x7, index.csv says iw=8 ih=8",
        },
        Case {
            name: "corrupt png bytes",
            mutate: |r| write(r, "images/o1.png", "\u{89}PNG garbage"),
            opts: all,
            is_variant: |e| matches!(e, E::Image { .. }),
            message: "o1.png: cannot decode image",
        },
        Case {
            name: "corrupt jpeg",
            mutate: |r| write(r, "images/img3.jpg", "not a jpeg"),
            opts: all,
            is_variant: |e| matches!(e, E::Image { .. }),
            message: "img3.jpg: cannot decode image",
        },
        Case {
            name: "grey segmentation png",
            mutate: |r| {
                image::GrayImage::from_pixel(4, 4, image::Luma([1]))
                    .save(r.join("images/o3.png"))
                    .expect("write png")
            },
            opts: all,
            is_variant: |e| matches!(e, E::Image { .. }),
            message: "segmentation must be 8-bit rgb",
        },
        Case {
            name: "unknown category column",
            mutate: |r| replace(r, "index.csv", "color,part", "color,parts"),
            opts: all,
            is_variant: |e| matches!(e, E::UnknownCategory { row: 0, .. }),
            message: "unknown category \"parts\" (known: color, object, part, scene)",
        },
        Case {
            name: "unknown category in label.csv",
            mutate: |r| replace(r, "label.csv", "object(2);color(1)", "object(2);colour(1)"),
            opts: all,
            is_variant: |e| matches!(e, E::UnknownCategory { row: 3, .. }),
            message: "label.csv, row 3: unknown category \"colour\"",
        },
        Case {
            name: "malformed category cell",
            mutate: |r| replace(r, "label.csv", "sky,object(1)", "sky,object"),
            opts: all,
            is_variant: |e| matches!(e, E::Csv { row: 4, .. }),
            message: "not of the form name(count)",
        },
        Case {
            name: "unknown category filter",
            mutate: |_| {},
            opts: || DatasetOptions {
                categories: Some(vec!["color".to_owned(), "colour".to_owned()]),
                ..Default::default()
            },
            is_variant: |e| matches!(e, E::UnknownCategoryFilter { .. }),
            message: "unknown category \"colour\" requested (known: color, object, part, scene)",
        },
        Case {
            name: "empty after split filter",
            mutate: |_| {},
            opts: || DatasetOptions {
                split: Some("test".to_owned()),
                ..Default::default()
            },
            is_variant: |e| matches!(e, E::EmptyDataset { .. }),
            message: "no row has split \"test\"",
        },
        Case {
            name: "parent directory",
            mutate: |r| {
                // The target exists: the path is refused for where it points.
                write(r, "x.png", "");
                replace(r, "index.csv", "o2.png", "../x.png");
            },
            opts: all,
            is_variant: |e| matches!(e, E::UnsafePath { row: 2, .. }),
            message: "path \"../x.png\" leaves the dataset folder (it has a '..' component)",
        },
        Case {
            name: "absolute path",
            mutate: |r| replace(r, "index.csv", "img3.jpg", "/etc/passwd"),
            opts: all,
            is_variant: |e| matches!(e, E::UnsafePath { row: 3, .. }),
            message: "\"/etc/passwd\" leaves the dataset folder (it is absolute)",
        },
        #[cfg(unix)]
        Case {
            name: "symlink outside",
            mutate: |r| {
                // The dataset sits in `<tempdir>/ds`: the target stays inside
                // the temporary folder but outside the dataset.
                let outside = r.parent().expect("tempdir").join("outside.png");
                std::fs::write(&outside, "").expect("write outside");
                std::os::unix::fs::symlink(&outside, r.join("images/evil.png")).expect("symlink");
                replace(r, "index.csv", "o2.png", "evil.png");
            },
            opts: all,
            is_variant: |e| matches!(e, E::UnsafePath { row: 2, .. }),
            message: "a symlink resolves outside",
        },
    ];

    let mut failures = Vec::new();
    for case in &cases {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("ds");
        valid_dataset(&root);
        (case.mutate)(&root);
        match first_error(&root, &(case.opts)()) {
            None => failures.push(format!("{}: no error", case.name)),
            Some(e) => {
                let text = e.to_string();
                if !(case.is_variant)(&e) || !text.contains(case.message) {
                    failures.push(format!("{}: got {e:?} ({text})", case.name));
                }
            }
        }
    }
    // The unmutated dataset passes the same check.
    let dir = tempfile::tempdir().expect("tempdir");
    valid_dataset(dir.path());
    if let Some(e) = first_error(dir.path(), &all()) {
        failures.push(format!("valid dataset: {e}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What the label checks must not refuse: category ranges that overlap
/// (numbers are global, by frequency, so every real Broden has them), a
/// label in two categories, and an empty category written `0..0`, as the
/// writer writes one.
#[test]
fn overlapping_ranges_and_shared_labels_are_accepted() {
    let (_dir, ds) = open_valid(&DatasetOptions::default());
    let range = |name: &str| {
        let c = &ds.categories[ds.category_index(name).expect("category")];
        (c.first, c.last)
    };
    assert_eq!(
        [range("color"), range("object"), range("part")],
        [(1, 3), (3, 8), (5, 10)]
    );
    assert_eq!(ds.labels[8].category_counts.len(), 2);

    let dir = tempfile::tempdir().expect("tempdir");
    valid_dataset(dir.path());
    replace(
        dir.path(),
        "category.csv",
        "scene,6,7,2,3\n",
        "scene,6,7,2,3\nempty,0,0,0,0\n",
    );
    write(
        dir.path(),
        "c_empty.csv",
        "code,number,name,frequency,coverage\n",
    );
    let ds = Dataset::open(dir.path(), &DatasetOptions::default()).expect("opens");
    assert_eq!(ds.categories.len(), 5);
}

/// The probe set shipped in `assets/default/probe` (what the synthetic
/// generator writes) passes every check of `Dataset::open`.
#[test]
fn shipped_probe_opens() {
    let probe = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/default/probe");
    let ds = Dataset::open(&probe, &DatasetOptions::default()).expect("shipped probe opens");
    assert_eq!(ds.categories.len(), 6);
}

/// Random contradictions between the label files, each a mutation of the
/// valid dataset, are refused at the right file and row.
mod label_contradictions {
    use proptest::prelude::*;

    use super::{CATEGORY, LABEL, valid_dataset, write};
    use crate::{BrodenError, Dataset, DatasetOptions};

    /// The categories of the valid dataset, in `category.csv` order, with
    /// the labels each `c_*.csv` lists.
    const MEMBERS: [(&str, &[u32]); 4] = [
        ("color", &[1, 2, 3]),
        ("object", &[3, 4, 8]),
        ("part", &[5, 8, 10]),
        ("scene", &[6, 7]),
    ];

    #[derive(Debug, Clone)]
    enum Contradiction {
        /// `label.csv` row `copy` (0-based) takes the name of row `keep`.
        SameName { keep: usize, copy: usize },
        /// `label.csv` row `row` adds category `cat`, whose c_ file lacks it.
        ForeignCategory { row: usize, cat: usize },
        /// `category.csv` row `cat` ends `extra` past the largest label.
        PastEnd { cat: usize, extra: u32 },
    }

    /// The data rows of a CSV text, split into fields.
    fn rows(text: &str) -> Vec<Vec<String>> {
        text.lines()
            .skip(1)
            .map(|l| l.split(',').map(str::to_owned).collect())
            .collect()
    }

    /// `text`'s header followed by `rows`.
    fn join(text: &str, rows: &[Vec<String>]) -> String {
        let mut out = format!("{}\n", text.lines().next().expect("header"));
        for r in rows {
            out.push_str(&r.join(","));
            out.push('\n');
        }
        out
    }

    fn contradiction() -> impl Strategy<Value = Contradiction> {
        let n_labels = rows(LABEL).len();
        prop_oneof![
            (0..n_labels, 0..n_labels)
                .prop_filter("two rows", |(a, b)| a != b)
                .prop_map(|(keep, copy)| Contradiction::SameName { keep, copy }),
            (0..n_labels, 0..MEMBERS.len())
                .prop_filter("a category without the label", |&(row, cat)| {
                    let n: u32 = rows(LABEL)[row][0].parse().expect("number");
                    !MEMBERS[cat].1.contains(&n)
                })
                .prop_map(|(row, cat)| Contradiction::ForeignCategory { row, cat }),
            (0..MEMBERS.len(), 1..70_000u32)
                .prop_map(|(cat, extra)| Contradiction::PastEnd { cat, extra }),
        ]
    }

    /// Applies `c` to the valid dataset in `root`; returns the file and the
    /// 1-based row the error must name, and fragments its message must hold.
    fn apply(root: &std::path::Path, c: &Contradiction) -> (&'static str, usize, Vec<String>) {
        let mut labels = rows(LABEL);
        let mut categories = rows(CATEGORY);
        let out = match *c {
            Contradiction::SameName { keep, copy } => {
                let name = labels[keep][1].clone();
                labels[copy][1].clone_from(&name);
                let (first, later) = (keep.min(copy) + 1, keep.max(copy) + 1);
                (
                    "label.csv",
                    later,
                    vec![
                        format!("duplicate label name {name:?}"),
                        format!("label {} has it", labels[later - 1][0]),
                        format!("label {} at row {first}", labels[first - 1][0]),
                    ],
                )
            }
            Contradiction::ForeignCategory { row, cat } => {
                let name = MEMBERS[cat].0;
                let cell = &mut labels[row][2];
                cell.push_str(&format!(";{name}(1)"));
                (
                    "label.csv",
                    row + 1,
                    vec![format!(
                        "names {name:?}, but c_{name}.csv does not list label {}",
                        labels[row][0]
                    )],
                )
            }
            Contradiction::PastEnd { cat, extra } => {
                let last = 10 + extra;
                categories[cat][2] = last.to_string();
                (
                    "category.csv",
                    cat + 1,
                    vec![format!("..{last} runs past the last label number, 10")],
                )
            }
        };
        write(root, "label.csv", &join(LABEL, &labels));
        write(root, "category.csv", &join(CATEGORY, &categories));
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn every_contradiction_is_refused_at_its_row(c in contradiction()) {
            let dir = tempfile::tempdir().expect("tempdir");
            valid_dataset(dir.path());
            let (file, row, fragments) = apply(dir.path(), &c);
            let err = Dataset::open(dir.path(), &DatasetOptions::default())
                .expect_err("a contradiction must be refused");
            let text = err.to_string();
            prop_assert!(
                matches!(&err, BrodenError::Csv { path, row: r, .. }
                    if *r == row && path.ends_with(file)),
                "{c:?}: {text}"
            );
            prop_assert!(text.contains(&format!("{file}, row {row}: ")), "{c:?}: {text}");
            for f in &fragments {
                prop_assert!(text.contains(f.as_str()), "{c:?}: {text} lacks {f}");
            }
        }
    }
}
