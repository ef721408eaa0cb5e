"""The microdomain recipe: a synthetic product (domain.py) with its manual and exam (exam.py), an oracle teacher
(oracle.py), the prompt formats (formats.py), the tiny from-scratch model (tiny.py), the tiers (tiers.py), the
cached stages (pipeline.py: `run_recipe`, what `python train.py` runs), the evaluation table (evaluate.py) and
its bar chart (chart.py)."""
