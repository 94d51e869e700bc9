//! Batches of decoded images and label maps, produced ahead of the consumer.

use crate::Preprocess;

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
