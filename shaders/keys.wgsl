// Order-preserving u32 keys of f32 values, shared by the shaders that select by rank (the
// registry prepends this file to quantile.wgsl, topk.wgsl and select.wgsl; WGSL has no include).
// The unsigned order of keys is the float order, with every NaN below every number (key 0) and
// -0.0 equal to +0.0. The NaN test is on the bits because `v != v` may be folded away.

fn key_of(v: f32) -> u32 {
    var b = bitcast<u32>(v);
    if (b & 0x7fffffffu) > 0x7f800000u {
        return 0u;
    }
    if b == 0x80000000u {
        b = 0u;
    }
    if (b & 0x80000000u) != 0u {
        return ~b;
    }
    return b | 0x80000000u;
}

// The canonical value of a key: +0.0 for a zero, the quiet NaN 0x7fc00000 for key 0.
fn value_of(k: u32) -> f32 {
    if k == 0u {
        return bitcast<f32>(0x7fc00000u);
    }
    if (k & 0x80000000u) != 0u {
        return bitcast<f32>(k & 0x7fffffffu);
    }
    return bitcast<f32>(~k);
}
