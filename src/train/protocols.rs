//! The selection protocols of `snn-delays reproduce` (docs/method.md, "Selection protocols")
//! and the table of their results beside the paper's.
//!
//! - SHD has no validation file. The paper chose the best epoch on the test split (`paper`);
//!   `holdout` chooses it on 20% of the training split held out by seed, and reports the test
//!   accuracy at that epoch.
//! - SSC and Speech Commands have validation files (`file`).
//! - The DelRec presets run DelRec's protocols: `file` on SSC; on SHD, `holdout` (20 % of the
//!   training split by seed, as DelRec splits it).
//!
//! Each run's figure is the test accuracy at its best validation epoch, sample-weighted; the
//! reference's mean over batches at the same epoch is kept beside it. Over seeds:
//! mean ± sample standard deviation (n − 1).

use crate::config::{Dataset, Preset, Validation};
use serde::Serialize;

/// A way to choose the reported epoch.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Protocol {
    pub name: &'static str,
    pub validation: Validation,
    pub description: &'static str,
    /// The published figure (mean, standard deviation, %) and where it comes from.
    pub published: Option<(f64, f64, &'static str)>,
}

/// The protocols run for a preset: the DelRec ones', or its dataset's.
pub fn preset_protocols(preset: Preset) -> Vec<Protocol> {
    const DELREC: &str = "Quéant, Rançon, Cottereau and Masquelier, 2025 (DelRec), as cited by a follow-up's README";
    match preset {
        Preset::DelrecSsc => vec![Protocol {
            name: "file",
            validation: Validation::File,
            description: "best epoch chosen on ssc_valid.h5",
            published: Some((82.58, 0.08, DELREC)),
        }],
        Preset::DelrecShd => vec![Protocol {
            name: "holdout",
            validation: Validation::Holdout,
            description: "best epoch chosen on 20% of the training split held out",
            published: None,
        }],
        Preset::Shd => protocols(Dataset::Shd),
        Preset::Ssc => protocols(Dataset::Ssc),
        Preset::Gsc => protocols(Dataset::Gsc),
    }
}

/// The protocols run for `dataset`.
pub fn protocols(dataset: Dataset) -> Vec<Protocol> {
    const PAPER: &str = "Hammouamri, Khalfaoui-Hassani and Masquelier, ICLR 2024";
    const PAPER_LARGE: &str = "Hammouamri, Khalfaoui-Hassani and Masquelier, ICLR 2024, a 2.5M-parameter variant; \
                               the preset, the reference code's best configuration, has 1.23M";
    match dataset {
        Dataset::Shd => vec![
            Protocol {
                name: "paper",
                validation: Validation::Test,
                description: "the paper's: best epoch chosen on the test split",
                published: Some((95.07, 0.24, PAPER)),
            },
            Protocol {
                name: "holdout",
                validation: Validation::Holdout,
                description: "best epoch chosen on 20% of the training split held out",
                published: Some((93.77, 0.68, "a published re-run of DCLS-Delays with held-out validation")),
            },
        ],
        Dataset::Ssc => vec![Protocol {
            name: "file",
            validation: Validation::File,
            description: "best epoch chosen on ssc_valid.h5",
            published: Some((80.69, 0.21, PAPER_LARGE)),
        }],
        Dataset::Gsc => vec![Protocol {
            name: "file",
            validation: Validation::File,
            description: "best epoch chosen on validation_list.txt",
            published: Some((95.35, 0.04, PAPER_LARGE)),
        }],
    }
}

/// One finished run's figures.
#[derive(Clone, Debug, Serialize)]
pub struct SeedResult {
    pub seed: u64,
    pub run_dir: String,
    /// Test accuracy at the best validation epoch, sample-weighted.
    pub test_acc: f64,
    /// The same, as the reference's mean over batches.
    pub test_acc_batch_mean: f64,
    pub best_epoch: u64,
}

