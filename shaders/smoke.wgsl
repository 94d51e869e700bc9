// Smoke test: doubles every value of an array in place. CI runs it to prove the GPU path works.
//
// Bindings (group 0):
//   0: data, f32 values, doubled in place
// One invocation per value; invocations past the end do nothing.

@group(0)
@binding(0)
var<storage, read_write> data: array<f32>;

@compute @workgroup_size(64)
fn double(@builtin(global_invocation_id) gid: vec3<u32>) {
    if gid.x < arrayLength(&data) {
        data[gid.x] = data[gid.x] * 2.0;
    }
}
