"""``python -m data_prep.synthetic --out DIR``: writes the synthetic dataset (see ``dataset``)."""
from data_prep.synthetic.dataset import main

if __name__ == "__main__":
  main()
