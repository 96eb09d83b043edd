"""svgbench's built-in tasks: their functions and configs (lazy), needs and metric specs, in table order."""

from __future__ import annotations

from .spec import CurveSpec, MetricSpec, TaskSpec

_IMAGES = "bootstrap over evaluation images"

# The version of each built-in task's code and protocol; it enters every cell's key and record. Bump a task's
# number in the same commit as any change that can move one of its numbers: its module under svgbench/tasks/,
# a metric it calls, a default of its config, a shipped model or file it loads. The next `svgbench run` then
# reports that task's old records as stale and recomputes its cells, and only those. generation and sampling
# share svgbench/tasks/generation.py and the code it calls (metrics/generative.py: scoring; diffusion/store.py,
# task_sampler.py, generate.py, flops.py: the model and its sampling; train/diffusion.py: training): a change
# to the shared code bumps both.
VERSIONS = {"reconstruction": 2, "probe": 1, "knn": 1, "seg": 1, "generation": 3, "sampling": 3}


def _count(key: str, title: str) -> MetricSpec:
    return MetricSpec(key, title, "{:d}")


# A Fréchet distance's value and interval are of one estimand, the distance between the distributions
# (metrics.stats.frechet_ci): the plug-in distance at n (the convention of FID tables, kept in the records as
# "plugin" / "fid_plugin") less the bootstrap's estimate of its upward bias of about tr(S1)/n1 + tr(S2)/n2.
_FD_BIAS = ("bias-corrected point and interval: the distance between the distributions, below the plug-in "
            "value by its small-sample bias")

RECONSTRUCTION = TaskSpec(
    "reconstruction", "svgbench.tasks.reconstruction:run_reconstruction", "svgbench.tasks.reconstruction:ReconConfig",
    metrics=(
        MetricSpec("psnr", "PSNR (dB)", "{:.2f}", True, headline=True, uncertainty=_IMAGES, plot="reconstruction",
                   label="reconstruction PSNR"),
        MetricSpec("ssim", "SSIM", "{:.4f}", True, headline=True, uncertainty=_IMAGES, plot="reconstruction",
                   label="reconstruction SSIM"),
        MetricSpec("lpips", "LPIPS", "{:.4f}", False, uncertainty=_IMAGES),
        MetricSpec("rfid", "rFID", "{:.2f}", False, headline=True),
        MetricSpec("judge_rfid", "judge-rFID", "{:.2f}", False, headline=True,
                   uncertainty="bootstrap over images (judge features); " + _FD_BIAS),
        _count("num_images", "images"),
        MetricSpec("encode_ips", "encode img/s", "{:.1f}", True, timing=True),
        MetricSpec("decode_ips", "decode img/s", "{:.1f}", True, timing=True),
    ),
    needs=frozenset({"decoder", "encode"}), description="encode -> decode: PSNR, SSIM, LPIPS, rFID, judge-rFID",
    version=VERSIONS["reconstruction"])

PROBE = TaskSpec(
    "probe", "svgbench.tasks.understanding:run_probe", "svgbench.tasks.understanding:ProbeConfig",
    metrics=(
        MetricSpec("probe_top1", "linear top-1 (%)", "{:.2f}", True, headline=True, scorecard_title="probe top-1 (%)",
                   uncertainty=_IMAGES, plot="understanding", label="linear probe top-1"),
        MetricSpec("probe_top5", "linear top-5 (%)", "{:.2f}", True),
        MetricSpec("probe_top1_sklearn", "logreg top-1 (%)", "{:.2f}", True),
        _count("num_train", "train images"),
        _count("num_test", "test images"),
        _count("feature_dim", "dim"),
        MetricSpec("probe_fit_s", "probe fit (s)", "{:.2f}", False, timing=True),
    ),
    needs=frozenset({"features", "labels", "train"}),
    description="linear probe on frozen pooled features (DINOv2 grid protocol) + logistic-regression check",
    version=VERSIONS["probe"])

KNN = TaskSpec(
    "knn", "svgbench.tasks.understanding:run_knn", "svgbench.tasks.understanding:KnnConfig",
    metrics=(
        MetricSpec("knn_top1_k10", "kNN k=10 top-1 (%)", "{:.2f}", True, uncertainty=_IMAGES),
        MetricSpec("knn_top1_k20", "kNN k=20 top-1 (%)", "{:.2f}", True, headline=True, uncertainty=_IMAGES,
                   plot="understanding", label="kNN top-1 (k=20)"),
        MetricSpec("silhouette", "silhouette", "{:.4f}", True, headline=True),
        MetricSpec("variance_ratio", "between/within variance", "{:.4f}", True, headline=True,
                   scorecard_title="variance ratio"),
        _count("num_train", "train images"),
        _count("num_test", "test images"),
    ),
    needs=frozenset({"features", "labels", "train"}),
    description="weighted kNN (k=10, 20, T=0.07), silhouette, between/within-class variance, PCA map",
    version=VERSIONS["knn"])

