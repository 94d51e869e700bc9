//! Batches of decoded images and label maps, produced ahead of the consumer
//! on a background thread (bounded prefetch, rayon-parallel decoding).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use image::{DynamicImage, ImageFormat, ImageReader, RgbImage, imageops::FilterType};
use rayon::prelude::*;

use crate::{BrodenError, Dataset, ImageRecord, KnownLabels, LabelEntry, Preprocess};

/// One segmentation PNG decoded: a label number per pixel at the image's
/// segmentation size (`sh * sw`, row-major); 0 = unlabelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelPlane {
    /// Index into [`crate::Dataset::categories`] of the `index.csv` column
    /// the PNG was listed in.
    pub category: usize,
    pub labels: Vec<u32>,
}

/// The labels of one image of a batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageLabels {
    /// Every pixel-level PNG of the image, in `index.csv` order (several per
    /// category are possible; all count).
    pub planes: Vec<LabelPlane>,
    /// Image-level labels: `(category index, label number)`.
    pub image_labels: Vec<(usize, u32)>,
}

/// Options of [`crate::Dataset::batches`].
#[derive(Debug, Clone)]
pub struct BatchOptions {
    pub batch_size: usize,
    pub preprocess: Preprocess,
    /// Batches decoded ahead of the consumer (bounded prefetch).
    pub prefetch: usize,
    /// Skip decoding the images (label maps only), e.g. for label statistics.
    pub labels_only: bool,
}

/// A batch of consecutive images of a [`crate::Dataset`].
#[derive(Debug, Clone)]
pub struct Batch {
    /// Indices into [`crate::Dataset::images`].
    pub indices: Vec<usize>,
    /// Model input, `[n, 3, height, width]` per the [`Preprocess`] spec
    /// (empty when `labels_only`).
    pub pixels: Vec<f32>,
    pub height: u32,
    pub width: u32,
    /// Segmentation size shared by every image of the batch.
    pub seg_height: u32,
    pub seg_width: u32,
    /// One per image, same order as `indices`.
    pub labels: Vec<ImageLabels>,
}

/// Iterator over the [`Batch`]es of a [`Dataset`], decoded ahead on a
/// producer thread. Yields an error at most once, then ends. Dropping it
/// stops the producer (after the batch it is decoding) and joins it.
#[derive(Debug)]
pub struct Batches {
    rx: Option<Receiver<Result<Batch, BrodenError>>>,
    stop: Arc<AtomicBool>,
    produced: Arc<AtomicUsize>,
    handle: Option<JoinHandle<()>>,
}

impl Batches {
    /// Batches the producer has finished decoding so far (sent or about to
    /// be sent); at most the consumed ones plus `prefetch + 1`.
    pub fn produced(&self) -> usize {
        self.produced.load(Ordering::Acquire)
    }

    /// Ends iteration: stops and joins the producer. Returns whether it
    /// panicked.
    fn finish(&mut self) -> bool {
        self.stop.store(true, Ordering::Release);
        // Dropping the receiver first wakes a producer blocked in `send`.
        self.rx = None;
        self.handle.take().is_some_and(|h| h.join().is_err())
    }
}

impl Iterator for Batches {
    type Item = Result<Batch, BrodenError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rx = self.rx.as_ref()?;
        match rx.recv() {
            Ok(Ok(batch)) => Some(Ok(batch)),
            Ok(Err(e)) => {
                self.finish();
                Some(Err(e))
            }
            // The producer hung up: it finished, or died without a word.
            Err(_) => self.finish().then_some(Err(BrodenError::LoaderPanicked)),
        }
    }
}

impl Drop for Batches {
    fn drop(&mut self) {
        self.finish();
    }
}

/// What the producer thread needs of the dataset.
struct Source {
    root: PathBuf,
    images: Vec<ImageRecord>,
    known: KnownLabels,
    opts: BatchOptions,
    /// Batches that end at or before this image decode labels only.
    pixels_from: usize,
}

impl Dataset {
    /// Decodes the labels of one image, `images[index]`, checked as a batch
    /// checks them (e.g. for drawing a concept's mask over a top image).
    pub fn image_labels(&self, index: usize) -> Result<ImageLabels, BrodenError> {
        let rec = self
            .images
            .get(index)
            .ok_or_else(|| BrodenError::InvalidOptions {
                message: format!(
                    "image {index} is out of range: the dataset has {} images",
                    self.images.len()
                ),
            })?;
        decode_labels(&self.root, rec, &KnownLabels::of(&self.labels))
    }

