//! The labelled images `ablate` measures accuracy on: an ImageFolder tree
//! (one folder per class, torchvision's convention), a CSV of
//! `image,class`, or a Broden folder whose `scene` column names the
//! classes.

use std::path::{Path, PathBuf};

use broden::{Dataset, DatasetOptions, LabelEntry};

use crate::error::{Error, Kind, Result};

/// Images and the head class of each.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Labelled {
    pub paths: Vec<PathBuf>,
    pub class: Vec<usize>,
    /// What was left out and why, for the user (images of no head class).
    pub skipped: Option<String>,
}

/// Image files an ImageFolder class folder may hold (torchvision's list,
/// less the formats `image` does not decode here).
const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "ppm", "bmp", "pgm", "webp"];

/// Reads `dataset` against the head's class `names`; `named` says whether
/// the names came from a file (`--classes`) or are the placeholders
/// `class N`.
pub(crate) fn read(dataset: &Path, names: &[String], named: bool) -> Result<Labelled> {
    let bad = |m: String| Error::new(Kind::Input, format!("{}: {m}", dataset.display()));
    if named {
        distinct(names)?;
    }
    let out = if dataset.is_file() {
        from_csv(dataset, names)?
    } else if dataset.join("index.csv").is_file() {
        if !named {
            return Err(bad("a Broden folder's scenes are matched to the head's classes by name: give the class names with --classes".into()));
        }
        from_broden(dataset, names)?
    } else if dataset.is_dir() {
        from_folders(dataset, names, named)?
    } else {
        return Err(bad(
            "no such file or folder (an ImageFolder tree, a CSV of image,class, or a Broden folder)"
                .into(),
        ));
    };
    if out.paths.is_empty() {
        let why = out.skipped.map_or(String::new(), |s| format!(": {s}"));
        return Err(bad(format!("no labelled images{why}")));
    }
    Ok(out)
}

/// Refuses head class names that match one another, so that no image
/// could go to the wrong class.
fn distinct(names: &[String]) -> Result<()> {
    let mut seen: Vec<(String, &str)> = Vec::new();
    for name in names {
        let key = normalized(name);
        if let Some((_, other)) = seen.iter().find(|(k, _)| *k == key) {
            return Err(Error::usage(format!(
                "class names `{other}` and `{name}` are the same name to ablate's matching (case, `-s`, `/a/` and separators aside): rename one in --classes"
            )));
        }
        seen.push((key, name));
    }
    Ok(())
}

/// A class name as matched across sources: Places' `/a/abbey 0` (its
/// letter folder and class number) read as `abbey`, Broden's `-s` scene
/// suffix dropped, lower case, with `/`, `-` and spaces as `_`.
pub(crate) fn normalized(name: &str) -> String {
    let mut s = name.trim();
    let b = s.as_bytes();
    if b.len() > 3 && b[0] == b'/' && b[2] == b'/' {
        s = &s[3..];
        if let Some((head, tail)) = s.rsplit_once(char::is_whitespace)
            && tail.chars().all(|c| c.is_ascii_digit())
        {
            s = head.trim_end();
        }
    }
    let s = s.strip_suffix("-s").unwrap_or(s);
    s.to_lowercase().replace(['/', '-', ' '], "_")
}

/// The head class called `name`, if any.
fn class_named(names: &[String], name: &str) -> Option<usize> {
    let want = normalized(name);
    names.iter().position(|n| normalized(n) == want)
}

