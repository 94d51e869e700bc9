//! A network with planted detectors, for tests and the demo run: each unit
//! is built by hand to fire on one colour of the synthetic probe data, and
//! some units fire on nothing. Dissection must find exactly what was planted.
//!
//! Unit `k < 11` computes `-|x - p_k|^2` on the average-pooled RGB input
//! (values in `[0, 1]`), where `p_k` is the prototype of Broden colour `k`
//! that the generator labels pixels with, so its top activations lie on
//! pixels of that colour. The last [`DEAD_UNITS`] units are constant zero:
//! no activation exceeds their threshold.

use broden::synth::{COLOR_RGB, COLORS};
use broden::{ChannelOrder, Preprocess};
use burn::tensor::module::avg_pool2d;
use burn::tensor::ops::AvgPoolOptions;
use burn::tensor::{Device, Tensor, TensorData};
use models::{FieldMap, GeoOp};

use crate::{DissectError, LayerTap, Network};

/// Units that respond to nothing.
pub const DEAD_UNITS: usize = 2;

/// The layers: name and average-pooling window (also the stride).
const LAYERS: [(&str, usize); 2] = [("color4", 4), ("color16", 16)];

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct PlantedColors {
    /// `[n_colours, 3]` prototypes in `[0, 1]`.
    prototypes: Tensor<2>,
    device: Device,
}

impl PlantedColors {
    pub fn new(device: &Device) -> Self {
        let values: Vec<f32> = COLOR_RGB
            .iter()
            .flat_map(|rgb| rgb.map(|v| f32::from(v) / 255.0))
            .collect();
        let prototypes = Tensor::from_data(TensorData::new(values, [COLOR_RGB.len(), 3]), device);
        Self {
            prototypes,
            device: device.clone(),
        }
    }

    /// The input it expects: RGB in `[0, 1]`, 224 x 224.
    pub fn preprocess() -> Preprocess {
        Preprocess {
            height: 224,
            width: 224,
            order: ChannelOrder::Rgb,
            range: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
        }
    }

    /// The colour label name each unit was built for (`None`: a dead unit).
    pub fn planted() -> Vec<Option<&'static str>> {
        COLORS
            .iter()
            .map(|c| Some(*c))
            .chain(std::iter::repeat_n(None, DEAD_UNITS))
            .collect()
    }

    /// Names of the layers.
    pub fn layer_names() -> Vec<&'static str> {
        LAYERS.iter().map(|(n, _)| *n).collect()
    }
}

impl Network for PlantedColors {
    fn name(&self) -> String {
        "planted-colors".into()
    }

    fn layer(&self, name: &str) -> Result<LayerTap, DissectError> {
        let index = LAYERS.iter().position(|(n, _)| *n == name).ok_or_else(|| {
            DissectError::Input(format!(
                "planted-colors has no layer `{name}`; valid layers: {}",
                Self::layer_names().join(", ")
            ))
        })?;
        let pool = LAYERS[index].1;
        Ok(LayerTap {
            name: name.to_string(),
            index,
            field: Some(FieldMap::of_path(&[GeoOp::pool(pool, pool, 0, false)])),
        })
    }

    fn forward_layers(
        &self,
        input: Tensor<4>,
        layers: &[LayerTap],
    ) -> Result<Vec<Tensor<4>>, DissectError> {
        let [n, c, _, _] = input.dims();
        if c != 3 {
            return Err(DissectError::Input(format!(
                "planted-colors takes 3 input channels, got {c}"
            )));
        }
        let n_colours = COLOR_RGB.len();
        let protos: Tensor<5> = self
            .prototypes
            .clone()
            .reshape([1, n_colours as i32, 3, 1, 1]);
        layers
            .iter()
            .map(|layer| {
                let pool = LAYERS[layer.index].1;
                let x = avg_pool2d(input.clone(), AvgPoolOptions::new([pool, pool]));
                let [_, _, h, w] = x.dims();
                let x: Tensor<5> = x.unsqueeze_dim(1);
                let dist: Tensor<4> = (x - protos.clone()).square().sum_dim(2).squeeze_dim(2);
                let dead = Tensor::<4>::zeros([n, DEAD_UNITS, h, w], &self.device);
                Ok(Tensor::cat(vec![dist.neg(), dead], 1))
            })
            .collect()
    }
}
