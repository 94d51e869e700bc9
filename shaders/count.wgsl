// Upsample-binarize-count: the intersections and unions of Network Dissection, counted per batch
// without materialising upsampled maps, then folded into 64-bit totals.
//
// `mark_live`: `params.live_lanes` invocations per (image, unit) map (a power of two chosen on the
// host for the map size, so small maps share a workgroup): which of its rows and columns hold a
// value strictly above the unit's threshold, as two bit sets (bit r >> row_shift of the first word
// for row r, bit c >> col_shift of the second for column c; the shifts fold maps of more than 32
// rows or columns). A map with a live row is appended to `live_maps`. A bilinear sample never
// exceeds the largest of its four neighbours (the clamp in `sample`), so a seg pixel whose two
// source rows, or two source columns, hold no such value is outside the mask: `count_pixels` runs
// only on the live maps, and skips a seg column whose source columns are not live and a seg row
// whose source rows are not live.
// `live_dispatch`: one invocation writes `count_pixels`' workgroup counts for an indirect dispatch,
// so maps with no value above the threshold (most (image, unit) pairs at the dissection's
// quantile) cost no workgroup at all.
// `count_pixels`: one workgroup per (128 seg columns, live map), one invocation per column walking
// its rows. Each sample is the unit's h x w map taken bilinearly at the seg pixel through
// per-axis taps (two source indices and two weights per row and per column, computed on the
// host); a pixel is kept when the sample is strictly above the unit's threshold, and then adds 1
// to batch_intersect[unit][label] for every non-zero label of the pixel in every label plane of
// the image, and ORs the primary category of each such label into the (image, unit) category
// bits. Masked-pixel counts and category bits are kept per invocation, then reduced in workgroup
// memory, then added once per workgroup.
// `fold_matrix`: adds batch_intersect into the u64 totals and clears it.
// `fold_gram`: per (unit, pair of blocks), adds the products of the maps' masked pixels per block
// into the unit's Gram triangle and block sums (the significance moments), over the batch's
// images: one short loop per invocation.
// `fold_units`: per unit, adds the (image, unit) masked counts into unit pixels, both per-category
// unions and the image-level-label intersections, keeps the largest (a moment), and clears them
// with the block counts.
// u64 totals are two u32 words (low, high) added with carry, so no 64-bit atomics are needed.
//
// The bilinear blend passes every product through `opaque`, a select on a uniform that is always
// false: a compiler cannot contract the product and the following add into a fused multiply-add,
// so the sample is rounded exactly like the CPU reference `a * b + c * d` (two products, one sum).
// The sample is then clamped to the range of its four neighbours (see `sample`).
//
// Bindings (group 0):
//   0: params           uniform Params
//   1: acts             f32 NCHW activations of the batch, from element params.elem_offset
//   2: thresholds       f32 [n_units]
//   3: taps             AxisSample [sh + sw]: the taps of every seg row, then of every seg column
//   4: labels           u32 [n_planes * sh * sw], planes grouped by image
//   5: images           ImageRecord [n_images]
//   6: batch_intersect  u32 [n_units * n_labels]
//   7: batch_units      u32 [n_images * n_units * (2 + blocks)]: masked pixels, lite-rule
//                       category bits, masked pixels per block of the moments' grid
//   8: acc              u32 pairs: intersect [n_units * n_labels], unit pixels [n_units],
//                       original union [n_units * n_categories], lite union [n_units * n_categories],
//                       the masks' Gram triangles [n_units * blocks * (blocks + 1) / 2], block
//                       sums [n_units * blocks] and largest masks [n_units] (the significance
//                       moments)
//   9: probe            f32 [n_images * n_units * sh * sw] samples (upsample_probe only, for tests)
//  10: live             u32 [n_images * n_units * 2]: the map's live rows and live columns
//  11: live_maps        u32: the number of live maps of the batch (cleared before `mark_live`),
//                       then their indices image * n_units + unit, in no set order
//  12: live_args        u32 [3]: the indirect workgroup counts of `count_pixels`
//  13: label_category   u32 [n_labels]: the primary category of every label
//  14: image_labels     u32: the batch's non-zero image-level labels, grouped by image
//
// Params, AxisSample and ImageRecord mirror Rust structs of the same names (kernels/src/count/), whose
// test compares their layouts with these.

