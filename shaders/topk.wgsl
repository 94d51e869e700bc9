// Per-image maxima of every unit's map, and a running top-k of images per unit across batches.
//
// `image_max`: `params.lanes` invocations per (image, unit) plane (a power of two, at most 256,
// chosen on the host for the map size, so small maps share a workgroup instead of idling most of
// it) reduce the order-preserving keys of the map (NaN below every number, -0.0 equal to +0.0) and
// write the maximum as a float. The workgroup's planes are adjacent, so its reads are coalesced.
// `merge_top`: one invocation per unit inserts the batch's images into the unit's sorted list of
// k (key, image) slots; larger key first, equal keys by lower image index. Empty slots hold key 0
// and image 0xffffffff, which every real entry beats.
//
// key_of and value_of come from keys.wgsl, which the registry prepends.
//
// Bindings (group 0):
//   0: params  uniform Params
//   1: acts    f32 NCHW activations of one batch, from element params.elem_offset (image_max only)
//   2: maxes   f32 [n_images * n_units], image-major
//   3: slots   u32 [n_units * k * 2]: (key, image) pairs (merge_top only)

struct Params {
    elem_offset: u32,
    n_images: u32,
    n_units: u32,
    plane: u32,
    k: u32,
    first_image: u32,
    lanes: u32,
    lane_shift: u32,
}

@group(0)
@binding(0)
var<uniform> params: Params;

@group(0)
@binding(1)
var<storage, read_write> acts: array<f32>;

@group(0)
@binding(2)
var<storage, read_write> maxes: array<f32>;

@group(0)
@binding(3)
var<storage, read_write> slots: array<u32>;

var<workgroup> partial: array<u32, 256>;

@compute @workgroup_size(256)
fn image_max(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let lanes = params.lanes;
    let lane = li & (lanes - 1u);
    let plane_idx = ((wg.y * nwg.x + wg.x) << (8u - params.lane_shift)) + (li >> params.lane_shift);
    let n_planes = params.n_images * params.n_units;
    var best = 0u;
    if plane_idx < n_planes {
        let base = params.elem_offset + plane_idx * params.plane;
        for (var p = lane; p < params.plane; p = p + lanes) {
            best = max(best, key_of(acts[base + p]));
        }
    }
    partial[li] = best;
    workgroupBarrier();
    for (var stride = lanes / 2u; stride > 0u; stride = stride / 2u) {
        if lane < stride {
            partial[li] = max(partial[li], partial[li + stride]);
        }
        workgroupBarrier();
    }
    if lane == 0u && plane_idx < n_planes {
        maxes[plane_idx] = value_of(partial[li]);
    }
}

@compute @workgroup_size(64)
fn merge_top(@builtin(global_invocation_id) gid: vec3<u32>) {
    let unit = gid.x;
    if unit >= params.n_units || params.k == 0u {
        return;
    }
    let base = unit * params.k * 2u;
    let last = base + (params.k - 1u) * 2u;
    for (var b = 0u; b < params.n_images; b = b + 1u) {
        let key = key_of(maxes[b * params.n_units + unit]);
        let image = params.first_image + b;
        // Batches arrive in increasing image order, so an equal key never beats a stored one
        // unless its image index is lower; the comparison still checks it to stay order-free.
        let lk = slots[last];
        let li = slots[last + 1u];
        if !(key > lk || (key == lk && image < li)) {
            continue;
        }
        var pos = params.k - 1u;
        loop {
            if pos == 0u {
                break;
            }
            let s = base + (pos - 1u) * 2u;
            let pk = slots[s];
            let pi = slots[s + 1u];
            if key > pk || (key == pk && image < pi) {
                slots[s + 2u] = pk;
                slots[s + 3u] = pi;
                pos = pos - 1u;
            } else {
                break;
            }
        }
        slots[base + pos * 2u] = key;
        slots[base + pos * 2u + 1u] = image;
    }
}
