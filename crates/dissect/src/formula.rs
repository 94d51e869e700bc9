//! Compositional explanations (Mu and Andreas, NeurIPS 2020): each unit
//! labelled by a formula of concepts joined by OR, AND and AND NOT, found
//! by compexp's beam search and scored by the same dataset-wide IoU as a
//! single concept.
//!
//! # What a formula's IoU counts
//!
//! Masks live on the same segmentation grid as the counts: the unit's mask
//! `M` is its upsampled map above `T_k` (exactly the count pass's pixels),
//! a pixel-level concept is the set of pixels any of the image's planes
//! gives that label, and an image-level concept (scene, texture) is the
//! whole image. `F OR c`, `F AND c` and `F AND NOT c` are the union, the
//! intersection and the difference of those pixel sets, image by image;
//! NOT is never applied alone, so a formula's mask lies in the images of
//! its positive concepts.
//!
//! `IoU(M, F) = |M ∩ F| / (A_S + |F| - |M ∩ F|)` summed over all images,
//! where `S` is the set of the primary categories of the formula's
//! concepts and `A_S` counts the unit's pixels in the images that the
//! union rule admits for any category of `S`: images where one of them is
//! present (original), or occurs under the unit's mask or as an
//! image-level label (lite). A single concept has `S = {its category}`, so
//! length 1 is today's score, exactly. (compexp counts `A` over every
//! image, which no union rule of the reference tools does.) Masks are sets:
//! a label on two planes at one pixel counts once, where the count kernel
//! counts it per plane; Broden's planes carry distinct labels, so the two
//! agree there (the tests check it on generated data).
//!
//! # The search (compexp's `vision/dissection/neuron.py`)
//!
//! The beam starts as the `B` best single concepts with an IoU above 0.
//! Each step extends every beam entry by each operator and each concept
//! present in the dataset, pools the new formulas with the old beam, and
//! keeps the `B` best by IoU; ties keep the earlier formula (the beam's
//! entries first, then beam order, concept number, and OR, AND, AND NOT).
//! A formula of length `L` has `L` concepts: `--formula-length 3` runs two
//! steps. Two departures from compexp: a concept already in a formula does
//! not extend it (`A OR A` is `A`), and formulas equal as logic
//! (`A OR B`, `B OR A`) keep one beam slot, not two.
//!
//! # Counting without materialising masks
//!
//! Every step is one pass over the data. Per (unit, image), the unit's mask
//! is rebuilt as a bitset from the activations (only for maps with a value
//! above `T_k`), and each beam entry's mask from the image's concept
//! bitsets; then for every concept `c` in the image the pass adds
//! `|F ∩ c|` and `|M ∩ F ∩ c|`. With the totals `|F|`, `|M ∩ F|`, `|c|`
//! and `|M ∩ c|` that is every candidate:
//! `|M ∩ (F ∪ c)| = |M ∩ F| + |M ∩ c| - |M ∩ F ∩ c|`,
//! `|F ∪ c| = |F| + |c| - |F ∩ c|`, and AND NOT subtracts. Memory is
//! `units x B x labels x 16` bytes of counters per layer during a pass,
//! plus one batch's bitsets, whatever the number of images.

use std::collections::{BTreeMap, HashSet};

use broden::Batch;
use kernels::Upsample;
use kernels::count::AxisSample;
use kernels::cpu::upsample_value;
use rayon::prelude::*;

use crate::DissectError;
pub use crate::options::FormulaSearch;
use crate::options::UnionRule;
pub use crate::results::{FormulaScore, Op, Term};
use crate::score::{LabelInfo, LayerCounts, iou, scored_labels};

/// A left-deep formula: `((first op1 l1) op2 l2) ...`, by label number.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Formula {
    pub first: u32,
    pub rest: Vec<(Op, u32)>,
}

impl Formula {
    pub fn leaf(label: u32) -> Self {
        Self {
            first: label,
            rest: Vec::new(),
        }
    }

