"""The default computation (FFT convolution, flushed subnormal taps, fused neurons) against the
reference network built from dcls 0.1.1 and spikingjelly 2.0.0, whole network, at the full
width of the SHD, SSC and GSC presets (docs/method.md §2), in training mode (output, loss,
every gradient) and in eval mode after the eval transform (output, loss).

The FFT rounds differently from the reference's direct convolution, so a neuron whose membrane
comes within rounding of its threshold may fire in one and not in the other, and that flip then
changes everything downstream of it. The criterion says where a flip may happen and compares
everything no flip can have touched:

- A hidden layer's input current (after BatchNorm) and the output layer's input are compared
  element-wise, |ours − reference| ≤ CURRENT_TOLERANCE·max|reference|, wherever no spike of an
  earlier layer differs: in training mode no flip anywhere in the batch (BatchNorm's statistics
  mix the samples), in eval mode no flip in that sample up to that step.
- A spike may differ only where it is explained: the reference's membrane before reset was
  within MARGIN of the threshold at that step or earlier for that neuron, or its input was
  already touched by a flip upstream. At most FLIP_FRACTION of a layer's spikes may differ.
- The output and the loss (OUTPUT_TOLERANCE of the tensor's largest |reference|) are compared
  element-wise when no spike differs in the pass, and every gradient in relative norm
  (GRADIENT_NORM_TOLERANCE) and element-wise (GRADIENT_TOLERANCE of its largest: a sum over
  T·B terms can cancel to an element far below the terms, where float32 rounding is relatively
  large). Otherwise the output is compared where untouched, and the loss and gradients within
  FLIPPED_TOLERANCE in relative norm, and the case is reported. (One differing spike in the
  first layer moves BatchNorm's statistics and, through them, tens of near-threshold spikes
  downstream: gradients then differ by up to 2% in norm, seen; a planted mistake moves them by
  70% or more.) So are the gradients of a `max` loss whose largest output over time is tied
  (exact zeros before any input, which the FFT computes as ±1e-9).
- At least half of all comparisons must be made, or the run fails (the criterion must not pass
  by skipping).

`--plant MISTAKE` gives the reference a deliberate mistake our side does not have, to show that
the criterion catches it: `tap_sign` negates the first layer's positions (a wrong sign in the
tap's lag), `shift` moves every kernel by one step. The run must then fail.

`--random N` checks N random configurations instead (parity_network.py's, which draw the
convolution, the subnormal flush, the neuron backend and the DCLS kernel version too) with the
same criterion, on small shapes.

Usage: default_path.py --bin target/release/snn-delays [--seed S] [--batch B] [--steps T]
       [--preset P] [--plant MISTAKE] [--random N]"""

import argparse
import json
import os
import random
import sys
import tempfile

import torch
from DCLS.construct.modules import Dcls1d
from safetensors.torch import load_file, save_file
from spikingjelly.activation_based import neuron

from harness import fresh_seed, print_reproduce, run
from parity_network import random_case
from reference import Paper2023Neuron, ReferenceSnn, randomise, reference_config, reference_loss, save_batch

CURRENT_TOLERANCE = 1e-5
OUTPUT_TOLERANCE = 1e-5
GRADIENT_TOLERANCE = 3e-3
GRADIENT_NORM_TOLERANCE = 3e-4
FLIPPED_TOLERANCE = 1e-1
MARGIN = 1e-3
FLIP_FRACTION = 1e-3

CASES = [("shd preset", "shd", []), ("ssc preset", "ssc", []), ("gsc preset", "gsc", []),
         ("shd preset, PLIF, 2 taps, spike_count", "shd", ["neuron=plif", "kernel_count=2", "loss=spike_count"])]


class Layers:
    """Each neuron layer's input current and spikes, and the reference's membrane before reset."""

    def __init__(self, net):
        self.currents, self.spikes, self.before_reset = [], [], []
        self.neurons = [m for m in net.model if isinstance(m, (neuron.BaseNode, Paper2023Neuron))]
        self.hooks = [m.register_forward_hook(self.record) for m in self.neurons]

    def record(self, module, inputs, output):
        x = inputs[0].detach().double()
        v = module.v_seq.detach().double()
        previous = torch.cat([torch.zeros_like(v[:1]), v[:-1]])
        self.currents.append(x)
        self.spikes.append(output.detach())
        self.before_reset.append(previous - previous * leak_rate(module) + x)

    def close(self):
        for hook in self.hooks:
            hook.remove()


