// Exact per-unit quantile thresholds by streaming radix select over order-preserving float keys.
//
// A float maps to a u32 key whose unsigned order is the float order, with every NaN below every
// number (key 0) and -0.0 equal to +0.0. The key is selected in three rounds of 11, 11 and 10 bits:
// each round histograms the next digit of the keys that share the digits chosen so far (entry
// `histogram`, once per batch), then `select_bin` walks each unit's bins from the top to the bin
// that holds the wanted rank and narrows prefix and rank. After the third round the prefix is the
// exact key of the threshold, written to `thresholds` as a float.
//
// key_of and value_of come from keys.wgsl, which the registry prepends.
//
// Bindings (group 0):
//   0: params      uniform Params
//   1: acts        f32 NCHW activations of one batch, starting at element params.elem_offset
//   2: hist        u32 [n_units * 2048] digit histogram of the current round
//   3: state       u32 [n_units * 2]: key prefix chosen so far, rank still to find (1 = largest)
//   4: thresholds  f32 [n_units] (written in the last round)

struct Params {
    elem_offset: u32,
    n_elems: u32,
    n_units: u32,
    plane: u32,
    round: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0)
@binding(0)
var<uniform> params: Params;

@group(0)
@binding(1)
var<storage, read_write> acts: array<f32>;

@group(0)
@binding(2)
var<storage, read_write> hist: array<atomic<u32>>;

@group(0)
@binding(3)
var<storage, read_write> state: array<u32>;

@group(0)
@binding(4)
var<storage, read_write> thresholds: array<f32>;

const BINS: u32 = 2048u;

@compute @workgroup_size(256)
fn histogram(
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
    let prefix = state[2u * unit];
    var digit: u32;
    if params.round == 0u {
        digit = key >> 21u;
    } else if params.round == 1u {
        if (key >> 21u) != (prefix >> 21u) {
            return;
        }
        digit = (key >> 10u) & 0x7ffu;
    } else {
        if (key >> 10u) != (prefix >> 10u) {
            return;
        }
        digit = key & 0x3ffu;
    }
    atomicAdd(&hist[unit * BINS + digit], 1u);
}

@compute @workgroup_size(64)
fn select_bin(@builtin(global_invocation_id) gid: vec3<u32>) {
    let unit = gid.x;
    if unit >= params.n_units {
        return;
    }
    var remaining = state[2u * unit + 1u];
    var n_bins = BINS;
    var shift = 21u;
    if params.round == 1u {
        shift = 10u;
    } else if params.round == 2u {
        n_bins = 1024u;
        shift = 0u;
    }
    var chosen = 0u;
    var bin = n_bins;
    loop {
        if bin == 0u {
            break;
        }
        bin = bin - 1u;
        let c = atomicLoad(&hist[unit * BINS + bin]);
        if remaining <= c {
            chosen = bin;
            break;
        }
        remaining = remaining - c;
    }
    let prefix = state[2u * unit] | (chosen << shift);
    state[2u * unit] = prefix;
    state[2u * unit + 1u] = remaining;
    if params.round == 2u {
        thresholds[unit] = value_of(prefix);
    }
}
