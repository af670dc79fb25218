"""Where each camera's normality model file lives, and saving one a camera learnt while running.

One rule for the path, used by every reader and writer: the camera's `model`, else
<scoring.models_dir>/<camera>.npz. `vigil fit` writes there, the next start loads from there, and a
camera that learnt its model online during warm-up saves it there, so a restart does not learn again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.config import CameraConfig, VigilConfig
from pipeline.logs import fields

if TYPE_CHECKING:
    from stages.normality import NormalityModel

log = logging.getLogger("vigil.models")


class ModelStore:
    """The model files of `cameras` (default: the config's)."""

    def __init__(self, config: VigilConfig, cameras: Sequence[CameraConfig] | None = None) -> None:
        self.models_dir = config.scoring.models_dir
        known = config.cameras if cameras is None else cameras
        self.configured = {c.name: c.model for c in known if c.model is not None}

    def path(self, camera: str) -> Path:
        """The camera's `model`, else <models_dir>/<camera>.npz."""
        return self.configured.get(camera) or self.models_dir / f"{camera}.npz"

    def save(self, model: NormalityModel) -> Path | None:
        """Save a model learnt while running (atomically) to its camera's path; None when it cannot be
        written: an error line with the path, and the camera goes on with the model in memory."""
        path = self.path(model.camera)
        try:
            model.save(path)
        except OSError as exc:
            log.error(
                f"cannot save the normality model: {exc.strerror or exc}; learnt again at the next start",
                extra=fields(camera=model.camera, path=str(path)),
            )
            return None
        log.info("normality model saved", extra=fields(camera=model.camera, path=str(path)))
        return path
