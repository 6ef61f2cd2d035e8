"""The PyTorch reference network, assembled from the real packages (dcls 0.1.1, spikingjelly
2.0.0) as docs/method.md §2 describes it, plus helpers shared by the parity oracles."""

import math

import torch
import torch.nn.functional as F
from DCLS.construct.modules import Dcls1d
from spikingjelly.activation_based import functional, layer, neuron, surrogate


def derive(cfg):
    """The reference's derived constants, from its own formulas (docs/method.md §6, §1.6, §2.4, §4.6),
    computed here rather than read from `snn-delays config`."""
    step = cfg["time_step_ms"]
    k = int(math.floor(cfg["max_delay_ms"] / step))
    k = k + 1 if k % 2 == 0 else k
    learns = cfg["model_type"] == "snn_delays"
    n_inputs = 140 if cfg["dataset"] == "gsc" else 700 // cfg["n_bins"]
    sigma_init = k // 2 if learns else 0
    final = cfg["epochs"] // 4 if learns else 0
    return {
        "n_inputs": n_inputs,
        "n_outputs": cfg.get("n_outputs") or (20 if cfg["dataset"] == "shd" else 35),
        "kernel_size": k, "max_delay_steps": k - 1, "tau_steps": (cfg["init_tau_ms"] + 1e-9) / step,
        "left_padding": k - 1, "right_padding": (k - 1) // 2, "position_limit": k // 2,
        "init_pos_low": -k // 2, "init_pos_high": k // 2,
        "kernel_version": cfg["dcls_version"] if learns else "max", "sigma_init": sigma_init,
        "final_sigma_epoch": final, "sigma_decay": (0.23 / sigma_init) ** (1 / final) if final > 0 else 1.0,
        "lr_pos": 100 * cfg["lr_w"] if learns else 0.0, "max_lr_w": 5 * cfg["lr_w"],
        "scheduler_pos": cfg["scheduler_pos"] if learns else "none", "t_max_pos": cfg["epochs"],
        "output_v_threshold": 2.0 if cfg["loss"] == "spike_count" else 1e9,
        "time_mask_size": k // 3, "neuron_mask_size": n_inputs // 5, "learns_positions": learns,
    }


def reference_config(cfg):
    """`cfg` (as `snn-delays config` prints it) with its `derived` section recomputed by
    [`derive`]; exits naming every value where ours differs."""
    derived = derive(cfg)
    ours = cfg.get("derived", {})
    wrong = [f"{k}: ours {ours.get(k)!r}, reference {v!r}" for k, v in derived.items() if ours.get(k) != v]
    if wrong:
        raise SystemExit("derived values differ from the reference's formulas: " + "; ".join(wrong))
    return {**cfg, "derived": derived}


class Paper2023Neuron(torch.nn.Module):
    """The paper-era SpikingJelly LIF/PLIF (docs/method.md §2.4, §2.5), written here from the
    formulas because that version is on no package registry: LIF charges `v·(1 − 1/τ) + x` in
    training and `v − (v − 0)/τ + x` in eval; PLIF charges `v·(1 − sigmoid(w)) + x` in both.
    Fire with the ATan surrogate, hard reset to 0 with the spike detached; `v_seq` after reset.
    `1 − sigmoid(w)` is computed once per sequence, as spikingjelly 2.0.0 computes `sigmoid(w)`."""

    def __init__(self, tau, threshold, alpha, learns_rate):
        super().__init__()
        self.tau, self.threshold = tau, threshold
        self.surrogate = surrogate.ATan(alpha=alpha)
        if learns_rate:
            self.w = torch.nn.Parameter(torch.as_tensor(-math.log(tau - 1.0)))
        self.v_seq = None

    def kept_fraction(self):
        if hasattr(self, "w"):
            return 1.0 - self.w.sigmoid()
        return 1.0 - 1.0 / self.tau if self.training else None

    def forward(self, x_seq):
        v, spikes, membrane = torch.zeros_like(x_seq[0]), [], []
        kept = self.kept_fraction()
        for x in x_seq:
            h = v - (v - 0.0) / self.tau + x if kept is None else v * kept + x
            spike = self.surrogate(h - self.threshold)
            v = h * (1.0 - spike.detach())
            spikes.append(spike)
            membrane.append(v)
        self.v_seq = torch.stack(membrane)
        return torch.stack(spikes)


