"""Training, fine-tuning and evaluation of SCALE with Accelerate, and the paper's metrics."""
