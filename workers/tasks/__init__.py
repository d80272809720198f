"""The built-in tasks, one module per family; each task is a factory ``build(seed) -> Task``.

The names users type are registered in :data:`tuner.task.BUILTIN_TASKS`; this package only
holds the factories, so importing it stays light (torch loads when a task module does).

========================  ==========================================  ===============
task name                 factory                                     metric
========================  ==========================================  ===============
``digits-logreg``         :func:`workers.tasks.digits.logreg`         ``accuracy``
``digits-mlp``            :func:`workers.tasks.digits.mlp`            ``accuracy``
``digits-cnn``            :func:`workers.tasks.digits.cnn`            ``accuracy``
``digits-autoencoder``    :func:`workers.tasks.digits.autoencoder`    ``mse``
``sequence-gru``          :func:`workers.tasks.sequence.gru`          ``accuracy``
``rosenbrock``            :func:`workers.tasks.landscapes.rosenbrock` ``distance``
``rastrigin``             :func:`workers.tasks.landscapes.rastrigin`  ``distance``
``cartpole-reinforce``    :func:`workers.tasks.cartpole.reinforce`    ``val_return``
``text-transformer``      :func:`workers.tasks.language.transformer`  ``perplexity``
``vowels-cnn``            :func:`workers.tasks.speech.vowels`         ``accuracy``
========================  ==========================================  ===============

``cartpole-reinforce`` is a training loop (``@tuner.training_loop``), not a factory: it reports
``val_return``, ``train_return`` and ``train_loss`` itself.

Every task's data is bundled (scikit-learn's ``load_digits``, Python's ``pydoc_data``) or
generated from a fixed generator, never downloaded; it is built once per process and shared by
every trial, whatever the seed. The seed only sets the model's initial parameters.
"""
