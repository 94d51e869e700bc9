//! WGSL compute kernels of the dissection (quantiles, top-k, upsample-binarize-count) and their CPU references.
