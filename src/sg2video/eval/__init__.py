"""Evaluation of generated videos: graph compliance (shapes world), retrieval, fidelity."""