    /// The formula extended by `op label`.
    pub fn then(&self, op: Op, label: u32) -> Self {
        let mut rest = self.rest.clone();
        rest.push((op, label));
        Self {
            first: self.first,
            rest,
        }
    }

    /// Number of concepts.
    pub fn len(&self) -> usize {
        1 + self.rest.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn labels(&self) -> impl Iterator<Item = u32> + '_ {
        std::iter::once(self.first).chain(self.rest.iter().map(|&(_, l)| l))
    }

    /// `(A OR B) AND NOT C`, with `name` giving each label's name.
    pub fn text(&self, name: impl Fn(u32) -> String) -> String {
        let mut out = name(self.first);
        for (i, &(op, l)) in self.rest.iter().enumerate() {
            if i > 0 {
                out = format!("({out})");
            }
            out = format!("{out} {} {}", op.word(), name(l));
        }
        out
    }

    /// A key equal for formulas equal as logic by commutativity and
    /// associativity: `((A OR B) OR C)` and `((C OR A) OR B)` share one.
    pub fn canonical(&self) -> String {
        enum Node {
            Leaf(u32, bool),
            Or(Vec<Node>),
            And(Vec<Node>),
        }
        fn render(n: &Node) -> String {
            let join = |ch: &[Node], sep: &str| {
                let mut parts: Vec<String> = ch.iter().map(render).collect();
                parts.sort();
                format!("({})", parts.join(sep))
            };
            match n {
                Node::Leaf(l, false) => l.to_string(),
                Node::Leaf(l, true) => format!("!{l}"),
                Node::Or(ch) => join(ch, "|"),
                Node::And(ch) => join(ch, "&"),
            }
        }
        let mut node = Node::Leaf(self.first, false);
        for &(op, l) in &self.rest {
            node = match (op, node) {
                (Op::Or, Node::Or(mut ch)) => {
                    ch.push(Node::Leaf(l, false));
                    Node::Or(ch)
                }
                (Op::Or, n) => Node::Or(vec![n, Node::Leaf(l, false)]),
                (op, Node::And(mut ch)) => {
                    ch.push(Node::Leaf(l, op == Op::AndNot));
                    Node::And(ch)
                }
                (op, n) => Node::And(vec![n, Node::Leaf(l, op == Op::AndNot)]),
            };
        }
        render(&node)
    }
}

/// What the search needs of the dataset's labels.
#[derive(Debug, Clone)]
pub(crate) struct Concepts {
    /// Primary category (index into the dataset's categories) of every
    /// label number.
    pub category: Vec<u32>,
    /// Labels a formula may use: scored labels (of a counted category,
    /// not 0).
    pub eligible: Vec<bool>,
    pub union: UnionRule,
}

/// The concept bitsets of one image of a batch.
#[derive(Debug, Default)]
struct ImageBits {
    /// Pixel-level labels present, ascending: `(label, offset of its words
    /// in the arena, first and one-past-last nonzero word)`.
    pixel: Vec<(u32, usize, usize, usize)>,
    /// Image-level labels (whole-image masks), ascending, not among
    /// `pixel`.
    whole: Vec<u32>,
    /// Primary categories of every label present (the original rule's).
    present: u32,
    /// Categories of the image-level labels (the lite rule's part).
    scalar: u32,
}

impl ImageBits {
    fn has(&self, label: u32) -> bool {
        self.pixel.binary_search_by_key(&label, |p| p.0).is_ok()
            || self.whole.binary_search(&label).is_ok()
    }
}

/// One batch's concept masks as bitsets over the segmentation grid.
#[derive(Debug)]
pub(crate) struct BatchBits {
    words: usize,
    arena: Vec<u64>,
    images: Vec<ImageBits>,
    /// A whole image: `seg_pixels` ones.
    full: Vec<u64>,
}