struct Params {
    elem_offset: u32,
    n_images: u32,
    n_units: u32,
    h: u32,
    w: u32,
    sh: u32,
    sw: u32,
    n_labels: u32,
    n_categories: u32,
    never: u32,
    acc_unit_pixels: u32,
    acc_cat_original: u32,
    acc_cat_lite: u32,
    row_shift: u32,
    col_shift: u32,
    live_lanes: u32,
    live_lane_shift: u32,
    col_blocks: u32,
    grid_rows: u32,
    grid_cols: u32,
}

// One seg row's or column's bilinear taps: two source indices and their weights.
struct AxisSample {
    i0: u32,
    i1: u32,
    w0: f32,
    w1: f32,
}

// What `count_pixels` and `fold_units` need of one image of the batch.
struct ImageRecord {
    // Primary categories present in any plane or as an image-level label (original rule), as bits.
    present_categories: u32,
    // Primary categories of the image's image-level labels, as bits.
    image_label_categories: u32,
    // The image's entries in `image_labels`.
    first_image_label: u32,
    n_image_labels: u32,
    // The image's planes in `labels`.
    first_plane: u32,
    n_planes: u32,
}

@group(0)
@binding(0)
var<uniform> params: Params;

@group(0)
@binding(1)
var<storage, read_write> acts: array<f32>;

@group(0)
@binding(2)
var<storage, read_write> thresholds: array<f32>;

@group(0)
@binding(3)
var<storage, read_write> taps: array<AxisSample>;

@group(0)
@binding(4)
var<storage, read_write> labels: array<u32>;

@group(0)
@binding(5)
var<storage, read_write> images: array<ImageRecord>;

@group(0)
@binding(6)
var<storage, read_write> batch_intersect: array<atomic<u32>>;

@group(0)
@binding(7)
var<storage, read_write> batch_units: array<atomic<u32>>;

@group(0)
@binding(8)
var<storage, read_write> acc: array<u32>;

@group(0)
@binding(9)
var<storage, read_write> probe: array<f32>;

@group(0)
@binding(10)
var<storage, read_write> live: array<u32>;

@group(0)
@binding(11)
var<storage, read_write> live_maps: array<atomic<u32>>;

@group(0)
@binding(12)
var<storage, read_write> live_args: array<u32>;

@group(0)
@binding(13)
var<storage, read_write> label_category: array<u32>;

@group(0)
@binding(14)
var<storage, read_write> image_labels: array<u32>;

var<workgroup> wg_count: atomic<u32>;
// The map's masked pixels per block of the moments' grid (at most 7 x 7 blocks; room for 256).
var<workgroup> wg_blocks: array<atomic<u32>, 256>;
var<workgroup> wg_bits: atomic<u32>;
var<workgroup> wg_rows: u32;
var<workgroup> wg_map: u32;
var<workgroup> ml_rows: array<atomic<u32>, 256>;
var<workgroup> ml_cols: array<atomic<u32>, 256>;

// Identity that the compiler cannot see through (params.never is always 0): blocks FMA contraction.
fn opaque(x: f32) -> f32 {
    return select(x, bitcast<f32>(params.never), params.never != 0u);
}

// The bilinear sample of four neighbours with the x weights `wx0, wx1` and y weights `wy0, wy1`.
fn blend(v00: f32, v01: f32, v10: f32, v11: f32, wx0: f32, wx1: f32, wy0: f32, wy1: f32) -> f32 {
    let top = opaque(v00 * wx0) + opaque(v01 * wx1);
    let bottom = opaque(v10 * wx0) + opaque(v11 * wx1);
    let s = opaque(top * wy0) + opaque(bottom * wy1);
    // Rounding of the weights can push s an ulp outside its neighbours (a constant map would then
    // exceed a threshold equal to its value), so clamp to their range. A NaN neighbour makes s NaN,
    // which both comparisons leave alone, so how the compiler treats NaN in hi and lo is moot.
    let a = select(v00, v01, v01 > v00);
    let b = select(v10, v11, v11 > v10);
    let hi = select(a, b, b > a);
    let c = select(v00, v01, v01 < v00);
    let d = select(v10, v11, v11 < v10);
    let lo = select(c, d, d < c);
    return select(select(s, lo, s < lo), hi, s > hi);
}

