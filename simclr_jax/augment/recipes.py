"""SimCLR's augmentation as specs over the registered ops (augment/ops.py), and its parameters.

A `Recipe` is a sequence of `Step`s (an op, optionally applied with a probability), plus how it
draws its keys. The paper's colour distortion (`PAPER_COLOR`: jitter p = 0.8, greyscale p = 0.2,
blur p = 0.5 on ImageNet) and the ablation vocabulary of Figure 5 (`ABLATIONS`: 'crop',
'color', 'pblur', ...) are recipes over the same ops, so each op is written once; where it runs
(augment_on='device' inside the train step, 'host' on the host's CPU) is a placement of the same
function (augment/views.py).

Key schedules, kept so that each recipe draws exactly as its first version did (runs resumed
across versions see the same views):
- 'flat' (the paper's recipe): the key is split once into one key per draw, in order: a step's
  coin (if it has a probability), then its op's key (if the op is random).
- 'nested' (the ablation ops): step j gets the key itself in a one-step recipe, else the j-th of
  split(key, steps); a step with a probability splits its key into (coin, op key).
"""

import dataclasses
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp

from simclr_jax.augment.ops import OPS

DEFAULT = "default"  # a view's op list: the paper's pipeline (host crop + flip, PAPER_COLOR)


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """The augmentation's sub-config: each field is the run config's key of the same name
    (defaults and meaning in simclr_jax/config.py); hashable, so jit can close over it."""

    seed: int
    augment_on: str
    crop_on: str
    image_size: int
    crop_area_min: float
    color_jitter_strength: float
    color_jitter_impl: str
    color_jitter_prob: float
    grayscale_prob: float
    blur_prob: float
    view1_ops: str
    view2_ops: str
    noise_std: float
    cutout_fraction: float

    @classmethod
    def from_config(cls, config: Any) -> "Augmentation":
        """The fields of a (flat) run config that this sub-config names."""
        return cls(**{f.name: config[f.name] for f in dataclasses.fields(cls)})

    def view_ops(self, view: int) -> str:
        """view 1 or 2's op list ('default' or 'crop,color', ...)."""
        return self.view1_ops if view == 1 else self.view2_ops

    @property
    def uses_default(self) -> bool:
        """Both views use the paper's pipeline (host crop + flip, PAPER_COLOR on the views)."""
        return self.view1_ops == DEFAULT and self.view2_ops == DEFAULT


@dataclasses.dataclass(frozen=True)
class Step:
    """An op of OPS, applied always (prob=None) or with the probability held by the
    Augmentation field named `prob`."""

    op: str
    prob: str | None = None


@dataclasses.dataclass(frozen=True)
class Recipe:
    """Steps applied in order to one [0, 1] image; `keys`: 'flat' or 'nested' (module doc)."""

    steps: tuple[Step, ...]
    keys: str = "nested"

    def draw_keys(self, key: jax.Array) -> list[tuple[Any, Any]]:
        """(coin key or None, op key or None) per step."""
        if self.keys == "flat":
            needs = [(s.prob is not None, OPS[s.op].random) for s in self.steps]
            flat: Iterator = iter(jax.random.split(key, sum(a + b for a, b in needs)))
            return [(next(flat) if coin else None, next(flat) if rand else None)
                    for coin, rand in needs]
        per_step = [key] if len(self.steps) == 1 else list(jax.random.split(key, len(self.steps)))
        return [tuple(jax.random.split(k)) if s.prob is not None else (None, k)
                for s, k in zip(self.steps, per_step, strict=True)]

    def __call__(self, key: jax.Array, x: jnp.ndarray, aug: Augmentation) -> jnp.ndarray:
        """The recipe applied to x (not clipped: the caller clips once at the end)."""
        for step, (coin, op_key) in zip(self.steps, self.draw_keys(key), strict=True):
            prob = None if step.prob is None else getattr(aug, step.prob)
            if prob == 0:  # static: a config value; not traced at all
                continue
            y = OPS[step.op](op_key, x, aug)
            x = y if prob is None else jnp.where(jax.random.uniform(coin) < prob, y, x)
        return x


JITTER, GREY = Step("jitter", "color_jitter_prob"), Step("grey", "grayscale_prob")
# The paper's colour distortion of a cropped view (the official preprocess_for_train's colour
# and, for ImageNet, blur).
PAPER_COLOR = Recipe((JITTER, GREY, Step("blur", "blur_prob")), keys="flat")
# The ablation vocabulary: each name of a view's op list (config.view1_ops).
ABLATIONS: dict[str, Recipe] = {
    **{name: Recipe((Step(name),)) for name in OPS},
    "jitter": Recipe((JITTER,)),
    "grey": Recipe((GREY,)),
    "color": Recipe((JITTER, GREY)),  # the paper's colour distortion, without blur
    "drop": Recipe((Step("grey"),)),  # colour drop: always greyscale
    "pblur": Recipe((Step("blur", "blur_prob"),)),
}


def parse_ops(spec: str) -> list[str]:
    """'crop, color' -> ['crop', 'color']; '' or 'none' -> [] (identity); ValueError if unknown."""
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if names == ["none"]:
        return []
    unknown = [n for n in names if n not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown augmentation op {unknown[0]!r}; known ops: "
                         f"{', '.join(ABLATIONS)} (or '{DEFAULT}' for the standard pipeline)")
    return names


def view_op_names(aug: Augmentation, spec: str) -> list[str]:
    """A view's op list on the device; 'default' (the other view being custom) is the paper's
    pipeline spelled in ablation ops: crop, flip, color and, if blur_prob > 0, pblur."""
    if spec == DEFAULT:
        return ["crop", "flip", "color"] + (["pblur"] if aug.blur_prob > 0 else [])
    return parse_ops(spec)


def apply_ops(key: jax.Array, x: jnp.ndarray, names: list[str],
              aug: Augmentation) -> jnp.ndarray:
    """The named ablation recipes in order on one [0, 1] image (op j draws from
    fold_in(key, j)), clipped to [0, 1]."""
    for j, name in enumerate(names):
        x = ABLATIONS[name](jax.random.fold_in(key, j), x, aug)
    return jnp.clip(x, 0.0, 1.0)


def paper_color(key: jax.Array, x: jnp.ndarray, aug: Augmentation) -> jnp.ndarray:
    """PAPER_COLOR on one cropped [0, 1] view, clipped to [0, 1]."""
    return jnp.clip(PAPER_COLOR(key, x, aug), 0.0, 1.0)
