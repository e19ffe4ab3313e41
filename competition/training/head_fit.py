"""train.head_fit logreg: stage 1 as one exact fit instead of SGD epochs. The frozen backbone's pooled
features of the fold's training rows are extracted once, a logistic regression (softmax; one per
class for multi-label) is fit on them with scikit-learn, its regularisation chosen by an inner CV
on those same training rows, and its coefficients are written into the model's classifier layer:
checkpoints, predict, TTA, Grad-CAM and `package` see an ordinary model, and stage 2 starts from
that head (LP-FT, Kumar et al. 2022).

scikit-learn does the fit (it is the field's tool for an exact, regularised linear probe); the
features are standardised for the solver and the scaling is folded back into the weights, so the
layer computes exactly the fitted model's logits on the raw features.

When the pretrained weights came with their own classifier (models.build keeps it as
`model.pretrained_head` for the keys below), the fit can read what it knows:
train.head_fit_inputs pretrained_logits fits on the pretrained classifier's logits z = W·f + b
(both: on the features and z side by side), and train.head_fit_prior label_map fits towards the
pretrained classes that match the competition's (training.head_prior). Either way the result is
linear in the features and folds into the new head exactly — A·(W·f + b) + c = (A·W)·f + (A·b + c) —
so the model stays an ordinary one.
"""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from competition.core.errors import CompetitionError
from competition.core.runtime import to_device
from competition.models.contract import head_of
from competition.training.head_prior import INNER_FOLDS, fit_prior, inner_splits, standardise

log = logging.getLogger(__name__)

C_GRID = np.logspace(-4, 2, 13)  # inverse regularisation strengths the inner CV tries
ABSENT_LOGIT = -20.0  # below every fitted logit: a class with no training row gets ~0 probability


@torch.no_grad()
def pooled_features(model: nn.Module, loader, device: torch.device, batch_transform: Callable | None = None,
                    views: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, answers, row number) of every row of `loader`, and of each of its `views` (TTA views:
    flips, rotations) as further rows with the same row number: what the classifier layer receives, in
    eval mode and float32 (caught on its way in, so any timm model's pooling and pre-logits layers apply)."""
    from competition.data.transforms import TTA_VIEWS

    head = linear_head(model)
    caught: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: caught.append(args[0].detach().float().cpu()))
    answers, rows, seen = [], [], 0
    model.eval()
    try:
        for batch in loader:
            x = to_device(batch[0], device)
            x = batch_transform(x) if batch_transform is not None else x
            for view in [lambda v: v, *(TTA_VIEWS[n] for n in views)]:
                model(view(x))
                answers.append(torch.as_tensor(batch[1]).cpu())
                rows.append(np.arange(len(x)) + seen)
            seen += len(x)
    finally:
        hook.remove()
    return torch.cat(caught).numpy().astype(np.float64), torch.cat(answers).numpy(), np.concatenate(rows)


def linear_head(model: nn.Module) -> nn.Linear:
    head = head_of(model)
    if not isinstance(head, nn.Linear):
        raise CompetitionError(f"config key train.head_fit: logreg writes a Linear classifier, and "
                               f"{type(model).__name__}'s is a {type(head).__name__} (use sgd)")
    return head


def _fit_one(x: np.ndarray, y: np.ndarray, balanced: bool, seed: int, groups: np.ndarray | None) -> tuple[object, float]:
    """A logistic regression of y on standardised x, C by inner CV (log loss) on these rows; the
    views of one row (`groups`) stay in one inner fold."""
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    weight = "balanced" if balanced else None
    folds = min(INNER_FOLDS, int(np.unique(y, return_counts=True)[1].min()))
    with warnings.catch_warnings():  # lbfgs at the grid's weakest penalties may stop at max_iter: harmless
        warnings.simplefilter("ignore")
        if folds < 2:  # a class with one row: nothing to cross-validate
            est = LogisticRegression(C=1.0, max_iter=2000, class_weight=weight).fit(x, y)
            return est, 1.0
        est = LogisticRegressionCV(Cs=C_GRID, cv=inner_splits(x, y, folds, seed, groups), scoring="neg_log_loss", max_iter=2000, class_weight=weight).fit(x, y)
    return est, float(np.ravel(est.C_)[0])