fn sample(image: u32, unit: u32, y: u32, x: u32) -> f32 {
    let ty = taps[y];
    let tx = taps[params.sh + x];
    let base = params.elem_offset + (image * params.n_units + unit) * params.h * params.w;
    return blend(
        acts[base + ty.i0 * params.w + tx.i0],
        acts[base + ty.i0 * params.w + tx.i1],
        acts[base + ty.i1 * params.w + tx.i0],
        acts[base + ty.i1 * params.w + tx.i1],
        tx.w0,
        tx.w1,
        ty.w0,
        ty.w1,
    );
}

@compute @workgroup_size(256)
fn mark_live(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    // The workgroup's maps are adjacent and each map's invocations read adjacent values
    // (coalesced); the rare value above the threshold pays one divide for its row and column.
    let lanes = params.live_lanes;
    let lane = li & (lanes - 1u);
    let local = li >> params.live_lane_shift;
    let i = ((wg.y * nwg.x + wg.x) << (8u - params.live_lane_shift)) + local;
    if lane == 0u {
        atomicStore(&ml_rows[local], 0u);
        atomicStore(&ml_cols[local], 0u);
    }
    workgroupBarrier();
    let n_maps = params.n_images * params.n_units;
    var rows = 0u;
    var cols = 0u;
    if i < n_maps {
        let plane = params.h * params.w;
        let base = params.elem_offset + i * plane;
        let t = thresholds[i % params.n_units];
        for (var j = lane; j < plane; j = j + lanes) {
            if acts[base + j] > t {
                let r = j / params.w;
                rows = rows | (1u << (r >> params.row_shift));
                cols = cols | (1u << ((j - r * params.w) >> params.col_shift));
            }
        }
    }
    if rows != 0u {
        atomicOr(&ml_rows[local], rows);
        atomicOr(&ml_cols[local], cols);
    }
    workgroupBarrier();
    if lane == 0u && i < n_maps {
        let r = atomicLoad(&ml_rows[local]);
        live[2u * i] = r;
        live[2u * i + 1u] = atomicLoad(&ml_cols[local]);
        if r != 0u {
            let at = atomicAdd(&live_maps[0], 1u);
            atomicStore(&live_maps[1u + at], i);
        }
    }
}

@compute @workgroup_size(1)
fn live_dispatch() {
    let counts = indirect_counts(atomicLoad(&live_maps[0]) * params.col_blocks);
    live_args[0] = counts.x;
    live_args[1] = counts.y;
    live_args[2] = counts.z;
}

// u32 words per (image, unit) map in `batch_units`: masked pixels, lite bits, per-block counts.
fn map_words() -> u32 {
    return 2u + params.grid_rows * params.grid_cols;
}

// Whether source indices `i0`, `i1` (rows or columns) touch a live one of `bits`.
fn touches(bits: u32, i0: u32, i1: u32, shift: u32) -> bool {
    return (((bits >> (i0 >> shift)) | (bits >> (i1 >> shift))) & 1u) != 0u;
}

