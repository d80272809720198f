"""The engine: what runs a job. The faces start it (``tuner run`` calls ``jobs.run_job``,
``tuner serve`` runs ``service.Service``) and never import its scheduling modules.

``jobs.run_job`` runs one job: a ``coordinator.Coordinator`` schedules its trials on the
workers of ``cluster``, asks and tells the Optuna ``studies`` through the ``ledger``, takes over
what a killed coordinator left (``recovery``), narrows the learning-rate ranges first
(``lr_range``) and queues the final re-runs (``finals``); calls to the database ride out an
outage (``ride_out``). ``service`` is the loop of ``tuner serve`` that claims queued jobs
(``admission``: whether one fits now; ``requeue``: jobs a dead server left running;
``health``: what ``/healthz`` says of the loop), and ``job_ends`` closes the books of jobs
that ended without their coordinator.
"""