def make_neuron(cfg, threshold):
    d = cfg["derived"]
    if cfg.get("charge_formula") == "paper2023":
        return Paper2023Neuron(d["tau_steps"], threshold, cfg["surrogate_alpha"], cfg["neuron"] == "plif")
    common = dict(decay_input=False, v_threshold=threshold, v_reset=0.0,
                  surrogate_function=surrogate.ATan(alpha=cfg["surrogate_alpha"]),
                  detach_reset=True, step_mode="m", store_v_seq=True)
    if cfg["neuron"] == "plif":
        return neuron.ParametricLIFNode(init_tau=d["tau_steps"], **common)
    return neuron.LIFNode(tau=d["tau_steps"], **common)


def make_synapse(cfg, c_in, c_out):
    d = cfg["derived"]
    if cfg["model_type"] == "snn":
        return layer.Linear(c_in, c_out, bias=False, step_mode="m")
    return Dcls1d(c_in, c_out, kernel_count=cfg["kernel_count"], dilated_kernel_size=d["kernel_size"],
                  bias=False, version=d["kernel_version"])


class ReferenceSnn(torch.nn.Module):
    """Hidden blocks (synapse, BN, neuron, dropout) and an output block (synapse, neuron)."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg, d = cfg, cfg["derived"]
        modules, width = [], cfg["n_hidden_neurons"]
        for l in range(cfg["n_hidden_layers"]):
            c_in = d["n_inputs"] if l == 0 else width
            modules += [make_synapse(cfg, c_in, width), layer.BatchNorm1d(width, step_mode="m"),
                        make_neuron(cfg, cfg["v_threshold"]), layer.Dropout(cfg["dropout_p"], step_mode="m")]
        c_last = width if cfg["n_hidden_layers"] else d["n_inputs"]
        modules += [make_synapse(cfg, c_last, d["n_outputs"]), make_neuron(cfg, d["output_v_threshold"])]
        self.model = torch.nn.Sequential(*modules)

    def init_as_reference(self):
        """§1.6: seed, Kaiming-uniform weights, then positions, then sigma."""
        d = self.cfg["derived"]
        torch.manual_seed(self.cfg["seed"])
        synapses = [m for m in self.model if isinstance(m, (Dcls1d, layer.Linear))]
        for m in synapses:
            torch.nn.init.kaiming_uniform_(m.weight, nonlinearity="relu")
        dcls = [m for m in synapses if isinstance(m, Dcls1d)]
        for m in dcls:
            torch.nn.init.uniform_(m.P, a=d["init_pos_low"], b=d["init_pos_high"])
            m.clamp_parameters()
            if not d["learns_positions"]:
                m.P.requires_grad = False
        for m in dcls:
            if m.SIG is not None:
                torch.nn.init.constant_(m.SIG, d["sigma_init"])
                m.SIG.requires_grad = False
            if not d["learns_positions"]:
                with torch.no_grad():
                    m.P.round_()
                    m.clamp_parameters()

    def forward(self, x):
        d = self.cfg["derived"]
        pad = (d["left_padding"], d["right_padding"])
        for m in self.model:
            if isinstance(m, Dcls1d):
                x = m(F.pad(x.permute(1, 2, 0), pad, "constant", 0)).permute(2, 0, 1)
            elif isinstance(m, layer.BatchNorm1d):
                x = m(x.unsqueeze(3)).squeeze(3)
            else:
                x = m(x)
        last = self.model[-1]
        return x if self.cfg["loss"] == "spike_count" else last.v_seq

    def to_eval_form(self):
        """§4.7 step 3: sigma 0, version max, positions rounded and clamped. A `v1` layer has no
        SIG, so the reference's transform cannot run on it; `v1` at integer positions builds the
        same one-hot kernel as `max` with sigma 0, so such a layer keeps its version."""
        with torch.no_grad():
            for m in self.model:
                if isinstance(m, Dcls1d):
                    if m.SIG is not None:
                        m.SIG *= 0
                        m.version = "max"
                        m.DCK.version = "max"
                    m.P.round_()
                    m.clamp_parameters()

    def set_dropout_masks(self, masks):
        drops = [m for m in self.model if isinstance(m, layer.Dropout)]
        for drop, mask in zip(drops, masks):
            drop.mask = mask

    def reset_state(self):
        functional.reset_net(self)


def randomise(net, cfg, gen):
    """Weights, positions off-grid, sigma in [0, sigma_init], BN affine and running stats, PLIF w."""
    d = cfg["derived"]
    with torch.no_grad():
        for name, t in net.state_dict(keep_vars=True).items():
            key = name.rsplit(".", 1)[1]
            if key == "P" and d["learns_positions"]:
                t.uniform_(-d["position_limit"], d["position_limit"], generator=gen)
            elif key == "SIG" and d["sigma_init"] > 0:
                t.uniform_(0.0, d["sigma_init"], generator=gen)
            elif key in ("running_var",):
                t.uniform_(0.5, 2.0, generator=gen)
            elif key in ("running_mean", "bias"):
                t.uniform_(-0.5, 0.5, generator=gen)
            elif key == "weight" and t.dim() == 1:
                t.uniform_(0.5, 1.5, generator=gen)
            elif key == "w":
                t.add_(torch.empty((), dtype=t.dtype).uniform_(-0.5, 0.5, generator=gen))


def save_batch(path, x, cfg, gen):
    """Draws labels (from `gen`) and dropout masks for the input `x` (T, B, n_inputs), saves the
    three as `forward`'s input file, and returns the labels and masks. (safetensors is imported
    here: the GPU check imports this module where only torch may be installed.)"""
    from safetensors.torch import save_file

    batch = x.shape[1]
    y = torch.randint(0, cfg["derived"]["n_outputs"], (batch,), generator=gen)
    masks = [F.dropout(torch.ones(batch, cfg["n_hidden_neurons"]), cfg["dropout_p"], training=True)
             for _ in range(cfg["n_hidden_layers"])]
    save_file({"x": x, "y": y, **{f"mask.{l}": m for l, m in enumerate(masks)}}, path)
    return y, masks


def class_scores(out, loss):
    if loss == "sum":
        return torch.sum(torch.nn.Softmax(dim=2)(out), 0)
    if loss == "mean":
        return torch.mean(out, 0)
    if loss == "max":
        return torch.max(out, 0)[0]
    return torch.sum(out, 0)


def reference_loss(out, labels, cfg):
    y = F.one_hot(labels, cfg["derived"]["n_outputs"]).float()
    return torch.nn.CrossEntropyLoss()(class_scores(out, cfg["loss"]), y)


def paper_optimizers(net, cfg):
    """§4.2: one Adam on the weights and PLIF w (with weight decay) and BatchNorm (without), and a
    separate Adam on the positions."""
    d = cfg["derived"]
    params = dict(net.named_parameters())
    weights = [p for k, p in params.items() if k.endswith(".weight") and p.dim() > 1]
    plif = [p for k, p in params.items() if k.endswith(".w")]
    norm = [p for k, p in params.items() if (k.endswith(".weight") and p.dim() == 1) or k.endswith(".bias")]
    positions = [p for k, p in params.items() if k.endswith(".P") and p.requires_grad]
    opt_w = torch.optim.Adam([{"params": weights, "weight_decay": cfg["weight_decay"]},
                              {"params": plif, "weight_decay": cfg["weight_decay"]},
                              {"params": norm, "weight_decay": 0}], lr=cfg["lr_w"])
    opt_pos = torch.optim.Adam(positions, lr=d["lr_pos"], weight_decay=0)
    return opt_w, opt_pos


def paper_step(net, cfg, x, y, opt_w, opt_pos):
    """§4.4: zero both optimizers, forward, loss, backward, step both, clamp positions; the loss."""
    opt_w.zero_grad()
    opt_pos.zero_grad()
    loss = reference_loss(net(x), y, cfg)
    loss.backward()
    opt_w.step()
    opt_pos.step()
    for m in net.model:
        if hasattr(m, "clamp_parameters"):
            m.clamp_parameters()
    return loss


def compare(name, ours, ref, report):
    """Records max |ours − ref| and whether it is within 1e-5 of the tensor's largest |ref|
    (plus 1e-12, for all-zero tensors) everywhere, and whether it is bitwise."""
    ours, ref = ours.detach().double(), ref.detach().double()
    if ours.shape != ref.shape:
        report.append((name, False, False, float("inf"), f"shape {tuple(ours.shape)} vs {tuple(ref.shape)}"))
        return
    diff = (ours - ref).abs()
    bound = 1e-5 * (float(ref.abs().max()) if ref.numel() else 0.0) + 1e-12
    report.append((name, bool((diff <= bound).all()), bool(torch.equal(ours, ref)),
                   float(diff.max()) if diff.numel() else 0.0, ""))
