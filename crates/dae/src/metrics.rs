//! Classification metrics: accuracy, per-class precision and recall, the confusion matrix.

use serde::Serialize;

/// How well predicted classes match the true ones.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Evaluation {
    pub rows: usize,
    pub classes: usize,
    pub accuracy: f64,
    /// Of the rows predicted as class c, the fraction that are c (None when none were).
    pub precision: Vec<Option<f64>>,
    /// Of the rows of class c, the fraction predicted as c (None when there are none).
    pub recall: Vec<Option<f64>>,
    /// Rows of each true class.
    pub support: Vec<u64>,
    /// `confusion[true][predicted]` counts rows.
    pub confusion: Vec<Vec<u64>>,
}

/// Compares `predicted` with `truth` (class indices below `classes`).
pub fn evaluate(predicted: &[u32], truth: &[u32], classes: usize) -> Evaluation {
    assert_eq!(predicted.len(), truth.len());
    let mut confusion = vec![vec![0u64; classes]; classes];
    for (&p, &t) in predicted.iter().zip(truth) {
        confusion[t as usize][p as usize] += 1;
    }
    let correct: u64 = (0..classes).map(|c| confusion[c][c]).sum();
    let support: Vec<u64> = confusion.iter().map(|row| row.iter().sum()).collect();
    let predicted_as: Vec<u64> = (0..classes).map(|c| confusion.iter().map(|row| row[c]).sum()).collect();
    let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
    Evaluation {
        rows: truth.len(),
        classes,
        accuracy: ratio(correct, truth.len() as u64).unwrap_or(0.0),
        precision: (0..classes).map(|c| ratio(confusion[c][c], predicted_as[c])).collect(),
        recall: (0..classes).map(|c| ratio(confusion[c][c], support[c])).collect(),
        support,
        confusion,
    }
}

/// The index of the largest value of each row of a rows × `classes` matrix (the first on ties).
pub fn argmax_rows(scores: &[f32], classes: usize) -> Vec<u32> {
    scores
        .chunks_exact(classes)
        .map(|row| {
            let mut best = 0;
            for (j, &v) in row.iter().enumerate() {
                if v > row[best] {
                    best = j;
                }
            }
            best as u32
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ratios() {
        let e = evaluate(&[0, 1, 1, 2, 0], &[0, 1, 2, 2, 1], 3);
        assert_eq!(e.confusion, vec![vec![1, 0, 0], vec![1, 1, 0], vec![0, 1, 1]]);
        assert_eq!(e.accuracy, 0.6);
        assert_eq!(e.precision, vec![Some(0.5), Some(0.5), Some(1.0)]);
        assert_eq!(e.recall, vec![Some(1.0), Some(0.5), Some(0.5)]);
        assert_eq!(e.support, vec![1, 2, 2]);
        let e = evaluate(&[0], &[0], 2);
        assert_eq!(e.precision[1], None);
        assert_eq!(e.recall[1], None);
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax_rows(&[0.1, 0.7, 0.2, 0.5, 0.5, 0.0], 3), vec![1, 0]);
    }
}