/// torchvision's ImageFolder: each folder under `root` is a class, in
/// sorted order; its images are every image file below it.
fn from_folders(root: &Path, names: &[String], named: bool) -> Result<Labelled> {
    let io = |p: &Path, e: std::io::Error| {
        Error::context(Kind::Input, format!("reading {}", p.display()), e)
    };
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(root).map_err(|e| io(root, e))? {
        let entry = entry.map_err(|e| io(root, e))?;
        if entry.path().is_dir() {
            folders.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    folders.sort();
    if folders.is_empty() {
        return Err(Error::new(
            Kind::Input,
            format!(
                "{}: no class folders (an ImageFolder tree has one folder of images per class)",
                root.display()
            ),
        ));
    }
    if !named && folders.len() != names.len() {
        return Err(Error::new(
            Kind::Input,
            format!(
                "{}: {} class folders for a head of {} classes; name the head's classes with --classes to match folders by name",
                root.display(),
                folders.len(),
                names.len()
            ),
        ));
    }
    let mut out = Labelled {
        paths: Vec::new(),
        class: Vec::new(),
        skipped: None,
    };
    for (i, folder) in folders.iter().enumerate() {
        let class = if named {
            class_named(names, folder).ok_or_else(|| {
                Error::new(
                    Kind::Input,
                    format!(
                        "{}: class folder `{folder}` is not one of the head's {} classes (--classes)",
                        root.display(),
                        names.len()
                    ),
                )
            })?
        } else {
            i
        };
        let dir = root.join(folder);
        let mut images = Vec::new();
        walk_images(&dir, &mut images).map_err(|e| io(&dir, e))?;
        if images.is_empty() {
            return Err(Error::new(
                Kind::Input,
                format!("{}: no images of class `{folder}`", dir.display()),
            ));
        }
        images.sort();
        out.class.extend(std::iter::repeat_n(class, images.len()));
        out.paths.extend(images);
    }
    Ok(out)
}

fn walk_images(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            walk_images(&path, out)?;
        } else if (path.extension().and_then(|e| e.to_str()))
            .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// A CSV of `image,class` (a header row `image,class` is allowed), or a
/// list of `image class` lines as Places365's `places365_val.txt`: image
/// paths relative to the file's folder, classes by name or 0-based number.
fn from_csv(file: &Path, names: &[String]) -> Result<Labelled> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Error::context(Kind::Input, format!("reading {}", file.display()), e))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let mut out = Labelled {
        paths: Vec::new(),
        class: Vec::new(),
        skipped: None,
    };
    for (i, line) in text.lines().enumerate() {
        let bad = |m: String| Error::new(Kind::Input, format!("{}:{}: {m}", file.display(), i + 1));
        if line.trim().is_empty() {
            continue;
        }
        // Comma-separated, or as Places365's list files: `image class`.
        let split = match line.rsplit_once(',') {
            Some(pair) => Some(pair),
            None => line.trim().rsplit_once(char::is_whitespace),
        };
        let Some((image, class)) = split else {
            return Err(bad(format!("`{line}` is not image,class")));
        };
        let (image, class) = (image.trim(), class.trim());
        if i == 0 && image == "image" && class == "class" {
            continue;
        }
        let index = match class.parse::<usize>() {
            Ok(n) if n < names.len() => n,
            Ok(n) => {
                return Err(bad(format!(
                    "class {n} is out of range: the head has {} classes (0-{})",
                    names.len(),
                    names.len() - 1
                )));
            }
            Err(_) => class_named(names, class).ok_or_else(|| {
                bad(format!(
                    "class `{class}` is not one of the head's {} classes (--classes)",
                    names.len()
                ))
            })?,
        };
        let path = base.join(image);
        if !path.is_file() {
            return Err(bad(format!("image {} does not exist", path.display())));
        }
        out.paths.push(path);
        out.class.push(index);
    }
    Ok(out)
}

