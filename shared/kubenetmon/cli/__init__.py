"""The top floor: every ``kubenetmon`` command and what only commands use.

    main         the entry point and the registry of subcommands
    flags        KUBENETMON_* defaults, secrets kept out of --help, relative times
    reference    the configuration reference (docs/reference.md), generated from the real parsers
    nats         ``kubenetmon nats init|status``
    natsserver   a local nats-server process (``up``, tests, benchmarks)
    replay       the registry of ``kubenetmon replay`` verbs; ``replay_dlq`` is the ``dlq`` verb
    up           the whole pipeline on one machine
    lab          network namespaces with known traffic and synthetic Kubernetes objects, for
                 ``up --demo``, the tests and the benchmarks

Commands import the roles (``kubenetmon.agent``, ``.enricher``, ``.writer``) and ``kubenetmon.shared``;
neither ever imports a command (an import-linter layers contract).
"""
