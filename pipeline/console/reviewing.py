"""Review actions: acknowledge, "false alarm", "normal here" (which teaches the camera's model), undo.

"Normal here" loads the camera's current model, adds the event's recorded observations through each
attribute's own update (stages.normality.feedback), keeps the result as a new model version
(pipeline.model_store) and records the review with that version; a running camera picks the new file
up within a second (ModelFollower). Undo takes the version back (its parent is current again) and is
allowed to the operator who made it or an admin.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.console.alerts import AlertReader
from pipeline.console.users import Role
from pipeline.errors import VigilError
from pipeline.model_store import ModelStore, ModelVersion
from pipeline.sinks.sqlite import SqliteEventStore


class ReviewRefused(VigilError):
    """The user may not do this (role, or another operator's version)."""


@dataclass(frozen=True)
class FeedbackOutcome:
    version: ModelVersion
    observations: int
    weight: int
    taken: tuple[str, ...]  # attributes that took the observations
    refused: tuple[tuple[str, str], ...]  # (attribute, why not)


class Reviewing:
    def __init__(
        self,
        store: SqliteEventStore,
        reader: AlertReader,
        models: ModelStore,
        media_dir: Path,
        weight: int,
        device: str = "cpu",
    ) -> None:
        self.store = store
        self.reader = reader
        self.models = models
        self.media_dir = Path(media_dir)
        self.weight = weight
        self.device = device

    def review(self, event_id: str, action: str, user: str, role: Role) -> FeedbackOutcome | None:
        """Record `action` by `user`; "normal_here" also makes the model version it returns."""
        if not role.can(Role.operator):
            raise ReviewRefused(f"user {user} ({role}) may not review alerts")
        alert = self.reader.get(event_id)
        if alert is None:
            raise VigilError(f"no alert {event_id!r}")
        if action == "normal_here":
            outcome = self._teach(alert.camera, event_id, user)
            self.store.review(event_id, action, user, model_version=outcome.version.number)
            return outcome
        if action == "undo_normal_here":
            raise VigilError("undo goes through undo(), not review()")
        self.store.review(event_id, action, user)
        return None

    def _teach(self, camera: str, event_id: str, user: str) -> FeedbackOutcome:
        from stages.normality import NormalityModel
        from stages.normality.feedback import absorb_event
        from stages.normality.observations import EventObservations, observations_path

        path = observations_path(self.media_dir, camera, event_id)
        if not path.exists():
            raise VigilError(
                f"alert {event_id}: no recorded observations ({path}): it cannot teach the model"
            )
        seen = EventObservations.load(path)
        model = NormalityModel.load(self.models.path(camera), device=self.device)
        report = absorb_event(model, seen, self.weight)
        taken = tuple(r.attribute for r in report if r.skipped is None)
        refused = tuple((r.attribute, r.skipped) for r in report if r.skipped is not None)
        note = f"{len(seen)} observations x {self.weight} into {', '.join(taken)}"
        try:
            version = self.models.commit(model, "feedback", by=user, event_id=event_id, note=note)
        except OSError as exc:
            raise VigilError(f"model of camera {camera}: cannot write a new version: {exc}") from exc
        return FeedbackOutcome(version, len(seen), self.weight, taken, refused)

    def undo(self, camera: str, number: int, user: str, role: Role) -> ModelVersion:
        """Take back model version `number` of `camera` (its maker or an admin)."""
        versions, _ = self.models.versions(camera)
        entry = next((v for v in versions if v.number == number), None)
        if entry is None:
            raise VigilError(f"camera {camera}: no model version {number}")
        if not (role.can(Role.admin) or (role.can(Role.operator) and entry.by == user)):
            raise ReviewRefused(f"version {number} was made by {entry.by}: only they or an admin can undo it")
        undone = self.models.undo(camera, number, user)
        if undone.event_id:
            self.store.review(undone.event_id, "undo_normal_here", user, model_version=entry.parent)
        return undone