SEG = TaskSpec(
    "seg", "svgbench.tasks.segmentation:run_segmentation", "svgbench.tasks.segmentation:SegConfig",
    metrics=(
        MetricSpec("miou", "mIoU (%)", "{:.2f}", True, headline=True, scorecard_title="seg mIoU (%)",
                   uncertainty="bootstrap over images (IoU from summed confusion matrices)", plot="understanding",
                   label="seg mIoU"),
        MetricSpec("macc", "mAcc (%)", "{:.2f}", True),
        MetricSpec("aacc", "aAcc (%)", "{:.2f}", True),
        _count("num_images", "images"),
        _count("train_images", "train images"),
        MetricSpec("train_s", "head train s", "{:.1f}", False, timing=True),
    ),
    needs=frozenset({"features", "masks", "train"}),
    description="DINOv2 linear segmentation head on frozen patch tokens: mIoU, mAcc, aAcc (mmseg)",
    version=VERSIONS["seg"])

_SAMPLES = "bootstrap over generated and reference samples (cached features); " + _FD_BIAS
_HALVES = "delete-d jackknife over half-size subsets of generated and reference samples (cached features), normal"

GENERATION = TaskSpec(
    "generation", "svgbench.tasks.generation:run_generation", "svgbench.tasks.generation:GenerationConfig",
    metrics=(
        MetricSpec("fid", "FID", "{:.2f}", False, headline=True, network=True, uncertainty=_SAMPLES),
        MetricSpec("kid", "KID", "{:.4f}", False, headline=True, network=True, uncertainty=_HALVES),
        MetricSpec("precision", "precision", "{:.3f}", True, headline=True, network=True, uncertainty=_HALVES),
        MetricSpec("recall", "recall", "{:.3f}", True, headline=True, network=True, uncertainty=_HALVES),
        # the ADM evaluator's other two numbers (an ADM reference batch only): Inception's spatial features (the
        # first 7 channels of mixed_6/conv) and the Inception Score of the samples
        MetricSpec("sfid", "Inception-sFID", "{:.2f}", False, optional=True),
        MetricSpec("inception_score", "Inception Score", "{:.2f}", True, optional=True),
        MetricSpec("class_accuracy", "judge class accuracy (%)", "{:.2f}", True, headline=True,
                   scorecard_title="judge class acc. of samples (%)",
                   uncertainty="bootstrap over generated samples (judge top-1 vs the conditioning class)"),
        _count("train_steps", "diffusion steps"),
        MetricSpec("feature_network", "feature network", "{}"),
        _count("num_samples", "samples"),
        MetricSpec("sample_s_per_image", "sample s/img", "{:.4f}", False, timing=True),
        MetricSpec("sample_gflops_per_image", "sample GFLOPs/img", "{:.3f}", False, timing=True),
        MetricSpec("sample_mfu", "sample MFU", "{:.4f}", True, timing=True),
    ),
    needs=frozenset({"decoder", "diffusion", "labels", "train"}),
    extra_columns="svgbench.tasks.generation:steps_to_fid_columns", extra_columns_fmt="{:d}",
    file_fields=("diffusion", "diffusion_stats", "reference_npz"),
    key_files="svgbench.diffusion.store:shipped_model_files",
    description="flow-matching diffusion on the latents: FID/KID/precision/recall, FID vs training steps",
    version=VERSIONS["generation"])

SAMPLING = TaskSpec(
    "sampling", "svgbench.tasks.generation:run_sampling", "svgbench.tasks.generation:SamplingConfig",
    metrics=(_count("num_samples", "samples"),),
    needs=frozenset({"decoder", "diffusion", "labels", "train"}),
    curve=CurveSpec(key="curve", series="method", x="steps", value="fid", headline_max_x=4,
                    uncertainty=_SAMPLES),
    missing_reason="svgbench.tasks.generation:sampling_missing_reason",
    file_fields=("diffusion", "diffusion_stats", "reference_npz"),
    key_files="svgbench.diffusion.store:shipped_model_files",
    note=("Rows: (encoder, sampler); columns: sampler steps; cells: FID of the encoder's diffusion model "
          "under the feature network named in `metric` (judge-FID: svgbench's shapes judge, not Inception). "
          "Time per image is in efficiency.md."),
    description="few-step sampling: FID and time per image vs sampler steps (Euler, Heun)",
    version=VERSIONS["sampling"])

BUILTIN_TASKS = (RECONSTRUCTION, PROBE, KNN, SEG, GENERATION, SAMPLING)
