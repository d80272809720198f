"""The analysis: what a finished job's results become (pure: no Ray, no scheduler, no task).

``statistics`` ranks and tests, ``plots`` draws, ``report`` writes the HTML report from both,
``export`` writes and loads the best configurations.
"""
