"""The image's dependency list, from the pinned list in pyproject.toml (run by the Dockerfile's build stage).

Prints one requirement a line. The embedded ClickHouse engine (chDB, about 0.5 GB) is left out unless the
environment has ``WITH_CHDB=true`` (the build argument). Standard library only: it runs on the bare base
image before anything is installed.
"""

import os
import re
import tomllib


def requirements(pyproject: str = "pyproject.toml", *, with_chdb: bool) -> list[str]:
    with open(pyproject, "rb") as f:
        deps = tomllib.load(f)["project"]["dependencies"]
    result = []
    for dep in deps:
        name = re.split(r"[\[=<>~! ]", dep, maxsplit=1)[0].lower()
        if not with_chdb:
            if name == "chdb":
                continue
            dep = dep.replace("[chdb]", "")
        result.append(dep)
    return result


if __name__ == "__main__":
    for line in requirements(with_chdb=os.environ.get("WITH_CHDB", "false") == "true"):
        print(line)