    /// Consecutive batches of at most `opts.batch_size` images (at least 1),
    /// cut early where the segmentation size changes, so a batch never mixes
    /// sizes. Images are resized bilinearly to the preprocess size when they
    /// differ from it, then [`Preprocess::apply`]ed.
    pub fn batches(&self, opts: &BatchOptions) -> Batches {
        self.batches_from(opts, 0)
    }

    /// [`Dataset::batches`], with the pixels of the images before
    /// `pixels_from` not decoded: a batch that ends at or before it holds
    /// labels only (as with [`BatchOptions::labels_only`]). A run whose
    /// activation cache holds only its first images replays those and
    /// decodes the rest.
    pub fn batches_from(&self, opts: &BatchOptions, pixels_from: usize) -> Batches {
        let (tx, rx) = sync_channel(opts.prefetch);
        let stop = Arc::new(AtomicBool::new(false));
        let produced = Arc::new(AtomicUsize::new(0));
        let source = Source {
            root: self.root.clone(),
            images: self.images.clone(),
            known: KnownLabels::of(&self.labels),
            opts: opts.clone(),
            pixels_from,
        };
        let handle = {
            let (stop, produced) = (stop.clone(), produced.clone());
            std::thread::Builder::new()
                .name("broden-batches".to_owned())
                .spawn(move || produce(&source, &tx, &stop, &produced))
        };
        match handle {
            Ok(handle) => Batches {
                rx: Some(rx),
                stop,
                produced,
                handle: Some(handle),
            },
            Err(source) => {
                // No thread: hand the error to the consumer through a fresh
                // channel so that the iterator still yields it once.
                let (tx, rx) = sync_channel(1);
                let _ = tx.send(Err(BrodenError::Io {
                    path: self.root.clone(),
                    source,
                }));
                Batches {
                    rx: Some(rx),
                    stop,
                    produced,
                    handle: None,
                }
            }
        }
    }
}

fn produce(
    src: &Source,
    tx: &SyncSender<Result<Batch, BrodenError>>,
    stop: &AtomicBool,
    produced: &AtomicUsize,
) {
    let p = &src.opts.preprocess;
    if !src.opts.labels_only && (p.height == 0 || p.width == 0) {
        let _ = tx.send(Err(BrodenError::InvalidOptions {
            message: format!("preprocess size {}x{} is empty", p.width, p.height),
        }));
        return;
    }
    let batch_size = src.opts.batch_size.max(1);
    let mut start = 0;
    while start < src.images.len() {
        if stop.load(Ordering::Acquire) {
            return;
        }
        let end = batch_end(&src.images, start, batch_size);
        let result = decode_batch(src, start..end);
        produced.fetch_add(1, Ordering::AcqRel);
        let failed = result.is_err();
        if tx.send(result).is_err() || failed {
            return;
        }
        start = end;
    }
}

/// The end of the batch of at most `batch_size` images that starts at
/// `images[start]`: cut short where the segmentation size changes.
fn batch_end(images: &[ImageRecord], start: usize, batch_size: usize) -> usize {
    let seg = (images[start].sh, images[start].sw);
    images[start..]
        .iter()
        .take(batch_size)
        .position(|im| (im.sh, im.sw) != seg)
        .map_or((start + batch_size).min(images.len()), |n| start + n)
}

impl Dataset {
    /// The images of each batch [`Dataset::batches`] makes of `batch_size`
    /// images, in order (what a cache of an earlier pass is matched to).
    pub fn batch_ranges(&self, batch_size: usize) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < self.images.len() {
            let end = batch_end(&self.images, start, batch_size.max(1));
            out.push(start..end);
            start = end;
        }
        out
    }
}

fn decode_batch(src: &Source, range: std::ops::Range<usize>) -> Result<Batch, BrodenError> {
    let p = &src.opts.preprocess;
    let indices: Vec<usize> = range.clone().collect();
    let first = &src.images[indices[0]];
    let labels_of = |i: usize| decode_labels(&src.root, &src.images[i], &src.known);
    let labels_only = src.opts.labels_only || range.end <= src.pixels_from;
    let (pixels, results): (Vec<f32>, Vec<Result<ImageLabels, BrodenError>>) = if labels_only {
        (
            Vec::new(),
            indices.par_iter().map(|&i| labels_of(i)).collect(),
        )
    } else {
        let per_image = 3 * p.height as usize * p.width as usize;
        let mut pixels = vec![0f32; per_image * indices.len()];
        let results = pixels
            .par_chunks_mut(per_image)
            .zip(indices.par_iter())
            .map(|(out, &i)| {
                decode_image(&src.root, &src.images[i], p, out)?;
                labels_of(i)
            })
            .collect();
        (pixels, results)
    };
    // Report the first failing image in dataset order, whatever the
    // threads' timing.
    let labels = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    Ok(Batch {
        indices,
        pixels,
        height: p.height,
        width: p.width,
        seg_height: first.sh,
        seg_width: first.sw,
        labels,
    })
}

