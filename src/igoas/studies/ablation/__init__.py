"""The ablation study on the embedded synthetic occluded benchmark (`igoas ablation`).

Six arms share one recipe (the `synthetic_study` preset: synthetic-pretrained ResNet-18
at 128x64) and differ only in the network and its training occlusion (`ARMS`). Each arm
is trained once per seed, scored at the last epoch on the occluded queries and on their
occluder-free twins, put through the occlusion stress test, and summarised in a small
committed record; the study then checks its criteria (docs/ablation.md), bootstraps
IGOAS against the baseline over queries and writes the table and figures.

Modules by job: `arms` (the compared methods and their configs), `study` (orchestration
and reuse of finished runs), `records` (the per-run record), `statistics` (summaries,
bootstrap, criteria), `report` (the table); the figures are in `igoas.viz.ablation_figures`.
"""
from igoas.studies.ablation.arms import ARMS, DEFAULT_RECIPE, Arm, arm_config
from igoas.studies.ablation.records import RUN_RECORD
from igoas.studies.ablation.report import format_table
from igoas.studies.ablation.statistics import check_criteria, paired_bootstrap, per_query_scores, summarize
from igoas.studies.ablation.study import (EVALUATIONS, REDUCED_STRESS, STRESS, AblationResult, StressSettings,
                                          run_ablation)

__all__ = ["ARMS", "DEFAULT_RECIPE", "EVALUATIONS", "REDUCED_STRESS", "RUN_RECORD", "STRESS", "AblationResult", "Arm",
           "StressSettings", "arm_config", "check_criteria", "format_table", "paired_bootstrap", "per_query_scores",
           "run_ablation", "summarize"]
