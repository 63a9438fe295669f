"""`python -m mixjax.testbed --out DIR --docs N`: writes the embedded corpus (see corpus.py)."""

from mixjax.testbed import corpus

if __name__ == "__main__":
  corpus.main()
