//! End-to-end tests of the whole pipeline: generated Broden data, a network
//! on the wgpu device (lavapipe in CI), the engine's passes and scores,
//! checked against a plain CPU implementation of the same definitions and
//! against detectors planted by hand.

#[cfg(test)]
mod formulas;
#[cfg(test)]
mod naive;
#[cfg(test)]
mod pipeline;