@compute @workgroup_size(128)
fn count_pixels(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    // Workgroup (column block, live map), in a linear index over the indirect dispatch.
    let linear = wg.y * nwg.x + wg.x;
    let live_slot = linear / params.col_blocks;
    let block = linear - live_slot * params.col_blocks;
    atomicStore(&wg_blocks[li], 0u);
    atomicStore(&wg_blocks[li + 128u], 0u);
    if li == 0u {
        atomicStore(&wg_count, 0u);
        atomicStore(&wg_bits, 0u);
        wg_rows = 0u;
        if live_slot < atomicLoad(&live_maps[0]) {
            let map = atomicLoad(&live_maps[1u + live_slot]);
            wg_map = map;
            wg_rows = live[2u * map];
        }
    }
    // Also the barrier for the stores above; uniform, so the whole workgroup leaves together.
    let rows = workgroupUniformLoad(&wg_rows);
    if rows == 0u {
        return;
    }
    let map = wg_map;
    let image = map / params.n_units;
    let unit = map - image * params.n_units;
    let cols = live[2u * map + 1u];
    // One seg column per invocation, rows in a loop: adjacent invocations read adjacent labels,
    // the column's taps are read once, the row's taps are the same for the whole workgroup, and
    // no pixel index is divided.
    let x = block * 128u + li;
    let tx = taps[params.sh + min(x, params.sw - 1u)];
    if x < params.sw && touches(cols, tx.i0, tx.i1, params.col_shift) {
        let n_pixels = params.sh * params.sw;
        let base = params.elem_offset + (image * params.n_units + unit) * params.h * params.w;
        let t = thresholds[unit];
        let first = images[image].first_plane;
        let count = images[image].n_planes;
        var masked = 0u;
        var bits = 0u;
        var p = x;
        let block_col = x * params.grid_cols / params.sw;
        for (var y = 0u; y < params.sh; y = y + 1u) {
            let ty = taps[y];
            if !touches(rows, ty.i0, ty.i1, params.row_shift) {
                p = p + params.sw;
                continue;
            }
            let r0 = base + ty.i0 * params.w;
            let r1 = base + ty.i1 * params.w;
            let s = blend(
                acts[r0 + tx.i0],
                acts[r0 + tx.i1],
                acts[r1 + tx.i0],
                acts[r1 + tx.i1],
                tx.w0,
                tx.w1,
                ty.w0,
                ty.w1,
            );
            if s > t {
                masked = masked + 1u;
                let block = (y * params.grid_rows / params.sh) * params.grid_cols + block_col;
                atomicAdd(&wg_blocks[block], 1u);
                for (var i = 0u; i < count; i = i + 1u) {
                    let label = labels[(first + i) * n_pixels + p];
                    if label != 0u {
                        atomicAdd(&batch_intersect[unit * params.n_labels + label], 1u);
                        bits = bits | (1u << label_category[label]);
                    }
                }
            }
            p = p + params.sw;
        }
        if masked != 0u {
            atomicAdd(&wg_count, masked);
        }
        if bits != 0u {
            atomicOr(&wg_bits, bits);
        }
    }
    workgroupBarrier();
    let n_blocks = params.grid_rows * params.grid_cols;
    let slot = map_words() * (image * params.n_units + unit);
    for (var b = li; b < n_blocks; b = b + 128u) {
        let v = atomicLoad(&wg_blocks[b]);
        if v != 0u {
            atomicAdd(&batch_units[slot + 2u + b], v);
        }
    }
    if li == 0u {
        let c = atomicLoad(&wg_count);
        if c != 0u {
            atomicAdd(&batch_units[slot], c);
        }
        let bits = atomicLoad(&wg_bits);
        if bits != 0u {
            atomicOr(&batch_units[slot + 1u], bits);
        }
    }
}

fn add64(word: u32, x: u32) {
    add64_wide(word, x, 0u);
}

// Adds the 64-bit `lo + hi * 2^32` to the total at `word`.
fn add64_wide(word: u32, lo: u32, hi: u32) {
    let l = acc[word] + lo;
    acc[word] = l;
    acc[word + 1u] = acc[word + 1u] + hi + select(0u, 1u, l < lo);
}

// `x * y` as 64 bits (low word, high word), from 16-bit halves: no product overflows.
fn mul64(x: u32, y: u32) -> vec2<u32> {
    let x0 = x & 0xffffu;
    let x1 = x >> 16u;
    let y0 = y & 0xffffu;
    let y1 = y >> 16u;
    let low = x0 * y0;
    let cross1 = x0 * y1;
    let cross2 = x1 * y0;
    // Each cross product adds its low 16 bits at bit 16 and its high 16 bits to the high word.
    let lo1 = low + (cross1 << 16u);
    let c1 = select(0u, 1u, lo1 < low);
    let lo = lo1 + (cross2 << 16u);
    let c2 = select(0u, 1u, lo < lo1);
    let hi = x1 * y1 + (cross1 >> 16u) + (cross2 >> 16u) + c1 + c2;
    return vec2<u32>(lo, hi);
}

@compute @workgroup_size(256)
fn fold_matrix(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if i >= params.n_units * params.n_labels {
        return;
    }
    let v = atomicLoad(&batch_intersect[i]);
    if v != 0u {
        add64(2u * i, v);
        atomicStore(&batch_intersect[i], 0u);
    }
}

