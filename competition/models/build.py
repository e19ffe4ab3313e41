"""The timm family: the image backbone a config names, with its pretrained weights (from the hub, its
local cache or a file) and a fresh head. timm's models implement the model contract
(models/contract.py) as they are created."""
from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import getproxies

import timm
from torch import nn

from competition.core.errors import CompetitionError
from competition.core.keeping import pretrained_head_key, reads_pretrained_head
from competition.core.schema import Config
from competition.models.contract import head_of

log = logging.getLogger(__name__)


def uses_pretrained(cfg: Config) -> bool:
    """A pretrained file implies pretrained weights, whatever model.pretrained says."""
    return cfg.model.pretrained or cfg.model.pretrained_file is not None


def hub_unreachable(timeout: float = 3.0) -> bool:
    """Whether the model hub's server cannot be reached now: no route or no name resolution (a
    Kaggle notebook with internet off), or no answer within `timeout` seconds. Not asked when the
    hub is offline already (HF_HUB_OFFLINE) or a proxy is set: the hub's client goes through the
    proxy, and a direct connection would prove nothing."""
    from huggingface_hub import constants

    if constants.is_offline_mode() or getproxies().get("https") or getproxies().get("all"):
        return False
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=timeout).close()
    except OSError:
        return True
    return False


@contextlib.contextmanager
def hub_offline(on: bool) -> Iterator[None]:
    """huggingface_hub's own offline mode, `on` while its server cannot be reached: weights in the
    local hub cache still load, and missing ones fail at once, where the client would retry each
    file five times over a minute and log every attempt. timm's note that it loads from the hub
    is left out then: the refusal, if one comes, is the only line."""
    from huggingface_hub import constants

    before, timm_log = constants.HF_HUB_OFFLINE, logging.getLogger("timm")
    level = timm_log.level
    constants.HF_HUB_OFFLINE = before or on  # read at each request (constants.is_offline_mode())
    if on:
        timm_log.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
        timm_log.setLevel(level)


def build_timm(cfg: Config, num_classes: int, in_features: int | None, load_pretrained: bool) -> nn.Module:
    """The timm model of model.name (`in_features` is for tables: unused). `load_pretrained=False` when
    weights come from a checkpoint."""
    m = cfg.model
    if not timm.is_model(m.name):
        close = timm.list_models(f"*{m.name.split('.')[0][:8]}*")[:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise CompetitionError(f"config key model.name: {m.name!r} is not a timm model{hint}")
    kwargs: dict = {"num_classes": num_classes, "drop_rate": m.drop_rate}
    if m.drop_path_rate:
        kwargs["drop_path_rate"] = m.drop_path_rate
    pretrained = load_pretrained and uses_pretrained(cfg)
    if pretrained and m.pretrained_file:
        path = Path(m.pretrained_file)
        if not path.is_file():
            raise CompetitionError(f"config key model.pretrained_file: {path} not found")
        # timm loads a `file` ahead of any hub id or url (_builder._resolve_pretrained_source):
        # local weights never reach for the network (tests/test_offline.py trains without one).
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    unreachable = pretrained and not m.pretrained_file and hub_unreachable()
    own_head = pretrained and reads_pretrained_head(cfg)
    if own_head:  # the weights' own classifier loads with them (timm drops it for another class count)
        check_file_head(m.name, m.pretrained_file, pretrained_head_key(cfg))
        del kwargs["num_classes"]
    try:
        with hub_offline(unreachable):
            model = timm.create_model(m.name, pretrained=pretrained, **kwargs)
        if own_head:
            keep_pretrained_head(model, m.name, num_classes, pretrained_head_key(cfg),
                                 one_class_each=cfg.train.head_fit_prior == "label_map")
        # The competition's head starts afresh, scaled by its fan-in (PyTorch's Linear default):
        # 1. timm keeps the pretrained head when the class counts match (1000 = ImageNet's), and
        # 2. some timm inits scale by fan-out (EfficientNet: ±1/√classes), which for 2 classes
        #    gives logits of ±6 on pretrained features and a head-only stage that barely recovers.
        if pretrained:
            for layer in head_of(model).modules():
                if hasattr(layer, "reset_parameters"):
                    layer.reset_parameters()
        return model
    except CompetitionError:
        raise
    except TypeError as exc:
        if "drop_path_rate" in str(exc):
            raise CompetitionError(f"config key model.drop_path_rate: {m.name} has no stochastic depth to set") from None
        raise
    except Exception as exc:  # hub, network, file-format and shape errors all end here
        if not pretrained:
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if m.pretrained_file:
            raise CompetitionError(
                f"pretrained file {m.pretrained_file} does not load into {m.name}: {first[:300]}"
            ) from None
        why = (": the model hub cannot be reached from here, and its local cache (HF_HOME) lacks them;" if unreachable
               else f" ({type(exc).__name__}; no network or HF_HUB_OFFLINE=1?):")
        raise CompetitionError(
            f"pretrained weights for {m.name} could not be had{why} download them once, or set "
            f"model.pretrained_file to a local .safetensors/.pth in timm's layout"
        ) from None


def check_file_head(name: str, path: str | None, key: str) -> None:
    """A pretrained file read for its classifier has one (the default head's keys, in timm's layout)."""
    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    if path is None or pretrained_cfg is None or not pretrained_cfg.classifier:
        return
    if Path(path).suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(path, "pt") as f:
            keys = set(f.keys())
    else:
        keys = set(timm.models.load_state_dict(path))
    if f"{pretrained_cfg.classifier}.weight" not in keys:
        raise CompetitionError(f"config key {key} reads the pretrained weights' own classifier, and {path} has none "
                               f"(no {pretrained_cfg.classifier}.weight)")


def keep_pretrained_head(model: nn.Module, name: str, num_classes: int, key: str, one_class_each: bool = False) -> None:
    """Keep the pretrained classifier, as plain tensors outside the state dict (checkpoints are
    unchanged), in `model.pretrained_head` (weight, bias), for training.head_fit; then give the model a
    head for the competition's classes. `one_class_each` (label_map): each class needs a pretrained class."""
    head = head_of(model)
    if not isinstance(head, nn.Linear) or getattr(model, "num_classes", 0) == 0:
        raise CompetitionError(f"config key {key} reads the pretrained weights' own classifier, and {name}'s "
                               f"weights have no linear one")
    if one_class_each and num_classes > head.out_features:
        raise CompetitionError(f"config key {key} gives each of the {num_classes} classes a pretrained class of its "
                               f"own, and {name}'s weights have {head.out_features}")
    bias = head.bias.detach().clone() if head.bias is not None else head.weight.new_zeros(head.out_features)
    weight = head.weight.detach().clone()
    model.reset_classifier(num_classes)
    model.pretrained_head = (weight, bias)