impl BatchBits {
    pub fn new(batch: &Batch, concepts: &Concepts) -> Self {
        let n_pixels = (batch.seg_height * batch.seg_width) as usize;
        let words = n_pixels.div_ceil(64);
        let mut full = vec![u64::MAX; words];
        if !n_pixels.is_multiple_of(64) {
            full[words - 1] = (1u64 << (n_pixels % 64)) - 1;
        }
        let mut arena = Vec::new();
        let mut slot: Vec<Option<usize>> = vec![None; concepts.category.len()];
        let images = batch
            .labels
            .iter()
            .map(|labels| {
                let mut img = ImageBits::default();
                let mut order: Vec<u32> = Vec::new();
                for plane in &labels.planes {
                    for (p, &l) in plane.labels.iter().enumerate() {
                        if l == 0 {
                            continue;
                        }
                        let at = *slot[l as usize].get_or_insert_with(|| {
                            order.push(l);
                            arena.resize(arena.len() + words, 0);
                            arena.len() - words
                        });
                        arena[at + p / 64] |= 1 << (p % 64);
                    }
                }
                let mut whole: Vec<u32> = labels
                    .image_labels
                    .iter()
                    .map(|&(_, l)| l)
                    .filter(|&l| l != 0)
                    .collect();
                whole.sort_unstable();
                whole.dedup();
                order.sort_unstable();
                for &l in &order {
                    let at = slot[l as usize].take().unwrap_or_default();
                    let (lo, hi) = nonzero_range(&arena[at..at + words]).unwrap_or((0, 0));
                    img.present |= 1 << concepts.category[l as usize];
                    // A label both per pixel and per image covers the image.
                    if whole.binary_search(&l).is_err() {
                        img.pixel.push((l, at, lo, hi));
                    }
                }
                for &l in &whole {
                    img.present |= 1 << concepts.category[l as usize];
                    img.scalar |= 1 << concepts.category[l as usize];
                }
                img.whole = whole;
                img
            })
            .collect();
        Self {
            words,
            arena,
            images,
            full,
        }
    }

    /// Pixels of every label in this batch, added to `totals`.
    pub fn add_label_pixels(&self, totals: &mut [u64]) {
        let whole = popcount(&self.full);
        for img in &self.images {
            for &(l, at, lo, hi) in &img.pixel {
                totals[l as usize] += popcount(&self.arena[at + lo..at + hi]);
            }
            for &l in &img.whole {
                totals[l as usize] += whole;
            }
        }
    }

    /// Writes formula `f`'s mask on image `b` into `out`; returns the range
    /// of its nonzero words, `None` when it is empty there.
    fn eval(&self, b: usize, f: &Formula, out: &mut [u64]) -> Option<(usize, usize)> {
        let img = &self.images[b];
        if !could_be_nonempty(img, f) {
            return None;
        }
        let leaf = |l: u32| -> Option<&[u64]> {
            if let Ok(i) = img.pixel.binary_search_by_key(&l, |p| p.0) {
                let at = img.pixel[i].1;
                Some(&self.arena[at..at + self.words])
            } else if img.whole.binary_search(&l).is_ok() {
                Some(&self.full)
            } else {
                None
            }
        };
        match leaf(f.first) {
            Some(bits) => out.copy_from_slice(bits),
            None => out.fill(0),
        }
        for &(op, l) in &f.rest {
            match (op, leaf(l)) {
                (Op::Or, Some(bits)) => out.iter_mut().zip(bits).for_each(|(o, b)| *o |= b),
                (Op::And, Some(bits)) => out.iter_mut().zip(bits).for_each(|(o, b)| *o &= b),
                (Op::AndNot, Some(bits)) => out.iter_mut().zip(bits).for_each(|(o, b)| *o &= !b),
                (Op::And, None) => out.fill(0),
                (Op::Or | Op::AndNot, None) => {}
            }
        }
        nonzero_range(out)
    }
}

/// The range of `words` from its first to its last nonzero word.
fn nonzero_range(words: &[u64]) -> Option<(usize, usize)> {
    let lo = words.iter().position(|&w| w != 0)?;
    let hi = words.len() - words.iter().rev().position(|&w| w != 0).unwrap_or(0);
    Some((lo, hi))
}

