"""The Python sandbox: runs analysis code that a language model wrote in a forked, isolated child per run."""
