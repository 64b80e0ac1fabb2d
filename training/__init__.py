"""Training: pairs from the catalogue, losses, the loop, evaluation, the job runner the UI starts."""