def leak_rate(module):
    """The fraction of the membrane a neuron loses per step (near enough for a margin)."""
    if hasattr(module, "w"):
        return float(module.w.detach().sigmoid())
    return 1.0 / float(module.tau)


def plant(net, mistake):
    with torch.no_grad():
        layers = [m for m in net.model if isinstance(m, Dcls1d)]
        if mistake == "tap_sign":
            layers[0].P.neg_()
        elif mistake == "shift":
            for layer in layers:
                layer.P.add_(1.0)
        for layer in layers:
            layer.clamp_parameters()


class Verdict:
    def __init__(self):
        self.failures, self.made, self.skipped, self.lines = [], 0, 0, []
        self.worst = {}

    def check(self, name, ours, ref, tolerance, where=None):
        """|ours − ref| ≤ tolerance·max|ref| at `where` (everywhere if None); the worst ratio."""
        ours, ref = ours.detach().double(), ref.detach().double()
        if ours.shape != ref.shape:
            self.failures.append(f"{name}: shape {tuple(ours.shape)} vs {tuple(ref.shape)}")
            return
        bound = tolerance * float(ref.abs().max()) + 1e-12
        diff = (ours - ref).abs()
        if where is not None:
            diff = diff[lengthen(where, diff.shape[0]).expand_as(diff)]
        if diff.numel() == 0:
            self.skip(name)
            return
        self.made += 1
        worst = float(diff.max())
        if worst > bound:
            self.failures.append(f"{name}: max |diff| {worst:.3e} > {bound:.3e}")
        kind = name.rsplit("|", 1)[-1].split()[-1]
        kind = f"gradients of {kind.rsplit('.', 1)[-1]}" if " grad " in name else kind
        self.worst[kind] = max(self.worst.get(kind, 0.0), worst / bound * tolerance)

    def check_norm(self, name, ours, ref, tolerance=None, kind=None):
        """‖ours − ref‖ ≤ tolerance·‖ref‖ (FLIPPED_TOLERANCE, where spikes differ, by default)."""
        tolerance = tolerance or FLIPPED_TOLERANCE
        kind = kind or "relative norm of a loss or gradient where spikes differ or the max is tied"
        ours, ref = ours.detach().double(), ref.detach().double()
        relative = float((ours - ref).norm() / (ref.norm() + 1e-30))
        self.made += 1
        self.worst[kind] = max(relative, self.worst.get(kind, 0.0))
        if relative > tolerance:
            self.failures.append(f"{name}: relative norm {relative:.3e} > {tolerance}")

    def skip(self, name):
        self.skipped += 1
        self.lines.append(f"  not compared (touched by a flip): {name}")


def untouched(flipped, train):
    """Where a layer's input is untouched by the flips `flipped` (T, B, C) of the layer before:
    (1, 1, 1) in training mode, (T, B, 1) in eval mode (no flip in the sample up to the step)."""
    if train:
        return torch.full((1, 1, 1), not bool(flipped.any()))
    return flipped.any(dim=2, keepdim=True).cumsum(0) == 0


def lengthen(where, steps):
    """A mask over a layer's steps carried to the next layer's longer sequence: each layer's
    output at step t depends on its input at steps ≤ t only (the padding on the right adds steps
    after the input's last one)."""
    if where.shape[0] >= steps:
        return where[:steps]
    return torch.cat([where, where[-1:].expand(steps - where.shape[0], *where.shape[1:])])


