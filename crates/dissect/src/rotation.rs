//! Random rotations of a layer's activation space and their fractional powers.
//!
//! Network Dissection (Bau et al. 2017, sec. 3.2) asks whether interpretability
//! is a property of a layer's *basis*: it rotates the `n` unit activations by a
//! random orthogonal matrix `Q` and dissects again. Raising `Q` to a power
//! `a` in `[0, 1]` moves continuously from the original basis (`Q^0 = I`) to
//! the fully rotated one (`Q^1 = Q`).
//!
//! # Drawing `Q`
//!
//! `Q` is Haar-distributed (uniform) on SO(n), the rotations (orthogonal, with
//! determinant +1). SO(n) rather than O(n) because a matrix with determinant
//! -1 contains a reflection, and a reflection has no real square root: only on
//! SO(n) is every fractional power again a real rotation.
//!
//! 1. Fill an `n x n` matrix `G` with independent standard normals from
//!    `ChaCha8Rng::seed_from_u64(seed)` (Box–Muller, in row-major order, so that
//!    a seed gives the same `Q` whatever the linear-algebra library does).
//! 2. Take the QR decomposition `G = Q R` and multiply each column of `Q` by
//!    the sign of the matching diagonal entry of `R`. Without that step `Q`
//!    depends on the sign convention of the QR routine and is *not* uniform;
//!    with it, `Q` is Haar on O(n) (Mezzadri 2007, "How to generate random
//!    matrices from the classical compact groups").
//! 3. If `det Q = -1`, flip the sign of the first column. Multiplying by a fixed
//!    reflection maps the Haar measure of the det -1 coset onto that of SO(n),
//!    so the result is Haar on SO(n).
//!
//! # Fractional powers
//!
//! `Q` is decomposed once (real Schur, `Q = U T U^T` with `U` orthogonal). For
//! a normal matrix such as `Q` the quasi-triangular `T` is block diagonal up to
//! round-off: 2x2 rotation blocks `[[c, -s], [s, c]]` (angle `θ = atan2(s, c)`)
//! and 1x1 entries `±1`. Then `Q^a = U T^a U^T` where each block becomes the
//! rotation by `aθ`, each `+1` stays `1`, and the `-1` entries (an even number,
//! since `det Q = +1`) are paired up: a pair is a rotation by `π` in the plane
//! of its two Schur vectors, so it becomes the rotation by `aπ`. `T^a` is built
//! from the blocks alone: the off-block entries of `T` are round-off.
//!
//! Each power costs one dense `n x n` product (`U B` is formed in `O(n^2)`
//! by rotating pairs of columns of `U`). The decomposition is checked when it
//! is made: `U` must be orthogonal and `U T^1 U^T` must give back `Q`, so
//! every power is an orthogonal matrix with determinant +1 up to round-off.

use std::f64::consts::{PI, TAU};

use nalgebra::DMatrix;
use nalgebra::linalg::Schur;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest entry of `|Q Q^T - I|` accepted for an input said to be orthogonal,
/// and largest distance of a Schur diagonal entry from `±1`. Generous: a random
/// `Q` of size 2048 is orthogonal to about `1e-13`.
const ORTHOGONAL_TOL: f64 = 1e-8;

/// Largest error accepted when the decomposition is checked (`U^T U = I`,
/// `U T^1 U^T = Q`).
const VERIFY_TOL: f64 = 1e-8;

/// A subdiagonal entry of `T` larger than this starts a 2x2 rotation block.
/// nalgebra writes exact zeros where it deflates, so any small value works;
/// a block with a smaller entry is a rotation by less than this angle, and
/// reading it as two `+1` entries changes `Q` by less than this.
const BLOCK_TOL: f64 = 1e-13;

/// Convergence threshold of the Schur iteration (relative to the neighbouring
/// diagonal entries): a few ulps, far below what the dissection can see.
const SCHUR_EPS: f64 = 4.0 * f64::EPSILON;

/// Schur iterations allowed per dimension before giving up (LAPACK's `dlahqr`
/// allows 30; nalgebra also counts its 2x2 block steps).
const SCHUR_ITERATIONS_PER_DIM: usize = 100;

