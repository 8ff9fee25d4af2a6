"""Evaluation of pretrained encoders: the jobs' shared machinery (jobs.py), the classifier that
linear evaluation and fine-tuning train (classifier.py), the libraries of the commands
(linear_eval_lib.py, finetune_lib.py, knn_lib.py, import_tf_lib.py, transfer_lib/), the kNN
maths (weighted_knn.py, also the pretraining monitor's: monitor.py) and loading pretrained
encoders for downstream models (pretrained.py). A command X's library is X_lib: no module here
shares a command's name."""