/// A Broden folder's images with a scene label that names a head class
/// (the first such label where an image has several).
fn from_broden(dir: &Path, names: &[String]) -> Result<Labelled> {
    let ds = Dataset::open(dir, &DatasetOptions::default()).map_err(Error::input)?;
    let scene = (ds.categories.iter())
        .position(|c| c.name == "scene")
        .ok_or_else(|| {
            Error::new(
                Kind::Input,
                format!("{}: the dataset has no scene category", dir.display()),
            )
        })?;
    let by_label: Vec<Option<usize>> = (ds.labels.iter())
        .map(|l| class_named(names, &l.name))
        .collect();
    let root = ds.root.join("images");
    let mut out = Labelled {
        paths: Vec::new(),
        class: Vec::new(),
        skipped: None,
    };
    let (mut unlabelled, mut foreign) = (0usize, 0usize);
    for row in &ds.images {
        let scenes: Vec<u32> = (row.labels[scene].iter())
            .filter_map(|e| match e {
                LabelEntry::Image(n) => Some(*n),
                LabelEntry::Pixel(_) => None,
            })
            .collect();
        let class = (scenes.iter()).find_map(|&n| by_label.get(n as usize).copied().flatten());
        match class {
            Some(c) => {
                out.paths.push(root.join(&row.image));
                out.class.push(c);
            }
            None if scenes.is_empty() => unlabelled += 1,
            None => foreign += 1,
        }
    }
    if unlabelled + foreign > 0 {
        out.skipped = Some(format!(
            "{unlabelled} images without a scene label and {foreign} whose scenes the head does not have were left out"
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_across_places_broden_and_folder_spellings() {
        for (a, b) in [
            ("/a/abbey 0", "abbey-s"),
            (
                "/a/apartment_building/outdoor 12",
                "apartment_building-outdoor-s",
            ),
            ("Street", "street-s"),
            ("living room", "living_room"),
        ] {
            assert_eq!(normalized(a), normalized(b), "{a} ~ {b}");
        }
        assert_ne!(normalized("/b/bar 3"), normalized("barn"));
        // Only Places' form loses its number: placeholders stay apart.
        assert_ne!(normalized("class 1"), normalized("class 2"));
        let twins: Vec<String> = ["Street", "street-s"].map(String::from).to_vec();
        let e = read(Path::new("."), &twins, true).unwrap_err().to_string();
        assert!(
            e.contains("`Street` and `street-s` are the same name"),
            "{e}"
        );
    }

    #[test]
    fn folders_and_csvs_are_read_and_bad_ones_refused_by_name() {
        let tmp = tempfile::tempdir().unwrap();
        let names: Vec<String> = ["cat", "dog"].map(String::from).to_vec();
        let root = tmp.path().join("tree");
        for (folder, files) in [("dog", &["b.png", "a.JPG"][..]), ("cat", &["x/c.png"])] {
            for f in files {
                let p = root.join(folder).join(f);
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, b"").unwrap();
            }
        }
        let got = read(&root, &names, true).unwrap();
        assert_eq!(got.class, [0, 1, 1]);
        assert!(got.paths[1].ends_with("dog/a.JPG"));
        // Without names, sorted folders are classes 0, 1.
        assert_eq!(read(&root, &names, false).unwrap().class, [0, 1, 1]);
        std::fs::create_dir_all(root.join("fox")).unwrap();
        let e = read(&root, &names, true).unwrap_err().to_string();
        assert!(
            e.contains("class folder `fox` is not one of the head's 2 classes"),
            "{e}"
        );
        let e = read(&root, &names, false).unwrap_err().to_string();
        assert!(e.contains("3 class folders for a head of 2 classes"), "{e}");
        let three: Vec<String> = ["cat", "dog", "fox"].map(String::from).to_vec();
        let e = read(&root, &three, true).unwrap_err().to_string();
        assert!(e.contains("no images of class `fox`"), "{e}");

        let csv = root.join("list.csv");
        std::fs::write(&csv, "image,class\ndog/b.png,dog\ncat/x/c.png,0\n").unwrap();
        assert_eq!(read(&csv, &names, true).unwrap().class, [1, 0]);
        let list = root.join("val.txt");
        std::fs::write(&list, "dog/b.png 1\ncat/x/c.png 0\n").unwrap();
        assert_eq!(read(&list, &names, false).unwrap().class, [1, 0]);
        for (text, words) in [
            ("dog/b.png,7\n", "list.csv:1: class 7 is out of range"),
            ("dog/b.png,owl\n", "list.csv:1: class `owl` is not one of"),
            ("dog/none.png,dog\n", "none.png does not exist"),
            ("just-a-name\n", "is not image,class"),
            ("dog/b.png 9\n", "class 9 is out of range"),
        ] {
            std::fs::write(&csv, text).unwrap();
            let e = read(&csv, &names, true).unwrap_err();
            assert_eq!(e.kind(), Kind::Input);
            assert!(e.to_string().contains(words), "{text:?}: {e}");
        }
        let e = read(&tmp.path().join("nothing"), &names, true).unwrap_err();
        assert!(e.to_string().contains("no such file or folder"), "{e}");
    }
}
