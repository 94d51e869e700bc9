//! Procedural drawing for the synthetic generator: scene recipes, shapes and
//! their parts, material and texture patterns, the named colours.
//!
//! Per-pixel code uses only `+ - * /`, `sqrt`, `floor` and integer hashing,
//! which IEEE 754 and Rust define exactly, so the pixels do not depend on the
//! platform's math library.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{MATERIALS, OBJECTS, SCENES, TEXTURES};

/// Prototype RGB of each Broden colour name, in [`super::COLORS`] order; a
/// pixel's colour label is the nearest prototype.
pub const COLOR_RGB: [[u8; 3]; 11] = [
    [20, 20, 20],    // black
    [40, 70, 205],   // blue
    [120, 72, 30],   // brown
    [128, 128, 128], // grey
    [40, 160, 50],   // green
    [245, 140, 20],  // orange
    [245, 165, 195], // pink
    [130, 50, 160],  // purple
    [210, 30, 30],   // red
    [240, 240, 240], // white
    [240, 220, 40],  // yellow
];

const BLACK: usize = 0;
const BLUE: usize = 1;
const BROWN: usize = 2;
const GREY: usize = 3;
const GREEN: usize = 4;
const ORANGE: usize = 5;
const PINK: usize = 6;
const PURPLE: usize = 7;
const RED: usize = 8;
const WHITE: usize = 9;
const YELLOW: usize = 10;

// Indices into OBJECTS, PARTS, MATERIALS, TEXTURES.
const DISC: usize = 0;
const SQUARE: usize = 1;
const TRIANGLE: usize = 2;
const RING: usize = 3;
const CROSS: usize = 4;
const DIAMOND: usize = 5;
const STAR: usize = 6;
const BAR: usize = 7;

const RIM: usize = 0;
const HUB: usize = 1;
const APEX: usize = 2;
const BASE: usize = 3;
const ARM: usize = 4;
const END: usize = 5;

const WOOD: usize = 0;
const METAL: usize = 1;
const FABRIC: usize = 2;
const STONE: usize = 3;
const BRICK: usize = 4;
const GLASS: usize = 5;

const STRIPED: usize = 0;
const CHECKERED: usize = 1;
const DOTTED: usize = 2;
const ZIGZAGGED: usize = 3;
const GRID: usize = 4;
const MARBLED: usize = 5;

/// Where a scene puts its objects.
#[derive(Debug, Clone, Copy)]
enum Placement {
    /// Along a band in the lower part, left to right.
    Row,
    /// Anywhere.
    Scatter,
    /// In the cells of a 2x2 grid.
    Grid,
    /// The first object high up (a sun), the others in a row below.
    Sky,
    /// The first object large and central, the others anywhere.
    Centre,
}

/// What a scene looks like: which background colours, objects, materials
/// and textures it favours, and how it lays objects out. Scenes are told
/// apart by all of these together, as real scenes are.
struct Recipe {
    palettes: &'static [(usize, usize)],
    objects: &'static [(usize, u32)],
    materials: &'static [(usize, u32)],
    textures: &'static [(usize, u32)],
    placement: Placement,
    count: (u32, u32),
    radius: (f32, f32),
}

