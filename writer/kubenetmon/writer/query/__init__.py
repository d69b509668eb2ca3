"""The read side of the flows database: the commands that query it and what they share.

``sql`` runs one query and holds the read path the others reuse (``Reader``, ``run_query``, the target
flags); ``top`` shows the top talkers (its pure core: ``top_report``); ``check`` judges whether a window's
data is whole (its pure core: ``completeness``); ``cost`` prices the traffic. ``endpoint`` is how they
reach a chDB directory that a running writer owns: the writer serves read-only queries there and they ask.

Nothing here writes rows or changes the schema: the tables and views are defined and migrated by the
write side (``flow_tables``, ``cost_tables``, ``migrate``), which this package only reads from.
"""
