//! Activations recorded by any framework, dissected as a [`Network`]:
//! `<layer>.npy` files in a folder, one row per selected image in
//! `index.csv` order (row `i` is the dataset's image `i` after `--split`
//! and `--max-images`).
//!
//! A layer is `N x C x H x W`, or, for a transformer, `N x T x C` with a
//! token grid `gh x gw` and `skip` leading tokens (class and register
//! tokens) dropped: token `skip + y * gw + x` becomes cell `(y, x)`.
//! Elements are float32 or float16, C order, little-endian.
//!
//! Rows are read in place, batch by batch, with one positioned read per
//! layer and batch: the file is never loaded whole, as with a memory map,
//! but without the unsafe code a map needs. Arrays already in memory (the
//! Python package's numpy arrays) are read where they are, without a copy
//! ([`Recorded::from_arrays`]).
//!
//! The receptive fields of recorded activations are unknown, so they are
//! upsampled with half-pixel centres ([`crate::Alignment::HalfPixel`]).

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::Mutex;

use burn::tensor::{Device, Tensor, TensorData};
use rayon::prelude::*;

use crate::engine::{LayerTap, Network};
use crate::error::DissectError;
use crate::npy::{self, DType};

/// The input spec of a run on recorded activations: no image is decoded,
/// so it only sets the size the report draws maps at, the dataset's first
/// image's.
pub fn input_spec(dataset: &broden::Dataset) -> broden::Preprocess {
    let (h, w) = dataset.images.first().map_or((224, 224), |r| (r.ih, r.iw));
    broden::Preprocess {
        height: h,
        width: w,
        ..broden::Preprocess::torchvision(h)
    }
}

/// How transformer layers (`N x T x C`) become maps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenLayout {
    /// `[gh, gw]`; required for 3-D arrays, refused for 4-D ones.
    pub grid: Option<[usize; 2]>,
    /// Leading tokens dropped (class and register tokens).
    pub skip: usize,
}

/// A token grid whose token count fits in a `usize`
/// ([`TokenLayout::checked`]).
#[derive(Debug, Clone, Copy)]
struct TokenGrid {
    grid: [usize; 2],
    skip: usize,
    /// Tokens per image: `skip + gh * gw`.
    tokens: usize,
}

impl TokenLayout {
    /// The grid with its tokens per image, `None` without one; a usage
    /// error when `skip + gh * gw` overflows, as the options' fault.
    fn checked(&self) -> Result<Option<TokenGrid>, DissectError> {
        let Some([gh, gw]) = self.grid else {
            return Ok(None);
        };
        let tokens = gh.checked_mul(gw).and_then(|n| n.checked_add(self.skip));
        let tokens = tokens.ok_or_else(|| {
            DissectError::Usage(format!(
                "--token-grid {gh}x{gw} with --skip-tokens {} is more tokens than can be counted",
                self.skip
            ))
        })?;
        Ok(Some(TokenGrid {
            grid: [gh, gw],
            skip: self.skip,
            tokens,
        }))
    }
}

/// An array in memory, for [`Recorded::from_arrays`]: its elements as
/// little-endian bytes, C order.
#[derive(Debug, Clone, Copy)]
pub struct RecordedArray<'a> {
    pub name: &'a str,
    pub shape: &'a [usize],
    pub dtype: DType,
    pub data: &'a [u8],
}

/// Where a layer's rows are.
#[derive(Debug)]
enum Rows<'a> {
    File {
        file: Mutex<File>,
        data_offset: usize,
    },
    Memory(&'a [u8]),
}

/// One recorded layer.
#[derive(Debug)]
struct RecordedLayer<'a> {
    name: String,
    /// The file, or the array's name, for messages.
    origin: String,
    rows: Rows<'a>,
    dtype: DType,
    /// Elements per row (image).
    row_elements: usize,
    /// `[c, h, w]` of each image's maps.
    maps: [usize; 3],
    /// For `N x T x C` arrays: tokens per row and those skipped.
    tokens: Option<(usize, usize)>,
    /// Receptive fields, when the caller knows the network that recorded
    /// them ([`Recorded::with_field`]).
    field: Option<models::FieldMap>,
}

