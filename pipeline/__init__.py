"""Vigil's runtime: packets, stages contract, graph, runner, sources, sinks, config, metrics, CLI.

Nothing in this package knows about vision models; the runner never imports torch.
"""
