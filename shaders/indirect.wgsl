// Workgroup counts for an indirect dispatch of `total` workgroups, shared by the shaders that size
// a dispatch on the device (the registry prepends this file to count.wgsl and select.wgsl; WGSL has
// no include): x at most 65535 (the per-dimension limit), y the rest, the same split as the host's
// `linear_groups`. Kernels recover the linear index as `wg.y * num_workgroups.x + wg.x` and skip
// indices past `total`.

fn indirect_counts(total: u32) -> vec3<u32> {
    let x = min(total, 65535u);
    return vec3<u32>(x, select(0u, (total + x - 1u) / x, x != 0u), 1u);
}