def fit_logistic(features: np.ndarray, targets: np.ndarray, n_classes: int, multi_label: bool, balanced: bool = False,
                 seed: int = 0, groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """(weight [classes, features], bias [classes], what was fit) of the logistic regression whose
    logits, as a Linear layer on the raw features, give the fitted model's probabilities."""
    x, mean, scale = standardise(features)
    weight, bias = np.zeros((n_classes, x.shape[1])), np.full(n_classes, ABSENT_LOGIT)
    cs, fitted = [], []
    columns = [(c, targets[:, c].astype(int)) for c in range(n_classes)] if multi_label else [(None, targets.astype(int))]
    for c, y in columns:
        present = np.unique(y)
        if len(present) < 2:  # every row alike: a constant logit
            if c is not None:
                bias[c] = -ABSENT_LOGIT if present[0] == 1 else ABSENT_LOGIT
            else:
                bias[present[0]] = 0.0
            continue
        est, chosen = _fit_one(x, y, balanced, seed, groups)
        cs.append(chosen)
        fitted.append((c, est))
        coef, icpt = est.coef_, est.intercept_
        if c is not None:  # one sigmoid per class: the layer's logit is the regression's
            weight[c], bias[c] = coef[0], icpt[0]
        elif len(present) == 2:  # scikit-learn's one binary logit → two softmax logits ±½ of it
            weight[present[1]], bias[present[1]] = coef[0] / 2, icpt[0] / 2
            weight[present[0]], bias[present[0]] = -coef[0] / 2, -icpt[0] / 2
        else:
            weight[present], bias[present] = coef, icpt
    # Fold the standardisation in: w·(x − μ)/σ + b = (w/σ)·x + (b − (w/σ)·μ).
    weight = weight / scale
    bias = bias - weight @ mean  # rows of constant logits have weight 0: their bias stays
    # `estimators` and the scaling: scikit-learn's own models, for checking the layer against them
    return weight, bias, {"C": cs, "rows": int(len(features)), "features": int(features.shape[1]),
                          "estimators": fitted, "mean": mean, "scale": scale}


def pretrained_inputs(features: np.ndarray, pretrained: tuple[np.ndarray, np.ndarray] | None,
                      inputs: str) -> tuple[np.ndarray, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    """(x, lift): what the regression is fit on under train.head_fit_inputs, and the map from its
    (weight over x, bias) to the same logits' (weight, bias) over the features."""
    if inputs == "features":
        return features, lambda a, c: (a, c)
    w, b = pretrained
    logits = features @ w.T + b
    if inputs == "pretrained_logits":
        return logits, lambda a, c: (a @ w, a @ b + c)
    d = features.shape[1]
    return np.hstack([features, logits]), lambda a, c: (a[:, :d] + a[:, d:] @ w, a[:, d:] @ b + c)


def fit_pretrained(features: np.ndarray, targets: np.ndarray, n_classes: int, multi_label: bool,
                   pretrained: tuple[np.ndarray, np.ndarray] | None, inputs: str = "features", prior: str = "none",
                   balanced: bool = False, seed: int = 0,
                   groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """fit_logistic on train.head_fit_inputs' inputs, or towards the matched pretrained rows under
    train.head_fit_prior label_map; (weight, bias) over the features either way, and what was fit
    (`probs_of`: features → the fitted model's probabilities, computed the fit's own way)."""
    x, lift = pretrained_inputs(features, pretrained, inputs)
    if prior == "none":
        a, c, info = fit_logistic(x, targets, n_classes, multi_label, balanced, seed, groups)
        weight, bias = lift(a, c)
        info["probs_of"] = lambda f: _scikit_learn_probs(info, pretrained_inputs(f, pretrained, inputs)[0], multi_label)
        return weight, bias, info
    w, b = pretrained
    logits = features @ w.T + b
    a, c, rows, info = fit_prior(x, logits, targets, n_classes, multi_label, C_GRID, ABSENT_LOGIT, balanced, seed, groups)
    weight, bias = (np.array(v) for v in lift(a, c))  # copies: `a` and `c` stay the fit's, for probs_of
    on = rows >= 0
    weight[on] += w[rows[on]]  # the matched pretrained rows: the logits the fit was offset by
    bias[on] += b[rows[on]]

    def probs_of(f: np.ndarray) -> np.ndarray:
        from scipy.special import expit, softmax

        z = f @ w.T + b
        out = pretrained_inputs(f, pretrained, inputs)[0] @ a.T + c + np.where(on, z[:, rows.clip(0)], 0.0)
        return expit(out) if multi_label else softmax(out, axis=1)

    info.update(rows=int(len(features)), features=int(x.shape[1]), probs_of=probs_of)
    return weight, bias, info


def _scikit_learn_probs(info: dict, x: np.ndarray, multi_label: bool) -> np.ndarray:
    """The probabilities of the estimators fit_logistic fit, from scikit-learn itself (classes that
    every row shared are left out: the checks compare problems with every class present)."""
    x = (x - info["mean"]) / info["scale"]
    if multi_label:
        return np.stack([est.predict_proba(x)[:, 1] for _, est in info["estimators"]], 1)
    ((_, est),) = info["estimators"]
    return est.predict_proba(x)


@torch.no_grad()
def write_head(model: nn.Module, weight: np.ndarray, bias: np.ndarray) -> None:
    head = linear_head(model)
    head.weight.copy_(torch.as_tensor(weight, dtype=head.weight.dtype))
    if head.bias is not None:
        head.bias.copy_(torch.as_tensor(bias, dtype=head.bias.dtype))


def fit_head(model: nn.Module, loader, device: torch.device, *, n_classes: int, multi_label: bool,
             batch_transform: Callable | None = None, balanced: bool = False, seed: int = 0,
             views: tuple[str, ...] = (), inputs: str = "features", prior: str = "none") -> dict:
    """Stage 1's epoch under train.head_fit logreg: features once (and of `views`), the fit, the head
    written. Returns what train_one_epoch returns (the loss: the fitted head's mean training log loss).
    The inner CV keeps the views of one row in one inner fold."""
    pretrained = getattr(model, "pretrained_head", None)
    if (inputs, prior) != ("features", "none") and pretrained is None:
        raise CompetitionError(f"config key train.head_fit_inputs {inputs} / train.head_fit_prior {prior}: this model "
                               "was built without its pretrained classifier (a run without pretrained weights)")
    pretrained = None if pretrained is None else tuple(t.detach().double().cpu().numpy() for t in pretrained)
    features, targets, rows = pooled_features(model, loader, device, batch_transform, views)
    weight, bias, info = fit_pretrained(features, targets, n_classes, multi_label, pretrained, inputs, prior,
                                        balanced, seed, rows if views else None)
    write_head(model, weight, bias)
    logits = torch.as_tensor(features @ weight.T + bias)
    y = torch.as_tensor(targets)
    loss = (nn.functional.binary_cross_entropy_with_logits(logits, y.double()) if multi_label
            else nn.functional.cross_entropy(logits, y.long()))
    log.info("head fit by logistic regression on %d rows × %d %s (C %s, chosen by %d-fold CV on them)%s",
             info["rows"], info["features"], "features" if inputs == "features" else f"inputs ({inputs})",
             ", ".join(f"{c:g}" for c in info["C"]) or "-", INNER_FOLDS,
             f", towards pretrained classes {_named(info['label_map'], len(pretrained[1]))}" if prior != "none" else "")
    n = len(features)
    return {"loss": float(loss), "samples": n, "lrs": {}, "batches": len(loader), "stopped": False,
            "loss_total": float(loss) * n, "fit": info}


def _named(mapped: list[int], n_pretrained: int) -> str:
    """The matched pretrained classes, with ImageNet-1k's names when the classifier has its 1000 classes."""
    if n_pretrained != 1000:
        return ", ".join(map(str, mapped))
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return ", ".join(f"{j} ({info.index_to_description(j).split(',')[0]})" if j >= 0 else "-" for j in mapped)


class ProbeRows:
    """A fold's training rows in their validation view (FoldData.probe_ds), read whole by every rank:
    what the head is fit on, and what BatchNorm statistics are recomputed on (training.averaging)."""

    def __init__(self, dataset, batch_size: int, device: torch.device, num_workers: int, batch_transform: Callable):
        self.dataset, self.batch_size, self.device, self.num_workers = dataset, batch_size, device, num_workers
        self.batch_transform, self._loader = batch_transform, None

    def loader(self):
        if self._loader is None:
            from competition.data.datasets import build_loader

            self._loader = build_loader(self.dataset, self.batch_size, self.device, num_workers=self.num_workers)
        return self._loader

    def fit_head(self, model: nn.Module, target, t, seed: int, ema=None) -> dict:
        """Stage 1's epoch under train.head_fit logreg (`target` a data.targets.Target, `t` the TrainConfig;
        class_weights balanced weighs the fit too); the EMA of the weights, if any, starts from the fit."""
        done = fit_head(model, self.loader(), self.device, n_classes=len(target.classes), multi_label=target.multi_label,
                        batch_transform=self.batch_transform, balanced=t.class_weights == "balanced", seed=seed,
                        views=tuple(t.head_fit_views), inputs=t.head_fit_inputs, prior=t.head_fit_prior)
        if ema is not None:
            ema.module.load_state_dict(model.state_dict())
        return done

    def recompute_bn(self, model: nn.Module) -> None:
        """BatchNorm running statistics of `model` recomputed on these rows (torch's update_bn)."""
        from torch.optim.swa_utils import update_bn

        with torch.no_grad():
            transform = self.batch_transform or (lambda x: x)  # a table's rows need none
            update_bn((transform(to_device(b[0], self.device)) for b in self.loader()), model)