/// One recipe per entry of [`SCENES`], same order.
const RECIPES: [Recipe; 6] = [
    // street-s
    Recipe {
        palettes: &[(GREY, BLACK), (GREY, WHITE), (BLACK, WHITE)],
        objects: &[(BAR, 3), (SQUARE, 2), (DISC, 2), (CROSS, 1)],
        materials: &[(METAL, 3), (STONE, 2), (GLASS, 2), (BRICK, 1)],
        textures: &[(STRIPED, 3), (GRID, 2), (CHECKERED, 1)],
        placement: Placement::Row,
        count: (2, 4),
        radius: (0.09, 0.16),
    },
    // kitchen-s
    Recipe {
        palettes: &[(WHITE, ORANGE), (WHITE, YELLOW), (YELLOW, BROWN)],
        objects: &[(SQUARE, 3), (DISC, 2), (RING, 2), (BAR, 1)],
        materials: &[(METAL, 3), (GLASS, 2), (BRICK, 2), (STONE, 1)],
        textures: &[(CHECKERED, 3), (GRID, 2), (DOTTED, 1)],
        placement: Placement::Grid,
        count: (2, 4),
        radius: (0.10, 0.17),
    },
    // forest-s
    Recipe {
        palettes: &[(GREEN, BROWN), (GREEN, BLACK), (BROWN, YELLOW)],
        objects: &[(TRIANGLE, 4), (STAR, 2), (DISC, 1), (DIAMOND, 1)],
        materials: &[(WOOD, 4), (STONE, 2), (FABRIC, 1)],
        textures: &[(MARBLED, 3), (DOTTED, 2), (ZIGZAGGED, 1)],
        placement: Placement::Scatter,
        count: (3, 6),
        radius: (0.07, 0.14),
    },
    // beach-s
    Recipe {
        palettes: &[(YELLOW, BLUE), (BLUE, WHITE), (YELLOW, WHITE)],
        objects: &[(DISC, 3), (RING, 2), (STAR, 2), (TRIANGLE, 1)],
        materials: &[(FABRIC, 2), (GLASS, 2), (WOOD, 1), (STONE, 1)],
        textures: &[(ZIGZAGGED, 3), (STRIPED, 2), (DOTTED, 1)],
        placement: Placement::Sky,
        count: (1, 3),
        radius: (0.12, 0.22),
    },
    // office-s
    Recipe {
        palettes: &[(GREY, BLUE), (WHITE, BLUE), (GREY, WHITE)],
        objects: &[(SQUARE, 3), (BAR, 2), (CROSS, 2), (DIAMOND, 1)],
        materials: &[(METAL, 2), (FABRIC, 2), (GLASS, 2), (WOOD, 1)],
        textures: &[(GRID, 3), (STRIPED, 2), (CHECKERED, 1)],
        placement: Placement::Grid,
        count: (2, 4),
        radius: (0.10, 0.16),
    },
    // bedroom-s
    Recipe {
        palettes: &[(PINK, PURPLE), (PINK, WHITE), (PURPLE, WHITE)],
        objects: &[(DIAMOND, 3), (SQUARE, 2), (CROSS, 1), (DISC, 1), (STAR, 1)],
        materials: &[(FABRIC, 4), (WOOD, 2)],
        textures: &[(DOTTED, 3), (CHECKERED, 2), (MARBLED, 1)],
        placement: Placement::Centre,
        count: (1, 3),
        radius: (0.12, 0.22),
    },
];

/// Colours each object kind is usually painted in (same order as
/// [`OBJECTS`]), so that object and colour labels co-occur as in real data.
const OBJECT_COLORS: [&[usize]; 8] = [
    &[RED, ORANGE, YELLOW],
    &[BLUE, BROWN, GREY],
    &[GREEN, BROWN],
    &[YELLOW, ORANGE, PINK],
    &[RED, WHITE, BLUE],
    &[PURPLE, PINK, BLUE],
    &[YELLOW, WHITE, ORANGE],
    &[BLACK, GREY, BROWN],
];

/// Probability of ignoring a scene's preferences, so that every
/// combination of concepts can occur.
const SURPRISE: f32 = 0.15;
/// Probability that an object has a material (plain paint otherwise).
const MATERIAL_P: f32 = 0.85;
/// Probability that an object is painted in one of its usual colours.
const USUAL_COLOR_P: f32 = 0.7;

/// One object to draw; later objects occlude earlier ones.
#[derive(Debug, Clone)]
struct Object {
    kind: usize,
    cx: f32,
    cy: f32,
    r: f32,
    color: [f32; 3],
    material: Option<usize>,
    seed: u32,
}

/// Everything random about one image, drawn before any pixel is painted.
#[derive(Debug, Clone)]
pub(super) struct Layout {
    /// A texture swatch: background pattern only; `scene` then only chose
    /// the palette.
    pub swatch: bool,
    pub scene: usize,
    pub texture: usize,
    background: [[f32; 3]; 2],
    period: f32,
    phase: (f32, f32),
    vertical: bool,
    seed: u32,
    objects: Vec<Object>,
}

