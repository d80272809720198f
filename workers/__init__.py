"""The Ray side of tuner: long-lived worker actors, the trainer of one trial, built-in tasks.

Workers import :mod:`tuner.task` and :mod:`search_spaces` only; they never touch the jobs
table, Optuna or MLflow (the coordinator owns those).
"""
