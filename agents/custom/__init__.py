"""Agents written against nothing but the Gymnasium API: the example of plugging in an algorithm.

* :mod:`agents.custom.cem`: cross-entropy-method search over a linear centre policy.
"""