/// The drawn image at full resolution: RGB and, per pixel, the index + 1
/// of its object kind, part and material (0 = none).
#[derive(Debug, Clone)]
pub(super) struct Drawn {
    pub rgb: Vec<u8>,
    pub object: Vec<u8>,
    pub part: Vec<u8>,
    pub material: Vec<u8>,
}

fn pick_weighted(rng: &mut ChaCha8Rng, table: &[(usize, u32)], n_all: usize) -> usize {
    if rng.random::<f32>() < SURPRISE {
        return rng.random_range(0..n_all as u32) as usize;
    }
    let total: u32 = table.iter().map(|&(_, w)| w).sum();
    let mut x = rng.random_range(0..total);
    for &(item, w) in table {
        if x < w {
            return item;
        }
        x -= w;
    }
    table[table.len() - 1].0
}

fn jitter(rng: &mut ChaCha8Rng, color: usize, amount: f32) -> [f32; 3] {
    COLOR_RGB[color]
        .map(|c| (f32::from(c) + (rng.random::<f32>() * 2.0 - 1.0) * amount).clamp(0.0, 255.0))
}

fn uniform(rng: &mut ChaCha8Rng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// Draws the random choices of one image of side `size`, a texture swatch
/// with probability `swatch_percent`%. (Nothing extra is drawn at 0, so
/// datasets without swatches keep their bytes.)
pub(super) fn sample(rng: &mut ChaCha8Rng, size: u32, swatch_percent: u8) -> Layout {
    let s = size as f32;
    let swatch = swatch_percent > 0 && rng.random_range(0..100u8) < swatch_percent;
    let scene = rng.random_range(0..SCENES.len() as u32) as usize;
    let recipe = &RECIPES[scene];
    let texture = if swatch {
        rng.random_range(0..TEXTURES.len() as u32) as usize
    } else {
        pick_weighted(rng, recipe.textures, TEXTURES.len())
    };
    let (a, b) = recipe.palettes[rng.random_range(0..recipe.palettes.len() as u32) as usize];
    let (a, b) = if rng.random::<bool>() { (a, b) } else { (b, a) };
    let background = [jitter(rng, a, 10.0), jitter(rng, b, 10.0)];
    let period = uniform(rng, s / 14.0, s / 7.0).max(4.0);
    let phase = (uniform(rng, 0.0, period), uniform(rng, 0.0, period));
    let vertical = rng.random::<bool>();
    let seed = rng.random::<u32>();

    let n = if swatch {
        0
    } else {
        rng.random_range(recipe.count.0..=recipe.count.1)
    };
    let grid_start = rng.random_range(0..4u32);
    let objects = (0..n)
        .map(|k| sample_object(rng, recipe, s, (k, n), grid_start))
        .collect();
    Layout {
        swatch,
        scene,
        texture,
        background,
        period,
        phase,
        vertical,
        seed,
        objects,
    }
}

/// Draws object `k` of `n` (`slot = (k, n)`) in an image of side `s` whose
/// scene follows `recipe`; `grid_start` is the grid cell the first
/// object of a [`Placement::Grid`] scene takes.
fn sample_object(
    rng: &mut ChaCha8Rng,
    recipe: &Recipe,
    s: f32,
    slot: (u32, u32),
    grid_start: u32,
) -> Object {
    let kind = pick_weighted(rng, recipe.objects, OBJECTS.len());
    let r = s * uniform(rng, recipe.radius.0, recipe.radius.1);
    let (cx, cy, grow) = place(rng, recipe.placement, s, slot, grid_start);
    let usual = OBJECT_COLORS[kind];
    let color = if rng.random::<f32>() < USUAL_COLOR_P {
        usual[rng.random_range(0..usual.len() as u32) as usize]
    } else {
        rng.random_range(0..COLOR_RGB.len() as u32) as usize
    };
    let color = jitter(rng, color, 14.0);
    let material = (rng.random::<f32>() < MATERIAL_P)
        .then(|| pick_weighted(rng, recipe.materials, MATERIALS.len()));
    Object {
        kind,
        cx,
        cy,
        r: (r * grow).max(2.5),
        color,
        material,
        seed: rng.random::<u32>(),
    }
}

/// The centre `(cx, cy)` of object `k` of `n` (`slot = (k, n)`) under
/// `placement` in an image of side `s`, and the factor its radius grows by
/// (1 but for the large first object of a [`Placement::Centre`] scene).
fn place(
    rng: &mut ChaCha8Rng,
    placement: Placement,
    s: f32,
    (k, n): (u32, u32),
    grid_start: u32,
) -> (f32, f32, f32) {
    let spread = |rng: &mut ChaCha8Rng| uniform(rng, -0.05, 0.05) * s;
    let row = |rng: &mut ChaCha8Rng| {
        let cx = (k as f32 + 0.5) / n as f32 * s + spread(rng);
        (cx, s * uniform(rng, 0.62, 0.8), 1.0)
    };
    let anywhere =
        |rng: &mut ChaCha8Rng| (s * uniform(rng, 0.1, 0.9), s * uniform(rng, 0.1, 0.9), 1.0);
    match placement {
        Placement::Row => row(rng),
        Placement::Scatter => anywhere(rng),
        Placement::Grid => {
            let cell = (grid_start + k) % 4;
            let gx = if cell.is_multiple_of(2) { 0.28 } else { 0.72 };
            let gy = if cell < 2 { 0.3 } else { 0.72 };
            (gx * s + spread(rng), gy * s + spread(rng), 1.0)
        }
        Placement::Sky if k == 0 => (s * uniform(rng, 0.2, 0.8), s * uniform(rng, 0.12, 0.3), 1.0),
        Placement::Sky => row(rng),
        Placement::Centre if k == 0 => (
            s * uniform(rng, 0.42, 0.58),
            s * uniform(rng, 0.42, 0.58),
            1.4,
        ),
        Placement::Centre => anywhere(rng),
    }
}

/// How far inside the shape `q` (object coordinates: centre 0, radius 1,
/// y down) lies, in units of the radius; positive inside.
fn depth(kind: usize, qx: f32, qy: f32) -> f32 {
    let (ax, ay) = (qx.abs(), qy.abs());
    match kind {
        DISC => 1.0 - (qx * qx + qy * qy).sqrt(),
        SQUARE => 1.0 - ax.max(ay),
        TRIANGLE => {
            // Apex (0, -1), base corners (+-1, 0.8); 2.0591 = |(1.8, -1)|.
            (0.8 - qy).min((1.0 - 1.8 * ax + qy) / 2.0591)
        }
        RING => {
            let d = (qx * qx + qy * qy).sqrt();
            (d - 0.55).min(1.0 - d)
        }
        CROSS => (1.0 - ax).min(0.35 - ay).max((0.35 - ax).min(1.0 - ay)),
        DIAMOND => (1.0 - ax - ay) * std::f32::consts::FRAC_1_SQRT_2,
        // A four-pointed star: sqrt|x| + sqrt|y| < 1.
        STAR => (1.0 - ax.sqrt() - ay.sqrt()) * 0.5,
        // BAR
        _ => (1.0 - ax).min(0.4 - ay),
    }
}

/// The part (index into [`super::PARTS`]) under an object pixel, if any;
/// `rim` is the border width in units of the radius.
fn part(kind: usize, qx: f32, qy: f32, d: f32, rim: f32) -> Option<usize> {
    let (ax, ay) = (qx.abs(), qy.abs());
    match kind {
        DISC if d < rim => Some(RIM),
        DISC if qx * qx + qy * qy < 0.09 => Some(HUB),
        SQUARE if d < rim => Some(RIM),
        SQUARE if ax.max(ay) < 0.3 => Some(HUB),
        TRIANGLE if qy < -0.45 => Some(APEX),
        TRIANGLE if qy > 0.8 - rim => Some(BASE),
        CROSS if ax.max(ay) < 0.35 => Some(HUB),
        CROSS => Some(ARM),
        DIAMOND if qy < -0.5 => Some(APEX),
        DIAMOND if d < rim => Some(RIM),
        STAR if ax + ay < 0.3 => Some(HUB),
        STAR if ax.max(ay) > 0.4 => Some(ARM),
        BAR if ax > 0.72 => Some(END),
        _ => None,
    }
}

fn hash(x: i32, y: i32, seed: u32) -> u32 {
    let mut h = (x as u32).wrapping_mul(0x8da6_b343)
        ^ (y as u32).wrapping_mul(0xd816_3841)
        ^ seed.wrapping_mul(0xcb1a_b31f);
    h ^= h >> 13;
    h = h.wrapping_mul(0x5bd1_e995);
    h ^ (h >> 15)
}

/// A hash as a number in `[0, 1)`.
fn unit(h: u32) -> f32 {
    (h >> 8) as f32 / 16_777_216.0
}

/// Smooth lattice noise in `[0, 1)`, one lattice cell per unit.
fn noise(x: f32, y: f32, seed: u32) -> f32 {
    let (fx, fy) = (x.floor(), y.floor());
    let (ix, iy) = (fx as i32, fy as i32);
    let (tx, ty) = (x - fx, y - fy);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let v = |dx, dy| unit(hash(ix + dx, iy + dy, seed));
    let top = v(0, 0) + (v(1, 0) - v(0, 0)) * sx;
    let bottom = v(0, 1) + (v(1, 1) - v(0, 1)) * sx;
    top + (bottom - top) * sy
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [0, 1, 2].map(|c| a[c] + (b[c] - a[c]) * t)
}

fn scale(a: [f32; 3], f: f32) -> [f32; 3] {
    a.map(|c| c * f)
}

const WHITE_RGB: [f32; 3] = [245.0, 245.0, 245.0];

/// The background at pixel centre `(x, y)`: the image's texture pattern
/// in its two background colours.
fn background(l: &Layout, x: f32, y: f32) -> [f32; 3] {
    let p = l.period;
    let (u, v) = (x + l.phase.0, y + l.phase.1);
    let [a, b] = l.background;
    let odd = |t: f32, w: f32| (t / w).floor() as i64 % 2 != 0;
    let second = match l.texture {
        STRIPED => odd(if l.vertical { u } else { v }, p * 0.5),
        CHECKERED => ((u / p).floor() as i64 + (v / p).floor() as i64) % 2 != 0,
        DOTTED => {
            let dx = u.rem_euclid(p) - p * 0.5;
            let dy = v.rem_euclid(p) - p * 0.5;
            dx * dx + dy * dy < p * p * 0.09
        }
        ZIGZAGGED => {
            let tri = ((u).rem_euclid(2.0 * p) - p).abs();
            odd(v + tri, p * 0.5)
        }
        GRID => {
            let w = (p / 6.0).max(1.5);
            u.rem_euclid(p) < w || v.rem_euclid(p) < w
        }
        // MARBLED: thin veins along a level set of smooth noise.
        _ => {
            let n =
                noise(u / p, v / p, l.seed) * 0.7 + noise(2.0 * u / p, 2.0 * v / p, l.seed) * 0.3;
            return if (n - 0.5).abs() < 0.05 {
                b
            } else {
                scale(a, 0.9 + 0.2 * n)
            };
        }
    };
    if second { b } else { a }
}

/// An object pixel of base colour `c` in material `m` at pixel centre
/// `(x, y)`, object coordinates `(qx, qy)`.
fn material(o: &Object, m: usize, x: f32, y: f32, qx: f32, qy: f32) -> [f32; 3] {
    let c = o.color;
    match m {
        WOOD => {
            // Grain: dark bands that wander with low-frequency noise.
            let t = (y + 5.0 * noise(x / 20.0, y / 6.0, o.seed)) / 6.0;
            if t - t.floor() < 0.35 {
                scale(c, 0.62)
            } else {
                c
            }
        }
        METAL => {
            let ramp = 0.7 + 0.5 * ((qx + qy) * 0.25 + 0.5);
            if (qx - qy + 0.3).abs() < 0.08 {
                mix(c, WHITE_RGB, 0.6)
            } else {
                scale(c, ramp)
            }
        }
        FABRIC => {
            let weave = ((x * 0.5).floor() as i64 + (y * 0.5).floor() as i64) % 2 == 0;
            if weave { c } else { scale(c, 0.78) }
        }
        STONE => scale(c, 0.65 + 0.5 * noise(x / 5.0, y / 5.0, o.seed)),
        BRICK => {
            let row = (y / 8.0).floor();
            let shift = if row as i64 % 2 == 0 { 0.0 } else { 8.0 };
            let col = ((x + shift) / 16.0).floor();
            if y.rem_euclid(8.0) < 1.0 || (x + shift).rem_euclid(16.0) < 1.0 {
                [205.0, 205.0, 200.0]
            } else {
                scale(c, 0.88 + 0.2 * unit(hash(col as i32, row as i32, o.seed)))
            }
        }
        // GLASS: pale and see-through looking, with bright diagonal streaks.
        _ => {
            let pale = mix(c, WHITE_RGB, 0.45);
            if (x + y).rem_euclid(24.0) < 3.0 {
                mix(pale, WHITE_RGB, 0.8)
            } else {
                pale
            }
        }
    }
}

/// Paints the image of side `size` described by `l`.
pub(super) fn draw(l: &Layout, size: u32) -> Drawn {
    let n = (size * size) as usize;
    let mut out = Drawn {
        rgb: vec![0; n * 3],
        object: vec![0; n],
        part: vec![0; n],
        material: vec![0; n],
    };
    for py in 0..size {
        for px in 0..size {
            let i = (py * size + px) as usize;
            let (x, y) = (px as f32 + 0.5, py as f32 + 0.5);
            let mut color = None;
            // Topmost object first: the first hit is the visible one.
            for o in l.objects.iter().rev() {
                let (dx, dy) = (x - o.cx, y - o.cy);
                if dx.abs() > o.r || dy.abs() > o.r {
                    continue;
                }
                let (qx, qy) = (dx / o.r, dy / o.r);
                let d = depth(o.kind, qx, qy);
                if d <= 0.0 {
                    continue;
                }
                out.object[i] = o.kind as u8 + 1;
                let rim = (1.5 / o.r).max(0.2);
                if let Some(p) = part(o.kind, qx, qy, d, rim) {
                    out.part[i] = p as u8 + 1;
                }
                color = Some(match o.material {
                    Some(m) => {
                        out.material[i] = m as u8 + 1;
                        material(o, m, x, y, qx, qy)
                    }
                    None => o.color,
                });
                break;
            }
            let c = color.unwrap_or_else(|| background(l, x, y));
            // Faint sensor-like noise, the same on all channels.
            let grain = (unit(hash(px as i32, py as i32, l.seed ^ 0x9e37_79b9)) - 0.5) * 8.0;
            for (k, &v) in c.iter().enumerate() {
                out.rgb[i * 3 + k] = (v + grain + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

/// Index into [`COLOR_RGB`] of the prototype nearest to `rgb` (squared
/// distance; ties to the earlier name).
pub(super) fn nearest_color(rgb: &[u8]) -> usize {
    // Plain loops: this runs for every segmentation pixel, and iterator
    // chains are slow in unoptimised test builds.
    let (r, g, b) = (i32::from(rgb[0]), i32::from(rgb[1]), i32::from(rgb[2]));
    let mut best = (i32::MAX, 0);
    for (k, p) in COLOR_RGB.iter().enumerate() {
        let (dr, dg, db) = (
            r - i32::from(p[0]),
            g - i32::from(p[1]),
            b - i32::from(p[2]),
        );
        let d = dr * dr + dg * dg + db * db;
        if d < best.0 {
            best = (d, k);
        }
    }
    best.1
}
