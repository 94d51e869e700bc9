// Exact per-unit thresholds in one pass: the r-th largest activation of every unit, where r is
// known before the first batch (the rank rule of quantile.wgsl, computed on the host).
//
// Each unit keeps candidate keys (the order-preserving keys of quantile.wgsl: NaN lowest, -0.0 equal
// to +0.0) in its own slice of `cand`. `collect` (once per batch) appends every key of the batch
// that is above the unit's floor, or every key while the unit has none. `compact` (after every
// batch) leaves units with fewer than 2r candidates alone; for the others, one workgroup per unit
// finds the r-th largest candidate T by a radix select in workgroup memory (11, 11 and 10 bits),
// keeps the candidates above T and as many copies of T as make r, and sets the floor to T. Keys at
// or below a floor can never be the r-th largest of the unit (r kept keys are at or above it), so
// the r-th largest of the candidates is always that of everything seen. With `params.last` set,
// `compact` selects for every unit and writes T as the unit's threshold.
//
// key_of and value_of come from keys.wgsl, which the registry prepends.
//
// Bindings (group 0):
//   0: params      uniform Params
//   1: acts        f32 NCHW activations of one batch, starting at element params.elem_offset
//   2: cand        u32 [n_units * cap] candidate keys
//   3: state       u32 [n_units * 3]: candidate count, floor set (0/1), floor key
//   4: scratch     u32 [n_units * rank] kept keys during compaction
//   5: thresholds  f32 [n_units]

struct Params {
    elem_offset: u32,
    n_elems: u32,
    n_units: u32,
    plane: u32,
    cap: u32,
    rank: u32,
    last: u32,
    _pad: u32,
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

@compute @workgroup_size(256)
fn collect(
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) li: u32,
) {
    let i = (wg.y * nwg.x + wg.x) * 256u + li;
    if i >= params.n_elems {
        return;
    }
    let unit = (i / params.plane) % params.n_units;
    let key = key_of(acts[params.elem_offset + i]);
    if atomicLoad(&state[3u * unit + 1u]) != 0u && key <= atomicLoad(&state[3u * unit + 2u]) {
        return;
    }
    let slot = atomicAdd(&state[3u * unit], 1u);
    if slot < params.cap {
        cand[unit * params.cap + slot] = key;
    }
}

const BINS: u32 = 2048u;

var<workgroup> hist: array<atomic<u32>, 2048>;
var<workgroup> wg_n: u32;
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
    let unit = wg.y * nwg.x + wg.x;
    if li == 0u {
        var n = 0u;
        if unit < params.n_units {
            n = min(atomicLoad(&state[3u * unit]), params.cap);
            if params.last == 0u && n < 2u * params.rank {
                n = 0u;
            }
        }
        wg_n = n;
        wg_prefix = 0u;
        wg_remaining = params.rank;
        atomicStore(&wg_kept, 0u);
    }
    let n = workgroupUniformLoad(&wg_n);
    if n == 0u {
        return;
    }
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
        for (var j = li; j < n; j = j + 256u) {
            let key = cand[base + j];
            if high >= 32u || (key >> high) == (prefix >> high) {
                atomicAdd(&hist[(key >> shift) & mask], 1u);
            }
        }
        workgroupBarrier();
        if li == 0u {
            var remaining = wg_remaining;
            var chosen = 0u;
            var bin = mask + 1u;
            loop {
                if bin == 0u {
                    break;
                }
                bin = bin - 1u;
                let c = atomicLoad(&hist[bin]);
                if remaining <= c {
                    chosen = bin;
                    break;
                }
                remaining = remaining - c;
            }
            wg_prefix = prefix | (chosen << shift);
            wg_remaining = remaining;
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
