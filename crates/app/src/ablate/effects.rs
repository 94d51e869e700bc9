//! What an ablation does to the classifier: each image's prediction and
//! the margin of its true class, per class accuracy and the balanced
//! accuracy of "this class against the rest", and the ranking of units by
//! the mean margin a class loses when one unit is removed.

use serde::Serialize;

/// Each image's outcome under one ablation: the predicted class and the
/// margin of its true class (its logit minus the largest other logit).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Outcome {
    pub pred: Vec<u32>,
    pub margin: Vec<f32>,
}

impl Outcome {
    /// Appends the images of `logits` (`[n][classes]`), whose true
    /// classes are `labels`.
    pub fn push(&mut self, logits: &[f32], classes: usize, labels: &[usize]) {
        for (row, &y) in logits.chunks_exact(classes).zip(labels) {
            let (pred, margin) = judge(row, y);
            self.pred.push(pred);
            self.margin.push(margin);
        }
    }
}

/// The predicted class (the first of equal maxima, as `argmax`) and the
/// true class `y`'s margin over the largest other logit.
pub(crate) fn judge(row: &[f32], y: usize) -> (u32, f32) {
    let mut pred = 0;
    let mut other = f32::NEG_INFINITY;
    for (c, &v) in row.iter().enumerate() {
        if v > row[pred] {
            pred = c;
        }
        if c != y && v > other {
            other = v;
        }
    }
    let margin = if other.is_finite() {
        row[y] - other
    } else {
        row[y]
    };
    (pred as u32, margin)
}

/// One class's measures under one ablation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassScore {
    /// Of the class's images, the share predicted as the class.
    pub accuracy: f64,
    /// The mean of the other measured classes' accuracies (`None` when
    /// the images have one class).
    pub others_accuracy: Option<f64>,
    /// The mean of the accuracy and of the share of other images not
    /// predicted as the class: the paper's balanced binary accuracy
    /// (`None` when the images have one class: there is no rest).
    pub balanced_accuracy: Option<f64>,
}

/// Every measured class's scores (`measured`: the classes with images,
/// ascending), from one ablation's predictions.
pub(crate) fn scores(pred: &[u32], labels: &[usize], measured: &[usize]) -> Vec<ClassScore> {
    let n = labels.len();
    let mut hits = vec![0usize; measured.len()];
    let mut total = vec![0usize; measured.len()];
    let mut predicted_wrongly = vec![0usize; measured.len()];
    let slot = |c: usize| measured.binary_search(&c).ok();
    for (&p, &y) in pred.iter().zip(labels) {
        if let Some(s) = slot(y) {
            total[s] += 1;
            hits[s] += usize::from(p as usize == y);
        }
        if let Some(s) = slot(p as usize)
            && p as usize != y
        {
            predicted_wrongly[s] += 1;
        }
    }
    let accuracy: Vec<f64> = (hits.iter().zip(&total))
        .map(|(&h, &t)| h as f64 / t.max(1) as f64)
        .collect();
    (0..measured.len())
        .map(|s| {
            let negatives = n - total[s];
            let specificity =
                (negatives > 0).then(|| 1.0 - predicted_wrongly[s] as f64 / negatives as f64);
            ClassScore {
                accuracy: accuracy[s],
                others_accuracy: (measured.len() > 1).then(|| {
                    let others = (accuracy.iter().enumerate())
                        .filter(|&(j, _)| j != s)
                        .map(|(_, a)| a);
                    others.sum::<f64>() / (measured.len() - 1) as f64
                }),
                balanced_accuracy: specificity.map(|sp| (accuracy[s] + sp) / 2.0),
            }
        })
        .collect()
}

/// Per measured class, the mean over its images of the margin lost when
/// each unit alone is removed: `singles[k]` is the outcome with unit `k`
/// removed, `base` the intact network's. `[class slot][unit]`.
pub(crate) fn single_drops(
    base: &Outcome,
    singles: &[Outcome],
    labels: &[usize],
    measured: &[usize],
) -> Vec<Vec<f64>> {
    let mut drops = vec![vec![0f64; singles.len()]; measured.len()];
    let mut count = vec![0usize; measured.len()];
    for (i, &y) in labels.iter().enumerate() {
        let Ok(s) = measured.binary_search(&y) else {
            continue;
        };
        count[s] += 1;
        for (k, single) in singles.iter().enumerate() {
            drops[s][k] += f64::from(base.margin[i]) - f64::from(single.margin[i]);
        }
    }
    for (row, &c) in drops.iter_mut().zip(&count) {
        row.iter_mut().for_each(|d| *d /= c.max(1) as f64);
    }
    drops
}

/// Units by decreasing drop (ties: the lower unit first).
pub(crate) fn ranked(drops: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..drops.len()).collect();
    order.sort_by(|&a, &b| drops[b].total_cmp(&drops[a]).then(a.cmp(&b)));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn margins_predictions_and_scores_follow_their_definitions() {
        assert_eq!(judge(&[1.0, 3.0, 2.0], 2), (1, -1.0));
        assert_eq!(judge(&[5.0, 3.0, 5.0], 0), (0, 0.0));
        assert_eq!(judge(&[2.0], 0), (0, 2.0));
        // Classes 0, 1, 2 (2 has no images, so is not measured).
        let labels = [0, 0, 0, 1, 1];
        let pred = [0, 0, 2, 1, 0];
        let s = scores(&pred, &labels, &[0, 1]);
        assert!((s[0].accuracy - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(s[1].accuracy, 0.5);
        assert_eq!(s[0].others_accuracy, Some(0.5));
        // Class 0 against the rest: 2 of 3 found, 1 of 2 others wrongly
        // called class 0.
        assert!((s[0].balanced_accuracy.unwrap() - (2.0 / 3.0 + 0.5) / 2.0).abs() < 1e-12);
        // Class 1: 1 of 2 found, none of the 3 others called class 1.
        assert_eq!(s[1].balanced_accuracy, Some(0.75));
        let alone = scores(&[0], &[0], &[0])[0];
        assert_eq!(
            (alone.others_accuracy, alone.balanced_accuracy),
            (None, None)
        );
    }

    #[test]
    fn units_rank_by_the_mean_margin_their_class_loses() {
        let base = Outcome {
            pred: vec![0, 0, 1],
            margin: vec![2.0, 4.0, 1.0],
        };
        // Unit 0 costs class 0 1.0 on average, unit 1 costs it 3.0; unit 1
        // helps class 1.
        let singles = [
            Outcome {
                pred: vec![0, 0, 1],
                margin: vec![1.0, 3.0, 1.0],
            },
            Outcome {
                pred: vec![1, 0, 1],
                margin: vec![-1.0, 1.0, 2.0],
            },
        ];
        let drops = single_drops(&base, &singles, &[0, 0, 1], &[0, 1]);
        assert_eq!(drops, vec![vec![1.0, 3.0], vec![0.0, -1.0]]);
        assert_eq!(ranked(&drops[0]), [1, 0]);
        assert_eq!(ranked(&drops[1]), [0, 1]);
        assert_eq!(ranked(&[0.5, 0.5, 0.7]), [2, 0, 1]);
    }
}