/// A plane of `R^n`, spanned by the Schur vectors `i` and `j` (columns of `U`),
/// that `Q` rotates by `theta`: `u_i -> cos θ u_i + sin θ u_j`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Plane {
    i: usize,
    j: usize,
    theta: f64,
}

/// A random rotation of R^n and its fractional powers.
///
/// Made once (an `O(n^3)` decomposition); each power is then one `n x n`
/// matrix product. Matrices go in and out row-major.
#[derive(Debug, Clone)]
pub struct Rotation {
    n: usize,
    /// `Q` itself, as drawn or given.
    q: DMatrix<f64>,
    /// Orthogonal Schur vectors: `Q = U T U^T`.
    u: DMatrix<f64>,
    /// The planes that `Q` rotates; `U`'s other columns are fixed by `Q`.
    planes: Vec<Plane>,
}

impl Rotation {
    /// Haar-distributed on SO(n), from `seed`: the same `n` and `seed` always
    /// give the same rotation.
    ///
    /// Errors if `n` is 0, or if the decomposition fails (the Schur iteration
    /// did not converge, or failed its check).
    pub fn random(n: usize, seed: u64) -> Result<Self, String> {
        match n {
            0 => Err("a rotation needs a dimension n >= 1, got 0".to_string()),
            // SO(1) = {1}: nothing to draw.
            1 => Self::from_matrix(DMatrix::identity(1, 1)),
            _ => Self::from_matrix(haar_special_orthogonal(n, seed)),
        }
    }

    /// The rotation given by `q`, an orthogonal `n x n` matrix with determinant
    /// +1, row-major.
    ///
    /// Errors if `q` does not have `n * n` finite entries, is not orthogonal
    /// (to `1e-8`), has determinant -1, or cannot be decomposed.
    pub fn from_orthogonal(q: &[f64], n: usize) -> Result<Self, String> {
        if n == 0 {
            return Err("a rotation needs a dimension n >= 1, got 0".to_string());
        }
        if q.len() != n * n {
            return Err(format!(
                "a {n} x {n} rotation needs {} entries, got {}",
                n * n,
                q.len()
            ));
        }
        if let Some(bad) = q.iter().find(|x| !x.is_finite()) {
            return Err(format!("the matrix has a non-finite entry ({bad})"));
        }
        Self::from_matrix(DMatrix::from_row_slice(n, n, q))
    }

    /// The dimension `n`.
    pub fn dim(&self) -> usize {
        self.n
    }

    /// `Q` itself, row-major `n * n`.
    pub fn matrix(&self) -> Vec<f64> {
        row_major(&self.q)
    }

    /// `Q^a`, row-major `n * n`, in `f32`: what the activations are multiplied
    /// by. `a` in `[0, 1]` goes from the identity to `Q`; other real `a` work
    /// too (`Q^2 = Q Q`, `Q^-1 = Q^T`).
    pub fn power(&self, a: f64) -> Vec<f32> {
        self.power_f64(a).into_iter().map(|x| x as f32).collect()
    }

    /// `Q^a`, row-major `n * n`, in `f64` (see [`Rotation::power`]).
    pub fn power_f64(&self, a: f64) -> Vec<f64> {
        row_major(&self.power_matrix(a))
    }

    /// Decomposes an orthogonal `q` and checks the result.
    fn from_matrix(q: DMatrix<f64>) -> Result<Self, String> {
        let n = q.nrows();
        let gap = distance_from_identity(&(&q * q.transpose()));
        if gap.is_nan() || gap > ORTHOGONAL_TOL {
            return Err(format!(
                "the matrix is not orthogonal: max |Q Q^T - I| = {gap:e} (tolerance {ORTHOGONAL_TOL:e})"
            ));
        }
        let (u, t) = real_schur(&q)?;
        let planes = rotation_planes(&t)?;
        let rotation = Rotation { n, q, u, planes };
        rotation.verify()?;
        Ok(rotation)
    }

