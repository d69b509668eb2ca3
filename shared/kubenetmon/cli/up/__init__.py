"""``kubenetmon up``: the whole pipeline on this machine, with a live view, in one command.

    sudo kubenetmon up --demo             # a lab of pods on two nodes, with traffic: see it work
    sudo kubenetmon up                    # this machine's own traffic (needs nf_conntrack_acct=1)
    sudo kubenetmon up --inventory pods.yaml --netns NODE   # a namespace described by a Kubernetes List

Every role runs as a child process, as Kubernetes would run it (``pipeline``), until Ctrl-C or SIGTERM,
and they stop in an order that stores every byte seen. This package must not import a service: roles
are commands, not modules. This module stays light: the work (``run``) is imported only when ``up`` runs;
``argv`` writes each child's command line.
"""

from __future__ import annotations

import argparse

from kubenetmon.cli.up.settings import add_up_arguments


def configure(parser: argparse.ArgumentParser) -> None:
    add_up_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from kubenetmon.cli.up.run import main as run_up

    return run_up(args)
