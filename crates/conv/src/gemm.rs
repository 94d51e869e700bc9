//! The one place with `unsafe` in the CPU convolutions: a bounds-checked wrapper around
//! the `gemm` crate's matrix multiply, whose entry point takes raw pointers and strides.
//!
//! Every matrix here is row-major with unit column stride inside a slice. [`Mat`] checks
//! at construction that its last element lies inside the slice, and [`matmul`] checks that
//! the shapes agree and the destination slice holds the result, so the pointers handed to
//! `gemm` never address memory outside the slices they come from. The destination is a
//! `&mut` slice, so it cannot alias the operands.
//!
//! `gemm` picks its kernel at run time (AVX-512 where the CPU has it and the `x86-v4`
//! feature compiled it in, else AVX2/FMA, else scalar), so one binary runs on any x86-64.
#![allow(unsafe_code)]

/// A row-major `rows x cols` matrix inside `data`, rows `row_stride` apart.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

/// The number of elements a `rows x cols` matrix with `row_stride` spans; `None` when that
/// overflows, or when the stride does not fit the `isize` that gemm takes.
fn span(rows: usize, cols: usize, row_stride: usize) -> Option<usize> {
    if isize::try_from(row_stride).is_err() {
        return None;
    }
    if rows == 0 || cols == 0 {
        return Some(0);
    }
    (rows - 1).checked_mul(row_stride)?.checked_add(cols)
}

impl<'a> Mat<'a> {
    /// Panics when the matrix would reach past the end of `data` or `cols > row_stride`.
    pub(crate) fn new(data: &'a [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        assert!(
            cols <= row_stride || rows <= 1,
            "columns overlap the next row"
        );
        assert!(
            span(rows, cols, row_stride).is_some_and(|n| n <= data.len()),
            "a {rows}x{cols} matrix with row stride {row_stride} does not fit {} values",
            data.len()
        );
        Self {
            data,
            rows,
            cols,
            row_stride,
        }
    }
}

/// `dst = lhs · rhs` (overwriting), single-threaded: the callers parallelise over blocks.
/// `dst` is `lhs.rows x rhs.cols`, rows `dst_stride` apart.
pub(crate) fn matmul(dst: &mut [f32], dst_stride: usize, lhs: Mat<'_>, rhs: Mat<'_>) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(rhs.rows, k, "inner dimensions differ");
    assert!(
        n <= dst_stride || m <= 1,
        "destination columns overlap the next row"
    );
    assert!(
        span(m, n, dst_stride).is_some_and(|len| len <= dst.len()),
        "a {m}x{n} result does not fit the destination"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for row in 0..m {
            dst[row * dst_stride..row * dst_stride + n].fill(0.0);
        }
        return;
    }
    // SAFETY: the asserts above and in `Mat::new` keep every element addressed
    // (`row * stride + col` for `row < rows`, `col < cols`, computed without overflow)
    // inside its slice, and every stride fits in `isize` (`span`); `dst` is a unique
    // borrow, so it overlaps neither operand; with `read_dst == false` gemm never reads
    // `dst`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_stride as isize,
            false,
            lhs.data.as_ptr(),
            1,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            1,
            rhs.row_stride as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matmul_matches_a_plain_loop_with_strides() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * 9).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * 4).map(|i| (i as f32 * 0.71).cos()).collect();
        let mut c = vec![f32::NAN; m * 6];
        matmul(&mut c, 6, Mat::new(&a, m, k, 9), Mat::new(&b, k, n, 4));
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|p| f64::from(a[i * 9 + p]) * f64::from(b[p * 4 + j]))
                    .sum();
                assert!((f64::from(c[i * 6 + j]) - want).abs() < 1e-5, "{i},{j}");
            }
            // Columns past n are untouched.
            assert!(c[i * 6 + n..i * 6 + 6].iter().all(|v| v.is_nan()));
        }
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_matrix_past_its_slice_is_refused() {
        let a = [0.0f32; 10];
        let _ = Mat::new(&a, 3, 4, 4);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_stride_that_overflows_is_refused() {
        // (3 - 1) * 2^63 wraps to 0 in unchecked arithmetic.
        let a = [0.0f32; 4];
        let _ = Mat::new(&a, 3, 1, 1 << 63);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_stride_past_isize_is_refused_even_for_one_row() {
        let a = [0.0f32; 4];
        let _ = Mat::new(&a, 1, 1, usize::MAX);
    }
}
