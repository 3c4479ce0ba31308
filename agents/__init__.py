"""Agents that solve rarl-gym's environments, and what they share.

* :mod:`agents.rarl`: the paper's RARL agent (model, batched rollout and loss, training loop, a
  policy that plays the env);
* :mod:`agents.sb3`: Stable-Baselines3 and sb3-contrib algorithms (PPO, A2C, SAC, TD3,
  RecurrentPPO) through one features extractor, and the SB3 ``VecEnv`` adapter of the vector env;
* :mod:`agents.custom`: algorithms written against the Gymnasium API alone (the cross-entropy
  method, :mod:`agents.custom.cem`);
* :mod:`agents.common`: the run folder and the evaluation through the env, shared by the env-trained
  agents (SB3 and custom);
* :mod:`agents.predict`: new images in, labels out, for a run of any of them;
  :mod:`agents.tb_logging`: TensorBoard figures and PR curves.

Agents import the core (``rarl_gym``) and the envs (``envs``), never the scripts (docs/design.md).
"""
