"""Agents that solve rarl-gym's environments: the paper's RARL agent (``agents.rarl``)."""
