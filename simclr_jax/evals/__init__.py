"""Evaluation of pretrained encoders: the jobs' shared machinery (jobs.py), the classifier that
linear evaluation and fine-tuning train (classifier.py), linear.py, finetune.py, knn.py (+ the
pretraining monitor) and loading pretrained encoders for downstream models (pretrained.py)."""