    /// Checks that `U` is orthogonal and that the blocks rebuild `Q`: then
    /// every power `U T^a U^T` is a rotation too.
    fn verify(&self) -> Result<(), String> {
        let u_gap = distance_from_identity(&(self.u.transpose() * &self.u));
        if u_gap.is_nan() || u_gap > VERIFY_TOL {
            return Err(format!(
                "the Schur vectors are not orthogonal: max |U^T U - I| = {u_gap:e}"
            ));
        }
        let rebuilt_gap = (self.power_matrix(1.0) - &self.q).amax();
        if rebuilt_gap.is_nan() || rebuilt_gap > VERIFY_TOL {
            return Err(format!(
                "the Schur blocks do not rebuild the matrix: max |U T U^T - Q| = {rebuilt_gap:e}"
            ));
        }
        Ok(())
    }

    /// `Q^a = U B U^T`, `B` the block-diagonal rotation by `a` times each
    /// plane's angle. `U B` only mixes the two columns of each plane, so it is
    /// formed in place; the one dense product is `(U B) U^T`.
    fn power_matrix(&self, a: f64) -> DMatrix<f64> {
        let mut ub = self.u.clone();
        for plane in &self.planes {
            let (sin, cos) = (a * plane.theta).sin_cos();
            rotate_columns(&mut ub, plane.i, plane.j, cos, sin);
        }
        ub * self.u.transpose()
    }
}

/// A Haar-distributed element of SO(n), `n >= 1` (see the module docs).
fn haar_special_orthogonal(n: usize, seed: u64) -> DMatrix<f64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let len = n * n;
    let mut normals = Vec::with_capacity(len + 1);
    while normals.len() < len {
        let (z0, z1) = standard_normal_pair(&mut rng);
        normals.push(z0);
        normals.push(z1);
    }
    normals.truncate(len);
    let gaussian = DMatrix::from_row_slice(n, n, &normals);
    let (mut q, r) = gaussian.qr().unpack();
    // Mezzadri's correction: makes Q independent of the QR sign convention.
    for k in 0..n {
        if r[(k, k)] < 0.0 {
            q.column_mut(k).scale_mut(-1.0);
        }
    }
    // Q is orthogonal, so its determinant is +-1 and its sign is reliable.
    if q.determinant() < 0.0 {
        q.column_mut(0).scale_mut(-1.0);
    }
    q
}

/// Two independent standard normal samples (Box–Muller).
fn standard_normal_pair(rng: &mut impl Rng) -> (f64, f64) {
    // `random::<f64>()` is in [0, 1); `1 - x` is in (0, 1], whose log is finite.
    let radius = (-2.0 * (1.0 - rng.random::<f64>()).ln()).sqrt();
    let (sin, cos) = (TAU * rng.random::<f64>()).sin_cos();
    (radius * cos, radius * sin)
}

/// Real Schur decomposition `q = U T U^T`, returned as `(U, T)`.
///
/// nalgebra's double-shift QR has no exceptional shifts, so on rare inputs
/// it can stall; the iteration count is bounded, and on failure the matrix
/// is decomposed once more with its coordinates reversed (`P q P`, `P` the
/// reversal permutation), which starts the iteration from a different
/// Hessenberg form. `P q P = V T V^T` gives `q = (P V) T (P V)^T`.
fn real_schur(q: &DMatrix<f64>) -> Result<(DMatrix<f64>, DMatrix<f64>), String> {
    let n = q.nrows();
    let max_niter = SCHUR_ITERATIONS_PER_DIM * n.max(10);
    if let Some(schur) = Schur::try_new(q.clone(), SCHUR_EPS, max_niter) {
        return Ok(schur.unpack());
    }
    let last = n - 1;
    let reversed = DMatrix::from_fn(n, n, |r, c| q[(last - r, last - c)]);
    let Some(schur) = Schur::try_new(reversed, SCHUR_EPS, max_niter) else {
        return Err(format!(
            "the Schur decomposition of the {n} x {n} matrix did not converge \
             in {max_niter} iterations"
        ));
    };
    let (v, t) = schur.unpack();
    let u = DMatrix::from_fn(n, n, |r, c| v[(last - r, c)]);
    Ok((u, t))
}

