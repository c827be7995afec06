"""``python -m data_prep.synthetic --out DIR``: writes the synthetic dataset (see ``dataset``)."""
from data_prep.synthetic.dataset import main

if __name__ == "__main__":
  # Without prog, argparse would call the command "__main__.py" in its usage line.
  main(prog="python -m data_prep.synthetic")
