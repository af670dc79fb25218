"""The normal range of each reason of an alert, for the detail page's plots.

The camera's current model and the alert's recorded observations (its object's last frame not cut by
the frame edge, else its last) give, per attribute that has one (`Attribute.normal_range`), the
quantiles of normal objects of its class in its place and the object's own value. Models are cached
per camera until their file changes.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from pipeline.errors import VigilError
from pipeline.model_store import ModelStore

if TYPE_CHECKING:
    from stages.normality import NormalityModel
    from stages.normality.attributes.base import NormalRange
    from stages.normality.observations import EventObservations


class NormalRanges:
    def __init__(self, models: ModelStore, device: str = "cpu") -> None:
        self.models = models
        self.device = device
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[tuple[int, int] | None, NormalityModel]] = {}

    def _model(self, camera: str) -> NormalityModel | None:
        from stages.normality import NormalityModel

        stamp = self.models.stamp(camera)
        if stamp is None:
            return None
        with self._lock:
            cached = self._cache.get(camera)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            model = NormalityModel.load(self.models.path(camera), device=self.device)
            self._cache[camera] = (stamp, model)
            return model

    def of(self, camera: str, seen: EventObservations | None) -> dict[str, NormalRange]:
        """Attribute -> its normal range for the alert's object, from its recorded observations (empty:
        no model, or none recorded)."""
        import numpy as np

        from stages.normality.attributes import REGISTRY
        from stages.normality.attributes.base import ObjectView
        from stages.normality.features import truncated

        if seen is None or len(seen) == 0:
            return {}
        try:
            model = self._model(camera)
        except VigilError:  # a model this Vigil cannot read: the page shows the score plots
            return {}
        if model is None:
            return {}
        attrs = seen.attrs
        whole = np.flatnonzero(~truncated(attrs.xyxy, seen.frame_size))
        i = int(whole[-1]) if len(whole) else len(attrs) - 1
        k = int(model.class_index(attrs.class_names, attrs.class_id[i : i + 1], attrs.is_blob[i : i + 1])[0])
        if int(attrs.cell[i]) >= model.cells:
            return {}
        obj = ObjectView(model, attrs, seen.graph(), i, k)
        out = {}
        for name, attribute in REGISTRY.items():
            normal = attribute.normal_range(obj)
            if normal is not None and np.all(np.isfinite(normal.values)) and np.isfinite(normal.observed):
                out[name] = normal
        return out