def compare_layers(verdict, name, ours, ref, train):
    """Currents and spikes layer by layer; returns whether any spike differs."""
    hidden = len(ref.spikes) - 1
    clean = torch.ones(1, 1, 1, dtype=torch.bool)
    any_flip = False
    for l in range(hidden + 1):
        current = ours[f"current.{l}"]
        verdict.check(f"{name} | layer {l} current", current, ref.currents[l], CURRENT_TOLERANCE, clean)
        if l == hidden:
            break
        near = (ref.before_reset[l] - threshold_of(ref.neurons[l])).abs() <= MARGIN
        explained = (near.cumsum(0) > 0) | ~lengthen(clean, near.shape[0])
        flipped = ours[f"spikes.{l}"].double() != ref.spikes[l].double()
        fraction = float(flipped.double().mean())
        unexplained = int((flipped & ~explained).sum())
        verdict.lines.append(f"  {name} | layer {l}: {int(flipped.sum())} of {flipped.numel()} spikes differ "
                             f"({fraction:.1e}), {int(near.sum())} membranes within {MARGIN} of threshold")
        verdict.made += 1
        if unexplained:
            verdict.failures.append(f"{name} | layer {l}: {unexplained} spikes differ where the reference's "
                                    f"membrane was never within {MARGIN} of threshold")
        if fraction > FLIP_FRACTION:
            verdict.failures.append(f"{name} | layer {l}: {fraction:.1e} of the spikes differ (> {FLIP_FRACTION})")
        any_flip |= bool(flipped.any())
        clean = lengthen(clean, flipped.shape[0]) & untouched(flipped, train)
    return any_flip, clean


def threshold_of(module):
    return float(module.v_threshold) if hasattr(module, "v_threshold") else float(module.threshold)


def check_defaults(cfg):
    for key, value in [("convolution", "fft"), ("flush_subnormal_taps", True), ("neuron_backend", "fused")]:
        if cfg[key] != value:
            sys.exit(f"{cfg['dataset']}: the default {key} is {cfg[key]!r}, this check expects {value!r}")


def reference_net(cfg, weights, mistake):
    net = ReferenceSnn(cfg)
    net.init_as_reference()
    net.load_state_dict(weights)
    if mistake:
        plant(net, mistake)
    return net


def reference_pass(net, x, masks, train):
    layers = Layers(net)
    net.reset_state()
    if train:
        net.train()
        net.set_dropout_masks(masks)
        out = net(x)
    else:
        net.to_eval_form()
        net.eval()
        with torch.no_grad():
            out = net(x)
    layers.close()
    return out, layers


def near_ties_in_max(out, loss_kind):
    """For the `max` loss, whether some class's largest output over time is within rounding of
    its second largest (often exact zeros before any input arrives, which the FFT computes as
    ±1e-9): the step the gradient flows through may then differ, a discrete change like a flip."""
    if loss_kind != "max" or out.shape[0] < 2:
        return False
    top = out.detach().double().topk(2, dim=0).values
    return bool(((top[0] - top[1]) <= OUTPUT_TOLERANCE * float(out.detach().abs().max()) + 1e-12).any())


def compare_outputs(verdict, name, ours, out, loss, loss_kind, any_flip, clean, grads=None):
    """Output, loss and gradients: element-wise when nothing discrete differs; where spikes differ
    or the `max` loss is tied, the output where untouched and the gradients (and, for flips, the
    loss) in relative norm."""
    tied = bool(grads) and near_ties_in_max(out, loss_kind)
    if not (any_flip or tied):
        verdict.check(f"{name} output", ours["output"], out, OUTPUT_TOLERANCE)
        verdict.check(f"{name} loss", ours["loss"], loss, OUTPUT_TOLERANCE)
        for key, grad in (grads or {}).items():
            verdict.check(f"{name} grad {key}", ours[f"grad.{key}"], grad, GRADIENT_TOLERANCE)
            verdict.check_norm(f"{name} grad {key}", ours[f"grad.{key}"], grad, GRADIENT_NORM_TOLERANCE,
                               "relative norm of a gradient where no spike differs")
        return
    reason = "spikes differ; loss and gradients" if any_flip else "the max over time is tied; gradients"
    verdict.lines.append(f"  {name}: {reason} compared in relative norm")
    verdict.check(f"{name} output", ours["output"], out, OUTPUT_TOLERANCE, clean)
    if any_flip:
        verdict.check_norm(f"{name} loss", ours["loss"], loss)
    else:
        verdict.check(f"{name} loss", ours["loss"], loss, OUTPUT_TOLERANCE)
    for key, grad in (grads or {}).items():
        verdict.check_norm(f"{name} grad {key}", ours[f"grad.{key}"], grad)


