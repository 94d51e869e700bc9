//! Serde codecs that keep floats exact in JSON: each `f32` is written as
//! its bits, so NaN, infinities and the sign of zero survive a round trip.

/// Serde of `f32`s by their bits.
pub(crate) mod f32_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[f32], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|x| x.to_bits())
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f32>, D::Error> {
        Ok(Vec::<u32>::deserialize(d)?
            .into_iter()
            .map(f32::from_bits)
            .collect())
    }
}

/// Serde of top-k lists as `[image, bits of the max]` pairs.
pub(crate) mod top_k_bits {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Lists = Vec<Vec<(u32, f32)>>;

    pub fn serialize<S: Serializer>(v: &Lists, s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|l| l.iter().map(|&(i, m)| [i, m.to_bits()]).collect::<Vec<_>>())
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Lists, D::Error> {
        Ok(Vec::<Vec<[u32; 2]>>::deserialize(d)?
            .into_iter()
            .map(|l| l.into_iter().map(|[i, b]| (i, f32::from_bits(b))).collect())
            .collect())
    }
}