/// Reads the rotation planes off the Schur form `t` of an orthogonal matrix
/// with determinant +1: its 2x2 blocks, and its `-1` entries in pairs.
fn rotation_planes(t: &DMatrix<f64>) -> Result<Vec<Plane>, String> {
    let n = t.nrows();
    let mut planes = Vec::new();
    let mut reflected = Vec::new();
    let mut i = 0;
    while i < n {
        if i + 1 < n && t[(i + 1, i)].abs() > BLOCK_TOL {
            if i + 2 < n && t[(i + 2, i + 1)].abs() > BLOCK_TOL {
                return Err(format!(
                    "the Schur form has a block larger than 2x2 at row {i}: the matrix is not orthogonal"
                ));
            }
            // [[c, -s], [s, c]] up to round-off: average the two copies of each.
            let sin2 = t[(i + 1, i)] - t[(i, i + 1)];
            let cos2 = t[(i, i)] + t[(i + 1, i + 1)];
            planes.push(Plane {
                i,
                j: i + 1,
                theta: sin2.atan2(cos2),
            });
            i += 2;
        } else {
            let d = t[(i, i)];
            let off_unit = (d.abs() - 1.0).abs();
            if off_unit.is_nan() || off_unit > ORTHOGONAL_TOL {
                return Err(format!(
                    "the Schur form has the eigenvalue {d} at row {i}, not +-1: the matrix is not orthogonal"
                ));
            }
            if d < 0.0 {
                reflected.push(i);
            }
            i += 1;
        }
    }
    if !reflected.len().is_multiple_of(2) {
        return Err(
            "the matrix has determinant -1 (an odd number of eigenvalues -1): it is a reflection, not a rotation"
                .to_string(),
        );
    }
    // Two eigenvalues -1 are a half-turn in the plane of their Schur vectors.
    planes.extend(reflected.chunks_exact(2).map(|pair| Plane {
        i: pair[0],
        j: pair[1],
        theta: PI,
    }));
    Ok(planes)
}

/// Replaces columns `i` and `j` of `m` by `cos m_i + sin m_j` and
/// `-sin m_i + cos m_j`: right-multiplication by a rotation in that plane.
fn rotate_columns(m: &mut DMatrix<f64>, i: usize, j: usize, cos: f64, sin: f64) {
    for r in 0..m.nrows() {
        let (x, y) = (m[(r, i)], m[(r, j)]);
        m[(r, i)] = cos * x + sin * y;
        m[(r, j)] = -sin * x + cos * y;
    }
}

/// Largest entry of `|m - I|`, `m` square.
fn distance_from_identity(m: &DMatrix<f64>) -> f64 {
    (m - DMatrix::<f64>::identity(m.nrows(), m.ncols())).amax()
}