impl SeedResult {
    /// Reads a run's `summary.json` values.
    pub fn from_summary(seed: u64, run_dir: String, summary: &serde_json::Value) -> Option<SeedResult> {
        Some(SeedResult {
            seed,
            run_dir,
            test_acc: summary["test_acc_at_best_valid"].as_f64()?,
            test_acc_batch_mean: summary["test_acc_batch_mean_at_best_valid"].as_f64()?,
            best_epoch: summary["best_valid_epoch"].as_u64()?,
        })
    }
}

/// A protocol's runs and their mean ± standard deviation (as fractions).
#[derive(Clone, Debug, Serialize)]
pub struct ProtocolResult {
    pub protocol: Protocol,
    pub runs: Vec<SeedResult>,
    pub mean: f64,
    pub std: f64,
    pub mean_batch_mean: f64,
    pub std_batch_mean: f64,
}

impl ProtocolResult {
    pub fn new(protocol: Protocol, runs: Vec<SeedResult>) -> ProtocolResult {
        let (mean, std) = mean_std(&runs.iter().map(|r| r.test_acc).collect::<Vec<_>>());
        let (mean_batch_mean, std_batch_mean) = mean_std(&runs.iter().map(|r| r.test_acc_batch_mean).collect::<Vec<_>>());
        ProtocolResult { protocol, runs, mean, std, mean_batch_mean, std_batch_mean }
    }
}

/// Mean and sample standard deviation (0 for one value).
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let variance = if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, variance.sqrt())
}

/// `results.md`: one row per protocol, the seeds' test accuracies, their mean ± std and the
/// published figure.
pub fn markdown(title: &str, results: &[ProtocolResult]) -> String {
    let seeds = results.first().map_or(0, |r| r.runs.len());
    let mut text = format!(
        "# Reproduction: {title}\n\nTest accuracy (%) at the best validation epoch, weighted by samples; in brackets the \
         reference's mean over batches. Mean ± sample standard deviation over {seeds} seeds.\n\n"
    );
    let seed_columns: String =
        results.first().map_or(String::new(), |r| r.runs.iter().map(|run| format!(" seed {} |", run.seed)).collect());
    text += &format!("| protocol |{seed_columns} mean ± std | published |\n|---|{}---|---|\n", "---|".repeat(seeds));
    for result in results {
        let cells: String = result
            .runs
            .iter()
            .map(|run| format!(" {:.2} ({:.2}) |", 100.0 * run.test_acc, 100.0 * run.test_acc_batch_mean))
            .collect();
        let published =
            result.protocol.published.map_or("–".to_string(), |(mean, std, source)| format!("{mean:.2} ± {std:.2} ({source})"));
        text += &format!(
            "| {} ({}) |{cells} {:.2} ± {:.2} ({:.2} ± {:.2}) | {published} |\n",
            result.protocol.name,
            result.protocol.description,
            100.0 * result.mean,
            100.0 * result.std,
            100.0 * result.mean_batch_mean,
            100.0 * result.std_batch_mean
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_standard_deviation() {
        let (mean, std) = mean_std(&[0.9, 0.92, 0.94]);
        assert!((mean - 0.92).abs() < 1e-12 && (std - 0.02).abs() < 1e-12, "{mean} {std}");
        assert_eq!(mean_std(&[0.5]), (0.5, 0.0));
    }

    #[test]
    fn shd_has_both_protocols_and_the_table_shows_the_paper() {
        let names: Vec<_> = protocols(Dataset::Shd).iter().map(|p| p.name).collect();
        assert_eq!(names, ["paper", "holdout"]);
        let run = SeedResult { seed: 0, run_dir: "r".into(), test_acc: 0.95, test_acc_batch_mean: 0.951, best_epoch: 3 };
        let table = markdown("SHD", &[ProtocolResult::new(protocols(Dataset::Shd)[0], vec![run])]);
        assert!(table.contains("| paper (") && table.contains("95.00 (95.10)") && table.contains("95.07 ± 0.24"), "{table}");
    }
}