impl RecordedLayer<'_> {
    /// Rows `first..first + n` as `n x c x h x w` f32 values.
    fn rows(&self, first: usize, n: usize) -> Result<Vec<f32>, DissectError> {
        let row_bytes = self.row_elements * self.dtype.size();
        let read;
        let bytes: &[u8] = match &self.rows {
            Rows::Memory(data) => data
                .get(first * row_bytes..(first + n) * row_bytes)
                .ok_or_else(|| {
                    DissectError::Internal(format!("{}: rows out of range", self.origin))
                })?,
            Rows::File { file, data_offset } => {
                let mut buf = vec![0u8; n * row_bytes];
                let mut file = file.lock().map_err(|_| {
                    DissectError::Internal(format!("{}: a reader panicked", self.origin))
                })?;
                let at = (data_offset + first * row_bytes) as u64;
                file.seek(SeekFrom::Start(at))
                    .and_then(|_| file.read_exact(&mut buf))
                    .map_err(|e| {
                        DissectError::Input(format!(
                            "{}: reading rows {first}..{}: {e}",
                            self.origin,
                            first + n
                        ))
                    })?;
                read = buf;
                &read
            }
        };
        let [c, h, w] = self.maps;
        let plane = c * h * w;
        let dtype = self.dtype;
        let mut out = vec![0f32; n * plane];
        out.par_chunks_mut(plane)
            .zip(bytes.par_chunks(row_bytes))
            .for_each(|(dst, src)| match self.tokens {
                None => match dtype {
                    DType::F32 => {
                        for (d, b) in dst.iter_mut().zip(src.chunks_exact(4)) {
                            *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        }
                    }
                    DType::F16 => {
                        for (i, d) in dst.iter_mut().enumerate() {
                            *d = npy::value(src, dtype, i);
                        }
                    }
                },
                Some((_, skip)) => {
                    // Token-major rows to channel-major maps.
                    for t in 0..h * w {
                        for ch in 0..c {
                            dst[ch * h * w + t] = npy::value(src, dtype, (skip + t) * c + ch);
                        }
                    }
                }
            });
        Ok(out)
    }
}

/// Recorded activations: a folder of `.npy` files, or arrays in memory.
#[derive(Debug)]
pub struct Recorded<'a> {
    /// The folder, or a description of where the arrays came from.
    origin: String,
    layers: Vec<RecordedLayer<'a>>,
    device: Device,
}

impl<'a> Recorded<'a> {
    /// Arrays already in memory, checked as [`Recorded::open`] checks files.
    pub fn from_arrays(
        origin: &str,
        arrays: &[RecordedArray<'a>],
        rows: usize,
        tokens: TokenLayout,
    ) -> Result<Self, DissectError> {
        let grid = tokens.checked()?;
        let layers = arrays
            .iter()
            .map(|a| {
                let what = format!("array `{}`", a.name);
                let input = |m: String| DissectError::Input(format!("{what}: {m}"));
                let found = layout(a.shape, a.dtype, rows, grid).map_err(&input)?;
                let bytes =
                    npy::checked_product(a.shape).and_then(|n| n.checked_mul(a.dtype.size()));
                if bytes != Some(a.data.len()) {
                    return Err(input(format!(
                        "{} bytes for shape {:?}",
                        a.data.len(),
                        a.shape
                    )));
                }
                Ok(RecordedLayer {
                    name: a.name.to_string(),
                    origin: what,
                    rows: Rows::Memory(a.data),
                    dtype: a.dtype,
                    row_elements: found.row_elements,
                    maps: found.maps,
                    tokens: found.tokens,
                    field: None,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            origin: origin.to_string(),
            layers,
            device: Device::default(),
        })
    }

    /// Opens `<dir>/<layer>.npy` for each of `layers`, checking each
    /// header against `rows` (the selected images) and `tokens`. The maps
    /// are made on Burn's default device until [`Recorded::on`] says
    /// otherwise: the files can be checked before an engine exists.
    pub fn open(
        dir: &Path,
        layers: &[String],
        rows: usize,
        tokens: TokenLayout,
    ) -> Result<Recorded<'static>, DissectError> {
        if !dir.is_dir() {
            return Err(DissectError::Input(format!(
                "{}: activations folder not found",
                dir.display()
            )));
        }
        let grid = tokens.checked()?;
        let opened = layers
            .iter()
            .map(|name| open_layer(dir, name, rows, grid))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Recorded {
            origin: dir.display().to_string(),
            layers: opened,
            device: Device::default(),
        })
    }

    /// Gives `layer` the receptive fields of the network that recorded it,
    /// so receptive-field alignment applies to it too.
    pub fn with_field(
        mut self,
        layer: &str,
        field: models::FieldMap,
    ) -> Result<Self, DissectError> {
        let origin = self.origin.clone();
        let l = (self.layers.iter_mut())
            .find(|l| l.name == layer)
            .ok_or_else(|| DissectError::Usage(format!("{origin}: no recorded layer `{layer}`")))?;
        l.field = Some(field);
        Ok(self)
    }

    /// The same files, read onto `device` (the engine's).
    pub fn on(mut self, device: &Device) -> Self {
        self.device = device.clone();
        self
    }

    /// The `.npy` files of `dir` as layer names, sorted.
    fn available(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".npy").map(str::to_string)
            })
            .collect();
        names.sort();
        names
    }
}

