"""The analysis: what a finished job's results become (pure: no Ray, no scheduler, no task).

It reads a job's stored result typed (:class:`tuner.results.JobResult`). ``statistics`` is
the public surface of the numbers, from ``ranking`` (the leaderboard: final means, Welch's
test, Holm), ``tunability`` (expected best after k trials, outcome shares), ``speed`` (time to
a target) and ``checks`` (edge and inclusion warnings); ``importance`` computes fANOVA
importances from a job's Optuna studies; ``plots`` draws (one ``_x_info`` gathering and one
``plot_x`` drawing per figure); ``report`` writes the HTML report from both, through the
Jinja2 template ``templates/report.html.j2``; ``export`` writes and loads the best
configurations.
"""
