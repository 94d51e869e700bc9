// Exact per-unit thresholds in one pass: the r-th largest activation of every unit, where r is
// known before the first batch (the rank rule of quantile.wgsl, computed on the host).
//
// Each unit keeps candidate keys (the order-preserving keys of quantile.wgsl: NaN lowest, -0.0 equal
// to +0.0) in its own slice of `cand`. `collect` (once per batch) appends every key of the batch
// that is above the unit's floor, or every key while the unit has none (in no set order: the
// select does not depend on it). `compact` (after every batch) runs on the units whose candidates
// reached 2r in the batch, which `collect` lists in `pending` (an indirect dispatch sized by
// `compact_dispatch`, so the other units cost no workgroup); for each, one workgroup
// finds the r-th largest candidate T by a radix select in workgroup memory (11, 11 and 10 bits),
// keeps the candidates above T and as many copies of T as make r, and sets the floor to T. Keys at
// or below a floor can never be the r-th largest of the unit (r kept keys are at or above it), so
// the r-th largest of the candidates is always that of everything seen. With `params.last` set,
// `compact` selects for every unit and writes T as the unit's threshold.
//
// key_of and value_of come from keys.wgsl, indirect_counts from indirect.wgsl; the registry
// prepends both.
//
// Bindings (group 0):
//   0: params      uniform Params
//   1: acts        f32 NCHW activations of one batch, starting at element params.elem_offset
//   2: cand        u32 [n_units * cap] candidate keys
//   3: state       u32 [n_units * 3]: candidate count, floor set (0/1), floor key
//   4: scratch     u32 [n_units * rank] kept keys during compaction
//   5: thresholds  f32 [n_units]
//   6: pending     u32 [1 + n_units]: how many units reached 2r in the batch (cleared before
//                  `collect`), then those units
//   7: compact_args u32 [3]: the indirect workgroup counts of `compact`

struct Params {
    elem_offset: u32,
    n_images: u32,
    n_units: u32,
    plane: u32,
    cap: u32,
    rank: u32,
    last: u32,
    group_images: u32,
}

@group(0)
@binding(0)
var<uniform> params: Params;

@group(0)
@binding(1)
var<storage, read_write> acts: array<f32>;

@group(0)
@binding(2)
var<storage, read_write> cand: array<u32>;

@group(0)
@binding(3)
var<storage, read_write> state: array<atomic<u32>>;

@group(0)
@binding(4)
var<storage, read_write> scratch: array<u32>;

@group(0)
@binding(5)
var<storage, read_write> thresholds: array<f32>;

@group(0)
@binding(6)
var<storage, read_write> pending: array<atomic<u32>>;

@group(0)
@binding(7)
var<storage, read_write> compact_args: array<u32>;

// Takes note of a reservation of `m` slots from `old` on: the one that brings the unit's count to
// 2r puts the unit on the list `compact` runs on (counts only grow within a batch, and start it
// below 2r, so each unit is listed at most once).
fn reserved(unit: u32, old: u32, m: u32) {
    let full = 2u * params.rank;
    if old < full && m >= full - old {
        let at = atomicAdd(&pending[0], 1u);
        atomicStore(&pending[1u + at], unit);
    }
}

// Keys a workgroup of `collect` stages in workgroup memory, to reserve their slots in `cand` with one
// atomic on the unit's count instead of one each (past that, one each).
const STAGE: u32 = 2048u;

var<workgroup> stage: array<u32, 2048>;
var<workgroup> stage_n: atomic<u32>;
var<workgroup> stage_base: u32;
var<workgroup> stage_len: u32;

