"""What every replay verb shares: the run, the time window, the scan of a stream, the progress report.

The verbs themselves live where their work is (``raw`` in the enricher, ``enriched`` in the writer, ``dlq``
with the commands); the registry that dispatches ``kubenetmon replay VERB`` is ``kubenetmon.cli.replay``.
Nothing here imports a role or a command.
"""
