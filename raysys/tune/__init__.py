"""Ray Tune sweeps over a pretraining config (`raysys sweep`): one trial = one full pretraining
run (a Ray Train TorchTrainer), early stopping on the in-training evaluation (ASHA), Optuna
(single- or multi-objective), resumable, with results tables, best configs and plots."""