@compute @workgroup_size(256)
fn collect(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    // One workgroup per (group of params.group_images images, unit): the unit, its floor and the
    // images are uniform; invocation li takes elements li, li + 256, ... of the group's maps laid
    // end to end, adjacent invocations reading adjacent values (coalesced), and steps its (image,
    // offset) position without dividing.
    let unit = wg.y;
    let first_image = wg.x * params.group_images;
    let images = min(params.group_images, params.n_images - first_image);
    let plane = params.plane;
    let total = images * plane;
    let cand_base = unit * params.cap;
    // The floor changes only in `compact`, a later dispatch; whether there is one is loaded
    // uniformly, since the barriers below depend on it.
    if li == 0u {
        stage_len = atomicLoad(&state[3u * unit + 1u]);
    }
    let has_floor = workgroupUniformLoad(&stage_len) != 0u;
    let floor = atomicLoad(&state[3u * unit + 2u]);
    let step_images = 256u / plane;
    let step_offset = 256u - step_images * plane;
    var image = first_image + li / plane;
    var offset = li % plane;
    if !has_floor {
        // Every key is a candidate: one reservation for the whole group, element j at slot j.
        if li == 0u {
            let old = atomicAdd(&state[3u * unit], total);
            reserved(unit, old, total);
            stage_base = old;
        }
        let base = workgroupUniformLoad(&stage_base);
        for (var j = li; j < total; j = j + 256u) {
            let slot = base + j;
            if slot < params.cap {
                let i = (image * params.n_units + unit) * plane + offset;
                cand[cand_base + slot] = key_of(acts[params.elem_offset + i]);
            }
            image = image + step_images;
            offset = offset + step_offset;
            if offset >= plane {
                offset = offset - plane;
                image = image + 1u;
            }
        }
        return;
    }
    if li == 0u {
        atomicStore(&stage_n, 0u);
    }
    workgroupBarrier();
    // Keys above the floor are staged in workgroup memory and their slots reserved at once at the
    // end; should the stage fill up, the rest reserve their slots one by one.
    for (var j = li; j < total; j = j + 256u) {
        let i = (image * params.n_units + unit) * plane + offset;
        let key = key_of(acts[params.elem_offset + i]);
        if key > floor {
            let at = atomicAdd(&stage_n, 1u);
            if at < STAGE {
                stage[at] = key;
            } else {
                let slot = atomicAdd(&state[3u * unit], 1u);
                reserved(unit, slot, 1u);
                if slot < params.cap {
                    cand[cand_base + slot] = key;
                }
            }
        }
        image = image + step_images;
        offset = offset + step_offset;
        if offset >= plane {
            offset = offset - plane;
            image = image + 1u;
        }
    }
    workgroupBarrier();
    if li == 0u {
        let n = min(atomicLoad(&stage_n), STAGE);
        stage_len = n;
        if n != 0u {
            let old = atomicAdd(&state[3u * unit], n);
            reserved(unit, old, n);
            stage_base = old;
        }
    }
    let n = workgroupUniformLoad(&stage_len);
    let base = stage_base;
    for (var k = li; k < n; k = k + 256u) {
        let slot = base + k;
        if slot < params.cap {
            cand[cand_base + slot] = stage[k];
        }
    }
}

const BINS: u32 = 2048u;

var<workgroup> hist: array<atomic<u32>, 2048>;
var<workgroup> scan: array<u32, 256>;
var<workgroup> wg_n: u32;
var<workgroup> wg_unit: u32;
var<workgroup> wg_prefix: u32;
var<workgroup> wg_remaining: u32;
var<workgroup> wg_kept: atomic<u32>;
var<workgroup> wg_above: u32;

