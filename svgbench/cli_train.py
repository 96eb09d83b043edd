"""`svgbench train RECIPE`: the training recipes' command lines, and shipping a trained diffusion model.

Each recipe's own `main(argv)` parses its options; `train_diffusion_main` lives here, in the CLI layer, because
it runs the generation task (to score the model it trained, with the task's own code) and exports the model.
"""

from __future__ import annotations

RECIPES = {
    "dino": ("svgbench.train.ssl:main", "self-supervised tiny DINO encoder (alias: ssl)"),
    "ssl": ("svgbench.train.ssl:main", "self-supervised tiny DINO encoder"),
    "vae": ("svgbench.train.autoencoder:main", "SD-VAE-style autoencoder (AutoencoderKL)"),
    "svg": ("svgbench.train.autoencoder:main", "SVG autoencoder: frozen DINO + residual encoder + pixel decoder"),
    "diffusion": ("svgbench.cli_train:train_diffusion_main", "the generation task's diffusion model of one encoder"),
    "judge": ("svgbench.train.judge:main", "the shapes judge (judge-FID's feature network)"),
}


def run_recipe(recipe: str, argv: list[str]) -> None:
    from .registry import resolve

    target, _ = RECIPES[recipe]
    fn = resolve(target)
    if recipe in ("vae", "svg"):
        fn(argv, recipe=recipe)
    else:
        fn(argv)


def _with_ci(metrics: dict, key: str) -> str:
    """A task metric for a model card: its value, and its 95% interval where the task computed one."""
    ci = (metrics.get("ci") or {}).get(key) or {}
    if ci.get("ci_low") is None or ci.get("ci_high") is None:
        return f"{metrics[key]:.4f}"
    return f"{metrics[key]:.4f} [{ci['ci_low']:.4f}, {ci['ci_high']:.4f}] (95%, {ci.get('method', 'interval')})"


def train_diffusion_main(argv=None) -> None:
    """`svgbench train diffusion --encoder NAME [--export]`: the generation task's diffusion model of one encoder.

    Trains on the encoder's cached latents of the shapes training split with judge-FID evaluated along the
    way (the generation task's own code, so its curve is the task's training-efficiency curve), scores the
    final model, and with --export ships it to svgbench/weights/diffusion/<encoder>.safetensors with a card.
    The shipped model is then re-scored from the file, and those are the card's numbers.
    """
    import argparse
    import dataclasses
    import json
    import sys

    import torch

    from .data import build_dataset
    from .diffusion.store import DiffusionConfig, export_diffusion
    from .encoders import create_encoder
    from .runner import RunConfig, device_name, resolve_device
    from .tasks.generation import GenerationConfig, run_generation
    from .train.cards import write_card
    from .train.common import add_config_args, config_from_args, init_distributed, is_main

    p = argparse.ArgumentParser("svgbench train diffusion", description=train_diffusion_main.__doc__)
    p.add_argument("--encoder", required=True, help="a registered encoder with a decoder")
    p.add_argument("--weights", help="the encoder's weights (default: its shipped ones)")
    p.add_argument("--preset", default="tiny", help="data and task sizes: tiny (shapes) or imagenet256")
    p.add_argument("--data-root", help="ImageNet-layout folder (imagenet256)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--export", action="store_true", help="ship the model to svgbench/weights/diffusion/ with a card")
    add_config_args(p, GenerationConfig)
    args = p.parse_args(argv)
    if args.export and any(c in args.encoder for c in ":/\\"):
        # a shipped model is svgbench/weights/diffusion/<encoder name>.safetensors; a family name is a path or hub id
        p.error(f"--export ships the model under the encoder's name, and {args.encoder!r} is a family name (a path "
                f"or hub id); export under a zoo name (e.g. --encoder va-vae-f16d32 --weights DIR) or register the "
                f"encoder under a plain name, or drop --export")
    if args.threads:
        torch.set_num_threads(args.threads)
    run = RunConfig.from_preset(args.preset, tasks=("generation",), data={"root": args.data_root})
    base = GenerationConfig(**run.task_overrides.get("generation", {}))
    cfg = dataclasses.replace(config_from_args(base, args), train=True, retrain=True)
    _, _, dev = init_distributed()  # under torchrun: this rank's GPU
    device = str(dev) if args.device == "auto" else resolve_device(args.device)
    dataset = build_dataset(run.data)
    encoder = create_encoder(args.encoder, **({"weights": args.weights} if args.weights else {}))
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    kept = {}
    metrics = run_generation(encoder, dataset, cfg, device=device, log=say,
                             on_model=lambda m, st, c, pr: kept.update(model=m, stats=st, curve=c, prov=pr))
    say("trained model: " + json.dumps({k: metrics.get(k) for k in ("fid", "kid", "precision", "recall")}))
    if not args.export or not is_main():
        return
    if not kept:
        raise SystemExit(f"svgbench train diffusion: no model for {args.encoder}: {metrics.get('unavailable')}")
    model, prov = kept["model"], kept["prov"]
    dcfg = DiffusionConfig(**prov["diffusion_config"])
    shape = (model.in_channels, model.input_size, model.input_size)
    dest = export_diffusion(model.cpu(), kept["stats"].to("cpu"), encoder, shape, dcfg, kept["curve"], dcfg.steps)
    shipped = run_generation(encoder, dataset, dataclasses.replace(cfg, train=False, retrain=False), device=device)
    if not str(shipped.get("diffusion_weights", "")).startswith("shipped:"):
        raise RuntimeError(f"the exported {dest} was not picked up for {args.encoder}: {shipped}")
    keys = ("fid", "kid", "precision", "recall")
    label = shipped["feature_network"]
    measured = {f"{k} ({label}), shipped fp16 weights, {shipped['num_samples']} samples": _with_ci(shipped, k)
                for k in keys}
    measured |= {f"{k}, fp32 weights before export": round(metrics[k], 4) for k in keys}
    command = (f"svgbench train diffusion --encoder {args.encoder} --train-steps {cfg.train_steps} "
               f"--eval-every {cfg.eval_every} --export")
    train_device = torch.device(device)
    hardware = "this CPU" if train_device.type == "cpu" else f"one {device_name(str(train_device))}"
    write_card(f"diffusion/{args.encoder}", prov["run_dir"], dest, command=command, curve_keys=["loss", "fid"],
               metrics=measured, hardware=hardware,
               description=(f"Flow-matching diffusion transformer ({dcfg.size}) on `{args.encoder}` latents "
                            f"{'x'.join(map(str, shape))}, class-conditional, EMA weights; judge-FID along training "
                            f"from {cfg.curve_samples} samples ({cfg.sampler}, {cfg.sample_steps} steps)."),
               notes=f"Shipped in fp16 ({dest.stat().st_size / 1e6:.1f} MB); the encoder weights it was trained on: "
                     f"{encoder.weights_hash()}. The generation task uses it only while that hash matches.")
    say(f"exported {dest} and its card")
