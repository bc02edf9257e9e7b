"""Robustness benchmarks of trained checkpoints: the occlusion stress test (occluders painted
over the queries, gallery or both) and the corruption benchmark (20 corruptions x 5
severities)."""
