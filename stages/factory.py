"""The one place that turns config into the stage list.

decode → detect → pose → appearance → flow → attributes → scene_graph, then, when normality models
are given, score → explain → events. The order here is only a preference: the graph builder orders
stages by what they need and provide.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from pipeline.config import VigilConfig
from pipeline.errors import ConfigError
from pipeline.stage import Stage
from stages.normality import NormalityModel
from stages.score import Follow


def perception_stages(config: VigilConfig) -> list[Stage]:
    """Everything up to the scene graph; what `vigil fit` runs over normal footage."""
    from stages.appearance import AppearanceStage
    from stages.attributes import AttributesStage
    from stages.detect import DetectStage
    from stages.flow import FlowStage
    from stages.pose import PoseStage
    from stages.scene_graph import SceneGraphStage

    stages: list[Stage] = [DetectStage.from_config(config.detector)]
    if config.pose.enabled:
        stages.append(PoseStage.from_config(config.pose, config.models))
    if config.appearance.enabled:
        appearance = AppearanceStage.from_config(config.appearance, config.models)
        if appearance.encoder.dim != config.attributes.appearance_dim:
            raise ConfigError(
                f"attributes.appearance_dim is {config.attributes.appearance_dim} but the appearance encoder "
                f"(appearance.layer {config.appearance.layer}) gives {appearance.encoder.dim}: set them equal"
            )
        stages.append(appearance)
    stages += [
        FlowStage(config.flow),
        AttributesStage(config.attributes),
        SceneGraphStage(config.scene_graph),
    ]
    return stages


def build_stages(
    config: VigilConfig,
    models: dict[str, NormalityModel] | None,
    save: Callable[[NormalityModel], object] | None = None,
    follow: Follow | None = None,
) -> list[Stage]:
    """The whole graph.

    Cameras without a model learn online for `scoring.warmup_s`, then alert; with warm-up off
    (0) and no model for any camera, the graph stops at the scene graph (perception only).
    """
    stages = perception_stages(config)
    if not models and config.scoring.warmup_s <= 0:
        return stages
    return [*stages, *scoring_stages(config, models, save, follow)]


def scoring_stages(
    config: VigilConfig,
    models: dict[str, NormalityModel] | None,
    save: Callable[[NormalityModel], object] | None = None,
    follow: Follow | None = None,
) -> list[Stage]:
    """score -> explain -> events: what runs after the scene graph (alone: `vigil eval --from-cache`).

    A camera without a model learns it during warm-up the way `vigil fit` does (`learn_model`); `save`
    keeps it (the composition root's ModelStore), and explain and events find it in `models`."""
    models = {} if models is None else models  # shared with explain and events: warm-up adds to it
    from stages.events import EventStage
    from stages.explain import ExplainStage
    from stages.normality.learn import learn_model
    from stages.score import ScoreStage

    return [
        ScoreStage(
            models,
            config.scoring,
            learn=partial(learn_model, config, seed=0, how="warm-up"),
            save=save,
            follow=follow,
        ),
        ExplainStage(models, config.scoring),
        EventStage(config.events, models=models),
    ]
