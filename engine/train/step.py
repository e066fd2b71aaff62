"""One StyleGAN2-lite training step (D update, then G update) and the state it carries.

`GanTrainer` owns G, D, G_ema, both Adam optimisers, cosine schedules, ADA, the alpha gate, the
saturation watchdog and the running statistics. `train_step` never copies a value to the host:
statistics accumulate on the device (engine.train.logging.Stats) and the controllers read them in
`update_controls`, once every `ada_interval` steps.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict
import json
import math

import torch
from torch import nn

from engine import losses as L
from engine.config import ConfigError, TrainConfig
from engine.models.ops import power_iteration
from engine.train import dist
from engine.train.checkpoint import rng_state, set_rng_state
from engine.train.ema import ema_decay, make_ema, update_ema
from engine.train.schedule import total_steps


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype: None on the CPU (fp32, reproducible); bf16 for `auto` on a GPU that has it."""
    if device.type != "cuda":
        if amp in ("bf16", "fp16"):
            raise ConfigError(f"config field 'amp' = {amp!r} needs a GPU; use auto or off on the CPU")
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}[amp]


def cosine_lr(total_steps: int, floor: float, segments: list | None = None):
    """LR multiplier: cosine from 1 to `floor` over the run, then flat.

    `segments` [(start_step, start_multiplier, end_step), ...] (default [(0, 1.0, total_steps)]): from
    each start step on, a cosine from its multiplier down to `floor` at its end step. A resume that
    changes `kimg` appends one (`lr_segments`), so the curve goes on from where it was instead of
    jumping to the new run length's curve at the resume step."""
    segs = [tuple(s) for s in (segments or [(0, 1.0, total_steps)])]

    def f(step: int) -> float:
        s0, m0, s1 = next(s for s in reversed(segs) if step >= s[0] or s is segs[0])
        t = min(max(step - s0, 0), max(s1 - s0, 0)) / max(1, s1 - s0)
        return floor + (m0 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    return f


class GanTrainer:
    """Models, optimisers and controllers of one run, and the step that trains them."""

    # metrics_gan.csv columns after the DESIGN ones: G loss terms, D logits, gradient norms, controls
    EXTRAS = ("d_real", "d_fake", "g_total", "g_fm", "g_perc", "g_stats", "g_sat", "g_div", "pl",
              "pl_mean", "d_gnorm", "g_gnorm", "fake_abs", "perceptual_scale", "watchdog_events")

    def __init__(self, cfg: TrainConfig, *, num_classes: int, device: torch.device,
                 amp_dtype: torch.dtype | None = None, info: dist.DistInfo | None = None,
                 data_dir: str | None = None):
        from engine.augment import AdaController, Augment
        from engine.models.stylegan2 import Discriminator, Generator, generator_kwargs
        from engine.train.controls import AlphaGate, SaturationWatchdog

        self.cfg, self.device, self.amp_dtype = cfg, device, amp_dtype
        self.info = info or dist.DistInfo()
        self.num_classes = num_classes
        domain = self._domain_features(cfg, data_dir) if cfg.domain_head else None
        self.G = Generator(**generator_kwargs(asdict(cfg), num_classes)).to(device)
        # D's own widths (spec 2.3 D_BASE_CH); 0 = as wide as G. The checkpoint stores D's weights only,
        # so a run resumes with the widths its config.json records.
        self.D = Discriminator(cfg.res, num_classes, channel_base=cfg.d_channel_base or cfg.channel_base,
                               channel_max=cfg.d_channel_max or cfg.channel_max, mbstd_group=cfg.mbstd_group,
                               domain_features=domain, d_cond=cfg.d_cond).to(device)
        if cfg.channels_last:
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        # Separate DDP wrappers (they broadcast rank 0's weights, so G_ema is copied after); eager
        # ones are kept for the double backward (R1, path length), which torch.compile does not support.
        self.G_ddp = dist.wrap(self.G, self.info, device)
        self.D_ddp = dist.wrap(self.D, self.info, device)
        self.G_ema = make_ema(self.G)
        self.G_fwd = torch.compile(self.G_ddp) if cfg.compile else self.G_ddp
        self.D_fwd = torch.compile(self.D_ddp) if cfg.compile else self.D_ddp

        fused = device.type == "cuda"
        betas = (cfg.beta1, cfg.beta2)
        self.d_params = [p for p in self.D.parameters() if p.requires_grad]
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=betas, fused=fused)
        self.opt_d = torch.optim.Adam(self.d_params, lr=cfg.lr_d, betas=betas, fused=fused)
        self.total_steps = total_steps(cfg.kimg, cfg.batch)
        self.lr_segments = [(0, 1.0, self.total_steps)]  # see cosine_lr; state (a resume may add one)
        lr_fn = cosine_lr(self.total_steps, cfg.lr_min_frac, self.lr_segments)
        self.sched_g = torch.optim.lr_scheduler.LambdaLR(self.opt_g, lr_fn)
        self.sched_d = torch.optim.lr_scheduler.LambdaLR(self.opt_d, lr_fn)
        fp16 = amp_dtype == torch.float16
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=fp16)
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=fp16)

        # Augment holds the op set (ada_ops): an op not listed has weight 0 and never runs
        self.augment = Augment(ops=cfg.ada_ops, rotate_max_deg=cfg.ada_rotate_max_deg,
                               translate_frac=cfg.ada_translate_frac).to(device)
        self.ada = AdaController(cfg.ada_target, cfg.ada_kimg, cfg.ada_p_max, cfg.ada_freeze_kimg,
                                 rule=cfg.ada_rule, speed=cfg.ada_speed, warmup_steps=cfg.ada_warmup_steps,
                                 hi_acc=cfg.ada_hi_acc, hi_cap=cfg.ada_hi_cap)
        self.gate = AlphaGate(cfg.alpha_on, cfg.alpha_off, cfg.alpha_max, cfg.alpha_tau, cfg.alpha_dalpha,
                              cfg.alpha_dwell, cfg.alpha_freeze_kimg, warmup_steps=cfg.alpha_warmup_steps,
                              stable=cfg.alpha_stable)
        self.watchdog = SaturationWatchdog(cfg.watchdog_threshold, cfg.watchdog_factor, cfg.watchdog_floor,
                                           cfg.watchdog_alpha_factor, cfg.watchdog_alpha_floor,
                                           cfg.watchdog_log_every)
        self.stats_ema = L.RealStatsEMA(cfg.stats_beta, range=cfg.stats_range)
        self.perceptual_scale = 1.0
        self.acc_ema: float | None = None
        self.mean_pl = torch.zeros((), device=device)
        # device accumulators for the controllers: [sum of real signs > 0, reals, sum |fake|, steps]
        self.ctrl = torch.zeros(4, device=device)
        self.alpha_t = torch.zeros((), device=device)  # gate.alpha on the device, set per update

    @staticmethod
    def _domain_features(cfg: TrainConfig, data_dir: str | None) -> nn.Module:
        """The frozen feature space of D's domain head and of the perceptual loss (spec 2.4 / 3.4).

        domain_features: "" or "domain" = the lab's classifier (domain_weights, else
        <data>/classifier.pt); "timm:<name>" = that backbone with the local checkpoint domain_weights
        (a user's PathoDuet weights, say); anything else = a classifier.pt path. Never downloads.
        Both kinds are frozen modules with `num_features`, differentiable wrt their input."""
        from pathlib import Path

        from engine.metrics import features as Fe
        from engine.metrics.classifier import FILE_NAME

        space = cfg.domain_features
        if space.startswith("timm:"):
            try:
                return Fe.open_feature_space(space, cfg.domain_weights or None, weights_flag="--domain-weights")
            except FileNotFoundError as e:
                raise ConfigError(
                    f"config field 'domain_weights': {e} For the domain head that is the lab's own classifier "
                    "(--domain-features domain: <data>/classifier.pt from `python -m engine "
                    "train-classifier`); or train without --domain-head.") from None
            except (ValueError, ImportError) as e:  # unknown architecture, weights that do not fit
                raise ConfigError(f"config field 'domain_features': {e}") from None
        if space in ("", "domain"):
            name = "domain_weights" if cfg.domain_weights else "domain_features"
            path = cfg.domain_weights or str(Path(data_dir or ".") / FILE_NAME)
        else:
            name, path = "domain_features", space
        try:
            return Fe.load_domain_features(path)
        except FileNotFoundError as e:
            # The generic message says what works without the file; here the head was asked for (the
            # spec preset turns it on), so say how to get it or how to go on without it.
            raise ConfigError(f"config field '{name}': {e} This run has domain_head on (the spec preset "
                              "sets it, spec 2.4): train the data set's classifier first (Data page, "
                              "\"Train classifier\") or start with --domain-head false.") from None

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _backward_step(self, loss, opt, scaler, params) -> torch.Tensor:
        scaler.scale(loss).backward()
        gnorm = torch.zeros((), device=self.device)
        if self.cfg.grad_clip > 0:
            scaler.unscale_(opt)
            gnorm = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        scaler.step(opt)
        scaler.update()
        return gnorm

    # ------------------------------------------------------------------------------------------
    def train_step(self, real: torch.Tensor, y: torch.Tensor, step: int, stats) -> None:
        """One D update and one G update on this rank's batch (`step` counts from 0)."""
        cfg, n = self.cfg, real.shape[0]
        p = self.ada.p if cfg.ada else 0.0
        use_domain = self.D.domain_features is not None
        # a tensor alpha: no recompiles as it moves; the number 0 skips the frozen extractor
        alpha = self.alpha_t if use_domain and self.gate.alpha != 0 else 0.0
        if cfg.clamp_reals and cfg.clamp < 1:
            # Reals clamped like G's output (spec 2.2): 0.7-6.3 % of real pixels per class lie beyond
            # +-0.9, a cue D could use and G can never match. Everything below (D, R1, the statistics
            # EMA, the perceptual reals, the CSV's real_* columns) sees the clamped batch.
            real = real.clamp(-cfg.clamp, cfg.clamp)
        self.stats_ema.update(real)

        # --- D: logistic/BCE on aug(real) vs aug(fake), drift, R1 every r1_every (x r1_every when lazy).
        # Spectral norm's power iteration: once per D update, here, outside compiled code (the
        # forwards only read u/v; an in-place update inside a compiled graph broke its backward).
        power_iteration(self.D)
        with torch.no_grad(), self.autocast():
            z = torch.randn(n, cfg.z_dim, device=self.device)
            fake = self.G_fwd(z, y, mixing_prob=cfg.mixing_prob)
        do_r1 = cfg.r1_gamma > 0 and step % cfg.r1_every == 0
        real_aug = self.augment(real, p)
        with self.autocast():
            fake_logits = self.D_fwd(self.augment(fake.float(), p), y, alpha)
        if do_r1:  # fp32 and eager: the double backward stays out of autocast and compiled code
            real_in = real_aug.detach().requires_grad_(True)
            real_logits, real_feats = self.D_ddp(real_in, y, alpha, return_features=True)
        else:
            with self.autocast():
                real_logits, real_feats = self.D_fwd(real_aug, y, alpha, return_features=True)
        d_loss = (L.d_loss_bce(real_logits, fake_logits, cfg.real_label) if cfg.loss == "bce"
                  else L.d_loss_logistic(real_logits, fake_logits))
        d_total = d_loss + cfg.drift * L.drift_penalty(real_logits)
        if do_r1:
            r1 = L.r1_penalty(real_logits, real_in)
            d_total = d_total + L.r1_weight(cfg.r1_gamma, cfg.r1_every, cfg.r1_lazy_scale) * r1
            stats.add("r1", r1)
        self.opt_d.zero_grad(set_to_none=True)
        d_gnorm = self._backward_step(d_total, self.opt_d, self.scaler_d, self.d_params)
        self.sched_d.step()
        real_logits, fake_logits = real_logits.detach().float(), fake_logits.detach().float()
        real_feats = [f.detach() for f in real_feats]
        acc = (real_logits > 0).float().mean()
        self.ctrl += torch.stack([acc * n, real_logits.new_full((), n),  # new_full: no host copy
                                  fake.detach().float().abs().mean(), real_logits.new_ones(())])

        # --- G: non-saturating + feature matching + perceptual + stats + saturation + diversity (+ PL)
        self.D.requires_grad_(False)  # no D weight gradients in the G phase (and no DDP all-reduce)
        z = torch.randn(n, cfg.z_dim, device=self.device)
        with self.autocast():
            fake, ws = self.G_fwd(z, y, mixing_prob=cfg.mixing_prob, return_ws=True)
        with dist.no_sync(self.D_fwd), self.autocast():
            fake_logits_g, fake_feats = self.D_fwd(self.augment(fake.float(), p), y, alpha,
                                                   return_features=True)
        # fm_form / diversity_form / perceptual_form: today's forms, or the spec's (3.4, 3.6, 3.7)
        g_fm = (L.feature_matching_final_mse(real_feats[-1], fake_feats[-1]) if cfg.fm_form == "final_mse"
                else L.feature_matching_loss(real_feats, fake_feats))
        g_div = (L.variance_penalty(fake, cfg.diversity_var) if cfg.diversity_form == "variance"
                 else L.diversity_penalty(fake, z, y, tau=cfg.diversity_tau))
        terms = {"g_adv": L.g_loss_nonsaturating(fake_logits_g),
                 "g_fm": g_fm,
                 "g_stats": self.stats_ema.penalty(fake),
                 "g_sat": L.saturation_penalty(fake, cfg.saturation_threshold, cfg.saturation_form),
                 "g_div": g_div}
        weights = {"g_adv": 1.0, "g_fm": cfg.fm_weight, "g_stats": cfg.stats_weight,
                   "g_sat": cfg.saturation_weight, "g_div": cfg.diversity_weight}
        if use_domain and cfg.perceptual_weight > 0:
            with torch.no_grad(), self.autocast():
                real_emb = self.D.domain_embed(real)
            with self.autocast():
                perc = L.perceptual_loss_paired if cfg.perceptual_form == "paired" else L.perceptual_loss
                terms["g_perc"] = perc(real_emb, self.D.domain_embed(fake))
            weights["g_perc"] = cfg.perceptual_weight * self.perceptual_scale
        g_total = sum(weights[k] * v for k, v in terms.items() if weights[k] > 0)
        if cfg.pl_weight > 0 and step % cfg.pl_every == 0:  # fp32, eager (double backward)
            m = max(1, n // 2)
            pl_fake, pl_ws = self.G_ddp(torch.randn(m, cfg.z_dim, device=self.device), y[:m],
                                        return_ws=True)
            pl, self.mean_pl = L.path_length_penalty(pl_fake, pl_ws, self.mean_pl, cfg.pl_decay)
            g_total = g_total + cfg.pl_weight * cfg.pl_every * pl
            stats.add("pl", pl)
        self.opt_g.zero_grad(set_to_none=True)
        g_gnorm = self._backward_step(g_total, self.opt_g, self.scaler_g, list(self.G.parameters()))
        self.sched_g.step()
        self.D.requires_grad_(True)
        self.G.update_w_avg(ws[:, 0].detach(), y)

        # --- G_ema: half-life in images, ramped up over the first images of the run
        nimg = (step + 1) * cfg.batch
        update_ema(self.G_ema, self.G, ema_decay(cfg.batch, nimg, ema_kimg=cfg.ema_kimg,
                                                 ema_beta=cfg.ema_beta, rampup=cfg.ema_rampup))

        # --- statistics (device tensors). real_*/fake_* are pixel statistics (fake_min/max stuck at
        # the clamp shows saturation); d_real/d_fake are D's mean logits.
        fake = fake.detach().float()
        stats.add("d_loss", d_loss.detach())
        stats.add("g_total", g_total.detach())
        for name, x in (("real", real), ("fake", fake)):
            stats.add(f"{name}_mu", x.mean())
            stats.add_min(f"{name}_min", x.min())
            stats.add_max(f"{name}_max", x.max())
        stats.add("d_real", real_logits.mean())
        stats.add("d_fake", fake_logits.mean())
        stats.add("acc", acc)
        for k, v in terms.items():  # g_loss = the adversarial term; the others are extras
            stats.add("g_loss" if k == "g_adv" else k, v.detach())
        stats.add("fake_abs", fake.abs().mean())
        stats.add("d_gnorm", d_gnorm.detach()); stats.add("g_gnorm", g_gnorm.detach())

    # ------------------------------------------------------------------------------------------
    def update_controls(self, step: int, kimg: float, on_event=None) -> None:
        """ADA p, acc_ema, alpha gate, saturation watchdog from the accumulators (one host sync).

        `step`: steps done (this call follows the G update of step `step` - 1, so a watchdog firing
        acts on the next step). The accumulators hold the k steps since the last call; every rule
        counts steps and is applied k times, once per step, the interval's mean accuracy standing for
        each step's, so p, acc_ema and alpha do not depend on ada_interval. The watchdog sees only
        the interval's mean |fake| and fires at most once per call (spec 4.5 checks every step:
        the spec preset sets ada_interval 1)."""
        from engine.train.controls import acc_ema_path

        ctrl = dist.all_reduce_(self.ctrl.clone(), "sum", self.info)
        acc_sum, n_img, fake_abs_sum, n_steps = ctrl.tolist()
        self.ctrl.zero_()
        if n_img == 0:
            return
        acc = acc_sum / n_img
        k = max(1, round(n_steps / self.info.world_size))  # every rank added 1 per step
        emas = acc_ema_path(self.acc_ema, acc, self.cfg.acc_ema_beta, k)
        self.acc_ema = emas[-1]
        if self.cfg.ada:
            self.ada.update(acc, int(n_img), kimg, acc_ema=emas, step=step, steps=k)
        if self.D.domain_features is not None:
            kimg_per_step = n_img / k / 1000
            for j, e in enumerate(emas):  # step - later = steps done after this one
                later = k - 1 - j
                self.gate.update(e, kimg - later * kimg_per_step, step=step - later)
        event = self.watchdog.check(fake_abs_sum / n_steps, step)
        if event is not None:
            weight, self.gate.alpha_max = self.watchdog.lower_weights(
                self.cfg.perceptual_weight * self.perceptual_scale, self.gate.alpha_max)
            if self.cfg.perceptual_weight > 0:  # the scale is the state (checkpoints hold it)
                self.perceptual_scale = weight / self.cfg.perceptual_weight
            self.gate.force_off()
            if on_event is not None and event.pop("log"):
                on_event({"event": "saturation_watchdog", **event,
                          "perceptual_weight": self.cfg.perceptual_weight * self.perceptual_scale,
                          "alpha_max": self.gate.alpha_max})
        self.alpha_t.fill_(self.gate.alpha)  # fill_ takes a host scalar: no sync

    def reduce_stats(self, sums, mins, maxs):
        """Combine the ranks' statistics for a CSV row (mean of means, min of mins, max of maxs)."""
        for t, op in ((sums, "mean"), (mins, "min"), (maxs, "max")):
            if t is not None:
                dist.all_reduce_(t, op, self.info)
        return sums, mins, maxs

    def row_extras(self) -> dict:
        """Controller values for a CSV row; '' (None) where a mechanism is off."""
        domain = self.D.domain_features is not None
        return {"ada_p": self.ada.p if self.cfg.ada else None, "acc_ema": self.acc_ema,
                "alpha": self.gate.alpha if domain else None,
                "lr_g": self.opt_g.param_groups[0]["lr"], "lr_d": self.opt_d.param_groups[0]["lr"],
                "pl_mean": float(self.mean_pl) if self.cfg.pl_weight > 0 else None,
                "perceptual_scale": self.perceptual_scale if domain else None,
                "watchdog_events": self.watchdog.events}

    # ------------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs (tensors and primitives only)."""
        return {"G": self.G.state_dict(), "G_ema": self.G_ema.state_dict(), "D": self.D.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict(),
                "scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict(),
                "ada": self.ada.state_dict(), "gate": self.gate.state_dict(),
                "watchdog": self.watchdog.state_dict(), "stats_ema": self.stats_ema.state_dict(),
                "perceptual_scale": self.perceptual_scale, "acc_ema": self.acc_ema,
                "mean_pl": self.mean_pl.detach().cpu(), "ctrl": self.ctrl.detach().cpu(),
                "lr_segments": [list(s) for s in self.lr_segments], "rng": rng_state()}

    def load_state_dict(self, d: dict) -> None:
        self.G.load_state_dict(d["G"])
        self.G_ema.load_state_dict(d["G_ema"])
        self.D.load_state_dict(d["D"])
        self.opt_g.load_state_dict(d["opt_g"])
        self.opt_d.load_state_dict(d["opt_d"])
        self.sched_g.load_state_dict(d["sched_g"])
        self.sched_d.load_state_dict(d["sched_d"])
        self._resume_lr_curve(d)
        if d.get("scaler_g"):
            self.scaler_g.load_state_dict(d["scaler_g"])
            self.scaler_d.load_state_dict(d["scaler_d"])
        self.ada.load_state_dict(d["ada"])
        self.gate.load_state_dict(d["gate"])
        self.watchdog.load_state_dict(d["watchdog"])
        self.stats_ema.load_state_dict(d["stats_ema"])
        self.perceptual_scale = float(d["perceptual_scale"])
        self.acc_ema = None if d["acc_ema"] is None else float(d["acc_ema"])
        self.mean_pl = d["mean_pl"].to(self.device)
        self.ctrl = d["ctrl"].to(self.device)
        self.alpha_t.fill_(self.gate.alpha)
        set_rng_state(d["rng"])

    def _resume_lr_curve(self, d: dict) -> None:
        """Keep the LR curve continuous when `kimg` changed since the checkpoint: from the resume step,
        a cosine from the multiplier reached there down to the floor at the new last step."""
        segs = d.get("lr_segments")
        if segs is None:  # a checkpoint from before lr_segments: its run length is in its config
            old = json.loads(d["config"]) if "config" in d else asdict(self.cfg)
            segs = [(0, 1.0, total_steps(old["kimg"], old["batch"]))]
        segs = [(int(a), float(m), int(b)) for a, m, b in segs]
        step = int(d["sched_g"]["last_epoch"])
        if segs[-1][2] != self.total_steps:
            m = cosine_lr(segs[-1][2], self.cfg.lr_min_frac, segs)(step)
            segs = [s for s in segs if s[0] < step] + [(step, m, self.total_steps)]
        self.lr_segments = segs
        fn = cosine_lr(self.total_steps, self.cfg.lr_min_frac, segs)
        for sched in (self.sched_g, self.sched_d):
            sched.lr_lambdas = [fn] * len(sched.optimizer.param_groups)

    def export_meta(self, class_names: list[str], step: int) -> dict:
        """generator.json: what `load_generator_export` needs to rebuild G_ema, plus labels."""
        return {"family": self.cfg.family, "kwargs": dict(self.G.init_kwargs),
                "class_names": list(class_names), "res": self.cfg.res, "step": int(step),
                "kimg": step * self.cfg.batch / 1000, "num_ws": self.G.num_ws,
                "layer_names": list(self.G.layer_names), "z_dim": self.cfg.z_dim}
