"""Evaluation: batched generation, judges applied to it, metrics with intervals, resource meters."""