@compute @workgroup_size(256)
fn compact(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    // After a batch, one workgroup per listed unit (an indirect dispatch); with params.last, one
    // per unit.
    let linear = wg.y * nwg.x + wg.x;
    if li == 0u {
        var n = 0u;
        var unit = linear;
        if params.last == 0u {
            unit = params.n_units;
            if linear < atomicLoad(&pending[0]) {
                unit = atomicLoad(&pending[1u + linear]);
            }
        }
        if unit < params.n_units {
            n = min(atomicLoad(&state[3u * unit]), params.cap);
            if params.last == 0u && n < 2u * params.rank {
                n = 0u;
            }
        }
        wg_unit = unit;
        wg_n = n;
        wg_prefix = 0u;
        wg_remaining = params.rank;
        atomicStore(&wg_kept, 0u);
    }
    let n = workgroupUniformLoad(&wg_n);
    if n == 0u {
        return;
    }
    let unit = wg_unit;
    let base = unit * params.cap;
    // Three rounds of radix select: digits of 11, 11 and 10 bits, most significant first.
    for (var round = 0u; round < 3u; round = round + 1u) {
        for (var b = li; b < BINS; b = b + 256u) {
            atomicStore(&hist[b], 0u);
        }
        workgroupBarrier();
        var shift = 21u;
        var mask = 0x7ffu;
        if round == 1u {
            shift = 10u;
        } else if round == 2u {
            shift = 0u;
            mask = 0x3ffu;
        }
        // Keys matching the digits chosen so far: those above `shift + digit bits`.
        let high = shift + select(11u, 10u, round == 2u);
        let prefix = wg_prefix;
        let remaining = wg_remaining;
        for (var j = li; j < n; j = j + 256u) {
            let key = cand[base + j];
            if high >= 32u || (key >> high) == (prefix >> high) {
                atomicAdd(&hist[(key >> shift) & mask], 1u);
            }
        }
        workgroupBarrier();
        // The bin holding the remaining-th largest key, found in parallel: invocation li sums its
        // chunk of bins, a scan gives every chunk the keys at or above it, and the one invocation
        // whose chunk holds the remaining-th key walks its bins from the top.
        let chunk = (mask + 1u) / 256u;
        let first = li * chunk;
        var own = 0u;
        for (var b = 0u; b < chunk; b = b + 1u) {
            own = own + atomicLoad(&hist[first + b]);
        }
        scan[li] = own;
        workgroupBarrier();
        for (var step = 1u; step < 256u; step = step << 1u) {
            var v = scan[li];
            if li + step < 256u {
                v = v + scan[li + step];
            }
            workgroupBarrier();
            scan[li] = v;
            workgroupBarrier();
        }
        // Keys in this chunk and every chunk above it, and above it alone.
        let through = scan[li];
        let above = through - own;
        if above < remaining && remaining <= through {
            var left = remaining - above;
            var bin = first + chunk;
            loop {
                bin = bin - 1u;
                let c = atomicLoad(&hist[bin]);
                if left <= c || bin == first {
                    break;
                }
                left = left - c;
            }
            wg_prefix = prefix | (bin << shift);
            wg_remaining = left;
        }
        workgroupBarrier();
    }
    let t = workgroupUniformLoad(&wg_prefix);
    if params.last != 0u {
        if li == 0u {
            thresholds[unit] = value_of(t);
        }
        return;
    }
    // Keep the candidates above t, then copies of t up to the rank.
    let out = unit * params.rank;
    for (var j = li; j < n; j = j + 256u) {
        let key = cand[base + j];
        if key > t {
            scratch[out + atomicAdd(&wg_kept, 1u)] = key;
        }
    }
    workgroupBarrier();
    if li == 0u {
        wg_above = atomicLoad(&wg_kept);
    }
    let above = workgroupUniformLoad(&wg_above);
    for (var j = above + li; j < params.rank; j = j + 256u) {
        scratch[out + j] = t;
    }
    storageBarrier();
    workgroupBarrier();
    for (var j = li; j < params.rank; j = j + 256u) {
        cand[base + j] = scratch[out + j];
    }
    if li == 0u {
        atomicStore(&state[3u * unit], params.rank);
        atomicStore(&state[3u * unit + 1u], 1u);
        atomicStore(&state[3u * unit + 2u], t);
    }
}

@compute @workgroup_size(1)
fn compact_dispatch() {
    let counts = indirect_counts(atomicLoad(&pending[0]));
    compact_args[0] = counts.x;
    compact_args[1] = counts.y;
    compact_args[2] = counts.z;
}