/// Opens `<dir>/<name>.npy` and checks its header against `rows` and
/// `grid`.
fn open_layer(
    dir: &Path,
    name: &str,
    rows: usize,
    grid: Option<TokenGrid>,
) -> Result<RecordedLayer<'static>, DissectError> {
    let path = dir.join(format!("{name}.npy"));
    let input = |m: String| DissectError::Input(format!("{}: {m}", path.display()));
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let have = Recorded::available(dir);
            return Err(input(format!(
                "no such file: layer `{name}` was not recorded (the folder has {})",
                if have.is_empty() {
                    "no .npy files".to_string()
                } else {
                    have.join(", ")
                }
            )));
        }
        Err(e) => return Err(input(e.to_string())),
    };
    let len = file.metadata().map_err(|e| input(e.to_string()))?.len();
    let mut head = Vec::with_capacity(npy::HEAD_BYTES);
    (&mut file)
        .take(npy::HEAD_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(|e| input(e.to_string()))?;
    let header = npy::parse_header(&path, &head, len).map_err(DissectError::Input)?;
    let found = layout(&header.shape, header.dtype, rows, grid).map_err(input)?;
    Ok(RecordedLayer {
        name: name.to_string(),
        origin: path.display().to_string(),
        rows: Rows::File {
            file: Mutex::new(file),
            data_offset: header.data_offset,
        },
        dtype: header.dtype,
        row_elements: found.row_elements,
        maps: found.maps,
        tokens: found.tokens,
        field: None,
    })
}

/// How a layer's rows become maps.
#[derive(Debug)]
struct Layout {
    /// `[c, h, w]` of each image's maps.
    maps: [usize; 3],
    /// For `N x T x C` arrays: tokens per row and those skipped.
    tokens: Option<(usize, usize)>,
    /// Elements per row (image), whose bytes are known to fit in a `usize`.
    row_elements: usize,
}

/// A layer's [`Layout`] from its array's shape and element type, checked
/// against the selected images (`rows`) and the token `grid`.
fn layout(
    shape: &[usize],
    dtype: DType,
    rows: usize,
    grid: Option<TokenGrid>,
) -> Result<Layout, String> {
    let (maps, tokens) = match (shape.len(), grid) {
        (4, None) => ([shape[1], shape[2], shape[3]], None),
        (4, Some(_)) => {
            return Err(format!(
                "shape {shape:?} is N x C x H x W already: drop --token-grid"
            ));
        }
        (3, Some(g)) => {
            let (t, [gh, gw]) = (shape[1], g.grid);
            if t != g.tokens {
                return Err(format!(
                    "shape {shape:?} has {t} tokens per image; --token-grid {gh}x{gw} with --skip-tokens {} needs {}",
                    g.skip, g.tokens
                ));
            }
            ([shape[2], gh, gw], Some((t, g.skip)))
        }
        (3, None) => {
            return Err(format!(
                "shape {shape:?} is N x T x C (tokens): give --token-grid HxW (and --skip-tokens for class tokens)"
            ));
        }
        (d, _) => {
            return Err(format!(
                "shape {shape:?} has {d} dimensions: expected N x C x H x W, or N x T x C with --token-grid"
            ));
        }
    };
    if shape[0] != rows {
        return Err(format!(
            "{} rows, but {rows} images are selected: record one row per image of index.csv, in its order (after --split and --max-images)",
            shape[0]
        ));
    }
    if maps.contains(&0) {
        return Err(format!("shape {shape:?} has an empty dimension"));
    }
    // Checked even where the whole array's size was (an `.npy` header's),
    // since with no rows that size is 0 whatever a row's.
    let row_elements = npy::checked_product(&shape[1..])
        .filter(|n| n.checked_mul(dtype.size()).is_some())
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    Ok(Layout {
        maps,
        tokens,
        row_elements,
    })
}