@compute @workgroup_size(64)
fn fold_units(@builtin(global_invocation_id) gid: vec3<u32>) {
    let unit = gid.x;
    if unit >= params.n_units {
        return;
    }
    let n_cat = params.n_categories;
    let n_blocks = params.grid_rows * params.grid_cols;
    let triangle = n_blocks * (n_blocks + 1u) / 2u;
    let acc_unit_max = params.acc_cat_lite + params.n_units * (n_cat + triangle + n_blocks);
    for (var image = 0u; image < params.n_images; image = image + 1u) {
        let slot = map_words() * (image * params.n_units + unit);
        let m = atomicLoad(&batch_units[slot]);
        let lite_bits = atomicLoad(&batch_units[slot + 1u]);
        atomicStore(&batch_units[slot], 0u);
        atomicStore(&batch_units[slot + 1u], 0u);
        if m == 0u {
            // No masked pixel: no block holds one either.
            continue;
        }
        for (var b = 0u; b < n_blocks; b = b + 1u) {
            atomicStore(&batch_units[slot + 2u + b], 0u);
        }
        add64(2u * (params.acc_unit_pixels + unit), m);
        let largest = 2u * (acc_unit_max + unit);
        acc[largest] = max(acc[largest], m);
        let record = images[image];
        let lite = lite_bits | record.image_label_categories;
        for (var c = 0u; c < n_cat; c = c + 1u) {
            if ((record.present_categories >> c) & 1u) != 0u {
                add64(2u * (params.acc_cat_original + unit * n_cat + c), m);
            }
            if ((lite >> c) & 1u) != 0u {
                add64(2u * (params.acc_cat_lite + unit * n_cat + c), m);
            }
        }
        for (var e = 0u; e < record.n_image_labels; e = e + 1u) {
            let label = image_labels[record.first_image_label + e];
            add64(2u * (unit * params.n_labels + label), m);
        }
    }
}

// The index of blocks `b <= b2` in the upper triangle of a Gram matrix of `n` blocks, row by row
// (Rust `triangle_index`).
fn triangle_index(b: u32, b2: u32, n: u32) -> u32 {
    return b * (2u * n - b + 1u) / 2u + (b2 - b);
}

// One invocation per (block pair, unit), pairs `b <= b2` only: over the batch's images, adds the
// product of the map's masked pixels in the two blocks into the unit's Gram triangle and, for
// `b = b2`, the block's masked pixels into the unit's block sums. The block counts stay for
// the other pairs; `fold_units` clears them.
@compute @workgroup_size(64)
fn fold_gram(@builtin(global_invocation_id) gid: vec3<u32>) {
    let n_blocks = params.grid_rows * params.grid_cols;
    let pair = gid.x;
    let unit = gid.y;
    if pair >= n_blocks * n_blocks || unit >= params.n_units {
        return;
    }
    let b = pair / n_blocks;
    let b2 = pair - b * n_blocks;
    if b2 < b {
        return;
    }
    let n_cat = params.n_categories;
    let triangle = n_blocks * (n_blocks + 1u) / 2u;
    let acc_gram = params.acc_cat_lite + params.n_units * n_cat;
    let acc_blocks = acc_gram + params.n_units * triangle;
    let at = acc_gram + unit * triangle + triangle_index(b, b2, n_blocks);
    for (var image = 0u; image < params.n_images; image = image + 1u) {
        let base = map_words() * (image * params.n_units + unit) + 2u;
        let x = atomicLoad(&batch_units[base + b]);
        if x == 0u {
            continue;
        }
        let y = atomicLoad(&batch_units[base + b2]);
        if y != 0u {
            let p = mul64(x, y);
            add64_wide(2u * at, p.x, p.y);
        }
        if b == b2 {
            add64(2u * (acc_blocks + unit * n_blocks + b), x);
        }
    }
}

// Test hook: writes every bilinear sample of the batch, so tests can compare them bit for bit
// with the CPU reference (one invocation per (pixel, unit, image) like count_pixels).
@compute @workgroup_size(256)
fn upsample_probe(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let n_pixels = params.sh * params.sw;
    let p = wg.x * 256u + li;
    if p >= n_pixels {
        return;
    }
    let unit = wg.y;
    let image = wg.z;
    let s = sample(image, unit, p / params.sw, p % params.sw);
    probe[(image * params.n_units + unit) * n_pixels + p] = s;
}
