"""``python -m llm_worker``: the same command line as ``llm-worker``."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