/// False when `f` is empty on `img` for want of its concepts.
fn could_be_nonempty(img: &ImageBits, f: &Formula) -> bool {
    let mut maybe = img.has(f.first);
    for &(op, l) in &f.rest {
        maybe = match op {
            Op::Or => maybe || img.has(l),
            Op::And => maybe && img.has(l),
            Op::AndNot => maybe,
        };
    }
    maybe
}

fn popcount(words: &[u64]) -> u64 {
    words.iter().map(|w| u64::from(w.count_ones())).sum()
}

fn popcount_and(a: &[u64], b: &[u64]) -> u64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| u64::from((x & y).count_ones()))
        .sum()
}

/// A formula in a unit's beam, with its totals.
#[derive(Debug, Clone)]
struct Entry {
    formula: Formula,
    key: String,
    /// `|M ∩ F|`, `|F|`.
    inter: u64,
    size: u64,
    /// Categories of its concepts, as bits.
    scope: u32,
    /// `A_S`.
    act: u64,
    iou: f64,
}

/// An extension of a beam entry, scored.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    iou: f64,
    entry: usize,
    label: u32,
    op: Op,
    inter: u64,
    size: u64,
    scope: u32,
    act: u64,
}

/// One unit's search.
#[derive(Debug, Default)]
struct UnitSearch {
    beam: Vec<Entry>,
    /// `[entry * n_labels + label]`: `|F ∩ c|` and `|M ∩ F ∩ c|` of this pass.
    fc: Vec<u64>,
    mfc: Vec<u64>,
    /// `|M ∩ c|` per label (the first pass).
    mc: Vec<u64>,
    /// The unit's pixels by the categories their image admits (bits).
    admitted: BTreeMap<u32, u64>,
}

impl UnitSearch {
    /// `A_S`.
    fn activation(&self, scope: u32) -> u64 {
        (self.admitted.iter())
            .filter(|(bits, _)| *bits & scope != 0)
            .map(|(_, n)| n)
            .sum()
    }

    /// Scores the single labels of the first beam from this pass's counts.
    fn score_singles(&mut self, label_pixels: &[u64]) {
        let mut beam = std::mem::take(&mut self.beam);
        for e in &mut beam {
            let l = e.formula.first as usize;
            e.inter = self.mc[l];
            e.size = label_pixels[l];
            e.act = self.activation(e.scope);
            e.iou = iou(e.inter, e.act, e.size);
        }
        self.beam = beam;
    }

    /// Every extension of every beam entry by a concept it does not use
    /// yet, in generation order (entry, concept, then [`Op::ALL`]).
    fn candidates(
        &self,
        concepts_present: &[usize],
        label_pixels: &[u64],
        concepts: &Concepts,
        n_labels: usize,
    ) -> Vec<Candidate> {
        let mut scopes: BTreeMap<u32, u64> = BTreeMap::new();
        let mut candidates = Vec::new();
        for (j, e) in self.beam.iter().enumerate() {
            let used: Vec<u32> = e.formula.labels().collect();
            for &l in concepts_present {
                if used.contains(&(l as u32)) {
                    continue;
                }
                let (fc, mfc) = (self.fc[j * n_labels + l], self.mfc[j * n_labels + l]);
                let scope = e.scope | 1 << concepts.category[l];
                let act = *scopes
                    .entry(scope)
                    .or_insert_with(|| self.activation(scope));
                for op in Op::ALL {
                    let (inter, size) = match op {
                        // Exact on one pass's data; saturating in case a
                        // re-run network differed between passes.
                        Op::Or => (
                            (e.inter + self.mc[l]).saturating_sub(mfc),
                            (e.size + label_pixels[l]).saturating_sub(fc),
                        ),
                        Op::And => (mfc, fc),
                        Op::AndNot => (e.inter.saturating_sub(mfc), e.size.saturating_sub(fc)),
                    };
                    candidates.push(Candidate {
                        iou: iou(inter, act, size),
                        entry: j,
                        label: l as u32,
                        op,
                        inter,
                        size,
                        scope,
                        act,
                    });
                }
            }
        }
        candidates
    }

