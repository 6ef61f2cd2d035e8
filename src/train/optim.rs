//! Adam as `torch.optim.Adam` computes it (docs/method.md §4.2), with named parameters so that its
//! state can be saved and resumed; with decoupled weight decay, `torch.optim.AdamW`. Per step,
//! with the group's current β1:
//! - `g ← g + wd·p` (L2 weight decay into the gradient), or for AdamW `p ← p·(1 − lr·wd)`;
//! - `m ← lerp(m, g, 1−β1)`; `v ← v·β2 + (1−β2)·g²`;
//! - `p ← p − (lr/(1−β1^t)) · m / (sqrt(v)/(1−β2^t)^½ + ε)`.
//!
//! The ops and scalar forms follow PyTorch's single-tensor CPU path, so the update is bitwise
//! equal except where PyTorch fuses `g + wd·p` into one multiply-add (tch exposes no fused op).

use std::collections::BTreeMap;
use tch::Tensor;

pub const BETA2: f64 = 0.999;
pub const EPS: f64 = 1e-8;
pub const DEFAULT_BETA1: f64 = 0.9;

/// One parameter with its moment estimates.
#[derive(Debug)]
pub struct AdamParam {
    pub key: String,
    pub param: Tensor,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
    pub steps: u64,
}

/// Parameters sharing a learning rate and weight decay.
#[derive(Debug)]
pub struct AdamGroup {
    pub params: Vec<AdamParam>,
    pub weight_decay: f64,
}

#[derive(Debug)]
pub struct Adam {
    pub groups: Vec<AdamGroup>,
    pub lr: f64,
    pub beta1: f64,
    /// AdamW: the weight decay shrinks the parameter instead of entering the gradient.
    pub decoupled: bool,
}

impl Adam {
    /// Groups of `(key, parameter)` with their weight decays.
    pub fn new(groups: Vec<(Vec<(String, Tensor)>, f64)>, lr: f64) -> Adam {
        let groups = groups
            .into_iter()
            .map(|(params, weight_decay)| AdamGroup {
                params: params
                    .into_iter()
                    .map(|(key, param)| AdamParam {
                        exp_avg: param.zeros_like().detach(),
                        exp_avg_sq: param.zeros_like().detach(),
                        key,
                        param,
                        steps: 0,
                    })
                    .collect(),
                weight_decay,
            })
            .collect();
        Adam { groups, lr, beta1: DEFAULT_BETA1, decoupled: false }
    }

    /// The same optimizer with decoupled weight decay (AdamW).
    pub fn decoupled(self) -> Adam {
        Adam { decoupled: true, ..self }
    }

    pub fn params(&self) -> impl Iterator<Item = &AdamParam> {
        self.groups.iter().flat_map(|g| g.params.iter())
    }

    fn params_mut(&mut self) -> impl Iterator<Item = (&mut AdamParam, f64)> {
        self.groups.iter_mut().flat_map(|g| {
            let decay = g.weight_decay;
            g.params.iter_mut().map(move |p| (p, decay))
        })
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for (p, _) in self.params_mut() {
            let mut grad = p.param.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
        }
    }

    /// One update of every parameter that has a gradient.
    pub fn step(&mut self) {
        let (lr, beta1, decoupled) = (self.lr, self.beta1, self.decoupled);
        tch::no_grad(|| {
            for (p, decay) in self.params_mut() {
                let grad = p.param.grad();
                if !grad.defined() {
                    continue;
                }
                let grad = match (decay != 0.0, decoupled) {
                    (false, _) => grad,
                    (true, false) => &grad + &p.param * decay,
                    (true, true) => {
                        let _ = p.param.g_mul_scalar_(1.0 - lr * decay);
                        grad
                    }
                };
                p.steps += 1;
                let _ = p.exp_avg.lerp_(&grad, 1.0 - beta1);
                let _ = p.exp_avg_sq.g_mul_scalar_(BETA2).addcmul_(&(&grad * (1.0 - BETA2)), &grad);
                let correction1 = 1.0 - beta1.powf(p.steps as f64);
                let correction2 = 1.0 - BETA2.powf(p.steps as f64);
                let step_size = lr / correction1;
                let denominator = p.exp_avg_sq.sqrt() / correction2.powf(0.5) + EPS;
                let _ = p.param.addcdiv_(&(&p.exp_avg * -step_size), &denominator);
            }
        });
    }

    /// Moment estimates as named tensors, for checkpoints (`<prefix>.<key>.exp_avg`, …).
    pub fn state_tensors(&self, prefix: &str) -> Vec<(String, Tensor)> {
        self.params()
            .flat_map(|p| {
                [
                    (format!("{prefix}.{}.exp_avg", p.key), p.exp_avg.shallow_clone()),
                    (format!("{prefix}.{}.exp_avg_sq", p.key), p.exp_avg_sq.shallow_clone()),
                ]
            })
            .collect()
    }

    pub fn steps(&self) -> BTreeMap<String, u64> {
        self.params().map(|p| (p.key.clone(), p.steps)).collect()
    }

    /// Restores moments and step counts saved by [`Adam::state_tensors`] and [`Adam::steps`].
    pub fn load_state(
        &mut self,
        prefix: &str,
        tensors: &BTreeMap<String, Tensor>,
        steps: &BTreeMap<String, u64>,
    ) -> anyhow::Result<()> {
        for (p, _) in self.params_mut() {
            for (suffix, target) in [("exp_avg", &mut p.exp_avg), ("exp_avg_sq", &mut p.exp_avg_sq)] {
                let key = format!("{prefix}.{}.{suffix}", p.key);
                let saved = tensors.get(&key).ok_or_else(|| anyhow::anyhow!("missing optimizer state `{key}`"))?;
                anyhow::ensure!(
                    saved.size() == target.size(),
                    "optimizer state `{key}` has shape {:?}, expected {:?}",
                    saved.size(),
                    target.size()
                );
                target.copy_(saved);
            }
            p.steps = *steps.get(&p.key).ok_or_else(|| anyhow::anyhow!("missing step count of `{}`", p.key))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn first_step_moves_each_parameter_by_about_lr() {
        let param = Tensor::from_slice(&[1.0f32, -2.0]).set_requires_grad(true);
        let mut adam = Adam::new(vec![(vec![("p".into(), param.shallow_clone())], 0.0)], 0.1);
        (&param * Tensor::from_slice(&[3.0f32, -0.5])).sum(Kind::Float).backward();
        adam.step();
        let moved = Vec::<f32>::try_from(&param).unwrap();
        assert!((moved[0] - 0.9).abs() < 1e-5 && (moved[1] + 1.9).abs() < 1e-5, "{moved:?}");
        let copy = Adam::new(vec![(vec![("p".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu)))], 0.0)], 0.1);
        assert_eq!(copy.state_tensors("o").len(), 2);
    }
}
