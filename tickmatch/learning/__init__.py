"""Learning the pair-duration model from labels: features, the censored loss, training, evaluation, scorers."""