    /// The next beam: the `beam` best of the old entries and `candidates`,
    /// each formula once. A stable sort: ties keep the old beam first, then
    /// generation order.
    fn keep_best(&mut self, candidates: &[Candidate], beam: usize) {
        let mut pool: Vec<(f64, Option<usize>)> = self.beam.iter().map(|e| (e.iou, None)).collect();
        pool.extend(candidates.iter().enumerate().map(|(i, c)| (c.iou, Some(i))));
        let mut order: Vec<usize> = (0..pool.len()).collect();
        order.sort_by(|&a, &b| pool[b].0.total_cmp(&pool[a].0));
        let mut seen = HashSet::new();
        let mut next = Vec::with_capacity(beam);
        for i in order {
            if next.len() == beam {
                break;
            }
            let entry = match pool[i].1 {
                None => self.beam[i].clone(),
                Some(c) => {
                    let c = &candidates[c];
                    let formula = self.beam[c.entry].formula.then(c.op, c.label);
                    Entry {
                        key: formula.canonical(),
                        formula,
                        inter: c.inter,
                        size: c.size,
                        scope: c.scope,
                        act: c.act,
                        iou: c.iou,
                    }
                }
            };
            if seen.insert(entry.key.clone()) {
                next.push(entry);
            }
        }
        self.beam = next;
    }
}

/// The search over one layer's units.
#[derive(Debug)]
pub(crate) struct LayerSearch {
    units: Vec<UnitSearch>,
    thresholds: Vec<f32>,
    beam: usize,
    n_labels: usize,
}

impl LayerSearch {
    /// Starts each unit's beam with its `beam` best single labels by the
    /// dissection's own counts (IoU above 0; ties keep the lower label).
    pub fn new(
        counts: &LayerCounts,
        infos: &[LabelInfo],
        thresholds: Vec<f32>,
        beam: usize,
        concepts: &Concepts,
    ) -> Result<Self, DissectError> {
        let n_labels = concepts.category.len();
        if thresholds.len() != counts.n_units || counts.n_labels != n_labels {
            return Err(DissectError::Internal(format!(
                "formula search: {} thresholds and {} labels for {} units and {n_labels} labels",
                thresholds.len(),
                counts.n_labels,
                counts.n_units
            )));
        }
        let units = (0..counts.n_units)
            .map(|u| {
                let mut best: Vec<Entry> = scored_labels(counts, infos, u)
                    .filter(|s| s.iou > 0.0 && concepts.eligible[s.number])
                    .map(|s| {
                        let formula = Formula::leaf(s.number as u32);
                        Entry {
                            key: formula.canonical(),
                            formula,
                            inter: s.inter,
                            size: s.truth,
                            scope: 1 << concepts.category[s.number],
                            act: s.act,
                            iou: s.iou,
                        }
                    })
                    .collect();
                best.sort_by(|a, b| {
                    b.iou
                        .total_cmp(&a.iou)
                        .then(a.formula.first.cmp(&b.formula.first))
                });
                best.truncate(beam);
                UnitSearch {
                    beam: best,
                    mc: vec![0; n_labels],
                    ..Default::default()
                }
            })
            .collect();
        Ok(Self {
            units,
            thresholds,
            beam,
            n_labels,
        })
    }

    /// Makes the counters of a pass.
    pub fn begin_pass(&mut self) {
        let n = self.n_labels;
        for unit in &mut self.units {
            unit.fc = vec![0; unit.beam.len() * n];
            unit.mfc = vec![0; unit.beam.len() * n];
        }
    }

