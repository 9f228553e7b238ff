"""Prints a model's parameter count and forward FLOPs per example, per top-level module: TriBERT,
Sound-of-Pixels, the staged recipe's separation pre-training network and AMnet per mixture of N
videos, AMnet's AME model per clip.

  python main.py --config=configs/pretrain.py:cpu --mode=summary
  python main.py --config=configs/pretrain.py:paper,variant=release --mode=summary
  python main.py --config=configs/amnet.py:paper,stage=motion --mode=summary
  python main.py --config=configs/amnet_ame.py:cpu --mode=summary

Parameters come from jax.eval_shape (no memory for weights); FLOPs from XLA's cost analysis of
the lowered (not compiled) eval-mode forward, for the whole model and for each top-level module
lowered on its own with the inputs it receives inside the model.
"""

from __future__ import annotations

import collections
from typing import Any, Callable

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from tribert_jax.models import amnet
from tribert_jax.models import amnet_embedding
from tribert_jax.models import tribert

# config.model.name of the models that are not separation models (the separation task's MODELS
# covers those): name -> (model class, example inputs of batch size b, what one example is).
OTHER_MODELS: dict[str, tuple[Callable[..., nn.Module], Callable[..., Any], str]] = {
    "amnet_ame": (amnet_embedding.AudioMotionEmbedding, amnet_embedding.example_ame_inputs,
                  "one clip"),
}


def model_spec(config: ml_collections.ConfigDict
               ) -> tuple[Callable[..., nn.Module], Callable[..., Any], str]:
  """(model class, example-inputs function (config, batch_size), what one example is) of a model
  config, by config.name (TriBERT when the config has no name)."""
  name = config.get("name", "tribert")
  if name in OTHER_MODELS:
    return OTHER_MODELS[name]
  from tribert_jax.tasks import separation  # pylint: disable=g-import-not-at-top
  if name not in separation.MODELS:
    raise ValueError(f"--mode=summary: config.model.name={name!r}: expected one of "
                     f"{sorted(separation.MODELS) + sorted(OTHER_MODELS)}")
  return (separation.MODELS[name], tribert.example_inputs,
          f"one mixture of N = {config.input.num_mix} videos")


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The model config (with .input sizes taken from config.data if the file has one)."""
  if "model" not in config:
    if "transformer" in config and "unet" in config:
      return config
    raise ValueError("--config: the config has no .model (and is not a model config)")
  model = ml_collections.ConfigDict(config.model.to_dict())
  if "data" in config:  # the data config decides the input sizes
    for key in ("num_mix", "num_frames", "image_size", "pose_window"):
      if key in config.data:
        model.input[key] = config.data[key]
  return model


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)
                      if hasattr(x, "shape") and hasattr(x, "dtype") else x, tree)


def abstract_variables(config: ml_collections.ConfigDict, batch_size: int = 1) -> tuple[Any, Any]:
  """(abstract variables without boxes, abstract example inputs) via jax.eval_shape."""
  model_class, example_inputs, _ = model_spec(config)
  model = model_class(config=config)
  inputs = _abstract(jax.eval_shape(lambda: example_inputs(config, batch_size)))
  rngs = {k: jax.random.PRNGKey(0) for k in ("params", "dropout", "masking")}
  variables = jax.eval_shape(lambda x: nn.meta.unbox(model.init(rngs, x, train=False)), inputs)
  return variables, inputs


def count(tree: Any) -> int:
  """Number of scalars in a tree of arrays / ShapeDtypeStructs."""
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))


def parameter_table(variables: Any) -> dict[str, int]:
  """Parameter count per top-level module."""
  return {name: count(sub) for name, sub in variables["params"].items()}


def _flops(lowered: Any) -> float:
  analysis = lowered.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float(analysis.get("flops", float("nan"))) if analysis else float("nan")


def flops_table(config: ml_collections.ConfigDict, variables: Any, inputs: Any
                ) -> tuple[float, dict[str, float]]:
  """(total forward FLOPs, FLOPs per top-level module) in eval mode for the given inputs."""
  model = model_spec(config)[0](config=config)
  total = _flops(jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, inputs))
  calls = []

  def record(next_fun, args, kwargs, context):
    module = context.module
    if context.method_name == "__call__" and len(module.scope.path) == 1:
      calls.append((module.name, module.clone(parent=None, name=None), _abstract(args),
                    _abstract(kwargs)))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, inputs)
  per_module: dict[str, float] = collections.defaultdict(float)
  for name, module, args, kwargs in calls:
    sub = {c: variables[c][name] for c in variables if name in variables[c]}
    # Array arguments are traced; Python values (train=False, widths) stay static.
    leaves, treedef = jax.tree.flatten((args, kwargs))
    dynamic = [i for i, x in enumerate(leaves) if isinstance(x, jax.ShapeDtypeStruct)]

    def fn(v, arrays, module=module, leaves=leaves, treedef=treedef, dynamic=dynamic):
      filled = list(leaves)
      for i, a in zip(dynamic, arrays):
        filled[i] = a
      a, kw = jax.tree.unflatten(treedef, filled)
      return module.apply(v, *a, **kw)

    per_module[name] += _flops(jax.jit(fn).lower(sub, [leaves[i] for i in dynamic]))
  return total, dict(per_module)


def summarize(config: ml_collections.ConfigDict, flops: bool = True) -> str:
  """The printed report for one model config."""
  variables, inputs = abstract_variables(config)
  params = parameter_table(variables)
  name = config.get("name", "tribert")
  # AME configs carry AMnet's stage key too; only the separation stage has one.
  shown = ("variant", "stage") if name == "amnet" or "variant" in config else ()
  described = [f"size={config.size}"] + [f"{key}={config[key]}" for key in shown
                                           if key in config]
  lines = [f"{name} {' '.join(described)} input: N={config.input.num_mix} "
           f"T={config.input.num_frames} S={config.input.image_size} "
           f"W={config.input.pose_window}; one example = {model_spec(config)[2]}"]
  module_flops: dict[str, float] = {}
  total_flops = None
  if flops:
    total_flops, module_flops = flops_table(config, variables, inputs)
  lines.append(f"{'module':<24}{'params':>14}{'GFLOP/example':>16}")
  for name in sorted(params, key=lambda n: -params[n]):
    f = module_flops.get(name)
    lines.append(f"{name:<24}{params[name]:>14,}{(f'{f / 1e9:.3f}' if f is not None else ''):>16}")
  lines.append(f"{'total':<24}{sum(params.values()):>14,}"
               f"{(f'{total_flops / 1e9:.3f}' if total_flops is not None else ''):>16}")
  frozen = amnet.frozen_prefixes(config)
  if frozen:
    trained = sum(n for module, n in params.items() if module not in frozen)
    lines.append(f"trained: {trained:,} (frozen: {', '.join(frozen)})")
  lines.append(f"batch_stats: {count(variables.get('batch_stats', {})):,} scalars")
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict, flops: bool = True) -> str:
  """Prints and returns the summary of a phase config's model (main.py --mode=summary)."""
  model = resolve_config(config)
  model_spec(model)  # an unknown model name fails here, before any tracing
  text = summarize(model, flops)
  print(text)
  return text
