"""Hub: model cards, `multiverse export` and `multiverse push` (and the CLI of `multiverse eval`)."""
