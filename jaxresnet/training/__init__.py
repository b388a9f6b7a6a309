"""Training: the train state and pure step, the recipe switches, optimizers, evaluation, the periodic jobs and the loop."""