    /// Counts one batch: `data` is `[n, units, h, w]`, upsampled by `up`
    /// to the batch's segmentation grid. The first pass also counts each
    /// unit's pixels per concept and per admitted category set.
    pub fn observe(
        &mut self,
        bits: &BatchBits,
        data: &[f32],
        shape: [u32; 4],
        up: &Upsample,
        concepts: &Concepts,
        first: bool,
    ) -> Result<(), DissectError> {
        let [n, n_units, h, w] = shape.map(|v| v as usize);
        let plane = h * w;
        if n != bits.images.len()
            || n_units != self.units.len()
            || data.len() != n * n_units * plane
            || (up.h as usize, up.w as usize) != (h, w)
            || (up.sh * up.sw).div_ceil(64) as usize != bits.words
        {
            return Err(DissectError::Internal(format!(
                "formula search: activations {shape:?} do not fit the batch or the layer"
            )));
        }
        let (ty, tx) = (up.taps_y(), up.taps_x());
        let n_labels = self.n_labels;
        let words = bits.words;
        let thresholds = &self.thresholds;
        self.units.par_iter_mut().enumerate().for_each(|(u, unit)| {
            let t = thresholds[u];
            let mut m = vec![0u64; words];
            let mut f = vec![0u64; words];
            let mut mf = vec![0u64; words];
            for (b, img) in bits.images.iter().enumerate() {
                let map = &data[(b * n_units + u) * plane..(b * n_units + u + 1) * plane];
                let (masked, m_range) = if map.iter().any(|&v| v > t) {
                    let n = unit_mask(map, up.w, &ty, &tx, t, up.sw as usize, &mut m);
                    (n, nonzero_range(&m))
                } else {
                    (0, None)
                };
                if first && let Some((m_lo, m_hi)) = m_range {
                    let mut under = 0u32;
                    for &(l, at, lo, hi) in &img.pixel {
                        let (a, z) = (lo.max(m_lo), hi.min(m_hi));
                        let k = if a < z {
                            popcount_and(&m[a..z], &bits.arena[at + a..at + z])
                        } else {
                            0
                        };
                        if k > 0 {
                            unit.mc[l as usize] += k;
                            under |= 1 << concepts.category[l as usize];
                        }
                    }
                    for &l in &img.whole {
                        unit.mc[l as usize] += masked;
                    }
                    let admits = match concepts.union {
                        UnionRule::Original => img.present,
                        UnionRule::Lite => under | img.scalar,
                    };
                    *unit.admitted.entry(admits).or_default() += masked;
                }
                for (j, entry) in unit.beam.iter().enumerate() {
                    let Some((f_lo, f_hi)) = bits.eval(b, &entry.formula, &mut f) else {
                        continue;
                    };
                    let fc = &mut unit.fc[j * n_labels..(j + 1) * n_labels];
                    let mfc = &mut unit.mfc[j * n_labels..(j + 1) * n_labels];
                    let f_size = popcount(&f[f_lo..f_hi]);
                    // M ∩ F, over the words where both may be nonzero.
                    let (mf_lo, mf_hi) = m_range.map_or((0, 0), |(m_lo, m_hi)| {
                        (m_lo.max(f_lo), m_hi.min(f_hi).max(m_lo.max(f_lo)))
                    });
                    for k in mf_lo..mf_hi {
                        mf[k] = m[k] & f[k];
                    }
                    let mf_size = popcount(&mf[mf_lo..mf_hi]);
                    for &(l, at, lo, hi) in &img.pixel {
                        let c = &bits.arena[at..at + words];
                        let (a, z) = (lo.max(f_lo), hi.min(f_hi));
                        if a < z {
                            fc[l as usize] += popcount_and(&f[a..z], &c[a..z]);
                        }
                        let (a, z) = (lo.max(mf_lo), hi.min(mf_hi));
                        if mf_size > 0 && a < z {
                            mfc[l as usize] += popcount_and(&mf[a..z], &c[a..z]);
                        }
                    }
                    for &l in &img.whole {
                        fc[l as usize] += f_size;
                        mfc[l as usize] += mf_size;
                    }
                }
            }
        });
        Ok(())
    }

