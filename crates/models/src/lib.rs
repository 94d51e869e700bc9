//! Burn implementations of torchvision CNN architectures with layer taps and checkpoint loading.
