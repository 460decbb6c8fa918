"""A generator run's encoder: the trained run named by generate.encoder_workdir, frozen.

`adopt(config, workdir)` gives a generate config the encoder run's model section (the generator
conditions on that network's outputs, so there is no other choice), checks that both runs see the same
clips, and records which encoder it is (`generate.encoder_step`, `generate.encoder_fingerprint`: a
hash of the encoder's config and step). The generator's checkpoint then holds a copy of the
encoder's weights (`load`: the state's params['encoder'], and the encoder run's objective parameters
beside the generator's, frozen), so sampling and eval read the
generator's workdir alone; a resume whose encoder run changed since (retrained, another step) stops.
"""

from __future__ import annotations

import copy
import hashlib
import json

import jax

from sora_jax import storage
from sora_jax.config import terms
from sora_jax.errors import ConfigError
from sora_jax.training import checkpoint as ckpt

DATA_FIELDS = ("name", "num_frames", "frame_size", "stride")  # what a clip is: the generator's output shape


def fingerprint(saved: dict, step: int) -> str:
  """Identifies an encoder: the config its checkpoint saved (as written: a newer sora-jax, whose
  schema has more fields, gives the same encoder the same fingerprint) and the checkpoint's step."""
  blob = json.dumps({"config": saved, "step": int(step)}, sort_keys=True)
  return f"{hashlib.sha256(blob.encode()).hexdigest()[:16]}@{int(step)}"


def _identify(config):
  """-> (the encoder run's config, its fingerprint, step) at generate.encoder_step (0: its latest),
  from the checkpoint's saved config alone (its weights are read once, by `load`)."""
  g = config.generate
  saved, step = ckpt.saved_run_config(g.encoder_workdir, g.encoder_step or None)
  encoder_config = ckpt.saved_config(saved)
  if "generate" in terms(encoder_config.objective.name):
    raise ConfigError(f"generate.encoder_workdir={g.encoder_workdir!r} is a generator run; give the encoder run "
                      f"it was trained on ({encoder_config.generate.encoder_workdir!r})")
  return encoder_config, fingerprint(saved, step), step


def adopt(config, workdir=None):
  """-> a copy of a generate config with the encoder run's model section and its identity recorded
  (configs of other objectives come back unchanged). ConfigError when the clips differ from the
  encoder's, or when `workdir` already holds a generator trained on another encoder."""
  if "generate" not in terms(config.objective.name) or not config.generate.encoder_workdir:
    return config
  encoder_config, identity, step = _identify(config)
  for name in DATA_FIELDS:
    mine, theirs = config.data[name], encoder_config.data[name]
    if mine != theirs:
      raise ConfigError(f"config.data.{name}={mine!r} does not match the encoder run's ({theirs!r} in "
                        f"{config.generate.encoder_workdir!r}): the generator makes the clips its encoder reads; "
                        f"set --config.data.{name}={theirs!r}")
  adopted = copy.deepcopy(config)
  adopted.model = copy.deepcopy(encoder_config.model)
  adopted.text = copy.deepcopy(encoder_config.text)  # its text tower reads sentences into its video-text space
  adopted.generate.encoder_step = step
  adopted.generate.encoder_fingerprint = identity
  given = config.generate.encoder_fingerprint
  saved = _saved_fingerprint(workdir) if workdir is not None else ""
  for before, where in ((given, "the config"), (saved, f"{workdir}/config.json")):
    if before and before != adopted.generate.encoder_fingerprint:
      raise ConfigError(f"{where} names encoder {before}, but {config.generate.encoder_workdir!r} now holds "
                        f"{adopted.generate.encoder_fingerprint} (retrained, or another checkpoint): a generator "
                        "never continues on another encoder; use a new --workdir, or "
                        f"--config.generate.encoder_step={before.rpartition('@')[2]} if that checkpoint is kept")
  return adopted


def _saved_fingerprint(workdir) -> str:
  path = storage.path(workdir) / "config.json"
  if not path.exists():
    return ""
  return json.loads(path.read_text()).get("generate", {}).get("encoder_fingerprint", "")


def load(config) -> tuple[dict, dict]:
  """-> (the encoder's variables {'params', ...}, its run's objective parameters (e.g. the text
  projection of a video-text run)) at the adopted step, checked against the fingerprint."""
  g = config.generate
  _, identity, step = _identify(config)
  _, variables, objective, _ = ckpt.load_run(g.encoder_workdir, step)
  if g.encoder_fingerprint and identity != g.encoder_fingerprint:
    raise ConfigError(f"the encoder in {config.generate.encoder_workdir!r} changed while the generator was being "
                      "set up; rerun")
  return jax.device_get((dict(variables), dict(objective)))  # numpy: an argument of any mesh's init