    /// After a pass: scores every extension of every beam entry and keeps
    /// the best. `label_pixels` are the labels' totals; after the first
    /// pass the single labels' counts are filled in first.
    pub fn extend(&mut self, label_pixels: &[u64], concepts: &Concepts, first: bool) {
        let n_labels = self.n_labels;
        let beam = self.beam;
        // compexp's extension pool: every concept present in the dataset.
        let concepts_present: Vec<usize> = (0..n_labels)
            .filter(|&l| concepts.eligible[l] && label_pixels[l] > 0)
            .collect();
        self.units.par_iter_mut().for_each(|unit| {
            if first {
                unit.score_singles(label_pixels);
            }
            let candidates = unit.candidates(&concepts_present, label_pixels, concepts, n_labels);
            unit.keep_best(&candidates, beam);
            unit.fc = Vec::new();
            unit.mfc = Vec::new();
        });
    }

    /// Each unit's final beam, best first.
    pub fn finish(self, name: impl Fn(u32) -> String) -> Vec<Vec<FormulaScore>> {
        self.units
            .into_iter()
            .map(|unit| {
                unit.beam
                    .iter()
                    .map(|e| FormulaScore {
                        formula: e.formula.text(&name),
                        terms: std::iter::once(Term {
                            op: None,
                            label: e.formula.first,
                            name: name(e.formula.first),
                        })
                        .chain(e.formula.rest.iter().map(|&(op, l)| Term {
                            op: Some(op),
                            label: l,
                            name: name(l),
                        }))
                        .collect(),
                        iou: e.iou,
                        intersect: e.inter,
                        truth: e.size,
                        activation: e.act,
                    })
                    .collect()
            })
            .collect()
    }
}

/// Writes the unit's mask on the `sw`-wide seg grid into `out` (as the
/// count pass binarizes: the upsampled value strictly above `t`); returns
/// its pixel count.
fn unit_mask(
    map: &[f32],
    w: u32,
    ty: &[AxisSample],
    tx: &[AxisSample],
    t: f32,
    sw: usize,
    out: &mut [u64],
) -> u64 {
    out.fill(0);
    let mut n = 0;
    for (y, &row) in ty.iter().enumerate() {
        for (x, &col) in tx.iter().enumerate() {
            if upsample_value(map, w, row, col) > t {
                let p = y * sw + x;
                out[p / 64] |= 1 << (p % 64);
                n += 1;
            }
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_nests_left_to_right() {
        let f = Formula::leaf(1).then(Op::Or, 2).then(Op::AndNot, 3);
        let names = ["", "water", "river", "blue-c"];
        assert_eq!(
            f.text(|l| names[l as usize].to_string()),
            "(water OR river) AND NOT blue-c"
        );
        assert_eq!(Formula::leaf(2).text(|l| l.to_string()), "2");
        assert_eq!(f.len(), 3);
    }

    #[test]
    fn canonical_keys_join_formulas_equal_as_logic() {
        let ab = Formula::leaf(1).then(Op::Or, 2);
        let ba = Formula::leaf(2).then(Op::Or, 1);
        assert_eq!(ab.canonical(), ba.canonical());
        let a_not_b_c = Formula::leaf(1).then(Op::AndNot, 2).then(Op::And, 3);
        let a_c_not_b = Formula::leaf(1).then(Op::And, 3).then(Op::AndNot, 2);
        assert_eq!(a_not_b_c.canonical(), a_c_not_b.canonical());
        // Not equal as logic: (A OR B) AND C, A OR (B AND C) is not left-deep
        // but (A AND C) OR B differs.
        let or_and = Formula::leaf(1).then(Op::Or, 2).then(Op::And, 3);
        let and_or = Formula::leaf(1).then(Op::And, 3).then(Op::Or, 2);
        assert_ne!(or_and.canonical(), and_or.canonical());
        assert_ne!(
            Formula::leaf(1).then(Op::AndNot, 2).canonical(),
            Formula::leaf(2).then(Op::AndNot, 1).canonical()
        );
        assert_ne!(
            Formula::leaf(1).then(Op::And, 2).canonical(),
            Formula::leaf(1).then(Op::AndNot, 2).canonical()
        );
    }
}
