//! `index.csv`: its columns, one [`ImageRecord`] per row kept, the label
//! cells, and the lexical checks on the paths the cells name.

use std::path::{Component, Path};

use super::labels::known_names;
use super::table::Table;
use crate::{BrodenError, Category, DatasetOptions, ImageRecord, KnownLabels, LabelEntry};

/// The non-category columns of `index.csv`.
const INDEX_META: [&str; 6] = ["image", "split", "ih", "iw", "sh", "sw"];

/// Where the fields of `index.csv` are.
struct IndexColumns {
    image: usize,
    split: usize,
    ih: usize,
    iw: usize,
    sh: usize,
    sw: usize,
    /// Category columns, matched by name: (column, category index).
    categories: Vec<(usize, usize)>,
}

/// Reads the rows of `index.csv` (table `t`) that `opts` keeps, parsing the
/// cells of the `selected` categories; fails when no row is kept.
pub(super) fn read_images(
    t: &Table,
    categories: &[Category],
    selected: &[usize],
    known: &KnownLabels,
    opts: &DatasetOptions,
) -> Result<Vec<ImageRecord>, BrodenError> {
    let columns = IndexColumns::find(t, categories)?;
    let mut images = Vec::new();
    for row in 1..=t.rows.len() {
        let r = &t.rows[row - 1];
        if opts.split.as_ref().is_some_and(|s| *s != r[columns.split]) {
            continue;
        }
        if opts.max_images.is_some_and(|m| images.len() >= m) {
            break;
        }
        images.push(columns.record(t, row, categories.len(), selected, known)?);
    }
    if images.is_empty() {
        let reason = match (&opts.split, opts.max_images) {
            (_, Some(0)) => "max_images is 0".to_owned(),
            (Some(s), _) => format!("no row has split {s:?}"),
            (None, _) => "index.csv has no rows".to_owned(),
        };
        return Err(BrodenError::EmptyDataset {
            path: t.path.clone(),
            reason,
        });
    }
    Ok(images)
}

impl IndexColumns {
    /// Finds the metadata columns of `t` and matches every other column to
    /// one of `categories` by name, rejecting unknown and repeated columns.
    fn find(t: &Table, categories: &[Category]) -> Result<Self, BrodenError> {
        let meta = INDEX_META.map(|c| t.column(c));
        let [image, split, ih, iw, sh, sw] = meta;
        let (image, split, ih, iw, sh, sw) = (image?, split?, ih?, iw?, sh?, sw?);
        let mut columns: Vec<(usize, usize)> = Vec::new();
        for (col, name) in t.header.iter().enumerate() {
            if INDEX_META.contains(&name.as_str()) {
                if t.header[..col].contains(name) {
                    return Err(t.error(0, format!("duplicate column {name:?}")));
                }
                continue;
            }
            let Some(cat) = categories.iter().position(|c| &c.name == name) else {
                return Err(BrodenError::UnknownCategory {
                    path: t.path.clone(),
                    row: 0,
                    name: name.clone(),
                    known: known_names(categories),
                });
            };
            if columns.iter().any(|&(_, c)| c == cat) {
                return Err(t.error(0, format!("duplicate column {name:?}")));
            }
            columns.push((col, cat));
        }
        Ok(Self {
            image,
            split,
            ih,
            iw,
            sh,
            sw,
            categories: columns,
        })
    }

    /// Parses row `row` of `t` into a record with `n_categories` label
    /// lists, of which those of the `selected` categories are filled; every
    /// path it names must be relative, without `..`.
    fn record(
        &self,
        t: &Table,
        row: usize,
        n_categories: usize,
        selected: &[usize],
        known: &KnownLabels,
    ) -> Result<ImageRecord, BrodenError> {
        let r = &t.rows[row - 1];
        let positive = |col: usize| -> Result<u32, BrodenError> {
            match t.number::<u32>(row, col, "a positive integer")? {
                0 => Err(t.bad_number(row, col, "a positive integer")),
                v => Ok(v),
            }
        };
        let mut record = ImageRecord {
            row,
            image: r[self.image].clone(),
            split: r[self.split].clone(),
            ih: positive(self.ih)?,
            iw: positive(self.iw)?,
            sh: positive(self.sh)?,
            sw: positive(self.sw)?,
            labels: vec![Vec::new(); n_categories],
        };
        if record.image.is_empty() {
            return Err(t.error(row, "empty image path"));
        }
        check_relative(&t.path, row, &record.image)?;
        for &(col, cat) in &self.categories {
            if selected.contains(&cat) {
                record.labels[cat] = parse_cell(t, row, col, known)?;
            }
        }
        for entry in record.labels.iter().flatten() {
            if let LabelEntry::Pixel(p) = entry {
                check_relative(&t.path, row, p)?;
            }
        }
        Ok(record)
    }
}

/// Parses one `index.csv` category cell: `;`-separated, digits-only entries
/// are image-level labels, anything else a PNG path.
fn parse_cell(
    t: &Table,
    row: usize,
    col: usize,
    known: &KnownLabels,
) -> Result<Vec<LabelEntry>, BrodenError> {
    let max_label = known.max();
    let mut out = Vec::new();
    for part in t.rows[row - 1][col].split(';').filter(|s| !s.is_empty()) {
        if part.bytes().all(|b| b.is_ascii_digit()) {
            let n: u64 = part
                .parse()
                .map_err(|_| t.bad_number(row, col, "a label"))?;
            if n > u64::from(max_label) {
                return Err(BrodenError::LabelOutOfRange {
                    path: t.path.clone(),
                    row,
                    label: n,
                    max: max_label,
                });
            }
            if !known.contains(n as u32) {
                return Err(BrodenError::UnlistedLabel {
                    path: t.path.clone(),
                    row,
                    label: n as u32,
                });
            }
            out.push(LabelEntry::Image(n as u32));
        } else {
            out.push(LabelEntry::Pixel(part.to_owned()));
        }
    }
    Ok(out)
}

/// Rejects entries that are absolute or climb with `..`; the symlink case
/// is caught later by [`super::files::resolve_inside`].
fn check_relative(index: &Path, row: usize, entry: &str) -> Result<(), BrodenError> {
    let unsafe_path = |reason| BrodenError::UnsafePath {
        index: index.to_owned(),
        row,
        entry: entry.to_owned(),
        reason,
    };
    for c in Path::new(entry).components() {
        match c {
            Component::ParentDir => return Err(unsafe_path("it has a '..' component")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(unsafe_path("it is absolute"));
            }
            Component::CurDir | Component::Normal(_) => {}
        }
    }
    Ok(())
}