/// The entries of `m` in row-major order (nalgebra stores column-major, so
/// the transpose's storage is `m`'s rows).
fn row_major(m: &DMatrix<f64>) -> Vec<f64> {
    m.transpose().as_slice().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: [usize; 6] = [1, 2, 3, 5, 16, 64];

    fn square(v: &[f64], n: usize) -> DMatrix<f64> {
        DMatrix::from_row_slice(n, n, v)
    }

    fn power(r: &Rotation, a: f64) -> DMatrix<f64> {
        square(&r.power_f64(a), r.dim())
    }

    fn assert_rotation(m: &DMatrix<f64>, what: &str) {
        let gap = distance_from_identity(&(m * m.transpose()));
        assert!(gap < 1e-10, "{what}: max |M M^T - I| = {gap:e}");
        let det = m.determinant();
        assert!((det - 1.0).abs() < 1e-9, "{what}: det = {det}");
    }

    fn assert_close(a: &DMatrix<f64>, b: &DMatrix<f64>, tol: f64, what: &str) {
        let gap = (a - b).amax();
        assert!(gap < tol, "{what}: max difference {gap:e}");
    }

    #[test]
    fn random_is_special_orthogonal() {
        for n in SIZES {
            let r = Rotation::random(n, 7 + n as u64).unwrap();
            assert_eq!(r.dim(), n);
            assert_eq!(r.matrix().len(), n * n);
            assert_rotation(&square(&r.matrix(), n), &format!("Q, n = {n}"));
        }
    }

    #[test]
    fn powers_zero_and_one_are_identity_and_q() {
        for n in SIZES {
            let r = Rotation::random(n, 100 + n as u64).unwrap();
            let identity = DMatrix::<f64>::identity(n, n);
            assert_close(&power(&r, 0.0), &identity, 1e-9, &format!("Q^0, n = {n}"));
            let q = square(&r.matrix(), n);
            assert_close(&power(&r, 1.0), &q, 1e-9, &format!("Q^1, n = {n}"));
        }
    }

    #[test]
    fn powers_add() {
        for n in SIZES {
            let r = Rotation::random(n, 200 + n as u64).unwrap();
            let product = power(&r, 0.3) * power(&r, 0.5);
            assert_close(
                &product,
                &power(&r, 0.8),
                1e-9,
                &format!("Q^.3 Q^.5, n = {n}"),
            );
            let q = square(&r.matrix(), n);
            assert_close(&power(&r, 2.0), &(&q * &q), 1e-9, &format!("Q^2, n = {n}"));
            assert_close(
                &power(&r, -1.0),
                &q.transpose(),
                1e-9,
                &format!("Q^-1, n = {n}"),
            );
        }
    }

    #[test]
    fn fractional_power_is_a_rotation() {
        for n in SIZES {
            let r = Rotation::random(n, 300 + n as u64).unwrap();
            assert_rotation(&power(&r, 0.37), &format!("Q^0.37, n = {n}"));
        }
    }

    #[test]
    fn f32_power_matches_f64() {
        let r = Rotation::random(16, 5).unwrap();
        let single = r.power(0.6);
        let double = r.power_f64(0.6);
        assert_eq!(single.len(), double.len());
        for (s, d) in single.iter().zip(&double) {
            assert!((f64::from(*s) - d).abs() < 1e-6);
        }
    }

    #[test]
    fn seed_determines_q() {
        for n in [2, 5, 16] {
            let a = Rotation::random(n, 42).unwrap().matrix();
            let b = Rotation::random(n, 42).unwrap().matrix();
            assert_eq!(a, b, "n = {n}");
            let c = Rotation::random(n, 43).unwrap().matrix();
            let gap = a
                .iter()
                .zip(&c)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(gap > 1e-3, "n = {n}: seeds 42 and 43 gave the same Q");
        }
    }

    #[test]
    fn first_entry_has_haar_moments() {
        // Under Haar measure Q's first column is uniform on the sphere S^2:
        // E[q00] = 0, E[q00^2] = 1/3 (standard errors 0.013 and 0.007 here).
        let seeds = 2000;
        let (mut sum, mut sum_sq) = (0.0, 0.0);
        for seed in 0..seeds {
            let q00 = Rotation::random(3, seed).unwrap().matrix()[0];
            sum += q00;
            sum_sq += q00 * q00;
        }
        let mean = sum / seeds as f64;
        let mean_sq = sum_sq / seeds as f64;
        assert!(mean.abs() < 0.05, "mean of Q[0][0] = {mean}");
        assert!(
            (mean_sq - 1.0 / 3.0).abs() < 0.03,
            "mean of Q[0][0]^2 = {mean_sq}"
        );
    }

    #[test]
    fn half_turn_has_a_square_root() {
        let q = [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0];
        let r = Rotation::from_orthogonal(&q, 3).unwrap();
        let half = power(&r, 0.5);
        assert_rotation(&half, "half-turn^0.5");
        assert_close(&(&half * &half), &square(&q, 3), 1e-9, "(half-turn^0.5)^2");
        // A quarter-turn, not the identity or the half-turn itself.
        assert!((&half - DMatrix::<f64>::identity(3, 3)).amax() > 0.5);
        assert!((&half - square(&q, 3)).amax() > 0.5);
    }

    #[test]
    fn minus_one_eigenvalues_in_general_position() {
        // Q = V D V^T, D = diag(rotation by 0.7, -1, -1, 1), V a random rotation:
        // the -1 eigenvalues are not on the coordinate axes.
        let n = 5;
        let (s, c) = 0.7_f64.sin_cos();
        let mut d = DMatrix::<f64>::identity(n, n);
        d[(0, 0)] = c;
        d[(0, 1)] = -s;
        d[(1, 0)] = s;
        d[(1, 1)] = c;
        d[(2, 2)] = -1.0;
        d[(3, 3)] = -1.0;
        let v = square(&Rotation::random(n, 11).unwrap().matrix(), n);
        let q = &v * d * v.transpose();
        let r = Rotation::from_orthogonal(&row_major(&q), n).unwrap();
        assert_close(&power(&r, 1.0), &q, 1e-9, "Q^1");
        let half = power(&r, 0.5);
        assert_rotation(&half, "Q^0.5");
        assert_close(&(&half * &half), &q, 1e-9, "(Q^0.5)^2");
    }

    #[test]
    fn one_dimension_is_trivial() {
        let r = Rotation::random(1, 3).unwrap();
        assert_eq!(r.matrix(), vec![1.0]);
        assert_eq!(r.power(0.4), vec![1.0_f32]);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Rotation::random(0, 1).is_err());
        assert!(Rotation::from_orthogonal(&[], 0).is_err());
        // A reflection: orthogonal, determinant -1.
        let reflection = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];
        assert!(Rotation::from_orthogonal(&reflection, 3).is_err());
        // Not orthogonal.
        assert!(Rotation::from_orthogonal(&[2.0, 0.0, 0.0, 0.5], 2).is_err());
        // Wrong length, non-finite entries.
        assert!(Rotation::from_orthogonal(&[1.0, 0.0, 0.0], 2).is_err());
        assert!(Rotation::from_orthogonal(&[f64::NAN, 0.0, 0.0, 1.0], 2).is_err());
    }
}

