"""``expt train``: one configuration, k-fold cross-validated, refit, and its run tree written to MLflow.

- :mod:`expt.train.run`: the run itself (:func:`~expt.train.run.run_train`, :func:`~expt.train.run.queue_train`).
- :mod:`expt.train.writer`: what a train run writes (:class:`~expt.train.writer.TrainWriter`), and writing it in
  the train process (:class:`~expt.train.writer.LocalWriter`).
- :mod:`expt.train.process`: writing it in a process of its own, and the choice between the two
  (:func:`~expt.train.process.start_writer`).

This module imports nothing: ``expt train`` starts the writer process while it is still bare (no numpy, one
thread), which :mod:`expt.train.run`'s imports would spoil.
"""
