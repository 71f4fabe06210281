"""``python -m llm_worker``: the same command line as ``llm-worker``."""

from .cli import console

if __name__ == "__main__":
    console()
