"""``multiverse quickstart``: the whole workflow on the built-in toy task, on a CPU, in minutes."""
