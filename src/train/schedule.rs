//! Per-epoch schedules (docs/method.md §4.3, §4.6), computed as PyTorch does, so values agree bitwise.
//! - OneCycleLR (`max_lr`, `total_steps = epochs`, pct_start 0.3, div 25, final_div 1e4): phase 1
//!   to step `0.3·epochs − 1` anneals lr up and β1 from 0.95 down to 0.85, phase 2 back;
//!   `anneal(a, b, pct) = b + (a − b)/2·(cos(π·pct) + 1)`.
//! - CosineAnnealingLR (η_min 0), recursive: `lr_e = (1 + cos(π e/T)) / (1 + cos(π (e−1)/T)) · lr_{e−1}`.
//! - Sigma: at the end of epoch e < final_epoch, while the output layer's σ > 0.23, every σ is
//!   multiplied by `fl32(α)` in float32.

use crate::config::Scheduler;
use std::f64::consts::PI;

const PCT_START: f64 = 0.3;
const DIV_FACTOR: f64 = 25.0;
const FINAL_DIV_FACTOR: f64 = 1e4;
const BASE_MOMENTUM: f64 = 0.85;
const MAX_MOMENTUM: f64 = 0.95;

/// A learning-rate schedule stepped once per epoch; `beta1` is set only by one-cycle.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LrSchedule {
    pub kind: Scheduler,
    pub base_lr: f64,
    pub total: usize,
    /// PyTorch's `last_epoch`: how many times the schedule has been stepped.
    pub steps: usize,
    /// The current rate (the recursive cosine carries it from step to step).
    pub lr: f64,
}

impl LrSchedule {
    /// For one-cycle `base_lr` is `max_lr`; otherwise the starting rate.
    pub fn new(kind: Scheduler, base_lr: f64, total: usize) -> LrSchedule {
        let mut schedule = LrSchedule { kind, base_lr, total, steps: 0, lr: base_lr };
        schedule.lr = schedule.compute();
        schedule
    }

    /// Advances one epoch.
    pub fn step(&mut self) {
        self.steps += 1;
        self.lr = self.compute();
    }

    /// β1 for Adam, cycled by one-cycle, else Adam's default.
    pub fn beta1(&self) -> f64 {
        match self.kind {
            Scheduler::OneCycle => self.one_cycle().1,
            _ => super::optim::DEFAULT_BETA1,
        }
    }

    fn compute(&self) -> f64 {
        match self.kind {
            Scheduler::OneCycle => self.one_cycle().0,
            Scheduler::CosineA => self.cosine(),
            Scheduler::None => self.base_lr,
        }
    }

    fn one_cycle(&self) -> (f64, f64) {
        let max_lr = self.base_lr;
        let initial = max_lr / DIV_FACTOR;
        let minimum = initial / FINAL_DIV_FACTOR;
        let phases = [
            (PCT_START * self.total as f64 - 1.0, initial, max_lr, MAX_MOMENTUM, BASE_MOMENTUM),
            (self.total as f64 - 1.0, max_lr, minimum, BASE_MOMENTUM, MAX_MOMENTUM),
        ];
        let step = self.steps as f64;
        let mut start = 0.0;
        for (i, &(end, lr_from, lr_to, beta_from, beta_to)) in phases.iter().enumerate() {
            if step <= end || i == phases.len() - 1 {
                let pct = (step - start) / (end - start);
                return (anneal(lr_from, lr_to, pct), anneal(beta_from, beta_to, pct));
            }
            start = end;
        }
        unreachable!("the last phase always matches")
    }

    fn cosine(&self) -> f64 {
        let (e, t) = (self.steps as i64, self.total as f64);
        if e == 0 {
            self.lr
        } else if (e - 1 - self.total as i64).rem_euclid(2 * self.total as i64) == 0 {
            self.lr + self.base_lr * (1.0 - (PI / t).cos()) / 2.0
        } else {
            (1.0 + (PI * e as f64 / t).cos()) / (1.0 + (PI * (e - 1) as f64 / t).cos()) * (self.lr - 0.0) + 0.0
        }
    }
}

fn anneal(start: f64, end: f64, pct: f64) -> f64 {
    let cos_out = (PI * pct).cos() + 1.0;
    end + (start - end) / 2.0 * cos_out
}

/// Whether sigma decays at the end of `epoch`, given the output layer's current sigma.
pub fn sigma_decays(epoch: usize, final_epoch: usize, output_sigma: f64) -> bool {
    epoch < final_epoch && output_sigma > 0.23
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cycle_values_of_the_spec() {
        let mut schedule = LrSchedule::new(Scheduler::OneCycle, 0.005, 150);
        assert_eq!((schedule.lr, schedule.beta1()), (0.00019999999999999966, 0.95));
        for _ in 0..44 {
            schedule.step();
        }
        assert_eq!((schedule.lr, schedule.beta1()), (0.005, 0.85));
        for _ in 44..149 {
            schedule.step();
        }
        assert!((schedule.lr - 2e-8).abs() < 1e-20 && schedule.beta1() == 0.95);
    }

    #[test]
    fn recursive_cosine_values_of_the_spec() {
        let mut schedule = LrSchedule::new(Scheduler::CosineA, 0.1, 150);
        schedule.step();
        assert_eq!(schedule.lr, 0.09998903417374227);
        for _ in 1..149 {
            schedule.step();
        }
        assert_eq!(schedule.lr, 1.0965826257725021e-05);
    }
}
