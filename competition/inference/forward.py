"""The prediction phase: every model × TTA view on each batch, loaded once for all of them."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from competition.core.runtime import autocast, probabilities, show_progress, to_device


@torch.inference_mode()
def predict_probs(
    models: Sequence[nn.Module],
    loader,
    device: torch.device,
    *,
    views: Sequence[Callable[[torch.Tensor], torch.Tensor]] = (lambda x: x,),
    amp_dtype: torch.dtype | None = None,
    batch_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    multi_label: bool = False,
    desc: str = "predict",
) -> np.ndarray:
    """Mean probabilities (softmax; sigmoid per class for multi-label) over every model × view,
    each batch loaded once for all of them."""
    for m in models:
        m.eval()
    out = []
    for x in tqdm(loader, desc=desc, leave=False, disable=not show_progress()):
        if isinstance(x, (list, tuple)):
            x = x[0]
        x = to_device(x, device)
        if batch_transform is not None:
            x = batch_transform(x)
        # Each view once per batch, not once per model; to_device puts rotated and transposed
        # views back in channels_last on CUDA.
        batches = [to_device(view(x), device) for view in views]
        acc = None
        for model in models:
            for xv in batches:
                with autocast(device, amp_dtype):
                    p = probabilities(model(xv), multi_label)
                acc = p if acc is None else acc + p
        out.append((acc / (len(models) * len(views))).cpu())
    return torch.cat(out).numpy().astype(np.float64)
