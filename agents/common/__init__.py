"""Framework-free pieces shared by every agent trained through the env (SB3's and custom ones).

* :mod:`agents.common.run`: the run folder (``run.json``, ``metrics.json``, new run or ``--resume``);
* :mod:`agents.common.evaluation`: one episode per image of a split, the metrics of the policy's
  centres and of the other centre policies, and the global-image baseline (:func:`evaluate_run`).
"""