/// Reads and decodes an image file (JPEG or PNG, told by its content, else
/// by its extension), refusing a JPEG that is cut short.
fn open_image(path: &Path) -> Result<DynamicImage, BrodenError> {
    let image_error = |message: String| BrodenError::Image {
        path: path.to_owned(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|source| BrodenError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut reader = ImageReader::new(std::io::Cursor::new(bytes.as_slice()));
    if let Ok(format) = ImageFormat::from_path(path) {
        reader.set_format(format);
    }
    let reader = reader
        .with_guessed_format()
        .map_err(|e| image_error(e.to_string()))?;
    // The JPEG decoder fills the rest of a scan cut short with grey instead
    // of failing, so a truncated file would be dissected as if whole.
    if reader.format() == Some(ImageFormat::Jpeg) && !jpeg_is_complete(&bytes) {
        return Err(image_error(
            "the file is truncated or corrupt: its JPEG data ends before the end-of-image marker"
                .into(),
        ));
    }
    reader.decode().map_err(|e| image_error(e.to_string()))
}

/// Whether JPEG `data` is whole: walked from its start-of-image marker,
/// segment by segment (skipping each one's declared length, so that the
/// end-of-image marker of an embedded thumbnail does not count) and scan by
/// scan, its markers reach an end-of-image marker within the data. Bytes
/// after that marker (a camera's trailer, a motion photo's video) are
/// allowed.
fn jpeg_is_complete(data: &[u8]) -> bool {
    if !data.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    let mut at = 2;
    while let Some(found) = next_jpeg_marker(data, at) {
        let marker = data[found + 1];
        at = found + 2;
        match marker {
            0xD9 => return true,
            // Standalone markers carry no length.
            0x01 | 0xD8 => {}
            _ => {
                let Some(&[hi, lo]) = data.get(at..at + 2) else {
                    return false;
                };
                at += usize::from(u16::from_be_bytes([hi, lo]));
            }
        }
    }
    false
}

/// The position of the next marker at or after `at`: a 0xFF byte followed
/// by neither a stuffed zero, a fill byte nor a restart marker (all three
/// occur inside a scan's entropy-coded data). Other bytes before it are
/// skipped, as decoders skip them.
fn next_jpeg_marker(data: &[u8], mut at: usize) -> Option<usize> {
    while at + 1 < data.len() {
        if data[at] == 0xFF && !matches!(data[at + 1], 0x00 | 0xFF | 0xD0..=0xD7) {
            return Some(at);
        }
        at += 1;
    }
    None
}

/// Decodes `images/<image>` (JPEG or PNG), resizes it when needed and writes
/// the preprocessed planes into `out`.
fn decode_image(
    root: &Path,
    rec: &ImageRecord,
    p: &Preprocess,
    out: &mut [f32],
) -> Result<(), BrodenError> {
    let path = root.join("images").join(&rec.image);
    let rgb: RgbImage = open_image(&path)?.into_rgb8();
    if rgb.dimensions() != (rec.iw, rec.ih) {
        return Err(BrodenError::ImageSizeMismatch {
            path,
            row: rec.row,
            width: rec.iw,
            height: rec.ih,
            found_width: rgb.width(),
            found_height: rgb.height(),
        });
    }
    let rgb = if rgb.dimensions() == (p.width, p.height) {
        rgb
    } else {
        // The triangle filter is bilinear interpolation, widened when
        // shrinking so that every source pixel contributes (as PIL does).
        image::imageops::resize(&rgb, p.width, p.height, FilterType::Triangle)
    };
    p.apply(rgb.as_raw(), out);
    Ok(())
}

/// Decodes any image file (JPEG or PNG) for a model: the picture resized
/// to the preprocess size, as the batches resize, and its preprocessed
/// planes (`3 x height x width`).
pub fn load_image(path: &Path, p: &Preprocess) -> Result<(RgbImage, Vec<f32>), BrodenError> {
    let rgb: RgbImage = open_image(path)?.into_rgb8();
    let rgb = if rgb.dimensions() == (p.width, p.height) {
        rgb
    } else {
        image::imageops::resize(&rgb, p.width, p.height, FilterType::Triangle)
    };
    let mut out = vec![0f32; 3 * (p.width * p.height) as usize];
    p.apply(rgb.as_raw(), &mut out);
    Ok((rgb, out))
}

/// Decodes every PNG of an image (label = `R + 256 * G`) and collects its
/// image-level labels.
fn decode_labels(
    root: &Path,
    rec: &ImageRecord,
    known: &KnownLabels,
) -> Result<ImageLabels, BrodenError> {
    let mut out = ImageLabels::default();
    for (category, entries) in rec.labels.iter().enumerate() {
        for entry in entries {
            match entry {
                LabelEntry::Image(n) => out.image_labels.push((category, *n)),
                LabelEntry::Pixel(file) => {
                    let path = root.join("images").join(file);
                    let labels = decode_plane(&path, rec, known)?;
                    out.planes.push(LabelPlane { category, labels });
                }
            }
        }
    }
    Ok(out)
}

fn decode_plane(
    path: &Path,
    rec: &ImageRecord,
    known: &KnownLabels,
) -> Result<Vec<u32>, BrodenError> {
    let max_label = known.max();
    let (width, height, channels, raw) = match open_image(path)? {
        DynamicImage::ImageRgb8(im) => (im.width(), im.height(), 3, im.into_raw()),
        DynamicImage::ImageRgba8(im) => (im.width(), im.height(), 4, im.into_raw()),
        other => {
            return Err(BrodenError::Image {
                path: path.to_owned(),
                message: format!(
                    "segmentation must be 8-bit rgb or rgba, found {:?}",
                    other.color()
                ),
            });
        }
    };
    if (width, height) != (rec.sw, rec.sh) {
        return Err(BrodenError::SizeMismatch {
            path: path.to_owned(),
            row: rec.row,
            width: rec.sw,
            height: rec.sh,
            found_width: width,
            found_height: height,
        });
    }
    let mut labels = Vec::with_capacity(width as usize * height as usize);
    for (i, px) in raw.chunks_exact(channels).enumerate() {
        let label = u32::from(px[0]) + 256 * u32::from(px[1]);
        if !known.contains(label) {
            let (path, row) = (path.to_owned(), rec.row);
            let (x, y) = (i as u32 % width, i as u32 / width);
            return Err(if label > max_label {
                BrodenError::PixelLabelOutOfRange {
                    path,
                    row,
                    x,
                    y,
                    label,
                    max: max_label,
                }
            } else {
                BrodenError::UnlistedPixelLabel {
                    path,
                    row,
                    x,
                    y,
                    label,
                }
            });
        }
        labels.push(label);
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 40 x 30 JPEG of noise as the `image` crate writes it.
    fn jpeg() -> Vec<u8> {
        let rgb = RgbImage::from_fn(40, 30, |x, y| {
            let v = (x * 7919 + y * 104_729) % 251;
            image::Rgb([v as u8, (v * 3 % 256) as u8, (255 - v) as u8])
        });
        let mut bytes = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 90)
            .encode_image(&rgb)
            .unwrap();
        bytes
    }

    #[test]
    fn truncated_jpegs_are_refused_by_name_and_whole_ones_decode() {
        let whole = jpeg();
        // The same JPEG with an embedded one (as an EXIF thumbnail is) in
        // an APP1 segment after the start-of-image marker.
        let thumb = jpeg();
        let mut nested = whole[..2].to_vec();
        nested.extend_from_slice(&[0xFF, 0xE1]);
        nested.extend_from_slice(&(thumb.len() as u16 + 2).to_be_bytes());
        nested.extend_from_slice(&thumb);
        nested.extend_from_slice(&whole[2..]);
        let mut trailer = whole.clone();
        trailer.extend_from_slice(b"\0\0 a trailer after the end-of-image marker");
        let tmp = tempfile::tempdir().unwrap();
        let p = Preprocess::torchvision(32);
        let mut failures = Vec::new();
        for (name, bytes) in [
            ("whole", &whole),
            ("nested", &nested),
            ("trailer", &trailer),
        ] {
            let path = tmp.path().join(format!("{name}.jpg"));
            std::fs::write(&path, bytes).unwrap();
            if let Err(e) = load_image(&path, &p) {
                failures.push(format!("{name}: {e}"));
            }
        }
        let cuts = [
            (&whole, whole.len() / 2),
            (&whole, whole.len() - 2),
            (&whole, whole.len() - 1),
            (&nested, nested.len() - 40),
        ];
        for (i, (bytes, len)) in cuts.into_iter().enumerate() {
            let path = tmp.path().join(format!("cut{i}.jpg"));
            std::fs::write(&path, &bytes[..len]).unwrap();
            match load_image(&path, &p) {
                Err(e @ BrodenError::Image { .. })
                    if e.to_string().starts_with(&format!(
                        "{}: cannot decode image: the file is truncated or corrupt",
                        path.display()
                    )) => {}
                Err(e) => failures.push(format!("cut {i}: {e}")),
                Ok(_) => failures.push(format!("cut {i} at {len} of {}: decoded", bytes.len())),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }
}
