"""Hub: model cards, `multiverse export` and `multiverse push`, and the one model loader the commands share."""