impl Network for Recorded<'_> {
    fn name(&self) -> String {
        format!("recorded activations ({})", self.origin)
    }

    fn layer(&self, name: &str) -> Result<LayerTap, DissectError> {
        let index = self
            .layers
            .iter()
            .position(|l| l.name == name)
            .ok_or_else(|| {
                DissectError::Input(format!(
                    "{}: no recorded layer `{name}` (opened: {})",
                    self.origin,
                    self.layers
                        .iter()
                        .map(|l| l.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
        Ok(LayerTap {
            name: name.to_string(),
            index,
            field: self.layers[index].field,
        })
    }

    fn reads_pixels(&self) -> bool {
        false
    }

    fn forward_layers(
        &self,
        _input: Tensor<4>,
        _layers: &[LayerTap],
    ) -> Result<Vec<Tensor<4>>, DissectError> {
        Err(DissectError::Internal(
            "recorded activations are looked up by image, not computed from pixels".into(),
        ))
    }

    fn forward_images(
        &self,
        images: &[usize],
        _input: Option<Tensor<4>>,
        layers: &[LayerTap],
    ) -> Result<Vec<Tensor<4>>, DissectError> {
        let Some(&first) = images.first() else {
            return Err(DissectError::Internal("an empty batch".into()));
        };
        if images.iter().enumerate().any(|(i, &im)| im != first + i) {
            return Err(DissectError::Internal(
                "recorded activations are read for consecutive images".into(),
            ));
        }
        layers
            .iter()
            .map(|l| {
                let layer = &self.layers[l.index];
                let values = layer.rows(first, images.len())?;
                let [c, h, w] = layer.maps;
                let data = TensorData::new(values, [images.len(), c, h, w]);
                Ok(Tensor::<4>::from_data(data, &self.device))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    /// The maps `forward_images` makes of rows `first..first + n`.
    fn maps(rec: &Recorded<'_>, first: usize, n: usize) -> Vec<f32> {
        let layer = rec.layer(&rec.layers[0].name).unwrap();
        let images: Vec<usize> = (first..first + n).collect();
        let acts = rec.forward_images(&images, None, &[layer]).unwrap();
        acts[0].clone().into_data().try_to_vec::<f32>().unwrap()
    }

    #[test]
    fn arrays_in_memory_and_files_give_the_same_maps_and_tokens_move_to_channels() {
        // 3 images x 2 channels x 2 x 3.
        let values: Vec<f32> = (0..36).map(|i| i as f32 * 0.25 - 4.0).collect();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape = [3, 2, 2, 3];
        let array = RecordedArray {
            name: "conv",
            shape: &shape,
            dtype: DType::F32,
            data: &bytes,
        };
        let rec = Recorded::from_arrays("test", &[array], 3, TokenLayout::default())
            .unwrap()
            .on(&models::gpu::cpu_device());
        assert_eq!(maps(&rec, 1, 2), values[12..].to_vec());
        // Recorded layers have no receptive fields unless given them.
        assert_eq!(rec.layer("conv").unwrap().field, None);
        let field = models::FieldMap {
            offset: [1, 1],
            size: [3, 3],
            step: [2, 2],
        };
        let rec = rec.with_field("conv", field).unwrap();
        assert_eq!(rec.layer("conv").unwrap().field, Some(field));
        assert!(rec.with_field("fc", field).is_err());

        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("conv.npy"),
            npy::encode_f32(&shape, &values),
        )
        .unwrap();
        let file = Recorded::open(tmp.path(), &["conv".into()], 3, TokenLayout::default())
            .unwrap()
            .on(&models::gpu::cpu_device());
        assert_eq!(maps(&file, 0, 3), values);

        // Tokens: 1 skipped + a 2x3 grid of 2 channels, token-major.
        let tokens: Vec<f32> = (0..3)
            .flat_map(|i| {
                let row = &values[i * 12..(i + 1) * 12];
                let mut t = vec![99.0, 99.0];
                for cell in 0..6 {
                    t.extend([row[cell], row[6 + cell]]);
                }
                t
            })
            .collect();
        let bytes: Vec<u8> = tokens.iter().flat_map(|v| v.to_le_bytes()).collect();
        let token_shape = [3, 7, 2];
        let array = RecordedArray {
            name: "vit",
            shape: &token_shape,
            dtype: DType::F32,
            data: &bytes,
        };
        let grid = TokenLayout {
            grid: Some([2, 3]),
            skip: 1,
        };
        let rec = Recorded::from_arrays("test", &[array], 3, grid)
            .unwrap()
            .on(&models::gpu::cpu_device());
        assert_eq!(maps(&rec, 0, 3), values);
        let short = RecordedArray {
            data: &bytes[..8],
            ..array
        };
        let e = Recorded::from_arrays("test", &[short], 3, grid).unwrap_err();
        assert!(e.to_string().contains("array `vit`"), "{e}");
    }

    #[test]
    fn sizes_that_overflow_are_refused_not_wrapped() {
        const BIG: usize = 1 << 62;
        // (shape, rows, token grid, skip, error kind, a word of the message)
        type Case<'a> = (
            &'a [usize],
            usize,
            Option<[usize; 2]>,
            usize,
            ErrorKind,
            &'a str,
        );
        let cases: [Case<'_>; 5] = [
            (
                &[40, BIG, BIG, 7],
                40,
                None,
                0,
                ErrorKind::Input,
                "too large",
            ),
            (
                &[0, usize::MAX, 2, 1],
                0,
                None,
                0,
                ErrorKind::Input,
                "too large",
            ),
            (
                &[0, 1, usize::MAX],
                0,
                Some([1, 1]),
                0,
                ErrorKind::Input,
                "too large",
            ),
            // 2^32 x 2^32 tokens wrap to 0, and with one skipped token to
            // the 1 token per image the array has.
            (
                &[1, 1, 4],
                1,
                Some([1 << 32, 1 << 32]),
                1,
                ErrorKind::Usage,
                "--token-grid 4294967296x4294967296",
            ),
            (
                &[1, 1, 4],
                1,
                Some([1, 1]),
                usize::MAX,
                ErrorKind::Usage,
                "--skip-tokens",
            ),
        ];
        let mut failures = Vec::new();
        for (shape, rows, grid, skip, kind, word) in cases {
            let array = RecordedArray {
                name: "big",
                shape,
                dtype: DType::F32,
                data: &[0; 16],
            };
            let tokens = TokenLayout { grid, skip };
            match Recorded::from_arrays("test", &[array], rows, tokens) {
                Err(e) if e.kind() == kind && e.to_string().contains(word) => {}
                Err(e) => failures.push(format!("{shape:?} {grid:?}+{skip}: {e}")),
                Ok(_) => failures.push(format!("{shape:?} {grid:?}+{skip}: accepted")),
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    /// The rows of the one layer `<dir>/a.npy` opened as `rows` images, or
    /// the error opening or reading it gives.
    fn read_back(dir: &Path, rows: usize) -> Result<Vec<f32>, DissectError> {
        let rec = Recorded::open(dir, &["a".into()], rows, TokenLayout::default())?;
        rec.layers[0].rows(0, rows)
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            cases: 200,
            failure_persistence: None,
            ..Default::default()
        })]

        /// A mutated `.npy` file is refused as bad input or read as the
        /// original: never a panic, never other values. Only the header's
        /// bytes are mutated, since any data bytes are valid values; the
        /// length changes anywhere.
        #[test]
        fn mutated_npy_files_are_refused_or_read_as_the_original(
            at in 0usize..1024,
            byte in proptest::num::u8::ANY,
            cut in 0usize..1024,
            extra in proptest::collection::vec(proptest::num::u8::ANY, 1..80),
        ) {
            let values: Vec<f32> = (0..24).map(|i| i as f32 - 7.5).collect();
            let original = npy::encode_f32(&[2, 3, 2, 2], &values);
            let data_offset = original.len() - 4 * values.len();
            let mut mutated = original.clone();
            mutated[at % data_offset] = byte;
            let mut extended = original.clone();
            extended.extend_from_slice(&extra);
            let tmp = tempfile::tempdir().unwrap();
            for bytes in [mutated, original[..cut % original.len()].to_vec(), extended] {
                std::fs::write(tmp.path().join("a.npy"), &bytes).unwrap();
                match read_back(tmp.path(), 2) {
                    Ok(back) => proptest::prop_assert_eq!(&back, &values),
                    Err(e) => proptest::prop_assert_eq!(e.kind(), ErrorKind::Input, "{}", e),
                }
            }
        }
    }
}