#[cfg(test)]
mod planted_tests {
    //! The paper's finding on a planted layer (`crate::synthetic`): units
    //! that are exact detectors of distinct objects keep their unique
    //! detectors in their own basis (Q^0) and lose most of them in a random
    //! one (Q^1), where each unit mixes the detectors with the layer's many
    //! units of noise. Counted and scored as a run does; several rotations.

    use super::Rotation;
    use crate::score::summarize;
    use crate::synthetic::{Layer, Unit};

    #[test]
    fn planted_detectors_keep_their_unique_detectors_at_q0_and_lose_most_at_q1() {
        // Eight detectors of distinct objects in a layer of 64 units.
        let mut units: Vec<Unit> = (1..=8).map(Unit::Planted).collect();
        units.extend([Unit::Noise; 56]);
        let names = vec!["object".to_string(), "scene".to_string()];
        // A quantile whose masks are about an object's area, so that the
        // planted units pass the IoU rule.
        let quantile = 0.02;
        let unique = |layer: &Layer| {
            let (_, scores) = layer.count(quantile);
            summarize(&scores, &names, 0.04).unique_top_label
        };
        let own = Layer::new(3, &units);
        let at_0 = unique(&own);
        assert!(at_0 >= 7, "Q^0: {at_0} unique detectors of the 8 planted");
        for seed in [1, 2, 3] {
            let rotation = Rotation::random(units.len(), seed).unwrap();
            let mut identity = Layer::new(3, &units);
            identity.rotate(&rotation.power(0.0));
            assert_eq!(unique(&identity), at_0, "Q^0 is the identity");
            let mut rotated = Layer::new(3, &units);
            rotated.rotate(&rotation.power(1.0));
            let at_1 = unique(&rotated);
            eprintln!("rotation {seed}: {at_0} unique detectors at Q^0, {at_1} at Q^1");
            assert!(
                at_1 * 2 < at_0,
                "rotation {seed}: {at_1} unique detectors at Q^1 against {at_0} at Q^0"
            );
        }
    }
}