def check_case(args, case, workdir, gen, verdict):
    name, preset, sets = case
    config_path = os.path.join(workdir, "config.json")
    set_args = [a for s in sets for a in ("--set", s)]
    cfg = reference_config(json.loads(run([args.bin, "config", "--preset", preset, *set_args])))
    if not name.startswith("random"):
        check_defaults(cfg)
    with open(config_path, "w") as f:
        json.dump(cfg, f)
    d = cfg["derived"]
    net = ReferenceSnn(cfg)
    net.init_as_reference()
    randomise(net, cfg, gen)
    weights = {k: v.detach().clone().contiguous() for k, v in net.state_dict().items()}
    weights_path = os.path.join(workdir, "weights.safetensors")
    save_file(weights, weights_path)

    steps, batch = (args.steps, args.batch) if args.random == 0 else (int(torch.randint(12, 40, (1,), generator=gen)), 4)
    if preset == "gsc":
        x = torch.randn((steps, batch, d["n_inputs"]), generator=gen)
    else:
        x = torch.randint(1, 4, (steps, batch, d["n_inputs"]), generator=gen).float()
        x *= (torch.rand(x.shape, generator=gen) < 0.1)
    batch_path = os.path.join(workdir, "batch.safetensors")
    y, masks = save_batch(batch_path, x, cfg, gen)
    ours_path = os.path.join(workdir, "ours.safetensors")

    net = reference_net(cfg, weights, args.plant)
    out, layers = reference_pass(net, x, masks, train=True)
    loss = reference_loss(out, y, cfg)
    loss.backward()
    grads = {k: p.grad if p.grad is not None else torch.zeros_like(p)
             for k, p in net.named_parameters() if p.requires_grad}
    run([args.bin, "forward", "--config", config_path, "--weights", weights_path, "--input", batch_path,
         "--out", ours_path, "--grad", "--record", "--device", "cpu"])
    ours = load_file(ours_path)
    any_flip, clean = compare_layers(verdict, f"{name} | train", ours, layers, train=True)
    compare_outputs(verdict, f"{name} | train", ours, out, loss, cfg["loss"], any_flip, clean, grads)

    out, layers = reference_pass(reference_net(cfg, weights, args.plant), x, masks, train=False)
    loss = reference_loss(out, y, cfg)
    run([args.bin, "forward", "--config", config_path, "--weights", weights_path, "--input", batch_path,
         "--out", ours_path, "--eval", "--record", "--device", "cpu"])
    ours = load_file(ours_path)
    any_flip, clean = compare_layers(verdict, f"{name} | eval", ours, layers, train=False)
    compare_outputs(verdict, f"{name} | eval", ours, out, loss, cfg["loss"], any_flip, clean)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bin", required=True)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--plant", choices=["tap_sign", "shift"])
    parser.add_argument("--preset", choices=["shd", "ssc", "gsc"], help="only this preset's cases")
    parser.add_argument("--random", type=int, default=0,
                        help="instead of the presets, N random configurations (parity_network.py's)")
    args = parser.parse_args()
    seed = fresh_seed("default path" + (f" (planted mistake {args.plant})" if args.plant else ""), args.seed)
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    cases = [random_case(rng) for _ in range(args.random)] or [c for c in CASES if args.preset in (None, c[1])]
    verdict = Verdict()
    with tempfile.TemporaryDirectory() as workdir:
        for case in cases:
            check_case(args, case, workdir, gen, verdict)
    print("\n".join(verdict.lines))
    for kind, worst in sorted(verdict.worst.items()):
        print(f"  largest |ours - reference| / max|reference| over the {kind} compared: {worst:.2e}"
              if "norm" not in kind else f"  largest {kind}: {worst:.2e}")
    total = verdict.made + verdict.skipped
    if verdict.made < total / 2:
        verdict.failures.append(f"only {verdict.made} of {total} comparisons were made")
    if verdict.failures:
        print_reproduce(seed)
    for failure in verdict.failures[:30]:
        print("FAIL", failure)
    print(f"default path: {verdict.made} comparisons made, {verdict.skipped} not made, {len(verdict.failures)} failed")
    sys.exit(1 if verdict.failures else 0)


if __name__ == "__main__":
    main()
