"""rarl-gym: multi-label image recognition as a Gymnasium RL problem.

``import rarl_gym`` registers the environments:

* ``RARL-Shapes-v0``: the embedded, procedurally drawn default (no download);
* ``RARL-VOC07-v0``: PASCAL VOC 2007 (``root=`` or ``$RARL_DATA/voc07``);
* ``RARL-COCO2014-v0``: MS-COCO multi-label (``root=`` or ``$RARL_DATA/coco``).

``gym.make_vec(id, num_envs=B, **kwargs)`` builds the native batched
:class:`envs.vector_env.GlimpseVectorEnv` (same-step autoreset); ``vectorization_mode="sync"``
or ``"async"`` gives B single envs instead.
"""

from __future__ import annotations

from gymnasium.envs.registration import register, registry

__version__ = "0.1.0"

#: Registered env ids and the kwargs each fixes.
ENV_IDS: dict[str, dict] = {
    "RARL-Shapes-v0": {"dataset": "shapes"},
    "RARL-VOC07-v0": {"dataset": "voc07"},
    "RARL-COCO2014-v0": {"dataset": "coco"},
}


def _register_envs() -> None:
    for env_id, kwargs in ENV_IDS.items():
        if env_id not in registry:
            register(
                id=env_id,
                entry_point="envs.glimpse_env:GlimpseEnv",
                vector_entry_point="envs.vector_env:GlimpseVectorEnv",
                kwargs=dict(kwargs),
            )


_register_envs()

__all__ = ["ENV_IDS", "__version__"]
